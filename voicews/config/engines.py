"""What the ``transcribe:`` and ``tts:`` sections share: choosing an engine that a plugin
registered and loading its settings, and knowing a reload left it as it was."""

from __future__ import annotations

import inspect
from typing import Any

from voicews.config import typed


def engine_settings(
    section: str, engine: str, options: dict[str, Any], engines: dict[str, type]
) -> tuple[type, Any]:
    """The class `engine` names and `options` loaded into its ``Params`` (None without one).

    Mistakes are DataErrors at ``<section>.engine`` / ``<section>.options``.
    """
    if engine not in engines:
        known = ", ".join(sorted(engines)) or "none"
        raise typed.DataError(f"{section}.engine",
                              f"unknown engine {engine!r} (known engines: {known})")
    cls = engines[engine]
    params_cls = getattr(cls, "Params", None)
    if params_cls is not None:
        return cls, typed.load(params_cls, options, f"{section}.options")
    if options:
        raise typed.DataError(f"{section}.options", f"engine {engine} takes no options")
    return cls, None


def same_class(a: type, b: type) -> bool:
    """The same engine class across a reload: a plugin file is imported anew each time, so
    its classes are new objects; the same file (or module) and name is what counts."""
    return _origin(a) == _origin(b)


def _origin(cls: type) -> tuple[str, str]:
    try:
        where = inspect.getfile(cls)
    except TypeError:  # a class made at run time
        where = cls.__module__
    return where, cls.__qualname__
