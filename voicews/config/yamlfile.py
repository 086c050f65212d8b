"""Reading config.yaml's text: refuse a key given twice, expand ``${VAR}`` references.

Both work on the plain YAML data before it is type-checked, and name the dotted
key (and, for a duplicate, both lines) so the daemon can stop with one clear line.
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from voicews.config import typed


class DuplicateKey(Exception):
    """A mapping in config.yaml names the same key twice; `key` is its dotted path."""

    def __init__(self, key: str, line: int, first: int) -> None:
        super().__init__(f"{key}: duplicate key (line {line}; first given on line {first})")


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping.

    Plain PyYAML keeps the last value silently, so a snippet pasted below a key
    the file already has would replace it without a word.  The check walks the
    composed node tree (which still knows lines) before constructing anything.
    """

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_unique_keys(node, "")
        return self.construct_document(node)


def _check_unique_keys(node: yaml.Node, key: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, Any], int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *anchor` merges, it does not repeat a key
                ident = (key_node.tag, key_node.value)
                path = typed._join(key, key_node.value)
                line = key_node.start_mark.line + 1
                if ident in seen:
                    raise DuplicateKey(path, line, seen[ident])
                seen[ident] = line
                _check_unique_keys(value_node, path)
            else:
                _check_unique_keys(value_node, key)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_unique_keys(item, typed._join(key, i))


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(data: Any, key: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string value.

    A value that is nothing but one reference and comes out empty becomes null,
    so ``secret: ${SECRET:-}`` leaves the secret unset rather than empty.
    """
    if isinstance(data, dict):
        return {k: expand_env(v, typed._join(key, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, typed._join(key, i)) for i, v in enumerate(data)]
    if isinstance(data, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise typed.DataError(key, f"environment variable {name} is not set")

        expanded = _ENV.sub(replace, data)
        if expanded == "" and _ENV.fullmatch(data):
            return None  # `key: ${UNSET:-}` means the key is not set
        return expanded
    return data
