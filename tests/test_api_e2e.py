"""The processor API through a real twistd: a plugin file of small steps, real calls."""

from __future__ import annotations

import numpy as np
import pytest

from voicews.audio.files import tone
from voicews.audio.samples import saturate
from voicews.simulator import simulate_socket

from conftest import base_config

PLUGIN = '''
from pathlib import Path

import numpy as np
from twisted.internet import defer
from twisted.logger import Logger

import voicews

log = Logger(namespace="plugins.api")


class Player(voicews.Processor):
    """Plays one second of a 440 Hz tone, asked for from process() on the first frame."""

    name = "player"

    def process(self, inbound, outbound):
        if self.session.frames_in == 1:
            t = np.arange(self.session.rate) / self.session.rate
            self.session.play((3000 * np.sin(2 * np.pi * 440 * t)).astype("<i2"))
        return outbound


class Emitter(voicews.Processor):
    name = "emitter"

    def process(self, inbound, outbound):
        if self.session.frames_in == 10:
            self.session.emit("speech_started", at=0.18)
        return outbound


class Listener(voicews.Processor):
    name = "listener"

    def on_event(self, event):
        if event.kind == "speech_started":
            log.info("listener heard {kind} from {source} data={data} uuid={uuid}",
                     kind=event.kind, source=event.source, data=dict(event.data),
                     uuid=self.session.info.uuid)


class Flusher(voicews.Processor):
    """close() writes a file half a second later; the call's end waits for it."""

    name = "flusher"

    def close(self):
        def flush():
            Path(self.session.info.headers["out"]).write_text(str(self.session.frames_in))
            log.info("flushed uuid={uuid}", uuid=self.session.info.uuid)

        return defer.Deferred.fromCoroutine(self._later(flush))

    async def _later(self, flush):
        from twisted.internet.task import deferLater

        await deferLater(self.session.clock, 0.5, flush)


@voicews.hookimpl
def register_processors(register):
    for cls in (Player, Emitter, Listener, Flusher):
        register(cls)


@voicews.hookimpl
def call_started(session):
    log.info("hook call_started uuid={uuid}", uuid=session.info.uuid)


@voicews.hookimpl
def call_ended(session, outcome):
    log.info("hook call_ended uuid={uuid} outcome={outcome}", uuid=session.info.uuid,
             outcome=outcome)
'''


@pytest.fixture(scope="module")
def api_daemon(tmp_path_factory):
    from conftest import Daemon

    folder = tmp_path_factory.mktemp("api")
    (folder / "api_steps.py").write_text(PLUGIN)
    config = base_config(
        plugins=["api_steps.py"],
        pipelines={
            "echo": ["echo"],
            "muted": ["echo", "player", {"gain": {"db": -96}}],
            "over": ["echo", "player"],
            "talk": ["echo", "emitter", "listener"],
            "flush": ["echo", "flusher"],
        },
    )
    daemon = Daemon(folder, config).start()
    yield daemon
    assert daemon.stop() == 0


def call(daemon, pipeline, seconds=1.5, **headers):
    voice = tone(16000, seconds, 300.0, 0.2)
    result = simulate_socket(daemon.ws, "audio/l16;rate=16000",
                             {"pipeline": pipeline, "uuid": f"u-{pipeline}", **headers},
                             play=voice, play_rate=16000, fast=True)
    assert result.ok, result.error
    return result


def test_played_audio_goes_through_later_steps_one_frame_out_per_frame_in(api_daemon):
    result = call(api_daemon, "muted")
    assert result.frames_received == result.frames_sent
    assert np.abs(result.received).max() <= 1  # echo and tone, both through gain -96 dB


def test_played_audio_is_mixed_with_the_echo_which_keeps_lag_zero(api_daemon):
    result = call(api_daemon, "over")
    assert result.frames_received == result.frames_sent
    played = np.zeros(len(result.sent), np.int64)
    t = np.arange(16000) / 16000
    played[320 : 320 + 16000] = (3000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    expected = saturate(result.sent.astype(np.int64) + played)
    assert np.array_equal(result.received, expected)


def test_an_event_one_step_emits_reaches_another_steps_on_event(api_daemon):
    call(api_daemon, "talk")
    log = api_daemon.wait_log("listener heard")
    assert ("listener heard speech_started from emitter data={'at': 0.18} uuid=u-talk"
            in log)


def test_the_calls_end_waits_for_an_async_close(api_daemon, tmp_path):
    out = tmp_path / "flushed.txt"
    result = call(api_daemon, "flush", seconds=0.5, out=str(out))
    log = api_daemon.wait_log("call ended uuid=u-flush")
    assert out.read_text() == str(result.frames_sent)
    assert log.index("flushed uuid=u-flush") < log.index("call ended uuid=u-flush")


def test_call_hooks_run_once_per_call(api_daemon):
    call(api_daemon, "echo", seconds=0.3, uuid="hooked")
    log = api_daemon.wait_log("hook call_ended uuid=hooked")
    assert log.count("hook call_started uuid=hooked") == 1
    assert log.count("hook call_ended uuid=hooked outcome=hangup") == 1
    assert log.index("hook call_ended uuid=hooked") < log.index("call ended uuid=hooked")
