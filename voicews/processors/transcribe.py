"""transcribe: the caller's speech as text, live, as ``transcript`` events.

Every inbound frame goes to the daemon's speech recognizer (config.yaml's ``transcribe:``;
the builtin PocketSphinx decodes in worker processes), which answers on the reactor: the
step only writes frames and turns results into events, so no call's audio waits for it.
It passes audio through untouched; put it anywhere in the pipeline.

Events, to the other steps and to the app:

- ``transcript`` ``{"text", "final", "start", "end"}``: partials (``final: false``, the
  engine's best guess so far, replaced by the next) while the caller speaks, then one final
  per utterance (never revised; its text may be empty when partials turn out to have been
  noise).  ``start``/``end``: seconds of caller audio from the call's first frame, the
  same clock as ``vad``'s ``speech_started``/``speech_stopped``.
- ``transcriber_error`` ``{"engine", "reason", "message"}``: this call gets no (more)
  transcripts; ``reason`` is ``busy`` (every worker full), ``lost`` (the engine lost the
  stream: a worker died) or ``unavailable`` (the engine could not start).  Logged once
  (rate-limited over calls); the call itself goes on.

Utterances end where the engine's endpointer says, or, with ``endpointing: vad`` (the
default when the pipeline has a ``vad`` step), where the VAD's ``speech_stopped`` says.
The last final is delivered when the call ends, before ``call_ended`` (bounded by
``limits.close_timeout``: a final later than that is dropped).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from voicews import Event, PrepareContext, Processor, Session, hookimpl
from voicews.audio.samples import FRAME_SECONDS
from voicews.engines.asr import Transcriber, TranscriberBusy, TranscriberError, Transcript

log = Logger(namespace="voicews.processors.transcribe")

WAIT_SECONDS = 5.0
"""Caller audio kept while the engine is still starting (its workers loading the model at
daemon start); older audio is let go, and transcript times stay true to the call."""

LOG_EVERY = 10.0
"""Seconds between two log lines about calls left without transcripts (a full pool would
otherwise log every new call)."""


@dataclass(frozen=True)
class TranscribeParams:
    """``transcribe``'s parameters in config.yaml."""

    grammar: list[str] | None = None
    """The caller says one of these phrases (a menu: ``["billing", "sales"]``); a final is
    the phrase recognized.  Words must be in the engine's dictionary (checked at load)."""
    keywords: list[str] | None = None
    """Pick these phrases out of free speech: each one heard is a final of its own
    (``"customer support /1e-20/"`` sets a detection threshold, PocketSphinx)."""
    endpointing: Literal["auto", "engine", "vad"] = "auto"
    """Who ends an utterance: the engine's endpointer, or a VAD step's ``speech_stopped``
    events; ``auto``: ``vad`` when the pipeline has a ``vad`` step."""
    partials: bool = True
    """Emit partial transcripts (false: finals only)."""


@dataclass(frozen=True)
class Prepared:
    grammar: list[str] | None = None
    keywords: list[str] | None = None
    vad: bool = False
    partials: bool = True

    @classmethod
    def of(cls, params: TranscribeParams, steps: tuple[str, ...] = ()) -> Prepared:
        vad = params.endpointing == "vad" or (params.endpointing == "auto" and "vad" in steps)
        return cls(params.grammar, params.keywords, vad, params.partials)


class Transcribe(Processor):
    """One call's stream into the daemon's recognizer; its results as events."""

    name = "transcribe"
    Params = TranscribeParams

    @classmethod
    def prepare(cls, params: TranscribeParams, context: PrepareContext) -> Prepared:
        if context.transcriber is None:
            raise ValueError("no speech recognizer is configured")
        context.transcriber.require(grammar=params.grammar, keywords=params.keywords)
        return Prepared.of(params, context.steps)

    def __init__(self, session: Session, params: Prepared | TranscribeParams | None) -> None:
        if not isinstance(params, Prepared):
            params = Prepared.of(params or TranscribeParams())
        super().__init__(session, params)
        self.stream: Any = None
        self.engine = "none"
        self.waiting: deque[np.ndarray] | None = deque(
            maxlen=round(WAIT_SECONDS / FRAME_SECONDS))
        self.skipped = 0  # frames let go before the first one fed
        self.offset = 0.0  # seconds of call audio before the stream's time 0
        self.ended = False
        self.abandoned = False

    def start(self) -> None:
        lent = self.session.transcriber
        if lent is None:
            self._give_up("unavailable", "no speech recognizer is configured for this call")
            return
        self.engine = lent.transcriber.name
        lent.when_ready().addCallbacks(self._open, self._not_started)

    def _open(self, transcriber: Transcriber) -> None:
        if self.ended or self.waiting is None:
            return
        params = self.params
        try:
            stream = transcriber.open(
                self.session.rate, self._result, grammar=params.grammar,
                keywords=params.keywords, endpointing=not params.vad, on_error=self._lost)
        except TranscriberBusy as exc:
            self._give_up("busy", str(exc))
            return
        except (TranscriberError, ValueError) as exc:
            self._give_up("unavailable", str(exc))
            return
        waiting, self.waiting = self.waiting, None
        if waiting is None:  # the engine failed the stream while opening it
            return
        self.stream = stream
        self.offset = self.skipped * FRAME_SECONDS
        for frame in waiting:
            stream.feed(frame)

    def _not_started(self, failure: Failure) -> None:
        if not self.ended:
            self._give_up("unavailable", str(failure.value))

    def process(self, inbound: np.ndarray, outbound: np.ndarray | None) -> np.ndarray | None:
        if self.stream is not None:
            self.stream.feed(inbound)
        elif self.waiting is not None:
            if len(self.waiting) == self.waiting.maxlen:
                self.skipped += 1
            self.waiting.append(inbound.copy())  # only until the engine is ready
        return outbound

    def on_event(self, event: Event) -> None:
        if event.kind == "speech_stopped" and self.params.vad and self.stream is not None:
            self.stream.end_utterance()

    def _result(self, transcript: Transcript) -> None:
        if self.abandoned or (not transcript.final and not self.params.partials):
            return
        self.session.emit("transcript", text=transcript.text, final=transcript.final,
                          start=round(self.offset + transcript.start, 3),
                          end=round(self.offset + transcript.end, 3))

    def _lost(self, error: TranscriberError) -> None:
        self.stream = None
        if not self.abandoned:
            self._give_up("lost", str(error))

    def _give_up(self, reason: str, message: str) -> None:
        """No transcripts for this call from now on: the app is told, the log once."""
        self.waiting = None
        self.stream = None
        LIMITER.log(self.session, self.engine, reason, message)
        self.session.emit("transcriber_error", engine=self.engine, reason=reason,
                          message=message)

    def close(self) -> Deferred[None] | None:
        """The last final, delivered before the call's end (or dropped after
        ``limits.close_timeout``, when the pipeline gives up on this step)."""
        self.ended = True
        self.waiting = None
        stream, self.stream = self.stream, None
        if stream is None:
            return None

        def abandon(d: Deferred[None]) -> None:
            self.abandoned = True
            d.callback(None)  # the pipeline already logs the step that was too slow

        done: Deferred[None] = Deferred(abandon)
        stream.close().addBoth(lambda _: None if done.called else done.callback(None))
        return done


class _Limiter:
    """One log line per LOG_EVERY seconds about calls left without transcripts."""

    def __init__(self) -> None:
        self.last = -LOG_EVERY
        self.quiet = 0

    def log(self, session: Session, engine: str, reason: str, message: str) -> None:
        now = session.clock.seconds()
        if now - self.last < LOG_EVERY:
            self.quiet += 1
            return
        more = f" ({self.quiet} more calls since the last line)" if self.quiet else ""
        self.last, self.quiet = now, 0
        log.warn("transcribe: no transcripts for call {uuid}, speech recognizer {engine} "
                 "{reason}: {error}; the call goes on{more}", uuid=session.info.uuid,
                 engine=engine, reason=reason, error=message, more=more)


LIMITER = _Limiter()


@hookimpl
def register_processors(register):
    register(Transcribe)
