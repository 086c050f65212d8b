"""The one plugin manager, and the registry of processors it yields.

Order of registration, as in pytest and llm: the builtin processor modules,
then packages that declare the ``voicews`` entry-point group, then the modules
and files config.yaml lists under ``plugins:``.  All go through
``PluginManager.register``; builtins have no other door.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pluggy

from voicews import hookspecs
from voicews.pipeline.processor import Processor

BUILTIN_PLUGINS = (
    "voicews.processors.echo",
    "voicews.processors.gain",
    "voicews.processors.file_inject",
    "voicews.processors.record",
    "voicews.processors.bridge",
    "voicews.processors.transcribe",
    "voicews.processors.pocketsphinx",
    "voicews.processors.vad",
    "voicews.processors.barge_in",
    "voicews.processors.say",
    "voicews.processors.espeak",
)


FILE_PLUGIN_PREFIX = "voicews_plugin_"


class PluginError(Exception):
    """A plugin could not be loaded or registers something wrong; names the plugin."""


class PluginManager(pluggy.PluginManager):
    """pluggy's plugin manager, remembering where each plugin came from.

    ``origins`` maps a registered plugin's name to how a user would recognise
    its source (``builtin``, ``entry point ... (package ...)``, ``file ...``,
    ``module ...``): ``voicews processors`` prints it beside each processor.
    """

    def __init__(self) -> None:
        super().__init__("voicews")
        self.origins: dict[str, str] = {}


def make_plugin_manager() -> PluginManager:
    """A plugin manager with the hookspecs, the builtins and entry-point plugins."""
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        register_plugin(pm, importlib.import_module(name), name, "builtin")
    register_entry_points(pm)
    return pm


def register_entry_points(pm: pluggy.PluginManager) -> list[str]:
    """Register every installed entry-point plugin not registered yet; all their names.

    At start and again at each config load (SIGHUP), so a reload sees the packages a
    restart would: the same processors, the same conflicts, the same errors.
    """
    importlib.invalidate_caches()  # a package pip installed since start is seen too
    names = []
    for entry_point in importlib.metadata.entry_points(group="voicews"):
        names.append(entry_point.name)
        # Like pluggy's load_setuptools_entrypoints, but a failure names the plugin.
        if pm.get_plugin(entry_point.name) is not None:
            continue
        try:
            module = entry_point.load()
        except Exception as exc:
            raise PluginError(
                f"entry-point plugin {entry_point.name!r} ({entry_point.value}) failed to "
                f"import: {type(exc).__name__}: {_one_line(exc)}"
            ) from exc
        dist = entry_point.dist
        package = f" (package {dist.name} {dist.version})" if dist is not None else ""
        register_plugin(pm, module, entry_point.name,
                        f"entry point {entry_point.name} = {entry_point.value}{package}")
    return names


def origin_of(pm: pluggy.PluginManager, plugin_name: str) -> str:
    """Where a registered plugin came from (see :class:`PluginManager`)."""
    origins: dict[str, str] = getattr(pm, "origins", {})
    return origins.get(plugin_name) or plugin_label(plugin_name)


def described(pm: pluggy.PluginManager, plugin_name: str) -> str:
    """A plugin as an error message names it: its name and where it comes from."""
    label = plugin_label(plugin_name)
    origin = origin_of(pm, plugin_name)
    if origin == "builtin":
        return f"builtin plugin {label!r}"
    return f"plugin {origin}" if origin != label else f"plugin {label!r}"


def _one_line(exc: BaseException) -> str:
    """pluggy's validation messages span lines; a config error is one line."""
    return " ".join(str(exc).split())


def plugin_label(name: str) -> str:
    """How a user recognises a registered plugin: its module name or its file's path."""
    return name.removeprefix(FILE_PLUGIN_PREFIX)


def register_plugin(
    pm: pluggy.PluginManager, module: object, name: str, origin: str = ""
) -> None:
    """Register `module` unless a plugin of that name already is; check its hooks.

    `origin` says where it came from, kept when `pm` is a :class:`PluginManager`.
    """
    if pm.get_plugin(name) is not None:
        return
    label = plugin_label(name)
    try:
        pm.register(module, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise PluginError(f"plugin {label!r}: {_one_line(exc)}") from None
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        pm.unregister(name=name)
        raise PluginError(f"plugin {label!r}: {_one_line(exc)}") from None
    if origin and isinstance(pm, PluginManager):
        pm.origins[name] = origin


def load_plugin(pm: pluggy.PluginManager, spec: str, base_dir: Path) -> str:
    """Import a plugin by module name or ``.py`` path (relative to `base_dir`); register it.

    Returns the name it was registered under.
    """
    try:
        if spec.endswith(".py") or "/" in spec:
            path = Path(spec).expanduser()
            origin = f"file {path if path.is_absolute() else base_dir / path}"
            path = path if path.is_absolute() else base_dir / path
            name = f"{FILE_PLUGIN_PREFIX}{path.resolve()}"
            if pm.get_plugin(name) is not None:
                return name
            if not path.is_file():
                raise PluginError(f"plugin {spec!r}: no such file {path}")
            module_name = f"voicews_user_plugins.{path.stem}"
            if module_name in sys.modules:  # another folder's plugin of the same file name
                digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
                module_name = f"{module_name}_{digest}"
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module  # dataclasses look their module up
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_spec.name]
                raise
        else:
            name, origin = spec, f"module {spec}"
            if pm.get_plugin(name) is not None:
                return name
            module = importlib.import_module(spec)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(
            f"plugin {spec!r} failed to import: {type(exc).__name__}: {_one_line(exc)}"
        ) from exc
    register_plugin(pm, module, name, origin)
    return name


@dataclass(frozen=True)
class Registered:
    """A processor class and the name of the plugin that registered it."""

    cls: type[Processor]
    plugin: str


def collect_processors(
    pm: pluggy.PluginManager, only: list[str] | None = None
) -> dict[str, type[Processor]]:
    """Every registered processor by name (see :func:`registered_processors`)."""
    return {name: found.cls for name, found in registered_processors(pm, only).items()}


def registered_processors(
    pm: pluggy.PluginManager, only: list[str] | None = None
) -> dict[str, Registered]:
    """Ask every plugin for its processors; refuse duplicates and non-processors.

    Each plugin's hook is called on its own, in the order of `only` (builtins, installed
    packages, then the config's list; registration order without it), so that any
    mistake is reported against the plugin that made it, and the same way at start and
    on SIGHUP.  A name defined twice is refused whoever defines it, naming where each
    definition comes from.  `only` also leaves out plugins an earlier config listed and
    the current one does not.
    """

    def refuse(cls: type) -> str | None:
        ok = isinstance(cls, type) and issubclass(cls, Processor)
        return None if ok else ", which is not a Processor"

    found = _collect(pm, "register_processors", "processor", refuse, only)
    return {name: Registered(cls, plugin) for name, (cls, plugin) in found.items()}


def collect_engines(
    pm: pluggy.PluginManager, hook: str, what: str, methods: tuple[str, ...],
    only: list[str] | None = None,
) -> dict[str, type]:
    """Ask every plugin for its engines through `hook` (``register_transcribers``...), by name.

    Checked like processors: a class with a ``name`` and the `methods` of its kind (`what`:
    "speech recognizer"), each name once whoever defines it; a mistake names the plugin
    that made it.  `only` as for :func:`registered_processors`.
    """

    def refuse(cls: type) -> str | None:
        missing = [m for m in methods if not callable(getattr(cls, m, None))]
        if isinstance(cls, type) and not missing:
            return None
        return f" as a {what}: it needs {', '.join(f'{m}()' for m in methods)} methods"

    return {name: cls for name, (cls, _) in _collect(pm, hook, what, refuse, only).items()}


def _collect(
    pm: pluggy.PluginManager, hook: str, what: str, refuse: Callable[[type], str | None],
    only: list[str] | None,
) -> dict[str, tuple[type, str]]:
    """Call every plugin's `hook` with a ``register``; name -> (class, plugin name).

    `refuse(cls)` says what is wrong with a class (to follow "registered <cls>"), or None.
    """
    found: dict[str, tuple[type, str]] = {}
    impls = [
        impl for impl in getattr(pm.hook, hook).get_hookimpls()
        # A wrapper around registration has nothing of its own to register.
        if not (impl.hookwrapper or impl.wrapper)
        and (only is None or impl.plugin_name in only)
    ]
    if only is not None:
        impls.sort(key=lambda impl: only.index(impl.plugin_name))
    for impl in impls:
        label = plugin_label(impl.plugin_name)
        where = described(pm, impl.plugin_name)

        def register(cls: type, label: str = label, where: str = where,
                     plugin: str = impl.plugin_name) -> None:
            problem = refuse(cls)
            if problem is not None:
                raise PluginError(f"plugin {label!r} registered {cls!r}{problem}")
            name = getattr(cls, "name", None)
            if not name or not isinstance(name, str):
                raise PluginError(f"plugin {label!r}: {what} {cls.__qualname__} has no name")
            if name in found:
                other = described(pm, found[name][1])
                raise PluginError(
                    f"{where}: {what} name {name!r} is already defined by {other}"
                    if other != where
                    else f"plugin {label!r}: {what} name {name!r} defined twice"
                )
            found[name] = (cls, plugin)

        try:
            impl.function(**{arg: register for arg in impl.argnames})  # as pluggy would
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(
                f"plugin {label!r}: {hook} raised {type(exc).__name__}: {_one_line(exc)}"
            ) from exc
    return found
