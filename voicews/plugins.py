"""The one plugin manager, and the registry of processors it yields.

Order of registration, as in pytest and llm: the builtin processor modules,
then packages that declare the ``voicews`` entry-point group, then the modules
and files config.yaml lists under ``plugins:``.  All go through
``PluginManager.register``; builtins have no other door.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pluggy

from voicews import hookspecs
from voicews.processor import Processor

BUILTIN_PLUGINS = (
    "voicews.processors.echo",
    "voicews.processors.gain",
    "voicews.processors.file_inject",
    "voicews.processors.record",
)


class PluginError(Exception):
    """A plugin could not be loaded or registers something wrong; names the plugin."""


def make_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager with the hookspecs, the builtins and entry-point plugins."""
    pm = pluggy.PluginManager("voicews")
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        register_plugin(pm, importlib.import_module(name), name)
    try:
        pm.load_setuptools_entrypoints("voicews")
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"entry-point plugin {exc.plugin!r}: {exc}") from None
    return pm


def register_plugin(pm: pluggy.PluginManager, module: object, name: str) -> None:
    """Register `module` unless a plugin of that name already is; check its hooks."""
    if pm.get_plugin(name) is not None:
        return
    try:
        pm.register(module, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise PluginError(f"plugin {name!r}: {exc}") from None
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        pm.unregister(name=name)
        raise PluginError(f"plugin {name!r}: {exc}") from None


def load_plugin(pm: pluggy.PluginManager, spec: str, base_dir: Path) -> str:
    """Import a plugin by module name or ``.py`` path (relative to `base_dir`); register it.

    Returns the name it was registered under.
    """
    try:
        if spec.endswith(".py") or "/" in spec:
            path = Path(spec).expanduser()
            path = path if path.is_absolute() else base_dir / path
            name = f"voicews_plugin_{path.resolve()}"
            if pm.get_plugin(name) is not None:
                return name
            if not path.is_file():
                raise PluginError(f"plugin {spec!r}: no such file {path}")
            module_spec = importlib.util.spec_from_file_location(
                f"voicews_user_plugins.{path.stem}", path
            )
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module  # dataclasses look their module up
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_spec.name]
                raise
        else:
            name = spec
            if pm.get_plugin(name) is not None:
                return name
            module = importlib.import_module(spec)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"plugin {spec!r} failed to import: {type(exc).__name__}: {exc}") from exc
    register_plugin(pm, module, name)
    return name


def collect_processors(pm: pluggy.PluginManager) -> dict[str, type[Processor]]:
    """Ask every plugin for its processors; refuse duplicates and non-processors."""
    found: dict[str, type[Processor]] = {}

    def register(cls: type) -> None:
        origin = f"{cls.__module__}.{getattr(cls, '__qualname__', cls)}"
        if not (isinstance(cls, type) and issubclass(cls, Processor)):
            raise PluginError(f"{origin} registered as a processor but is not a Processor")
        if not cls.name or not isinstance(cls.name, str):
            raise PluginError(f"processor {origin} has no name")
        if cls.name in found:
            other = found[cls.name]
            raise PluginError(
                f"processor name {cls.name!r} defined twice: by {other.__module__}."
                f"{other.__qualname__} and by {origin}"
            )
        found[cls.name] = cls

    try:
        pm.hook.register_processors(register=register)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(
            f"a plugin's register_processors raised {type(exc).__name__}: {exc}"
        ) from exc
    return found

