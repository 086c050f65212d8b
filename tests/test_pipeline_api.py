"""The processor API in-process, on task.Clock: the mix bus, events, lifecycle, ordered work.

Each test builds the real pipeline (voicews.testing) with small processors and checks
what would have gone to Vonage, frame by frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from twisted.internet import defer

from voicews import Event, Processor
from voicews.audio.samples import saturate
from voicews.processors.echo import Echo
from voicews.processors.gain import Gain, GainTable
from voicews.testing import call_with

RATE = 8000
N = 160  # samples per 20 ms frame at 8 kHz


def voice(frames: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(-8000, 8000, frames * N).astype("<i2")


def tone(samples: int, level: int = 3000) -> np.ndarray:
    return (level * np.sin(np.arange(samples) * 2 * np.pi * 440 / RATE)).astype("<i2")


@dataclass(frozen=True)
class PlayParams:
    seconds: float = 1.0
    replace: bool = False
    on_frame: int = 1


class Player(Processor):
    """Plays a tone from process() on frame `on_frame`, passing its input on."""

    name = "player"

    def __init__(self, session, params):
        super().__init__(session, params or PlayParams())
        self.count = 0

    def process(self, inbound, outbound):
        self.count += 1
        if self.count == self.params.on_frame:
            self.session.play(tone(int(self.params.seconds * RATE)), replace=self.params.replace)
        return outbound


def test_played_audio_passes_through_later_steps_one_frame_out_per_frame_in():
    call = call_with([Echo, Player, Gain], [None, None, GainTable.for_factor(10 ** (-96 / 20))],
                     rate=RATE)
    call.frames(100, voice(100))
    audio = call.audio()
    assert len(audio) == 100 * N  # exactly one frame out per frame in
    assert np.abs(audio).max() <= 1  # -96 dB: the played second is muted too


def test_played_audio_is_mixed_with_the_echo_at_lag_zero():
    caller = voice(100)
    call = call_with([Echo, Player], rate=RATE)
    call.frames(100, caller)
    played = np.zeros(100 * N, np.int64)
    played[N : N + RATE] = tone(RATE)  # from the frame after the one that asked
    expected = saturate(caller.astype(np.int64) + played)
    assert np.array_equal(call.audio(), expected)


def test_replace_takes_the_place_of_the_steps_output_while_it_lasts():
    caller = voice(80)
    call = call_with([Echo, Player], [None, PlayParams(seconds=0.5, replace=True)], rate=RATE)
    call.frames(80, caller)
    audio = call.audio()
    assert np.array_equal(audio[:N], caller[:N])
    assert np.array_equal(audio[N : N + RATE // 2], tone(RATE // 2))
    assert np.array_equal(audio[N + RATE // 2 :], caller[N + RATE // 2 :])


class Prompter(Processor):
    """Plays 2.5 frames of tone and asks to be told once the caller heard it."""

    name = "prompter"

    def start(self):
        self.session.play(tone(N * 5 // 2))
        self.session.notify({"mark": "end"})


def test_notify_waits_behind_played_audio_and_pads_its_last_frame():
    call = call_with([Prompter], rate=RATE)
    call.frames(6)
    items = call.wire.items
    kinds = ["audio" if isinstance(item, bytes) else item for _, item in items]
    assert kinds == ["audio", "audio", "audio", '{"action": "notify", "payload": {"mark": "end"}}']
    audio = call.audio()
    assert np.array_equal(audio[: N * 5 // 2], tone(N * 5 // 2))
    assert not audio[N * 5 // 2 :].any()  # the half frame is padded with silence


def test_clear_drops_played_audio_and_releases_its_marks():
    call = call_with([Echo, Prompter], rate=RATE)
    call.frames(1)
    call.pipeline.session.clear()
    call.frames(4, voice(4))
    assert call.texts() == [{"action": "clear"}, {"action": "notify", "payload": {"mark": "end"}}]
    assert np.array_equal(call.audio()[N:], voice(4))  # after the clear: the echo alone


def test_a_lane_is_bounded_and_counts_what_it_drops():
    call = call_with([Echo, Player], [None, PlayParams(seconds=100)], rate=RATE,
                     max_buffer_seconds=2)
    call.frames(10)
    assert call.pipeline.sender.frames_dropped == 98 * 50  # 100 s asked, 2 s kept
    assert call.pipeline.processors[1].session.queued_seconds == pytest.approx(
        2 - 9 * 0.02 + 0.02, abs=0.03)


class Emitter(Processor):
    name = "emitter"

    def process(self, inbound, outbound):
        if self.session.frames_in == 3:
            self.session.emit("speech_started", at=0.04, confidence=0.9)
        return outbound

    def on_event(self, event):
        seen.append(("emitter", event))


class Listener(Processor):
    name = "listener"

    def on_event(self, event):
        seen.append(("listener", event))
        if event.kind == "speech_started":
            self.session.emit("barge_in", heard=0.5)  # delivered after the one in hand


class Last(Processor):
    name = "last"

    def on_event(self, event):
        seen.append(("last", event))


seen: list[tuple[str, Event]] = []


def test_events_reach_every_other_step_in_order_and_the_app():
    seen.clear()
    published: list[Event] = []
    call = call_with([Emitter, Listener, Last], rate=RATE,
                     publish=lambda info, event: published.append(event))
    seen.clear()  # call_started went to every step
    call.frames(5)
    call.pipeline.receive_event("dtmf", {"digit": "7", "duration": 200})
    got = [(who, e.kind, dict(e.data), e.source) for who, e in seen]
    assert got == [
        ("listener", "speech_started", {"at": 0.04, "confidence": 0.9}, "emitter"),
        ("last", "speech_started", {"at": 0.04, "confidence": 0.9}, "emitter"),
        ("emitter", "barge_in", {"heard": 0.5}, "listener"),
        ("last", "barge_in", {"heard": 0.5}, "listener"),
        ("emitter", "dtmf", {"digit": "7", "duration": 200}, "vonage"),
        ("listener", "dtmf", {"digit": "7", "duration": 200}, "vonage"),
        ("last", "dtmf", {"digit": "7", "duration": 200}, "vonage"),
    ]
    dtmf = seen[-1][1]
    assert (dtmf.digit, dtmf.duration, dtmf.raw["event"]) == ("7", 200, "websocket:dtmf")
    assert seen[0][1].time == pytest.approx(0.04)  # two frames of 20 ms had passed
    kinds = [e.kind for e in published]
    assert kinds == ["call_started", "speech_started", "barge_in", "dtmf"]
    call.pipeline.close("hangup")
    assert [e.kind for e in published][-1] == "call_ended"
    assert published[-1].data == {"outcome": "hangup"}


class SlowStart(Processor):
    name = "slow-start"

    def start(self):
        self.ready = defer.Deferred()
        self.frames_before_ready = 0
        return self.ready

    def process(self, inbound, outbound):
        if not self.ready.called:
            self.frames_before_ready += 1
        return inbound


def test_frames_flow_while_start_is_pending_and_a_failed_start_ends_the_call():
    call = call_with([SlowStart], rate=RATE)
    call.frames(5)
    step = call.pipeline.processors[0]
    assert step.frames_before_ready == 5 and len(call.audio()) == 5 * N
    step.ready.callback(None)
    call.frames(2)
    assert step.frames_before_ready == 5
    failing = call_with([SlowStart], rate=RATE)
    failing.pipeline.processors[0].ready.errback(RuntimeError("no speech service"))
    assert failing.wire.hangups == [
        (1011, "processor error in pipeline test, step slow-start", "error")]


class Flusher(Processor):
    """close() takes `delay` seconds of the call's clock; None: never finishes."""

    name = "flusher"
    delay: float | None = 0.5

    def close(self):
        self.flushed = False
        if self.delay is None:
            return defer.Deferred()
        d = defer.Deferred()

        def flush():
            self.flushed = True
            d.callback(None)

        self.session.clock.callLater(self.delay, flush)
        return d


def test_the_calls_end_waits_for_close_deferreds_bounded_by_close_timeout():
    ended: list[str] = []
    call = call_with([Flusher], rate=RATE, close_timeout=5,
                     call_ended=lambda session, outcome: ended.append(outcome))
    done = call.pipeline.close("hangup")
    call.clock.advance(0.4)
    assert not done.called and not ended
    call.clock.advance(0.2)
    assert done.called and call.pipeline.processors[0].flushed and ended == ["hangup"]

    class Stuck(Flusher):
        delay = None

    stuck = call_with([Stuck], rate=RATE, close_timeout=5)
    done = stuck.pipeline.close("drained")
    stuck.clock.advance(4.9)
    assert not done.called
    stuck.clock.advance(0.2)
    assert done.called  # abandoned (and logged by name) at close_timeout


def test_hooks_run_once_per_call():
    started, ended = [], []
    call = call_with([Echo], rate=RATE, call_started=lambda s: started.append(s.info.pipeline),
                     call_ended=lambda s, outcome: ended.append(outcome))
    call.frames(3)
    call.pipeline.close("hangup")
    call.pipeline.close("hangup")
    assert started == ["test"] and ended == ["hangup"]


def test_run_in_thread_results_come_back_in_call_order():
    running: list[defer.Deferred] = []

    def worker(fn, *args):  # stands in for the thread pool: finishes when told to
        d = defer.Deferred()
        running.append(d)
        d.addCallback(lambda _: fn(*args))
        return d

    call = call_with([Echo], rate=RATE, run_in_thread=worker)
    session = call.pipeline.session
    results: list[int] = []
    for n in range(3):
        session.run_in_thread(lambda n=n: n * 10).addCallback(results.append)
    assert len(running) == 1  # one at a time per call
    running[0].callback(None)
    assert len(running) == 2 and results == [0]
    running[1].callback(None)
    running[2].callback(None)
    assert results == [0, 10, 20]


class Raises(Processor):
    name = "raises"

    def on_event(self, event):
        if event.kind == "dtmf":
            raise RuntimeError("bad key")


def test_a_step_raising_in_on_event_ends_only_its_call_naming_the_step():
    call = call_with([Echo, Raises], rate=RATE)
    call.pipeline.receive_event("dtmf", {"digit": "1"})
    assert call.wire.hangups == [(1011, "processor error in pipeline test, step raises", "error")]
