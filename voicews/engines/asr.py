"""Speech to text: the engine interface every recognizer implements, and what they share.

The ``transcribe`` processor holds one `Transcriber` (the builtin PocketSphinx pool, or a
cloud engine a plugin registers) and opens one `TranscriberStream` per call.  The processor
only ever feeds 20 ms frames and reads `Transcript`s, so an engine may decode in worker
processes, threads or a remote service, as long as it keeps these promises:

- ``feed`` never blocks the reactor and never holds more than a bounded backlog of audio:
  past the bound it drops audio, counts it (``dropped_seconds``) and logs once;
- results reach ``on_result`` on the reactor thread, in order, per stream: partial
  transcripts while the caller speaks (when the engine can, a few a second at most), then
  one final transcript per utterance;
- an utterance ends at ``end_utterance()`` (a VAD step saw the caller stop) or, when the
  stream was opened with ``endpointing=True``, where the engine's own endpointer says;
- ``close()`` delivers the last final transcript before its Deferred fires;
- an engine that loses a stream (its worker died, the service hung up) calls ``on_error``
  once and drops what it is fed after that; ``close()`` still fires.

Times are seconds of the stream's own audio: 0 is the first sample fed, so a transcript
of a call can be placed against the call's recording.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from voicews.audio.samples import RATES

log = Logger(namespace="voicews.engines.asr")


@dataclass(frozen=True)
class Transcript:
    """What the caller said between `start` and `end` (seconds of stream audio).

    A partial (``final=False``) is the engine's best guess so far and is replaced by the
    next partial or by the final of the same utterance; a final is never revised.
    """

    text: str
    final: bool
    start: float
    end: float


class TranscriberError(Exception):
    """A stream lost its engine at run time (a worker process died, a service hung up),
    as opposed to ValueError for bad input (rate, grammar, samples)."""


class TranscriberBusy(TranscriberError):
    """`open` found no room: every worker holds as many streams as it may (memory is
    bounded), or none is running.  The call goes on without a transcript."""


ResultCallback = Callable[[Transcript], None]
ErrorCallback = Callable[[TranscriberError], None]


@runtime_checkable
class TranscriberStream(Protocol):
    """One call's audio going into an engine, and its transcripts coming out."""

    dropped_seconds: float
    """Audio fed but thrown away because the engine fell behind (or the stream had ended)."""

    @property
    def backlog_seconds(self) -> float:
        """Audio fed and not yet decoded: what `feed` will let grow up to its bound."""
        ...

    def feed(self, samples: np.ndarray) -> None:
        """Take int16 mono samples at the stream's rate (a 20 ms frame, usually).

        Returns at once.  Raises ValueError for samples that are not 1-D int16.
        """
        ...

    def end_utterance(self) -> None:
        """The caller stopped speaking (a VAD says so): finalize the utterance now."""
        ...

    def close(self) -> Deferred[None]:
        """No more audio: the last final transcript is delivered, then the stream's
        resources are released and the Deferred fires (it never fails)."""
        ...


@runtime_checkable
class Transcriber(Protocol):
    """A speech recognizer: process-wide resources and a stream per call."""

    name: str
    """Short name for logs, metrics and config.yaml (``pocketsphinx``)."""

    def check(self, *, grammar: list[str] | None = None,
              keywords: list[str] | None = None) -> None:
        """Raise ValueError with a one-line reason when the engine cannot run here (missing
        package or model) or cannot recognize this grammar or these keywords (a word it
        does not know).  Called when config.yaml is loaded; may block briefly."""
        ...

    def start(self) -> Deferred[None]:
        """Start process-wide resources (worker processes, connections); fires when
        streams can be opened, fails (TranscriberError) when the engine cannot start."""
        ...

    def stop(self) -> Deferred[None]:
        """Release them: open streams are flushed where the engine can, then ended."""
        ...

    def open(self, rate: int, on_result: ResultCallback, *,
             grammar: list[str] | None = None, keywords: list[str] | None = None,
             endpointing: bool = True,
             on_error: ErrorCallback | None = None) -> TranscriberStream:
        """A stream for one call at `rate` (8000, 16000 or 24000).

        `grammar`: the caller says one of these phrases (menu answers); `keywords`: pick
        these phrases out of free speech; neither: free dictation.  `endpointing=False`
        when a VAD step drives `end_utterance()`, so the engine does not cut utterances
        itself.  Raises ValueError for bad arguments and TranscriberBusy when full.
        """
        ...


class TranscriberService(Service):
    """Any Transcriber as a Twisted service: started and stopped with the daemon.

    Calls may arrive while the engine is still starting (workers loading their model):
    ``when_ready()`` tells a call when it may open a stream, or that it never will (the
    engine failed to start, or the service stopped)."""

    def __init__(self, transcriber: Transcriber) -> None:
        self.transcriber = transcriber
        self.setName(f"transcriber-{transcriber.name}")
        self.ready = False
        self.failure: TranscriberError | None = None
        """Why streams cannot be opened (a failed start, a stop), or None."""
        self._waiting: list[Deferred[Transcriber]] = []

    def when_ready(self) -> Deferred[Transcriber]:
        """Fires with the transcriber once it has started (at once if it has); fails with
        TranscriberError when it cannot start or the service stopped first."""
        if self.ready:
            return succeed(self.transcriber)
        if self.failure is not None:
            return fail(self.failure)
        waiter: Deferred[Transcriber] = Deferred()
        self._waiting.append(waiter)
        return waiter

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self.failure = None
        self.started = maybeDeferred(self.transcriber.start)
        self.started.addCallbacks(self._started, self._failed)

    def _started(self, _: object) -> None:
        if self.running:
            self.ready = True
            self._settle()

    def _failed(self, failure: Failure) -> None:
        error = failure.value
        if not isinstance(error, TranscriberError):
            error = TranscriberError(f"{self.transcriber.name} failed to start: "
                                     f"{type(error).__name__}: {error}")
        log.error("speech recognizer {engine} failed to start: {error}; calls go on without "
                  "transcripts", engine=self.transcriber.name, error=str(error))
        self.failure = error
        self._settle()

    def _settle(self) -> None:
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if self.ready:
                waiter.callback(self.transcriber)
            else:
                assert self.failure is not None
                waiter.errback(self.failure)

    def stopService(self) -> Deferred[None]:  # noqa: N802
        super().stopService()
        self.ready = False
        self.failure = TranscriberError(f"{self.transcriber.name} has stopped")
        self._settle()
        return self.transcriber.stop()


def check_rate(rate: object) -> int:
    """`rate` when it is a call rate, else ValueError."""
    if type(rate) is not int or rate not in RATES:
        raise ValueError(f"rate must be one of {', '.join(map(str, RATES))}, got {rate!r}")
    return rate


def check_samples(samples: object) -> np.ndarray:
    """`samples` as a 1-D int16 array (no copy), else ValueError: floats are refused
    rather than silently truncated."""
    if not isinstance(samples, np.ndarray) or samples.ndim != 1 or samples.dtype.kind != "i" \
            or samples.dtype.itemsize != 2:
        what = samples.dtype if isinstance(samples, np.ndarray) else type(samples).__name__
        raise ValueError(f"samples must be a 1-D int16 array, got {what}")
    return samples


_WORD = re.compile(r"[a-z][a-z']*")


def phrase_words(phrase: object, what: str) -> list[str]:
    """The lower-case words of a grammar phrase or keyword, else ValueError.

    Engines match words, not punctuation, so "Customer Support!" is refused rather than
    guessed at; apostrophes stay ("don't").
    """
    if not isinstance(phrase, str):
        raise ValueError(f"{what} must be strings, got {type(phrase).__name__}")
    words = phrase.lower().split()
    bad = [w for w in words if not _WORD.fullmatch(w)]
    if not words or bad:
        raise ValueError(f"{what} {phrase!r}: use letters and apostrophes only")
    return words


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / words in `reference`, over words split on
    white space: the usual measure of a recognizer against a known text."""
    ref, hyp = reference.split(), hypothesis.split()
    if not ref:
        return float(bool(hyp))
    previous = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, said in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1,
                             previous[j - 1] + (word != said))
        previous = current
    return previous[-1] / len(ref)
