"""``twistd voicews``: options and the service maker."""

from __future__ import annotations

import sys

from twisted.python import usage

from voicews.app import fdlimit
from voicews.config import plugins
from voicews.config.settings import ConfigError, load_settings


class Options(usage.Options):
    synopsis = "[-c config.yaml] [-l ENDPOINT]"
    longdesc = (
        "Answer Vonage Voice API calls and process their audio over WebSockets. "
        "Webhooks (/webhooks/answer, /webhooks/event, /webhooks/fallback), /health, "
        "/metrics and the call socket (/socket) share one port."
    )
    optParameters = [
        ["config", "c", "config.yaml", "Path to config.yaml."],
        [
            "listen", "l", None,
            "Endpoint to listen on, overriding the config's listen "
            "(e.g. tcp:8080:interface=127.0.0.1, ssl:8443:privateKey=key.pem, "
            "systemd:domain=INET:index=0).",
        ],
    ]


def makeService(options: Options):  # noqa: N802 - Twisted's name
    from twisted.internet import reactor

    from voicews.app.service import VoicewsService
    from voicews.runtime.state import Runtime

    try:
        pm = plugins.make_plugin_manager()
        settings = load_settings(options["config"], pm)
    except (ConfigError, plugins.PluginError) as exc:
        sys.stderr.write(f"voicews: config error: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(2) from None
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
    observer = observer_for(settings.raw.log_format, getattr(options, "parent", None))
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
