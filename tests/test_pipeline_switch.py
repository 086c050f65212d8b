"""Switching a live call's pipeline (Pipeline.switch) in-process, on task.Clock.

What the caller hears across the switch is checked sample for sample: the old steps'
output up to the frame before the switch, the new steps' from the next frame, one frame
out per frame in (no gap, nothing twice).  The old steps are closed (their close
Deferreds awaited, bounded), and while they finish they can no longer reach the call.
"""

from __future__ import annotations

import numpy as np
import pytest
from twisted.internet import defer

from voicews import Processor
from voicews.audio.samples import db_to_factor, saturate
from voicews.pipeline.pipeline import SwitchFailed, SwitchRefused
from voicews.pipeline.steps import PipelineSpec, Step
from voicews.processors.echo import Echo
from voicews.processors.gain import Gain, GainTable
from voicews.testing import start

RATE = 8000
N = 160

ECHO = PipelineSpec("echo", (Step("echo", Echo, None),))
LOUDER = PipelineSpec("louder", (Step("echo", Echo, None),
                                 Step("gain", Gain, GainTable.for_factor(db_to_factor(6)))))


def voice(frames: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(-12000, 12000, frames * N).astype("<i2")


def louder(samples: np.ndarray) -> np.ndarray:
    return saturate(samples.astype(np.float64) * db_to_factor(6))


class Closer(Processor):
    """Echo whose close() finishes 0.5 s later; while closing it tries to reach the call."""

    name = "closer"
    instances: list[Closer] = []

    def __init__(self, session, params):
        super().__init__(session, params)
        self.closed_at: float | None = None
        Closer.instances.append(self)

    def process(self, inbound, outbound):
        return inbound

    def close(self):
        d = defer.Deferred()
        session = self.session
        session.play(np.full(N * 10, 5000, "<i2"))  # must not reach the caller
        session.notify({"late": True})
        session.hangup(1011, "must not hang up")
        session.emit("final", frames=session.frames_in, pipeline=session.info.pipeline)
        self.transcriber = session.transcriber  # still readable (the call's, not retired)

        def done():
            self.closed_at = session.clock.seconds()
            d.callback(None)

        session.clock.callLater(0.5, done)
        return d


CLOSER = PipelineSpec("closer", (Step("closer", Closer, None),))


def test_echo_to_louder_from_the_next_frame_with_no_gap_and_no_double():
    caller = voice(100)
    call = start(ECHO, rate=RATE)
    call.frames(40, caller)
    done = call.pipeline.switch(LOUDER)
    assert done.called  # echo closes at once
    call.frames(60, caller[40 * N:])
    audio = call.audio()
    assert len(audio) == 100 * N  # one frame out per frame in: no gap, nothing twice
    assert np.array_equal(audio[: 40 * N], caller[: 40 * N])
    assert np.array_equal(audio[40 * N:], louder(caller[40 * N:]))
    assert call.pipeline.info.pipeline == "louder" and call.pipeline.frames_in == 100
    assert call.pipeline.frames_out == 100


def test_what_the_app_plays_goes_on_across_the_switch():
    caller = voice(30)
    prompt = voice(20, seed=9) // 4
    call = start(ECHO, rate=RATE)
    call.frames(5, caller)
    call.pipeline.session.play(prompt)  # the call's own session: the head of the bus
    call.frames(10, caller[5 * N:])
    call.pipeline.switch(LOUDER)
    call.frames(15, caller[15 * N:])
    played = np.zeros(30 * N, np.int64)
    played[5 * N: 25 * N] = prompt
    mixed = saturate(caller.astype(np.int64) + played)
    audio = call.audio()
    assert np.array_equal(audio[: 15 * N], mixed[: 15 * N])
    assert np.array_equal(audio[15 * N:], louder(mixed[15 * N:]))


def test_old_steps_close_asynchronously_and_cannot_reach_the_call_meanwhile():
    Closer.instances.clear()
    published = []
    caller = voice(40)
    call = start(CLOSER, rate=RATE, close_timeout=5,
                 publish=lambda info, event: published.append((info.pipeline, event)))
    call.frames(5, caller)
    done = call.pipeline.switch(LOUDER)
    assert not done.called
    call.frames(24, caller[5 * N:])  # frames flow through the new steps meanwhile
    assert not done.called
    call.frames(11, caller[29 * N:])
    assert done.called and Closer.instances[0].closed_at == pytest.approx(0.1 + 0.5)
    audio = call.audio()
    assert np.array_equal(audio, np.concatenate((caller[: 5 * N], louder(caller[5 * N:]))))
    assert call.texts() == [] and call.wire.hangups == []  # its play, notify, hangup: ignored
    kinds = [(pipeline, event.kind, dict(event.data)) for pipeline, event in published]
    assert ("closer", "final", {"frames": 5, "pipeline": "closer"}) in kinds  # the app hears it
    assert ("louder", "pipeline_switched", {"from": "closer", "to": "louder"}) in kinds


def test_the_calls_end_waits_for_steps_a_switch_is_still_closing():
    Closer.instances.clear()
    ended = []
    call = start(CLOSER, rate=RATE, close_timeout=5,
                 call_ended=lambda session, outcome: ended.append(outcome))
    call.frames(2)
    call.pipeline.switch(ECHO)
    with pytest.raises(SwitchRefused, match="still closing"):
        call.pipeline.switch(LOUDER)  # one switch at a time: memory stays bounded
    closed = call.pipeline.close("hangup")
    call.clock.advance(0.4)
    assert not closed.called and ended == []
    call.clock.advance(0.2)
    assert closed.called and ended == ["hangup"]
    with pytest.raises(SwitchRefused, match="ending"):
        call.pipeline.switch(LOUDER)


class Broken(Processor):
    name = "broken"

    def __init__(self, session, params):
        super().__init__(session, params)
        raise RuntimeError("no model file")


def test_a_new_step_that_cannot_be_built_leaves_the_call_as_it_was():
    caller = voice(10)
    call = start(LOUDER, rate=RATE)
    call.frames(4, caller)
    spec = PipelineSpec("broken", (Step("echo", Echo, None), Step("broken", Broken, None)))
    with pytest.raises(SwitchFailed, match="step broken of pipeline broken failed to start: "
                                           "no model file"):
        call.pipeline.switch(spec)
    call.frames(6, caller[4 * N:])
    assert np.array_equal(call.audio(), louder(caller))
    assert call.pipeline.info.pipeline == "louder" and call.wire.hangups == []
    call.pipeline.switch(ECHO)  # and it can still switch
    call.frames(1, caller)
    assert np.array_equal(call.audio()[10 * N:], caller[:N])

