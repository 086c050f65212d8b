"""What a config dataclass accepts, in words: each field's key, type, default and docstring.

One description serves two readers: ``voicews processors`` (a processor's
``Params``) and the configuration reference in the docs (``RawConfig`` and
every section below it), so neither can drift from the dataclasses that
:mod:`voicews.config.typed` loads.  A field's docstring is the string literal
written right under it, as in PEP 257's "attribute docstrings"; Python keeps
none of those, so they are read from the class's source.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union


@dataclass(frozen=True)
class FieldDoc:
    """One key of a config dataclass."""

    name: str
    type: str
    """The type as a user writes the value: ``float``, ``none | vonage | custom``..."""
    default: str | None
    """The default as YAML, or None when the key is required."""
    doc: str
    """The field's docstring, joined into one paragraph ('' when it has none)."""
    section: builtins.type | None = None
    """The dataclass of a nested section (``security``), to describe in turn."""


def field_docstrings(cls: type) -> dict[str, str]:
    """Attribute docstrings of `cls` and its dataclass bases, from their source."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue  # no source (a C class, an interactive session): no docstrings
        tree = ast.parse(source)
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def describe(cls: type) -> list[FieldDoc]:
    """The keys `cls` accepts (its init fields), in declaration order."""
    hints = typing.get_type_hints(cls)
    docs = field_docstrings(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        if f.default is not dataclasses.MISSING:
            default: str | None = yaml_value(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = yaml_value(f.default_factory())
        else:
            default = None
        section = tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None
        fields.append(FieldDoc(f.name, type_name(tp), default, docs.get(f.name, ""), section))
    return fields


def type_name(tp: Any) -> str:
    """A type as config.yaml sees it: ``float``, ``str | null``, ``replace | mix``..."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return "any"
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if origin is Literal:
        return " | ".join(str(arg) for arg in args)
    if origin is list:
        return f"list[{type_name(args[0])}]"
    if origin is dict:
        return f"mapping[{type_name(args[0])}, {type_name(args[1])}]"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


def yaml_value(value: Any) -> str:
    """A value as one would write it in config.yaml (flow style, one line)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return "(section)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value if value and _plain(value) else f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _plain(text: str) -> bool:
    """Whether YAML reads `text` back as the same string without quotes."""
    import yaml

    try:
        return bool(yaml.safe_load(text) == text) and "\n" not in text
    except yaml.YAMLError:
        return False


def first_line(obj: Any) -> str:
    """The first line of an object's own docstring ('' when it has none)."""
    doc = obj.__doc__ if isinstance(obj, type) else inspect.getdoc(obj)
    return inspect.cleandoc(doc).splitlines()[0] if doc and doc.strip() else ""
