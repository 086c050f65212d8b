"""The session: what a processor may know about and do to its call.

Every step gets its own :class:`Session` on the same call, so what a step plays
enters the mix bus *at that step* and what it emits is not delivered back to it.
The call's own session (``position`` 0, the head of the bus) is what plugin hooks
and the application use.  A session never sees the socket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorTime

    from voicews.pipeline.info import CallInfo
    from voicews.pipeline.playback import Playback


class Call(Protocol):
    """What a session acts on: the call's running pipeline (voicews.pipeline.pipeline)."""

    info: CallInfo
    clock: IReactorTime

    @property
    def frames_in(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    @property
    def frames_out(self) -> int: ...
    def http(self) -> Any: ...
    def transcriber(self) -> Any: ...
    def call_time(self) -> float: ...
    def queued_seconds(self, position: int) -> float: ...
    def play(self, position: int, samples: Any, replace: bool = False,
             label: str | None = None) -> Playback: ...
    def say(self, position: int, text: str, voice: str | None,
            options: dict[str, Any]) -> Deferred[Playback]: ...
    def playing(self) -> list[Playback]: ...
    def emit(self, position: int, source: str, kind: str, data: dict[str, Any]) -> None: ...
    def notify(self, position: int, payload: Any) -> None: ...
    def clear(self) -> list[Playback]: ...
    def hangup(self, code: int, reason: str, outcome: str) -> None: ...
    def run_in_thread(self, fn: Any, *args: Any, **kwargs: Any) -> Deferred[Any]: ...


class Session:
    """One step's (or the call's own) handle on a live call."""

    __slots__ = ("_pipeline", "_position", "name")

    def __init__(self, pipeline: Call, position: int, name: str) -> None:
        self._pipeline = pipeline
        self._position = position
        self.name = name
        """The step's processor name, or ``"app"`` for the call's own session."""

    def _move(self, call: Call) -> None:
        """Act on `call` from now on (``Pipeline.switch`` retires a step's session)."""
        self._pipeline = call

    # -- what a step may know ------------------------------------------------------------

    @property
    def info(self) -> CallInfo:
        """The call: ``rate``, ``uuid``, ``conversation_uuid``, ``headers``, ``pipeline``..."""
        return self._pipeline.info

    @property
    def rate(self) -> int:
        return self._pipeline.info.rate

    @property
    def clock(self) -> IReactorTime:
        """The reactor's clock (``callLater``, ``seconds``); tests give a ``task.Clock``."""
        return self._pipeline.clock

    @property
    def http(self) -> Any:
        """The daemon's shared asynchronous HTTP client (``treq``'s API: get, post, ...)."""
        return self._pipeline.http()

    @property
    def transcriber(self) -> Any:
        """The daemon's speech recognizer, a ``voicews.engines.asr.TranscriberService``
        (``when_ready()`` fires with the Transcriber to ``open`` a stream on), or None when
        no step of the config asked for one (see the ``transcribe`` processor)."""
        return self._pipeline.transcriber()

    @property
    def frames_in(self) -> int:
        """Frames received from the caller so far."""
        return self._pipeline.frames_in

    @property
    def frames_out(self) -> int:
        """Frames sent to the caller so far."""
        return self._pipeline.frames_out

    @property
    def time(self) -> float:
        """Seconds since the call started (its first message)."""
        return self._pipeline.call_time()

    @property
    def queued_seconds(self) -> float:
        """Audio this step played that has not gone out yet, plus what Vonage has not
        played yet: how far ahead the call's output is (backpressure for a bot)."""
        return self._pipeline.queued_seconds(self._position)

    @property
    def playing(self) -> list[Playback]:
        """What of ours the caller hears now or will (every step's ``play`` and ``say``),
        oldest first: empty when nothing is playing.  See :class:`voicews.Playback`."""
        return self._pipeline.playing()

    @property
    def closed(self) -> bool:
        """The call has ended: what this session does now is ignored."""
        return self._pipeline.closed

    # -- what a step may do --------------------------------------------------------------

    def play(self, samples: np.ndarray, *, replace: bool = False,
             label: str | None = None) -> Playback:
        """Play int16 samples (any length, at the call's rate) from this step onwards.

        They are mixed into this step's output one frame at a time from the next
        frame, after anything this step played before, and pass through every later
        step.  With ``replace=True`` they take the place of this step's output
        while they last.  Callable any time (from ``process`` or a Deferred).

        Returns a :class:`voicews.Playback` (``label`` names it in ``barge_in`` events):
        how much the caller has heard (``heard``), whether a clear cut it short
        (``outcome``), and ``extend(samples)`` to stream more of the same reply.
        """
        return self._pipeline.play(self._position, samples, replace, label)

    def say(self, text: str, *, voice: str | None = None,
            **options: Any) -> Deferred[Playback]:
        """Speak `text` to the caller with the daemon's text-to-speech engine (``tts:``).

        Synthesized off the reactor at the call's rate (repeated texts come from the
        engine's cache), then played like ``play`` from this step onwards, after what
        this step said before (in the order asked) and followed by a notify.  `voice`
        (default: ``tts.voice``, else the engine's own) and `options` (espeak-ng:
        ``speed``, ``pitch``, ``amplitude``, ``word_gap``) go to the engine.

        The Deferred fires with the :class:`voicews.Playback` once it has finished:
        ``outcome`` is ``"played"`` when Vonage's notify for it came back (all heard),
        ``"interrupted"`` when a clear (a barge-in, ``session.clear``, a DTMF stop)
        dropped it, with ``heard`` saying how many seconds the caller heard (0 when it
        was still being synthesized), and ``"ended"`` when the call ended first (or
        this step was switched out with its pipeline).  It
        fails, with nothing played, on bad input (ValueError: text too long, unknown
        voice or option) or when the engine fails (voicews.engines.tts.SpeechError).
        """
        return self._pipeline.say(self._position, text, voice, options)

    def emit(self, kind: str, **data: Any) -> None:
        """Tell every other step (``on_event``, in pipeline order) and the app about `kind`."""
        self._pipeline.emit(self._position, self.name, kind, data)

    def notify(self, payload: Any) -> None:
        """Ask Vonage to send `payload` back (a ``notify`` event) once the caller has heard
        everything this step played or passed on before now."""
        self._pipeline.notify(self._position, payload)

    def clear(self) -> list[Playback]:
        """Barge-in: drop all audio queued for the caller, ours and Vonage's.

        Every playback still on its way (``play``, ``say``) ends as interrupted, with
        what the caller heard of it frozen; those are returned, oldest first.
        """
        return self._pipeline.clear()

    def hangup(self, code: int = 1000, reason: str = "") -> None:
        """End the call (the socket is closed with `code`); counted as ``hangup_<name>``."""
        outcome = "hangup_app" if self._position == 0 else "hangup_step"
        self._pipeline.hangup(code, reason or f"hung up by {self.name}", outcome)

    def run_in_thread(self, fn: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Run ``fn(*args, **kwargs)`` in a worker thread; the Deferred fires on the reactor.

        One at a time per call, in the order asked, so results come back in call
        order (a recognizer fed frame by frame).  For work that holds the GIL for
        long (a model in pure Python), use a process instead (see voicews.engines).
        """
        return self._pipeline.run_in_thread(fn, *args, **kwargs)
