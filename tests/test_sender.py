"""The paced sender and the session's framing, on Twisted's deterministic Clock."""

from __future__ import annotations

import json

import numpy as np
from twisted.internet.task import Clock

from voicews.pipeline.processor import Processor
from voicews.pipeline.sender import PacedSender
from voicews.testing import call_with


class Wire:
    """Collects what the sender puts on the wire, with the clock time of each."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.items: list[tuple[float, bytes | str]] = []

    def audio(self, frame: bytes) -> None:
        self.items.append((self.clock.seconds(), frame))

    def text(self, message: str) -> None:
        self.items.append((self.clock.seconds(), message))


def make_sender(max_lead=0.1, max_queue=1000):
    clock = Clock()
    wire = Wire(clock)
    return clock, wire, PacedSender(clock, wire.audio, wire.text, max_lead, max_queue)


def frame(i: int) -> bytes:
    return i.to_bytes(2, "little") * 160


def test_realtime_output_is_sent_at_once():
    clock, wire, sender = make_sender()
    for i in range(100):
        sender.audio(frame(i))
        clock.advance(0.02)
    assert [item for _, item in wire.items] == [frame(i) for i in range(100)]
    assert all(abs(t - 0.02 * i) < 1e-9 for i, (t, _) in enumerate(wire.items))


def test_a_burst_is_paced_to_real_time_after_the_lead():
    clock, wire, sender = make_sender(max_lead=0.1)
    for i in range(50):  # one second of audio at once
        sender.audio(frame(i))
    assert len(wire.items) == 5  # 100 ms of lead goes out at once
    clock.pump([0.01] * 150)
    assert [item for _, item in wire.items] == [frame(i) for i in range(50)]
    last = wire.items[-1][0]
    assert 0.85 <= last <= 0.95  # the rest followed at 20 ms a frame


def test_the_queue_is_bounded_and_drops_new_frames():
    clock, wire, sender = make_sender(max_lead=0.02, max_queue=10)
    for i in range(100):
        sender.audio(frame(i))
    assert sender.frames_dropped == 89  # 1 sent, 10 queued
    clock.pump([0.02] * 20)
    assert [item for _, item in wire.items] == [frame(i) for i in range(11)]


def test_notify_waits_for_the_audio_queued_before_it():
    clock, wire, sender = make_sender(max_lead=0.02)
    for i in range(3):
        sender.audio(frame(i))
    sender.text("notify")
    assert [item for _, item in wire.items] == [frame(0)]
    clock.pump([0.02] * 5)
    assert [item for _, item in wire.items] == [frame(0), frame(1), frame(2), "notify"]


def test_clear_drops_queued_audio():
    clock, wire, sender = make_sender(max_lead=0.02)
    for i in range(5):
        sender.audio(frame(i))
    sender.clear()
    sender.audio(frame(9))
    clock.pump([0.02] * 5)
    assert [item for _, item in wire.items] == [frame(0), frame(9)]


class Chunky(Processor):
    """Outputs 70 samples per frame: never a whole frame, so the framer must cut."""

    name = "chunky"

    def __init__(self, session, params):
        super().__init__(session, params)
        self.n = 0

    def process(self, inbound, outbound):
        out = np.arange(self.n, self.n + 70, dtype="<i2")
        self.n += 70
        return out


def test_session_frames_any_output_exactly_and_pads_before_notify():
    call = call_with([Chunky], rate=8000, max_lead_seconds=10)
    call.frames(5, step=0)
    call.pipeline.session.notify({"done": True})
    wire = call.wire
    sizes = [len(item) for _, item in wire.items if isinstance(item, bytes)]
    assert sizes == [320, 320, 320]  # 350 samples: two whole frames, then 30 padded
    audio = np.frombuffer(b"".join(i for _, i in wire.items if isinstance(i, bytes)), "<i2")
    assert np.array_equal(audio[:350], np.arange(350))
    assert not audio[350:].any()
    assert json.loads(wire.items[-1][1]) == {"action": "notify", "payload": {"done": True}}


def test_session_clear_sends_clear_command_and_forgets_partial_frame():
    call = call_with([Chunky], rate=8000, max_lead_seconds=10)
    call.frames(1)  # 70 samples pending
    call.pipeline.session.clear()
    assert call.pipeline.framer.pending == 0
    assert call.texts()[-1] == {"action": "clear"}


def test_the_latest_frame_sent_is_kept_for_the_level_meter():
    """The console's outbound level reads ``last_frame``: sent at once or after a wait."""
    clock, wire, sender = make_sender(max_lead=0.04)
    sender.audio(frame(1))  # at once
    assert sender.last_frame == frame(1)
    for i in range(2, 6):
        sender.audio(frame(i))
    assert sender.last_frame == frame(2)  # 3, 4 and 5 wait behind the 40 ms lead
    clock.pump([0.02] * 10)
    assert sender.last_frame == frame(5)
    assert [item for _, item in wire.items] == [frame(i) for i in range(1, 6)]
