"""The ``bridge`` step in-process (a ``task.Clock``, its socket replaced) and its config checks.

The end-to-end tests (tests/test_bridge_processor.py) run real sockets in real
time, where a mark answered 30 ms early or a frame's place in the pre-connect
buffer cannot be told apart; here the pipeline is the real one (voicews.testing)
and only the socket is replaced, so both are checked sample by sample.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import yaml

from voicews import PrepareContext
from voicews.audio import g711
from voicews.audio.files import tone
from voicews.config.settings import ConfigError, load_settings
from voicews.processors.bridge import Bridge
from voicews.processors.bridge_params import BridgeParams
from voicews.testing import call_with

from conftest import base_config

RATE = 16000
FRAME = RATE // 50


def loud_frames(audio: np.ndarray) -> int:
    frames = audio[: len(audio) // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64)
    return int(np.sum(np.sqrt(np.mean(frames**2, axis=1)) > 100))


# -- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "message"), [
    ({"url": "http://bot/x", "protocol": "twilio"}, "url: expected ws:// or wss://"),
    ({"url": "ws:///x", "protocol": "twilio"}, "url: no host"),
    ({"url": "ws://bot:99999/x", "protocol": "twilio"}, "url: Port out of range"),
    ({"url": "ws://bot/x"}, "bridge.protocol: missing required key"),
    ({"url": "ws://bot/x", "protocol": "sip"}, "expected one of vonage | twilio"),
    ({"url": "ws://bot/x", "protocol": "twilio", "headers": {"Host": "x"}},
     "headers.Host: set by the WebSocket handshake itself"),
    ({"url": "ws://bot/x", "protocol": "twilio", "headers": {"X-A": "a\r\nB: b"}},
     "headers.X-A: the value holds a line break"),
    ({"url": "ws://bot/x", "protocol": "twilio", "ca_file": "ca.pem"},
     "ca_file: only used with a wss:// url"),
    ({"url": "wss://bot/x", "protocol": "twilio", "ca_file": "missing.pem"},
     "ca_file: cannot read"),
    ({"url": "wss://bot/x", "protocol": "twilio", "ca_file": "config.yaml"},
     "holds no PEM certificate"),
    ({"url": "ws://bot/x", "protocol": "twilio", "on_failure": "retry"},
     "bridge.on_failure: expected one of hangup | continue"),
    ({"url": "ws://bot/x", "protocol": "twilio",
      "reconnect": {"initial_delay": 5, "max_delay": 1}},
     "reconnect.max_delay: must be at least initial_delay (5)"),
    ({"url": "ws://bot/x", "protocol": "twilio", "reconnect": {"retries": 1}},
     "bridge.reconnect.retries: unknown key"),
    ({"url": "ws://bot/x", "protocol": "twilio", "max_lead_seconds": 0},
     "max_lead_seconds: must be greater than 0"),
])
def test_config_mistakes_are_refused_naming_the_key(tmp_path, params, message):
    config = base_config(pipelines={"bot": [{"bridge": params}]}, default_pipeline="bot")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    text = str(caught.value)
    assert "pipelines.bot[0].bridge" in text and message in text, text


# -- a mark behind resampled audio, frame by frame ---------------------------------------------


class _Sent(list):
    """Stands in for the socket in the in-process test below: keeps what the step sends."""

    close_code = None

    def send(self, message) -> bool:
        self.append(message)
        return True


class _Offline(Bridge):
    """The bridge step with its socket replaced, so a ``task.Clock`` can run the call."""

    def start(self):
        self.client = _Sent()
        self._opened(0)


def test_a_twilio_mark_waits_for_the_audio_the_resampler_still_holds(tmp_path):
    params = Bridge.prepare(BridgeParams(url="ws://127.0.0.1:9/x", protocol="twilio"),
                            PrepareContext(config_dir=tmp_path, key="bridge"))
    call = call_with([_Offline], params=[params], rate=RATE)
    step = call.pipeline.processors[0]
    sid = step.stream.stream_sid
    audio = tone(8000, 0.125, 440)  # 1000 samples at 8 kHz: 2000 at the call's rate
    step._message(json.dumps({"event": "media", "streamSid": sid, "media": {
        "payload": base64.b64encode(g711.encode(audio)).decode()}}))
    step._message(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "m"}}))
    assert step.stream.held_samples == 480  # 30 ms still in the resampler
    call.frames(20)  # 0.4 s: the bot's pause lets the last 30 ms out
    items = [item for _, item in call.wire.items]
    notify = next(i for i, item in enumerate(items) if isinstance(item, str))
    # The notify follows the frame that carries sample 2000 (the 7th), not the 5th.
    assert sum(isinstance(item, bytes) for item in items[:notify]) == 7
    played = call.audio()[:2000]
    assert loud_frames(played) == 6 and np.abs(played[1920:2000]).max() > 1000
    command = json.loads(items[notify])
    call.pipeline.receive_event("notify", {"payload": command["payload"]})
    assert json.loads(step.client[-1])["mark"] == {"name": "m"}


class _Later(_Offline):
    """Opens only when the test says so."""

    def start(self):
        self.client = _Sent()


def test_the_callers_latest_audio_waits_for_the_socket_within_the_buffer(tmp_path):
    params = Bridge.prepare(BridgeParams(url="ws://127.0.0.1:9/x", protocol="vonage",
                                         buffer_seconds=0.1),
                            PrepareContext(config_dir=tmp_path, key="bridge"))
    call = call_with([_Later], params=[params], rate=RATE)
    step = call.pipeline.processors[0]
    frames = np.arange(8 * FRAME, dtype=np.int16)
    call.frames(8, frames)
    call.pipeline.receive_event("dtmf", {"digit": "3", "duration": 100})
    step._opened(0)
    first, *rest = step.client
    assert json.loads(first)["event"] == "websocket:connected"
    # The last 0.1 s (5 frames) went to the bot, oldest first, then the key press.
    assert rest[:5] == [frames[i * FRAME : (i + 1) * FRAME].tobytes() for i in range(3, 8)]
    assert json.loads(rest[5]) == {"event": "websocket:dtmf", "digit": "3", "duration": 100}
    assert step.frames_unsent == 3
    call.frames(1)
    assert step.client[-1] == bytes(2 * FRAME)  # and live frames after them
