"""The builtin recognizer: PocketSphinx, decoding in a bounded pool of worker processes.

PocketSphinx holds the GIL while it decodes, so decoding in the daemon's threads would
delay every call's audio (four decoding threads: up to 315 ms).  Here each call's stream is
pinned to one of ``workers`` processes (voicews.engines.sphinxworker, started with
``reactor.spawnProcess``); the reactor only writes 20 ms frames into a pipe and parses the
transcripts that come back, in order, on its own thread.

Memory is bounded everywhere: a worker holds at most ``streams_per_worker`` decoders (about
60-70 MB each) plus ``spare_decoders`` made ahead; a stream keeps at most ``max_backlog``
seconds of audio written and not yet decoded (past that its audio is dropped, counted and
logged once, and the worker is told the gap so times stay true); ``open`` refuses a stream
(TranscriberBusy) when every worker is full.  A worker that dies fails its streams (each
stream's ``on_error``, one log line for the worker) and is started again, sooner the longer
it had lived.

The bundled model is 16 kHz: 8 kHz calls are resampled up in the worker (with a faint noise
floor where a phone line has nothing, 4-8 kHz) and decode much worse: word error rate 0.28
at 16 kHz, 0.66 at 8 kHz on the test reading (bench/asr.py), because the model's filters
reach 6.8 kHz.  An 8 kHz model is the cure; the wheel does not ship one.
"""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from twisted.internet.defer import Deferred, DeferredList, gatherResults, succeed
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from voicews.engines import sphinxworker
from voicews.engines.asr import (
    ErrorCallback,
    ResultCallback,
    TranscriberBusy,
    TranscriberError,
    Transcript,
    check_rate,
    check_samples,
)
from voicews.engines.pocketsphinx_options import (
    PocketSphinxOptions,
    known_words,
    parse_phrases,
)
from voicews.engines.sphinxworker.wire import U64, FrameReader, Kind, pack

log = Logger(namespace="voicews.engines.pocketsphinx")

WORKER = str(Path(sphinxworker.__file__).resolve().parent)
"""The worker package's folder: ``python -P WORKER <settings JSON>`` runs its __main__."""


class PocketSphinx:
    """The Transcriber: a pool of worker processes, one stream per call pinned to one."""

    name = "pocketsphinx"

    def __init__(self, options: PocketSphinxOptions | None = None, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.options = options or PocketSphinxOptions()
        self.reactor = reactor
        self.size = self.options.workers or os.cpu_count() or 1
        self.workers: list[_Worker | None] = [None] * self.size
        self.dropped_seconds = 0.0
        self._settings = json.dumps(asdict(self.options.settings()))
        self._next_sid = 0
        self._running = False
        self._respawns: dict[int, Any] = {}  # slot -> IDelayedCall
        self._failures = [0] * self.size

    # -- Transcriber ---------------------------------------------------------------------

    def check(self, *, grammar: list[str] | None = None,
              keywords: list[str] | None = None) -> None:
        phrases, spotted = parse_phrases(grammar, keywords)
        try:
            import pocketsphinx
            import soxr  # noqa: F401 - the worker resamples
        except ImportError as exc:
            raise ValueError(f"pocketsphinx cannot run: {exc} (pip install pocketsphinx)") from None
        model = Path(pocketsphinx.get_model_path("en-us"))
        for needed in ("en-us", "en-us.lm.bin", "cmudict-en-us.dict"):
            if not (model / needed).exists():
                raise ValueError(f"pocketsphinx's model is incomplete: no {model / needed}")
        words = {w for p in phrases or [k for k, _ in spotted or []] for w in p.split()}
        unknown = sorted(words - known_words(model / "cmudict-en-us.dict", words))
        if unknown:
            raise ValueError(f"words not in pocketsphinx's dictionary: {', '.join(unknown)}")

    def start(self) -> Deferred[None]:
        """Start the workers; fires when each has loaded its model and made a decoder."""
        self._running = True
        ready = [self._spawn(slot).ready for slot in range(self.size)]

        def failed(failure: Failure) -> Deferred[Any]:
            first = failure.value.subFailure  # the first worker's error, once all are stopped
            return self.stop().addCallback(lambda _: first)

        done: Deferred[Any] = gatherResults(ready, consumeErrors=True)
        return done.addCallbacks(lambda _: None, failed)

    def stop(self) -> Deferred[None]:
        """Close the workers' stdin: each flushes its open streams' finals and exits (or is
        killed after ``stop_timeout``)."""
        self._running = False
        for call in self._respawns.values():
            if call.active():
                call.cancel()
        self._respawns.clear()
        ended = [worker.stop(self.options.stop_timeout) for worker in self.workers
                 if worker is not None and not worker.dead]
        return DeferredList(ended).addCallback(lambda _: None)

    def open(self, rate: int, on_result: ResultCallback, *,
             grammar: list[str] | None = None, keywords: list[str] | None = None,
             endpointing: bool = True,
             on_error: ErrorCallback | None = None) -> PocketSphinxStream:
        rate = check_rate(rate)
        phrases, spotted = parse_phrases(grammar, keywords)
        live = [w for w in self.workers if w is not None and not w.dead and not w.stopping
                and len(w.streams) < self.options.streams_per_worker]
        if not live:
            running = sum(1 for w in self.workers if w is not None and not w.dead)
            raise TranscriberBusy(f"pocketsphinx: all {running} workers are full"
                                  if running else "pocketsphinx: no worker is running")
        worker = min(live, key=lambda w: len(w.streams))
        self._next_sid = (self._next_sid + 1) % (1 << 32)
        stream = PocketSphinxStream(self, worker, self._next_sid, rate, on_result, on_error)
        worker.streams[stream.sid] = stream
        options = {"rate": rate, "endpointing": bool(endpointing), "grammar": phrases,
                   "keywords": spotted}
        worker.send(Kind.OPEN, stream.sid, json.dumps(options).encode())
        return stream

    # -- diagnostics ---------------------------------------------------------------------

    def stats(self) -> Deferred[list[dict[str, Any]]]:
        """Each running worker's figures (pid, rss_kb, streams, decoders, cpu_seconds)."""
        asked = [w.ask_stats() for w in self.workers if w is not None and w.is_ready]
        return gatherResults(asked)

    @property
    def streams(self) -> int:
        return sum(len(w.streams) for w in self.workers if w is not None)

    # -- the pool ------------------------------------------------------------------------

    def _spawn(self, slot: int) -> _Worker:
        self._respawns.pop(slot, None)
        worker = _Worker(self, slot)
        self.workers[slot] = worker
        self.reactor.spawnProcess(
            worker, sys.executable, [sys.executable, "-P", WORKER, self._settings],
            env=dict(os.environ))
        worker.started = self.reactor.seconds()
        return worker

    def _ended(self, worker: _Worker, why: str) -> None:
        """A worker exited: its streams fail, and it is started again unless we stop."""
        lost = list(worker.streams.values())
        worker.streams.clear()
        error = TranscriberError(f"pocketsphinx worker {worker.pid} ended ({why})")
        for stream in lost:
            stream._fail(error)
        if not self._running or worker.stopping:
            return
        lived = self.reactor.seconds() - worker.started
        self._failures[worker.slot] = 0 if lived > 30 else self._failures[worker.slot] + 1
        delay = 0.0 if lived > 30 else min(30.0, 0.25 * 2 ** self._failures[worker.slot])
        log.warn("pocketsphinx worker {pid} ended ({why}) after {lived:.1f}s; {lost} streams "
                 "lost; a new one starts in {delay:.2f}s{stderr}", pid=worker.pid, why=why,
                 lived=lived, lost=len(lost), delay=delay, stderr=worker.stderr_tail())
        self._respawns[worker.slot] = self.reactor.callLater(delay, self._spawn, worker.slot)


class PocketSphinxStream:
    """One call's stream, pinned to one worker (see voicews.engines.asr.TranscriberStream)."""

    def __init__(self, engine: PocketSphinx, worker: _Worker, sid: int, rate: int,
                 on_result: ResultCallback, on_error: ErrorCallback | None) -> None:
        self.engine = engine
        self.worker = worker
        self.sid = sid
        self.rate = rate
        self.on_result = on_result
        self.on_error = on_error
        self.dropped_seconds = 0.0
        self.ended = False
        self._closing = False
        self._waiters: list[Deferred[None]] = []
        self._sent = 0  # samples written to the worker (a gap counts as written)
        self._acked = 0  # samples the worker has consumed
        self._dropping = 0  # samples dropped since the last gap was sent
        self._limit = int(engine.options.max_backlog * rate)
        self._logged_drop = False
        self._logged_callback = False

    @property
    def backlog_seconds(self) -> float:
        return (self._sent - self._acked) / self.rate

    def feed(self, samples: np.ndarray) -> None:
        samples = check_samples(samples)
        count = len(samples)
        if self.ended or self._closing or self._sent - self._acked + count > self._limit:
            self._drop(count)
            return
        if self._dropping:
            self.worker.send(Kind.GAP, self.sid, U64.pack(self._dropping))
            self._sent += self._dropping
            self._dropping = 0
        self.worker.send(Kind.AUDIO, self.sid, samples.astype("<i2", copy=False).tobytes())
        self._sent += count

    def _drop(self, count: int) -> None:
        seconds = count / self.rate
        self.dropped_seconds += seconds
        self.engine.dropped_seconds += seconds
        if self.ended or self._closing:
            return
        self._dropping += count
        if not self._logged_drop:
            self._logged_drop = True
            log.warn("pocketsphinx stream {sid} fell {backlog:.1f}s behind on worker {pid}: "
                     "audio dropped until it catches up (counted, logged once)",
                     sid=self.sid, backlog=self.backlog_seconds, pid=self.worker.pid)

    def end_utterance(self) -> None:
        if not self.ended and not self._closing:
            self.worker.send(Kind.CUT, self.sid)

    def close(self) -> Deferred[None]:
        if self.ended:
            return succeed(None)
        if not self._closing:
            self._closing = True
            self.worker.send(Kind.CLOSE, self.sid)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter

    # -- from the worker -----------------------------------------------------------------

    def _result(self, body: dict[str, Any]) -> None:
        transcript = Transcript(str(body["text"]), bool(body["final"]),
                                float(body["start"]), float(body["end"]))
        try:
            self.on_result(transcript)
        except Exception:
            if not self._logged_callback:
                self._logged_callback = True
                log.failure("transcript callback of stream {sid} raised (logged once)",
                            sid=self.sid)

    def _ack(self, consumed: int) -> None:
        self._acked = consumed

    def _done(self) -> None:
        self.ended = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _fail(self, error: TranscriberError) -> None:
        if self.ended:
            return
        self.worker.streams.pop(self.sid, None)
        self._done()
        if self.on_error is None:
            log.warn("pocketsphinx stream {sid}: {error}", sid=self.sid, error=str(error))
            return
        try:
            self.on_error(error)
        except Exception:
            log.failure("error callback of stream {sid} raised", sid=self.sid)


class _Worker(ProcessProtocol):
    """One worker process: its pipes, its streams, its health."""

    STDERR_LINES = 20

    def __init__(self, engine: PocketSphinx, slot: int) -> None:
        self.engine = engine
        self.slot = slot
        self.streams: dict[int, PocketSphinxStream] = {}
        self.ready: Deferred[None] = Deferred()
        self.is_ready = False
        self.dead = False
        self.stopping = False
        self.pid: int | None = None
        self.process: Any = None  # the IProcessTransport (zope interfaces defeat mypy)
        self.started = 0.0
        self._reader = FrameReader()
        self._stderr: deque[bytes] = deque(maxlen=8)
        self._stderr_lines = 0
        self._stats: deque[Deferred[dict[str, Any]]] = deque()
        self._ended: Deferred[None] = Deferred()
        self._kill: Any = None  # IDelayedCall

    def connectionMade(self) -> None:  # noqa: N802
        self.process = self.transport  # before spawnProcess returns
        self.pid = self.process.pid

    def send(self, kind: Kind, sid: int, payload: bytes = b"") -> None:
        """Write a frame, unless the worker's stdin is gone (it died, or it is flushing its
        streams to stop: their finals still come)."""
        if not self.dead and not self.stopping:
            self.process.write(pack(kind, sid, payload))

    def ask_stats(self) -> Deferred[dict[str, Any]]:
        answer: Deferred[dict[str, Any]] = Deferred()
        self._stats.append(answer)
        self.send(Kind.STATS, 0)
        return answer

    def outReceived(self, data: bytes) -> None:  # noqa: N802
        try:
            for kind, sid, payload in self._reader.feed(data):
                self._received(kind, sid, payload)
        except ValueError as exc:  # a broken frame: the worker is not speaking our protocol
            log.error("pocketsphinx worker {pid} sent a bad frame ({error}); killing it",
                      pid=self.pid, error=str(exc))
            self._signal("KILL")

    def _received(self, kind: int, sid: int, payload: bytes) -> None:
        stream = self.streams.get(sid)
        if kind == Kind.RESULT:
            if stream is not None:
                stream._result(json.loads(payload))
        elif kind == Kind.ACK:
            if stream is not None:
                stream._ack(U64.unpack(payload)[0])
        elif kind == Kind.CLOSED:
            if stream is not None:
                del self.streams[sid]
                stream._done()
        elif kind == Kind.FAILED:
            if stream is not None:
                stream._fail(TranscriberError(f"pocketsphinx: {payload.decode(errors='replace')}"))
        elif kind == Kind.READY:
            self.is_ready = True
            info = json.loads(payload)
            log.info("pocketsphinx worker {pid} ready in {seconds:.2f}s ({rss_mb:.0f} MB)",
                     pid=self.pid, seconds=info["load_seconds"], rss_mb=info["rss_kb"] / 1024)
            self.ready.callback(None)
        elif kind == Kind.STATS_REPLY:
            if self._stats:
                self._stats.popleft().callback(json.loads(payload))
        else:
            raise ValueError(f"unknown frame kind {kind}")

    def errReceived(self, data: bytes) -> None:  # noqa: N802
        """The worker's stderr: kept (the last lines go into the log line when it dies) and
        logged, up to a few lines a worker, so a chatty library cannot flood the log."""
        self._stderr.append(data[-2000:])
        self._stderr_lines += 1
        if self._stderr_lines <= self.STDERR_LINES:
            log.warn("pocketsphinx worker {pid}: {text}", pid=self.pid,
                     text=data.decode(errors="replace").rstrip()[-500:])

    def stderr_tail(self) -> str:
        text = b"".join(self._stderr).decode(errors="replace").strip()
        return f": {text[-600:]}" if text else ""

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        self.dead = True
        if self._kill is not None and self._kill.active():
            self._kill.cancel()
        value = reason.value
        if isinstance(value, ProcessDone):
            why = "exit 0"
        elif getattr(value, "signal", None):
            why = f"signal {value.signal}"
        else:
            why = f"exit {getattr(value, 'exitCode', '?')}"
        for answer in self._stats:
            answer.errback(TranscriberError("worker ended"))
        self._stats.clear()
        if not self.ready.called:
            self.ready.errback(TranscriberError(
                f"pocketsphinx worker {self.pid} ended before it was ready ({why})"
                f"{self.stderr_tail()}"))
        self.engine._ended(self, why)
        self._ended.callback(None)

    def stop(self, timeout: float) -> Deferred[None]:
        self.stopping = True
        self.process.closeStdin()
        self._kill = self.engine.reactor.callLater(timeout, self._signal, "KILL")
        waiter: Deferred[None] = Deferred()
        self._ended.addCallback(lambda _: waiter.callback(None))
        return waiter

    def _signal(self, name: str) -> None:
        if not self.dead:
            self.process.signalProcess(name)

