"""What the daemon lends every call, and what the call layer gives the pipeline to answer with.

The pipeline never imports the socket, the web side or the runtime: the runtime
fills in a :class:`CallServices` (clock, worker threads, HTTP client, the app's
event sinks, the plugin hooks), the call socket implements :class:`CallLink`,
and tests build both from ``task.Clock`` and plain lists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

if TYPE_CHECKING:
    from voicews.pipeline.events import Event
    from voicews.pipeline.info import CallInfo
    from voicews.pipeline.session import Session


class CallLink(Protocol):
    """The way back to the caller; the call socket implements it."""

    def send_audio(self, frame: bytes) -> None:
        """Send exactly one 20 ms frame."""

    def send_text(self, message: str) -> None:
        """Send one JSON command (``clear``, ``notify``)."""

    def hangup(self, code: int, reason: str, outcome: str) -> None:
        """End the call: close the socket with `code` and `reason`, counted as `outcome`."""


def _run_here(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(fn, *args, **kwargs)


def _no_http() -> Any:
    raise RuntimeError("no HTTP client in this context")


def _nowhere(info: CallInfo, event: Event) -> None:
    return None


def _nothing(*args: Any) -> None:
    return None


@dataclass(frozen=True)
class CallServices:
    """Process-wide things a call's pipeline and its steps may use.

    The defaults run work in the calling thread and send events nowhere: what
    in-process tests of a pipeline need.  The daemon's Runtime makes the real
    one (and a new one when a reload changes the limits; live calls keep theirs).
    """

    clock: IReactorTime
    run_in_thread: Callable[..., defer.Deferred[Any]] = _run_here
    """Run ``fn(*args, **kwargs)`` off the reactor; a Deferred fires with its result."""
    http: Callable[[], Any] = _no_http
    """The shared asynchronous HTTP client (a ``treq.HTTPClient``), made on first use."""
    publish: Callable[[CallInfo, Event], None] = _nowhere
    """Hand one call event to the application (HTTP callbacks, ``/events``)."""
    call_started: Callable[[Session], None] = _nothing
    call_ended: Callable[[Session, str], None] = _nothing
    transcriber: Any = None
    """The daemon's speech recognizer (a ``voicews.engines.asr.TranscriberService``), when
    a pipeline needs one; None otherwise."""
    tts: Any = None
    """The daemon's text-to-speech engine for ``session.say`` (a
    ``voicews.engines.tts.TextToSpeech``: ``synthesize(text, rate, voice, **options)``)."""
    max_lead_seconds: float = 1.0
    max_buffer_seconds: float = 60.0
    close_timeout: float = 5.0
