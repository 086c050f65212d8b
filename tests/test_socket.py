"""The Vonage socket on a real daemon: echo bit-exact, bad first messages, events.

Well-behaved calls are played by the call simulator; the odd and the malformed by `wire`.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from websockets.sync.client import connect

from voicews.simulator import simulate_socket

from conftest import base_config
from wire import closed_with, first_message, random_frames


def noise(frames: int, rate: int, start: int = 0) -> np.ndarray:
    """Full-scale noise, `frames` 20 ms long: any change to any sample shows."""
    return np.frombuffer(b"".join(random_frames(frames, start, rate)), "<i2")


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_echo_is_bit_exact_in_order_at_every_rate(daemon, rate):
    sent = noise(250, rate)
    result = simulate_socket(daemon.ws, f"audio/l16;rate={rate}", {"pipeline": "echo"},
                             play=sent, play_rate=rate, seconds=5.0, fast=True)
    assert result.ok, result.error
    assert result.wrong_sized == []
    assert result.frames_sent == result.frames_received == 250
    np.testing.assert_array_equal(result.received, sent)


def test_first_message_without_event_key_is_accepted(daemon):
    frames = random_frames(5, rate=8000)
    with connect(daemon.ws) as ws:
        ws.send(json.dumps({"content-type": "audio/l16;rate=8000", "pipeline": "echo"}))
        for frame in frames:
            ws.send(frame)
        assert [ws.recv(timeout=5) for _ in frames] == frames


@pytest.mark.parametrize(
    ("messages", "code", "reason"),
    [
        ([b"\x00" * 640], 1003, "expected a JSON text message first, got binary"),
        (["hello there"], 1008, "first message is not JSON"),
        (["[1, 2, 3]"], 1008, "first message is not a JSON object"),
        (['{"pipeline": "echo"}'], 1008, "first message has no content-type"),
        ([first_message(44100)], 1003, "unsupported content-type 'audio/l16;rate=44100'"),
        (['{"content-type": "audio/pcmu;rate=8000"}'], 1003, "unsupported content-type"),
        ([first_message(16000, pipeline="karaoke")], 1008, "unknown pipeline 'karaoke'"),
        ([first_message(16000), b"\x00" * 100], 1007, "frame of 100 bytes, expected 640"),
        ([first_message(8000), "not json"], 1008, "text message is not JSON"),
        (["x" * 5000], 1009, "first message of 5000 bytes"),
    ],
)
def test_bad_input_is_closed_with_a_meaningful_code(daemon, messages, code, reason):
    got_code, got_reason = closed_with(daemon.ws, *messages)
    assert got_code == code
    assert got_reason.startswith(reason)


def test_bad_calls_do_not_disturb_a_live_call(daemon):
    """A good call streams while garbage arrives on other sockets; it stays bit-exact."""
    result = {}

    sent = noise(400, 16000, start=7)

    def good_call():
        result["call"] = simulate_socket(daemon.ws, play=sent, seconds=8.0, fast=True)

    thread = threading.Thread(target=good_call)
    thread.start()
    for messages in (["garbage"], [b"\x01\x02"], [first_message(11025)],
                     [first_message(16000, pipeline="nope")]):
        code, _ = closed_with(daemon.ws, *messages)
        assert code in (1003, 1008)
    thread.join(30)
    call = result["call"]
    assert call.ok, call.error
    np.testing.assert_array_equal(call.received, sent)
    log = daemon.wait_log("unknown pipeline 'nope'")
    assert "known pipelines: echo, louder" in log
    assert daemon.get_json("/health")["active_calls"] == 0


def test_pipeline_header_picks_the_pipeline(daemon):
    sent = noise(20, 8000)
    result = simulate_socket(daemon.ws, "audio/l16;rate=8000", {"pipeline": "louder"},
                             play=sent, play_rate=8000, seconds=0.4, fast=True)
    assert result.ok, result.error
    x = sent.astype(float)
    y = result.received.astype(float)
    expected = np.clip(np.rint(x * 10 ** (6 / 20)), -32768, 32767)
    assert np.array_equal(y, expected)


def test_default_pipeline_when_the_header_is_absent(start_daemon):
    daemon = start_daemon(base_config(default_pipeline="louder"))
    result = simulate_socket(daemon.ws, "audio/l16;rate=8000", play=np.full(160, 16, "<i2"),
                             play_rate=8000, seconds=0.02, fast=True)
    assert result.ok, result.error
    np.testing.assert_array_equal(result.received, np.full(160, 32))  # 16 x 1.995 = 31.9 -> 32


@pytest.mark.parametrize("level", ["debug", "info"])
def test_events_reach_the_pipeline_and_unknown_events_are_ignored(start_daemon, level):
    """Key presses are logged at info; Vonage's answers to our notify/clear at debug only."""
    daemon = start_daemon(base_config(log_level=level))
    frames = random_frames(3)
    with connect(daemon.ws) as ws:
        ws.send(first_message(16000, uuid="CALL-42"))
        ws.send(json.dumps({"event": "websocket:dtmf", "digit": "5", "duration": 260}))
        ws.send(json.dumps({"event": "websocket:notify", "payload": {"mark": 1}}))
        ws.send(json.dumps({"event": "websocket:cleared"}))
        ws.send(json.dumps({"event": "websocket:karaoke"}))
        ws.send(json.dumps({"event": "websocket:dtmf", "digit": 55, "duration": "long"}))
        for frame in frames:
            ws.send(frame)
        assert [ws.recv(timeout=5) for _ in frames] == frames
    log = daemon.wait_log("call ended uuid=CALL-42")
    assert "event dtmf uuid=CALL-42 digit=5" in log
    answers = ("event notify uuid=CALL-42 digit=None payload={'mark': 1}",
               "event cleared uuid=CALL-42")
    assert all((line in log) == (level == "debug") for line in answers)
    assert "ignored unknown event 'karaoke' uuid=CALL-42" in log
    assert "event dtmf uuid=CALL-42 digit=None" in log
    assert "frames_in=3 frames_out=3" in log


def test_calls_are_counted_while_live(daemon):
    with connect(daemon.ws) as ws:
        ws.send(first_message(8000))
        ws.send(b"\x00" * 320)
        ws.recv(timeout=5)
        assert daemon.get_json("/health")["active_calls"] == 1
    daemon.wait_log("call ended")
    assert daemon.get_json("/health")["active_calls"] == 0
