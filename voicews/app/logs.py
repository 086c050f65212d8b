"""Log output: text lines with control characters escaped, or JSON lines for shippers.

Text (config ``log_format: text``, the default) is twistd's classic line,
``<time> [<namespace>#<level>] <message>``, except that every control
character in the message (``\n``, ``\r``, NUL, ESC...) is written escaped
(``\n``, ``\r``, ``\x00``...): a caller's uuid or number cannot start a
forged line in the log or in journald.  Only a logged failure's traceback
spans lines, each continuation starting with a tab, as twistd writes it.

JSON (``log_format: json``):
One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``namespace``,
``message`` (the text a person would read), then every field the event was
logged with (``uuid``, ``pipeline``, ``event``, ``reason``, ``outcome``,
``duration``, ...) as its own key, so a shipper indexes them without parsing
text.  A logged failure adds ``traceback``.

twistd picks its log observer before it starts the service: an ``ILogObserver``
component on the application is used unless ``--logger`` was given on the
command line, so :class:`voicews.service.VoicewsService` sets that component
to the observer :func:`observer_for` gives.  The lines go where twistd's text lines would
have gone: standard output under ``twistd -n`` (so journald or docker collect
them), else ``--logfile`` (default ``twistd.log``).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatTime,
)
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


# Every C0 control character, DEL and the C1 block, written as Python would escape them.
_ESCAPES = {
    code: {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}.get(code, f"\\x{code:02x}")
    for code in (*range(0x20), *range(0x7F, 0xA0))
}
_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})  # line breaks to some readers


def escape_controls(text: str) -> str:
    """`text` with every control character escaped, so it stays on one line."""
    return text.translate(_ESCAPES)


def event_as_text(event: dict[str, Any]) -> str | None:
    """One classic twistd log line for `event`, control characters in it escaped."""
    message = formatEvent(event)
    failure = event.get("log_failure")
    traceback = ""
    if failure is not None:
        try:
            traceback = failure.getTraceback()
        except Exception:  # a broken failure must not stop logging
            traceback = repr(failure)
        # A traceback is several lines of ours; what it quotes may be a caller's.
        traceback = "\n".join(escape_controls(line) for line in traceback.rstrip("\n").split("\n"))
    if not message and not traceback:
        return None
    level = event.get("log_level")
    system = event.get("log_system") or (
        f"{event.get('log_namespace', '-')}#{getattr(level, 'name', '-')}"
    )
    text = escape_controls(message)
    if traceback:
        text = f"{text}\n{traceback}" if text else traceback
    line = f"{formatTime(event.get('log_time'))} [{escape_controls(str(system))}] {text}"
    return line.replace("\n", "\n\t") + "\n"


def text_observer(stream: IO[str]) -> FileLogObserver:
    """twistd's text lines, written to `stream` with control characters escaped."""
    return FileLogObserver(stream, event_as_text)


def twistd_stream(server_options: Any) -> IO[str]:
    """Where twistd's own text observer would write, given twistd's (parent) options."""
    get = getattr(server_options, "get", None)
    logfile = get("logfile") if get else None
    nodaemon = bool(get("nodaemon")) if get else True
    if logfile == "-" or (not logfile and nodaemon):
        return sys.stdout
    return LogFile.fromFullPath(logfile or "twistd.log")


def observer_for(
    log_format: str, server_options: Any = None, level: str = "info"
) -> ILogObserver:
    """The observer config's ``log_format`` asks for, writing where twistd would, showing
    events at ``log_level`` and above."""
    stream = twistd_stream(server_options)
    observer: ILogObserver
    observer = JsonLinesObserver(stream) if log_format == "json" else text_observer(stream)
    threshold = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    return FilteringLogObserver(observer, [threshold])


def json_observer() -> JsonLinesObserver:
    """For ``twistd --logger voicews.logs.json_observer``: JSON lines on standard output."""
    return JsonLinesObserver(sys.stdout)
