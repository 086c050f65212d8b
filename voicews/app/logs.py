"""JSON-lines log output (config ``log_format: json``) for log shippers.

One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``namespace``,
``message`` (the text a person would read), then every field the event was
logged with (``uuid``, ``pipeline``, ``event``, ``reason``, ``outcome``,
``duration``, ...) as its own key, so a shipper indexes them without parsing
text.  A logged failure adds ``traceback``.

twistd picks its log observer before it starts the service: an ``ILogObserver``
component on the application is used unless ``--logger`` was given on the
command line, so :class:`voicews.service.VoicewsService` sets that component
when the config asks for JSON.  The lines go where twistd's text lines would
have gone: standard output under ``twistd -n`` (so journald or docker collect
them), else ``--logfile`` (default ``twistd.log``).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import ILogObserver, formatEvent
from twisted.python.logfile import LogFile
from zope.interface import implementer

# Keys of twisted.python.log (legacy) events that duplicate what the record already says.
_LEGACY_KEYS = frozenset({"message", "isError", "system", "time", "format", "why", "failure"})
_BASE_KEYS = ("time", "level", "namespace", "message")


def event_as_record(event: dict[str, Any]) -> dict[str, Any]:
    """A flat, JSON-ready dict for one twisted.logger event."""
    when = datetime.fromtimestamp(event.get("log_time", 0.0), UTC)
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace", "log_legacy"),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _LEGACY_KEYS or key in _BASE_KEYS:
            continue
        record[key] = value
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:  # a broken failure must not stop logging
            record["traceback"] = repr(failure)
    return record


@implementer(ILogObserver)
class JsonLinesObserver:
    """Writes each event as one line of JSON to `stream` and flushes it."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        line = json.dumps(event_as_record(event), default=repr, ensure_ascii=False)
        self.stream.write(line + "\n")
        self.stream.flush()


def twistd_stream(server_options: Any) -> IO[str]:
    """Where twistd's own text observer would write, given twistd's (parent) options."""
    get = getattr(server_options, "get", None)
    logfile = get("logfile") if get else None
    nodaemon = bool(get("nodaemon")) if get else True
    if logfile == "-" or (not logfile and nodaemon):
        return sys.stdout
    return LogFile.fromFullPath(logfile or "twistd.log")


def observer_for(log_format: str, server_options: Any = None) -> JsonLinesObserver | None:
    """The observer config's ``log_format`` asks for; None keeps twistd's text lines."""
    if log_format == "json":
        return JsonLinesObserver(twistd_stream(server_options))
    return None


def json_observer() -> JsonLinesObserver:
    """For ``twistd --logger voicews.logs.json_observer``: JSON lines on standard output."""
    return JsonLinesObserver(sys.stdout)
