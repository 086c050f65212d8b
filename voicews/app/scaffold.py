"""``voicews init``: a starter folder, or a plugin package, written from the shipped examples.

The starter folder is a copy of what the package embeds (:mod:`voicews.examples`):
the default config.yaml, its prompt and the example plugins, among them the
``my-processor`` skeleton that the config already runs in its ``mine`` pipeline.
The plugin package's processor is that same skeleton, renamed, so the two cannot
disagree; its pyproject, README and tests come from ``plugin-package/`` templates.
Nothing that exists is overwritten unless asked.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from voicews import __version__
from voicews.examples import HERE, PLUGIN_PACKAGE, STARTER

SKELETON = HERE / "plugins" / "my_processor.py"
NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


class ScaffoldError(Exception):
    """Nothing was written; the message says why."""


@dataclass(frozen=True)
class PluginNames:
    """The names a plugin package called `name` uses."""

    name: str  # the processor's name in pipelines, and the entry point's
    dist: str  # the distribution: pip install <dist>
    module: str  # the import package
    camel: str  # the processor class

    @classmethod
    def of(cls, name: str) -> PluginNames:
        if not NAME.fullmatch(name):
            raise ScaffoldError(
                f"{name!r} is not a plugin name: lowercase letters and digits, words joined "
                "by '-', starting with a letter (e.g. tremolo, noise-gate)"
            )
        words = name.split("-")
        return cls(name, f"voicews-{name}", "voicews_" + "_".join(words),
                   "".join(w.capitalize() for w in words))


def starter_files() -> dict[Path, bytes]:
    """What ``voicews init DIR`` writes, by path relative to DIR."""
    files: dict[Path, bytes] = {}
    for entry in STARTER:
        source = HERE / entry
        paths = [source] if source.is_file() else sorted(
            p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )
        for path in paths:
            files[path.relative_to(HERE)] = path.read_bytes()
    return files


def plugin_files(names: PluginNames) -> dict[Path, bytes]:
    """What ``voicews init --plugin NAME DIR`` writes, by path relative to DIR."""
    values = {**vars(names), "voicews_version": __version__}

    def render(template: str) -> str:
        return Template((PLUGIN_PACKAGE / template).read_text(encoding="utf-8")).substitute(values)

    return {
        Path("pyproject.toml"): render("pyproject.toml.tmpl").encode(),
        Path("README.md"): render("README.md.tmpl").encode(),
        Path("src", names.module, "__init__.py"): processor_source(names, render("docstring.tmpl"))
        .encode(),
        Path("tests", f"test_{names.module.removeprefix('voicews_')}.py"): render(
            "test_processor.py.tmpl"
        ).encode(),
    }


def processor_source(names: PluginNames, docstring: str) -> str:
    """The skeleton processor renamed for the package, under the package's own docstring."""
    source = SKELETON.read_text(encoding="utf-8")
    first = ast.parse(source).body[0]
    assert isinstance(first, ast.Expr) and first.end_lineno is not None  # the docstring
    body = "".join(source.splitlines(keepends=True)[first.end_lineno :])
    for old, new in (
        ("my-processor", names.name),
        ("plugins.my_processor", names.module),
        ("MyProcessor", names.camel),
        ("MyParams", f"{names.camel}Params"),
    ):
        body = body.replace(old, new)
    return docstring + body


def write(target: Path, files: dict[Path, bytes], force: bool = False) -> list[Path]:
    """Write `files` under `target`; refuse (writing nothing) if any exists, unless `force`."""
    existing = [target / rel for rel in files if (target / rel).exists()]
    if existing and not force:
        shown = ", ".join(str(p) for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise ScaffoldError(f"{shown} already exist{'s' if len(existing) == 1 else ''} "
                            "(--force overwrites)")
    written = []
    for rel, data in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written

