"""The transcribe step in-process, on task.Clock, with the example keypad engine.

The engine is plugins/keypad_transcriber.py (the worked example of docs/transcription.md):
it "hears" keypad tones in the caller's audio as words, decoding each frame as it comes, so
the step's whole contract can be checked deterministically: events and their times,
frames that arrive before the engine is ready, utterances cut by the engine or by a VAD's
``speech_stopped``, the last final at hang-up, and what a call gets when the engine cannot
serve it.  The same step on PocketSphinx and real speech: test_transcribe_speech.py; its
config and reloads: test_transcribe_config.py.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass

import numpy as np
import pytest
from twisted.internet import defer, task
from twisted.logger import globalLogPublisher

from voicews import Processor
from voicews.audio.files import tone
from voicews.engines.asr import TranscriberBusy, TranscriberError, TranscriberService
from voicews.processors import transcribe
from voicews.processors.echo import Echo
from voicews.processors.transcribe import Prepared, Transcribe, TranscribeParams
from voicews.testing import call_with

from conftest import REPO
from inprocess import App

RATE = 8000
FRAME = RATE // 50

_spec = importlib.util.spec_from_file_location(
    "keypad_transcriber", REPO / "plugins" / "keypad_transcriber.py")
keypad = sys.modules["keypad_transcriber"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(keypad)

ROW = dict(zip(keypad.KEYS, [r for r in keypad.ROWS for _ in range(4)], strict=True))
COLUMN = dict(zip(keypad.KEYS, keypad.COLUMNS * 4, strict=True))


def keys(*presses: tuple[str, float], seconds: float, rate: int = RATE) -> np.ndarray:
    """`seconds` of silence with each (key, at seconds) sounding for 100 ms."""
    audio = np.zeros(int(seconds * rate), np.int16)
    for key, at in presses:
        both = tone(rate, 0.1, ROW[key], 0.2).astype(np.int32) + tone(rate, 0.1, COLUMN[key], 0.2)
        start = int(at * rate)
        audio[start:start + len(both)] = both
    return audio


@dataclass(frozen=True)
class Stops:
    at: tuple[float, ...] = ()


class SyntheticVad(Processor):
    """Emits ``speech_stopped`` at given call times, as a VAD step would."""

    name = "vad"

    def __init__(self, session, params):
        super().__init__(session, params or Stops())
        self.frames = 0

    def process(self, inbound, outbound):
        self.frames += 1
        if any(self.frames == round(at * 50) for at in self.params.at):
            self.session.emit("speech_stopped", start=None, end=self.frames / 50)
        return outbound


@pytest.fixture(autouse=True)
def _fresh_log_limiter(monkeypatch):
    monkeypatch.setattr(transcribe, "LIMITER", transcribe._Limiter())


@pytest.fixture
def logged():
    lines = []

    def seen(event):
        if event.get("log_namespace") == "voicews.processors.transcribe":
            lines.append(event)

    globalLogPublisher.addObserver(seen)
    yield lines
    globalLogPublisher.removeObserver(seen)


def service(engine=None) -> TranscriberService:
    lent = TranscriberService(engine or keypad.KeypadTranscriber())
    lent.startService()
    return lent


def call(params=None, lent=None, steps=(Echo, Transcribe), vad: Stops | None = None, **kw):
    app = App()
    processors = list(steps) + ([SyntheticVad] if vad is not None else [])
    chosen = [None] * len(steps) + ([vad] if vad is not None else [])
    chosen[list(steps).index(Transcribe)] = params
    made = call_with(processors, chosen, rate=RATE, transcriber=lent or service(),
                     publish=app, **kw)
    return made, app


def feed(made, audio: np.ndarray) -> None:
    made.frames(len(audio) // FRAME, audio)


def test_keys_are_partials_then_one_final_in_call_time_and_audio_passes_untouched():
    made, app = call()
    audio = keys(("1", 1.0), ("2", 1.3), ("3", 1.6), seconds=3.0)
    feed(made, audio)
    assert app.transcripts(final=False) == [
        {"text": "one", "final": False, "start": 1.0, "end": 1.0},
        {"text": "one two", "final": False, "start": 1.0, "end": 1.3},
        {"text": "one two three", "final": False, "start": 1.0, "end": 1.6},
    ]
    # The engine's endpointing: a pause of 1 s after the last key ends the utterance.
    assert app.transcripts(final=True) == [
        {"text": "one two three", "final": True, "start": 1.0, "end": 1.7}]
    final = [e for e in app.events if e.kind == "transcript" and e.data["final"]][0]
    assert final.source == "transcribe" and final.time == pytest.approx(2.7, abs=0.03)
    assert np.array_equal(made.audio(), audio)  # untouched, one frame out per frame in


def test_partials_can_be_turned_off():
    made, app = call(Prepared.of(TranscribeParams(partials=False)))
    feed(made, keys(("5", 0.2), seconds=1.5))
    assert app.transcripts() == [{"text": "five", "final": True, "start": 0.2, "end": 0.3}]


def test_a_vad_step_cuts_the_utterances_and_the_engine_does_not():
    steps = ("vad", "transcribe")
    params = Prepared.of(TranscribeParams(), steps)
    assert params.vad and not Prepared.of(TranscribeParams()).vad
    assert not Prepared.of(TranscribeParams(endpointing="engine"), steps).vad
    audio = keys(("1", 0.5), ("2", 2.5), ("3", 5.0), seconds=6.0)
    made, app = call(params, vad=Stops(at=(3.0, 5.5)))
    feed(made, audio)
    # Pauses of 1.9 s and 2.4 s ended nothing: only speech_stopped did.
    assert [(t["text"], t["start"], t["end"]) for t in app.transcripts(final=True)] == [
        ("one two", 0.5, 2.6), ("three", 5.0, 5.1)]
    cuts = [e.time for e in app.events if e.kind == "speech_stopped"]
    finals = [e.time for e in app.events if e.kind == "transcript" and e.data["final"]]
    assert finals == cuts  # each final right at its cut
    # The same audio with the engine endpointing: three utterances.
    made, app = call(Prepared.of(TranscribeParams(endpointing="engine"), steps),
                     vad=Stops(at=(3.0, 5.5)))
    feed(made, audio)
    assert [t["text"] for t in app.transcripts(final=True)] == ["one", "two"]  # "three": at close
    made.pipeline.close("hangup")
    assert [t["text"] for t in app.transcripts(final=True)] == ["one", "two", "three"]


def test_the_last_final_comes_at_hang_up_before_call_ended():
    made, app = call()
    feed(made, keys(("9", 0.2), ("0", 0.5), seconds=0.8))
    assert not app.transcripts(final=True)
    closed = made.pipeline.close("hangup")
    assert closed.called
    assert app.kinds()[-2:] == ["transcript", "call_ended"]
    assert app.transcripts(final=True) == [
        {"text": "nine zero", "final": True, "start": 0.2, "end": 0.6}]


class SlowStart(keypad.KeypadTranscriber):
    """Workers that take a while to load: start() fires when the test says so."""

    def start(self):
        self.go = defer.Deferred()
        return self.go.addCallback(lambda _: super(SlowStart, self).start())


def test_audio_before_the_engine_is_ready_is_kept_and_times_stay_true():
    engine = SlowStart()
    lent = service(engine)
    made, app = call(lent=lent)
    feed(made, keys(("4", 1.0), seconds=2.0))
    assert not app.transcripts()
    engine.go.callback(None)  # ready: the kept audio is decoded at once
    assert app.transcripts(final=False) == [
        {"text": "four", "final": False, "start": 1.0, "end": 1.0}]
    feed(made, np.zeros(RATE, np.int16))
    assert app.transcripts(final=True)[0]["end"] == 1.1
    # Longer than WAIT_SECONDS: the oldest audio is let go, later times still true.
    engine = SlowStart()
    made, app = call(lent=service(engine))
    feed(made, keys(("1", 0.5), ("2", 6.0), seconds=6.5))
    engine.go.callback(None)
    made.pipeline.close("hangup")
    assert app.transcripts(final=True) == [
        {"text": "two", "final": True, "start": 6.0, "end": 6.1}]


class Full(keypad.KeypadTranscriber):
    def open(self, *args, **kwargs):
        raise TranscriberBusy("keypad: all 2 workers are full")


class Failing(keypad.KeypadTranscriber):
    def start(self):
        return defer.fail(TranscriberError("keypad: no such service"))


class Losing(keypad.KeypadTranscriber):
    def open(self, rate, on_result, **kwargs):
        self.on_error = kwargs["on_error"]
        return super().open(rate, on_result, **kwargs)


def test_a_call_the_engine_cannot_serve_goes_on_without_transcripts(logged):
    expected = {
        Full: ("busy", "keypad: all 2 workers are full"),
        Failing: ("unavailable", "keypad: no such service"),
    }
    clock = task.Clock()
    for cls, (reason, message) in expected.items():
        made, app = call(lent=service(cls()), clock=clock)
        audio = keys(("1", 0.2), seconds=1.5)
        feed(made, audio)
        assert [dict(e.data) for e in app.events if e.kind == "transcriber_error"] == [
            {"engine": "keypad", "reason": reason, "message": message}]
        assert not app.transcripts()
        assert np.array_equal(made.audio(), audio) and not made.wire.hangups
        assert made.pipeline.close("hangup").called
    # One line for the first; the next within LOG_EVERY is counted, not logged.
    assert len(logged) == 1 and "busy" in logged[0]["reason"]
    clock.advance(transcribe.LOG_EVERY)
    call(lent=service(Full()), clock=clock)
    assert len(logged) == 2 and "1 more calls" in logged[1]["more"]


def test_no_recognizer_lent_is_unavailable():
    app = App()
    made = call_with([Echo, Transcribe], rate=RATE, publish=app)
    made.frames(5)
    assert [e.data["reason"] for e in app.events if e.kind == "transcriber_error"] == [
        "unavailable"]


def test_a_stream_lost_mid_call_ends_its_transcripts_not_the_call(logged):
    engine = Losing()
    made, app = call(lent=service(engine))
    feed(made, keys(("1", 0.2), seconds=0.5))
    engine.on_error(TranscriberError("keypad worker 1234 ended (signal 9)"))
    feed(made, keys(("2", 0.2), seconds=2.0))
    assert [t["text"] for t in app.transcripts()] == ["one"]
    assert [dict(e.data) for e in app.events if e.kind == "transcriber_error"] == [
        {"engine": "keypad", "reason": "lost", "message": "keypad worker 1234 ended (signal 9)"}]
    assert len(made.audio()) == 125 * FRAME and not made.wire.hangups
    assert made.pipeline.close("hangup").called and len(logged) == 1


class Hanging(keypad.KeypadTranscriber):
    """A service that never answers the end of a stream."""

    def open(self, rate, on_result, **kwargs):
        stream = super().open(rate, on_result, **kwargs)
        self.later = defer.Deferred()
        stream.close = lambda: self.later
        self.stream = stream
        return stream


def test_a_final_later_than_close_timeout_is_dropped():
    engine = Hanging()
    made, app = call(lent=service(engine), close_timeout=2.0)
    feed(made, keys(("7", 0.2), seconds=0.5))
    closed = made.pipeline.close("hangup")
    made.clock.advance(1.9)
    assert not closed.called
    made.clock.advance(0.2)
    assert closed.called and app.kinds()[-1] == "call_ended"
    engine.stream.end_utterance()  # the engine answers at last
    engine.later.callback(None)
    assert app.kinds()[-1] == "call_ended" and not app.transcripts(final=True)


def test_the_goodbye_example_of_the_docs_hangs_up_on_goodbye():
    text = (REPO / "docs" / "transcription.md").read_text()
    block = next(b for b in text.split("```python\n")[1:]
                 if "class Goodbye" in b).split("```")[0]
    scope: dict = {}
    exec(compile(block, "transcription.md", "exec"), scope)  # noqa: S102 - our own docs
    made = call_with([Echo, scope["Goodbye"]], rate=RATE)
    made.pipeline.session.emit("transcript", text="thanks bye", final=True, start=0, end=1)
    made.pipeline.session.emit("transcript", text="goodbye", final=False, start=1, end=2)
    assert not made.wire.hangups
    made.pipeline.session.emit("transcript", text="ok goodbye then", final=True, start=1, end=2)
    assert made.wire.hangups == [(1000, "the caller said goodbye", "hangup_step")]


class RefusingGrammar(keypad.KeypadTranscriber):
    """Fails the stream while opening it (as a worker that rejects a grammar does)."""

    def open(self, rate, on_result, **kwargs):
        stream = super().open(rate, on_result, **kwargs)
        kwargs["on_error"](TranscriberError("keypad: grammar refused"))
        return stream


def test_a_stream_failed_while_opening_is_not_fed():
    made, app = call(lent=service(RefusingGrammar()))
    feed(made, keys(("1", 0.2), seconds=1.5))
    assert [e.data["reason"] for e in app.events if e.kind == "transcriber_error"] == ["lost"]
    step = made.pipeline.processors[1]
    assert step.stream is None and not app.transcripts()
