"""The call watchdog on task.Clock: idle calls and calls past max_call_seconds end on time."""

from __future__ import annotations

from twisted.internet.task import Clock

from voicews.call.watchdog import CallWatchdog
from voicews.config import plugins
from voicews.config.settings import load_settings
from voicews.processors.echo import Echo
from voicews.runtime.calls import CallRecord
from voicews.runtime.state import Runtime
from voicews.testing import call_with


def make_runtime(tmp_path, clock: Clock) -> Runtime:
    (tmp_path / "c.yaml").write_text("limits: {idle_timeout: 3, max_call_seconds: 10}\n")
    pm = plugins.make_plugin_manager()
    return Runtime(load_settings(tmp_path / "c.yaml", pm), pm, clock)


def record(runtime: Runtime, clock: Clock, ended: list) -> CallRecord:
    call = CallRecord(peer="test", opened=clock.seconds(),
                      end=lambda code, reason, outcome: ended.append((code, reason, outcome)),
                      abort=lambda: None)
    call.pipeline = call_with([Echo], rate=8000, clock=clock).pipeline
    runtime.calls.add(call)
    return call


def test_an_idle_call_ends_after_idle_timeout_and_a_talking_one_does_not(tmp_path):
    clock = Clock()
    runtime = make_runtime(tmp_path, clock)
    watchdog = CallWatchdog(runtime)
    idle, talking = [], []
    quiet = record(runtime, clock, idle)
    busy = record(runtime, clock, talking)
    for _ in range(5):
        busy.pipeline.receive_frame(bytes(320))
        clock.advance(1)
        watchdog.tick()
    assert idle == [(1008, "no audio for 3 s", "idle")]
    assert talking == []
    quiet.ending = True  # the socket is closing: never ended twice
    clock.advance(5)
    watchdog.tick()
    assert len(idle) == 1


def test_a_call_ends_at_max_call_seconds_even_while_talking(tmp_path):
    clock = Clock()
    runtime = make_runtime(tmp_path, clock)
    watchdog = CallWatchdog(runtime)
    ended = []
    call = record(runtime, clock, ended)
    for _ in range(9):
        call.pipeline.receive_frame(bytes(320))
        clock.advance(1)
        watchdog.tick()
    assert ended == []
    call.pipeline.receive_frame(bytes(320))
    clock.advance(1)
    watchdog.tick()
    assert ended == [(1000, "maximum call length reached", "max_length")]
