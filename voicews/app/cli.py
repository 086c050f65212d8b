"""``voicews``: check a config, list processors, start a project, make a call.

The daemon itself stays ``twistd voicews``; this command is everything around
it.  Each subcommand imports what it needs when it runs, so ``voicews --version``
and ``--help`` cost little more than ``import voicews``.

Exit status: 0 when all is well, 1 when the command could not do what was asked
(a file exists, a call failed), 2 for a config error or bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicews import __version__

if TYPE_CHECKING:
    import pluggy

    from voicews.app.tap import ConfigChoice
    from voicews.config.settings import Settings
    from voicews.pipeline.processor import Processor

CONFIG_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voicews",
        description="Tools around the voicews daemon (which runs as: twistd -n voicews "
        "[-c config.yaml]).",
        epilog="Exit status: 0 ok, 1 the command failed, 2 a config error or bad arguments.",
    )
    parser.add_argument("--version", action="version", version=f"voicews {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check", help="load and validate a config as the daemon would; print a summary",
        description="Load config.yaml exactly as twistd voicews would (plugins, files, "
        "pipelines) and print what it would run: pipelines and their steps, where it "
        "listens, and what is open without credentials. Exit 0, or 2 with the one-line "
        "config error naming the file and key.",
    )
    check.add_argument("config", nargs="?", help="the config (default: as the daemon: "
                       "./config.yaml when there is one, else the embedded default)")

    procs = commands.add_parser(
        "processors", help="list every processor: origin, parameters, summary",
        description="Every registered processor: builtins, installed plugin packages "
        "(the 'voicews' entry-point group) and, with --config, the plugins that config "
        "lists; each with where it comes from, its parameters (type, default, meaning) "
        "and the first line of its docstring.",
    )
    procs.add_argument("-c", "--config", help="also load this config's plugins")
    procs.add_argument("--json", action="store_true", help="one JSON document instead of text")

    init = commands.add_parser(
        "init", help="write a starter folder, or a plugin package",
        description="Without --plugin: write DIR/config.yaml, DIR/prompts/ and DIR/plugins/ "
        "(the default config, its prompt, example plugins and the my-processor skeleton, "
        "which the config runs in its 'mine' pipeline); then cd DIR && twistd -n voicews. "
        "With --plugin NAME: write a plugin package in DIR (default voicews-NAME): "
        "pyproject.toml with the 'voicews' entry point, the processor, tests and a README; "
        "pip install -e DIR makes it visible to the daemon.",
    )
    init.add_argument("dir", nargs="?", help="where to write (default: . or voicews-NAME)")
    init.add_argument("--plugin", metavar="NAME",
                      help="write a plugin package for a processor called NAME")
    init.add_argument("--force", action="store_true", help="overwrite files that exist")

    commands.add_parser(
        "call", add_help=False, help="the call simulator (voicews-call); voicews call --help",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``voicews`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["call"]:  # the simulator parses its own options
        from voicews.simulator.cli import main as call

        return call(argv[1:], prog="voicews call")
    args = build_parser().parse_args(argv)
    command = {"check": check, "processors": processors, "init": init}[args.command]
    return command(args)


# -- check ---------------------------------------------------------------------------------


def check(args: argparse.Namespace) -> int:
    from voicews.app.tap import check_listen, choose_config, load_config
    from voicews.config.plugins import PluginError
    from voicews.config.settings import ConfigError

    choice = choose_config(args.config)
    try:
        pm, settings = load_config(choice)
    except (ConfigError, PluginError) as exc:
        print(f"voicews: config error: {exc}", file=sys.stderr)
        return CONFIG_ERROR
    listen = settings.raw.listen
    if not listen.startswith("systemd:"):  # a handed-over socket exists only under systemd
        from twisted.internet import reactor

        problem = check_listen(reactor, listen)
        if problem:
            print(f"voicews: cannot listen on {listen!r}: {problem}", file=sys.stderr)
            return CONFIG_ERROR
    print("\n".join(summary(choice, settings, pm)))
    return 0


def summary(choice: ConfigChoice, settings: Settings, pm: pluggy.PluginManager) -> list[str]:
    """What ``voicews check`` prints about a loaded config."""
    from voicews.config.describe import yaml_value
    from voicews.config.plugins import origin_of, registered_processors

    raw = settings.raw
    lines = [f"config: {choice.path.resolve()} ({choice.why})"]
    lines.append(f"listen: {raw.listen} ({exposure(raw.listen)})")
    lines.append(f"audio: {raw.content_type}; public_url: {raw.public_url or 'unset'}")
    found = registered_processors(pm)
    extra = sorted({origin_of(pm, r.plugin) for r in found.values()} - {"builtin"})
    lines.append(f"processors: {len(found)} ({', '.join(found)})")
    lines.extend(f"plugin: {origin}" for origin in extra)
    lines.append(f"pipelines ({len(settings.pipelines)}, default {raw.default_pipeline}):")
    for name in settings.pipelines:
        steps = []
        for step in raw.pipelines[name]:
            if isinstance(step, dict):
                ((proc, params),) = step.items()
                steps.append(f"{proc} {yaml_value(params)}" if params else proc)
            else:
                steps.append(str(step))
        numbers = [n for n, p in raw.numbers.items() if p == name]
        called = f"  (numbers: {', '.join(numbers)})" if numbers else ""
        lines.append(f"  {name}: {' -> '.join(steps)}{called}")
    lines.extend(f"  {name}: OFF, {why}" for name, why in settings.disabled.items())
    lines.extend(security_lines(settings))
    lines.append(f"ok: {choice.path} is valid")
    return lines


def exposure(listen: str) -> str:
    """Who can reach a listen endpoint, as far as its string says."""
    host = listen_host(listen)
    if listen.startswith("systemd:"):
        return "a socket handed over by systemd: its unit decides the address"
    if host is None:
        return "not a network socket" if listen.startswith("unix:") else "address unknown"
    from voicews.web.auth import is_public

    return f"{'PUBLIC' if is_public(host) else 'loopback only'}: {host}"


def listen_host(listen: str) -> str | None:
    """The interface a tcp/ssl endpoint string binds (every one when none is named)."""
    import re

    kind, *parts = re.split(r"(?<!\\):", listen)
    if kind not in ("tcp", "tcp6", "ssl", "ssl6"):
        return None
    for part in parts:
        key, sep, value = part.partition("=")
        if sep and key == "interface":
            return value.replace("\\:", ":")
    return "::" if kind.endswith("6") else "0.0.0.0"


def security_lines(settings: Settings) -> list[str]:
    """The security posture: what is open without credentials, and the daemon's warning."""
    from voicews.web.auth import is_public, open_doors

    doors = open_doors(settings)
    lines = ["security: " + ("every door needs credentials" if not doors else
                             f"{len(doors)} open without credentials")]
    lines.extend(f"  open: {door}" for door in doors)
    host = listen_host(settings.raw.listen)
    security = settings.raw.security
    if host is not None and is_public(host) and not security.signature_secret \
            and security.websocket_auth == "none":
        lines.append(f"  WARNING: listening on public interface {host} with no "
                     "authentication (the daemon logs this at start)")
    return lines


# -- processors ----------------------------------------------------------------------------


def processors(args: argparse.Namespace) -> int:
    from voicews.config import plugins
    from voicews.config.settings import ConfigError

    try:
        if args.config:
            from voicews.app.tap import choose_config, load_config

            pm, _ = load_config(choose_config(args.config))
        else:
            pm = plugins.make_plugin_manager()
        found = plugins.registered_processors(pm)
    except (ConfigError, plugins.PluginError) as exc:
        print(f"voicews: config error: {exc}", file=sys.stderr)
        return CONFIG_ERROR
    listing = [describe_processor(name, r.cls, plugins.origin_of(pm, r.plugin), r.plugin)
               for name, r in found.items()]
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    for entry in listing:
        origin = entry["origin"]
        if origin == "builtin":
            origin = f"builtin ({entry['plugin']})"
        print(f"{entry['name']}  [{origin}]")
        if entry["summary"]:
            print(f"    {entry['summary']}")
        if not entry["params"]:
            print("    (no parameters)")
        for param in entry["params"]:
            default = "required" if param["required"] else f"default {param['default']}"
            print(f"    {param['name']}: {param['type']}  ({default})")
            if param["doc"]:
                print(f"        {param['doc']}")
    return 0


def describe_processor(name: str, cls: type[Processor], origin: str, plugin: str) -> dict[str, Any]:
    """One processor as ``voicews processors`` shows it (the --json form)."""
    from voicews.config.describe import describe, first_line

    module = sys.modules.get(cls.__module__)
    return {
        "name": name,
        "origin": origin,
        "plugin": plugin,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "summary": first_line(cls) or (first_line(module) if module else ""),
        "params": [
            {"name": f.name, "type": f.type, "default": f.default, "required": f.default is None,
             "doc": f.doc}
            for f in describe(cls.Params)
        ],
    }


# -- init ----------------------------------------------------------------------------------


def init(args: argparse.Namespace) -> int:
    from voicews.app.scaffold import PluginNames, ScaffoldError, plugin_files, starter_files, write

    try:
        if args.plugin:
            names = PluginNames.of(args.plugin)
            target = Path(args.dir or names.dist)
            written = write(target, plugin_files(names), args.force)
            next_steps = [f"pip install -e {target}", "voicews processors",
                          f"cd {target} && pytest"]
        else:
            target = Path(args.dir or ".")
            written = write(target, starter_files(), args.force)
            start = "twistd -n voicews"
            next_steps = [start if target == Path(".") else f"cd {target} && {start}",
                          "voicews call ws://127.0.0.1:8080/socket --header pipeline=mine "
                          "--seconds 2"]
    except ScaffoldError as exc:
        print(f"voicews init: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    print("next: " + "\n      ".join(next_steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
