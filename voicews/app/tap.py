"""``twistd voicews``: options and the service maker."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pluggy
from twisted.logger import Logger
from twisted.python import usage

from voicews import __version__
from voicews.app import fdlimit
from voicews.config import plugins
from voicews.config.settings import ConfigError, Settings, load_settings

log = Logger(namespace="voicews.tap")


class Options(usage.Options):
    synopsis = "[-c config.yaml] [-l ENDPOINT]"
    longdesc = (
        "Answer Vonage Voice API calls and process their audio over WebSockets. "
        "Webhooks (/webhooks/answer, /webhooks/event, /webhooks/fallback), /health, "
        "/metrics and the call socket (/socket) share one port."
    )
    optParameters = [
        [
            "config", "c", None,
            "Path to config.yaml (default: ./config.yaml when there is one, else the "
            "default config embedded in the package).",
        ],
        [
            "listen", "l", None,
            "Endpoint to listen on, overriding the config's listen "
            "(e.g. tcp:8080:interface=127.0.0.1, ssl:8443:privateKey=key.pem, "
            "systemd:domain=INET:index=0).",
        ],
    ]


@dataclass(frozen=True)
class ConfigChoice:
    """Which config.yaml the daemon uses, and why (said in its first log line)."""

    path: Path
    why: str
    embedded: bool = False


def choose_config(given: str | None, cwd: Path | None = None) -> ConfigChoice:
    """``-c`` when given (a missing file is then a config error), else ./config.yaml when
    there is one, else the default embedded in the package."""
    from voicews.examples import CONFIG

    if given is not None:
        return ConfigChoice(Path(given), "-c")
    cwd = Path.cwd() if cwd is None else cwd
    if (cwd / "config.yaml").is_file():
        return ConfigChoice(Path("config.yaml"), "config.yaml in the working directory")
    return ConfigChoice(
        CONFIG, f"the embedded default: no -c and no config.yaml in {cwd}", embedded=True
    )


def load_config(choice: ConfigChoice) -> tuple[pluggy.PluginManager, Settings]:
    """Load as the daemon does: a fresh plugin manager, the config and its plugins.

    Raises ConfigError (or PluginError, from an entry-point plugin) with one line.
    The embedded default records under ./recordings of the working directory, not
    into the installed package: VOICEWS_RECORDINGS defaults to that.
    """
    if choice.embedded:
        os.environ.setdefault("VOICEWS_RECORDINGS", str(Path.cwd() / "recordings"))
    pm = plugins.make_plugin_manager()
    return pm, load_settings(choice.path, pm)


def makeService(options: Options):  # noqa: N802 - Twisted's name
    from twisted.internet import reactor

    from voicews.app.service import VoicewsService
    from voicews.runtime.state import Runtime

    choice = choose_config(options["config"])
    try:
        pm, settings = load_config(choice)
    except (ConfigError, plugins.PluginError) as exc:
        sys.stderr.write(f"voicews: config error: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(2) from None
    # Logged before twistd starts logging: its buffer puts this line first.
    log.info("voicews {version} using config {config} ({chosen_by})", version=__version__,
             config=str(choice.path.resolve()), chosen_by=choice.why)
    from voicews.app.logs import observer_for

    listen = options["listen"] or settings.raw.listen
    problem = check_listen(reactor, listen)
    if problem:
        # Name where the value came from, as every other config error does.
        where = "--listen" if options["listen"] else f"config error: {settings.path}: listen"
        sys.stderr.write(f"voicews: {where}: cannot listen on {listen!r}: {problem}\n")
        sys.stderr.flush()
        raise SystemExit(2)
    fdlimit.prepare(settings)  # raise RLIMIT_NOFILE; warn when max_calls cannot fit
    runtime = Runtime(settings=settings, pm=pm, clock=reactor)
    # twistd's own options (--logfile, --nodaemon) are the parent of ours.
    observer = observer_for(settings.raw.log_format, getattr(options, "parent", None),
                            settings.raw.log_level)
    return VoicewsService(runtime, listen, reactor, log_observer=observer)


def check_listen(reactor, listen: str) -> str | None:
    """Why `listen` cannot be used (one line), or None; builds the endpoint, binds nothing."""
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(reactor, listen)
    except (IndexError, KeyError) as exc:
        if listen.startswith("systemd:"):
            # Twisted wants LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES; a .socket unit sets all
            # three, systemd-socket-activate sets LISTEN_FDNAMES only when given --fdname.
            return (
                "no such socket was handed over (LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES "
                "must be set for this process): start it from voicews.socket, or with "
                "systemd-socket-activate --fdname=voicews"
            )
        return f"{type(exc).__name__}: {exc}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
