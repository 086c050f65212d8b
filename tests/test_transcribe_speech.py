"""The transcribe step on real speech and the real PocketSphinx pool, in-process.

The pipeline is the real one (voicews.testing) on a task.Clock; the engine's worker
processes run on trial's global reactor, which reaps them and reports their end.  Audio is
fed as fast as the workers decode it (under half a second of backlog), not in real time:
the real-time behaviour (transcripts while the call runs) is test_transcribe_daemon.py's.

- A VAD drives the utterances: a step running the real voice activity detector
  (voicews.engines.vad, as the ``vad`` processor does) emits ``speech_stopped``; the
  stream is opened with ``endpointing=False``, so every final comes from one of those cuts.
- A worker that dies, and a pool that is full: the documented ``transcriber_error``, one
  log line, and the call goes on.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
from twisted.internet import defer, task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from voicews import Processor
from voicews.audio.files import load_audio
from voicews.engines.asr import TranscriberService, word_error_rate
from voicews.engines.pocketsphinx import PocketSphinx, PocketSphinxOptions
from voicews.engines.vad import VoiceActivity
from voicews.processors import transcribe
from voicews.processors.echo import Echo
from voicews.processors.transcribe import Prepared, Transcribe, TranscribeParams
from voicews.testing import call_with

from inprocess import (
    App,
    give_back_signals,  # noqa: F401 - an autouse fixture
    wait_until,
)

SPEECH = Path(__file__).parent / "data" / "speech"
REFERENCE = (SPEECH / "two_cities.txt").read_text().strip()
RATE = 16000
FRAME = RATE // 50


class VadStep(Processor):
    """The voice activity detector as a step: ``speech_started``/``speech_stopped``."""

    name = "vad"

    def __init__(self, session, params):
        super().__init__(session, params)
        self.activity = VoiceActivity(session.rate)
        self.started = None

    def process(self, inbound, outbound):
        for change in self.activity.feed(inbound):
            if change.kind == "speech_started":
                self.started = change.time
                self.session.emit("speech_started", start=change.time)
            else:
                self.session.emit("speech_stopped", start=self.started, end=change.time)
        return outbound


class Caller:
    """A call through the real pipeline, its audio fed as fast as its stream decodes."""

    def __init__(self, lent, samples, steps=(Echo, Transcribe), params=None, clock=None):
        self.app = App()
        chosen = [params if cls is Transcribe else None for cls in steps]
        self.call = call_with(list(steps), chosen, rate=RATE, transcriber=lent,
                              publish=self.app, clock=clock or task.Clock())
        self.step = next(p for p in self.call.pipeline.processors if isinstance(p, Transcribe))
        self.samples = samples
        self.fed = 0

    def feed(self, until: float | None = None) -> defer.Deferred:
        end = len(self.samples) if until is None else int(until * RATE)

        def tick() -> None:
            stream = self.step.stream
            while self.fed < end and (stream is None or stream.backlog_seconds < 0.5):
                self.call.frames(1, self.samples[self.fed:self.fed + FRAME])
                self.fed += FRAME
            if self.fed >= end:
                loop.stop()

        loop = task.LoopingCall(tick)
        return loop.start(0.01).addCallback(lambda _: self)

    def hang_up(self) -> defer.Deferred:
        return self.call.pipeline.close("hangup")


class SpeechCase(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def lent(self, **options):
        engine = PocketSphinx(PocketSphinxOptions(**options))
        lent = TranscriberService(engine)
        lent.startService()
        self.addCleanup(lent.stopService)
        yield lent.when_ready()
        return lent


class VadDriven(SpeechCase):
    @defer.inlineCallbacks
    def test_the_vad_cuts_every_utterance_of_the_reading(self):
        lent = yield self.lent(workers=1)
        params = Prepared.of(TranscribeParams(), steps=("echo", "vad", "transcribe"))
        # The first 21.5 s: ten phrases, "it was the best of times ... winter of despair".
        said = REFERENCE[:REFERENCE.index("despair") + len("despair")]
        caller = Caller(lent, load_audio(SPEECH / "two_cities.wav", RATE)[:int(21.5 * RATE)],
                        steps=(Echo, VadStep, Transcribe), params=params)
        yield caller.feed()
        app = caller.app
        stops = app.of("speech_stopped")
        yield wait_until(lambda: len(app.finals()) >= len(stops))
        finals = app.finals()  # the cuts' (the hang-up may add one for "we had...")
        yield caller.hang_up()
        text = " ".join(t["text"] for t in finals)
        wer = word_error_rate(said, text)
        print(f"VAD-driven: {len(stops)} cuts, {len(finals)} finals, word error rate {wer:.3f}")
        assert wer <= 0.40, text
        assert len(stops) >= 5  # the reading's pauses (and a click before it)
        # The engine cut nothing itself: every final answers a cut (never two finals
        # without a cut between them), and its words lie between the end of the previous
        # utterance the VAD saw and the end of this one.
        order = [e for e in app.events if e.kind == "speech_stopped"
                 or (e.kind == "transcript" and e.data["final"])][:len(stops) + len(finals)]
        cuts: list[dict] = []
        answered = False
        for event in order:
            if event.kind == "speech_stopped":
                cuts.append(dict(event.data))
                answered = False
                continue
            assert cuts and not answered, order
            answered = True
            final = dict(event.data)
            after = cuts[-2]["end"] if len(cuts) > 1 else 0.0
            if final["text"]:
                assert after - 0.3 <= final["start"] and final["end"] <= cuts[-1]["end"] + 0.3, (
                    final, cuts[-2:])
        # The call's audio went through untouched, frame for frame.
        assert np.array_equal(caller.call.audio()[:len(caller.samples)], caller.samples)


class Failures(SpeechCase):
    def setUp(self):
        self.patch(transcribe, "LIMITER", transcribe._Limiter())
        self.logged = []
        globalLogPublisher.addObserver(self._seen)
        self.addCleanup(globalLogPublisher.removeObserver, self._seen)

    def _seen(self, event) -> None:
        if event.get("log_namespace", "").startswith(("voicews.processors.transcribe",
                                                      "voicews.engines.pocketsphinx")) \
                and event.get("log_level").name in ("warn", "error"):
            self.logged.append(event)

    @defer.inlineCallbacks
    def test_a_killed_worker_ends_the_transcripts_not_the_calls(self):
        lent = yield self.lent(workers=1)
        clip = load_audio(SPEECH / "two_cities.wav", RATE)[:8 * RATE]
        clock = task.Clock()
        callers = [Caller(lent, clip, clock=clock) for _ in range(2)]
        yield defer.gatherResults([c.feed(until=5.0) for c in callers])
        yield wait_until(lambda: all(c.app.finals() for c in callers))
        worker = callers[0].step.stream.worker
        os.kill(worker.pid, signal.SIGKILL)  # our own child
        yield wait_until(lambda: all(c.app.of("transcriber_error") for c in callers))
        for caller in callers:
            [error] = caller.app.of("transcriber_error")
            assert error["engine"] == "pocketsphinx" and error["reason"] == "lost", error
            assert f"worker {worker.pid} ended (signal 9)" in error["message"]
            heard = len(caller.app.of("transcript"))
            yield caller.feed()  # the rest of the call: audio flows, no transcript
            assert len(caller.app.of("transcript")) == heard
            assert np.array_equal(caller.call.audio(), clip) and not caller.call.wire.hangups
            assert (yield caller.hang_up()) is None
        # One line from the engine (the worker), one from the step (both calls).
        assert sorted(e["log_namespace"] for e in self.logged) == [
            "voicews.engines.pocketsphinx", "voicews.processors.transcribe"], self.logged
        [line] = [e for e in self.logged if e["log_namespace"].endswith("transcribe")]
        assert line["reason"] == "lost" and "signal 9" in line["error"]
        # The pool starts a new worker; the next call is transcribed again.
        engine = lent.transcriber
        yield wait_until(lambda: engine.workers[0] is not worker and engine.workers[0].is_ready)
        fresh = Caller(lent, clip[:3 * RATE])
        yield fresh.feed()
        yield fresh.hang_up()
        assert fresh.app.finals()[0]["text"].startswith("it was the best"), fresh.app.events

    @defer.inlineCallbacks
    def test_a_full_pool_refuses_a_call_which_goes_on(self):
        lent = yield self.lent(workers=1, streams_per_worker=1, spare_decoders=0)
        clip = load_audio(SPEECH / "two_cities.wav", RATE)[:3 * RATE]
        first, second = Caller(lent, clip), Caller(lent, clip)
        yield defer.gatherResults([first.feed(), second.feed()])
        yield defer.gatherResults([first.hang_up(), second.hang_up()])
        assert first.app.finals()[0]["text"].startswith("it was the best")
        assert second.app.of("transcriber_error") == [{
            "engine": "pocketsphinx", "reason": "busy",
            "message": "pocketsphinx: all 1 workers are full"}]
        assert not second.app.of("transcript")
        assert np.array_equal(second.call.audio(), clip) and not second.call.wire.hangups
        assert len(self.logged) == 1
