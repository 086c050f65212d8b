"""Turn plain YAML data into typed dataclasses, with errors that name the key.

Config and processor parameters share this one loader so that every mistake a
user can make in config.yaml is reported the same way: the dotted key and what
is wrong with it.  It understands the handful of types our dataclasses use:
str, int, float, bool, Literal, Optional, list[...], dict[str, ...] and nested
dataclasses.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


class DataError(ValueError):
    """A value in user data does not fit its declared type; `key` says where."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


def _join(prefix: str, key: object) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def _describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def load(cls: type[T], data: Any, key: str = "") -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DataError(key, f"expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise DataError(_join(key, unknown[0]), f"unknown key (known keys: {known})")
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = convert(hints[name], data[name], _join(key, name))
        elif (
            field.default is dataclasses.MISSING
            and field.default_factory is dataclasses.MISSING
        ):
            raise DataError(_join(key, name), "missing required key")
    try:
        return cls(**values)
    except DataError:
        raise
    except (TypeError, ValueError) as exc:
        raise DataError(key, str(exc)) from None


def convert(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against type `tp` and return it in that type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(arg, value, key)
            except DataError as exc:
                errors.append(exc.problem)
        raise DataError(key, errors[0] if len(errors) == 1 else " or ".join(errors))
    if origin is Literal:
        if value in args:
            return value
        choices = " | ".join(str(a) for a in args)
        raise DataError(key, f"expected one of {choices}, got {_describe(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise DataError(key, f"expected a list, got {_describe(value)}")
        return [convert(args[0], item, _join(key, i)) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise DataError(key, f"expected a mapping, got {_describe(value)}")
        return {
            convert(args[0], k, _join(key, k)): convert(args[1], v, _join(key, k))
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return load(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise DataError(key, f"expected true or false, got {_describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise DataError(key, f"expected a number, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise DataError(key, f"expected a whole number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise DataError(key, f"expected a string, got {_describe(value)}")
    raise TypeError(f"typed.convert does not know type {tp!r}")  # a bug in our dataclasses
