"""voicews-call against a real twistd: the Vonage side of a call, as users and tests run it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.server import serve

from voicews.audio.files import load_audio, read_wav, tone, write_wav
from voicews.simulator import CallSpec, simulate, simulate_call, simulate_socket
from voicews.simulator.cli import main
from voicews.vonage.tokens import bearer, verify_token

from conftest import REPO, base_config

SECRET = "sim-test-secret-of-at-least-32-bytes"


def noise(rate: int, seconds: float, level: int = 8000, seed: int = 1) -> np.ndarray:
    """Speech-like in that no lag but the true one correlates: echo checks are unambiguous."""
    rng = np.random.default_rng(seed)
    return rng.integers(-level, level, int(rate * seconds), dtype=np.int16)


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_echo_is_bit_exact_through_the_answer_webhook(start_daemon, rate):
    daemon = start_daemon(
        base_config(content_type=f"audio/l16;rate={rate}", greeting="Hello from the test")
    )
    result = simulate(CallSpec(
        answer_url=daemon.base + "/webhooks/answer", play=noise(16000, 1.0), play_rate=16000,
        fast=True,
    ))
    assert result.ok, result.error
    assert result.rate == rate
    assert result.talk == ["Hello from the test"]
    assert result.uri == daemon.ws
    assert result.frames_sent == 100  # 1 s of audio, then 1 s of silence, in 20 ms frames
    assert result.frames_received == result.frames_sent
    assert result.wrong_sized == []
    assert np.array_equal(result.received, result.sent)
    assert result.echo_lag_samples == 0
    assert [w.status for w in result.webhooks] == ["started", "ringing", "answered", "completed"]
    assert all(w.http_status == 204 for w in result.webhooks)
    assert (result.close_code, result.closed_by) == (1000, "simulator")
    log = daemon.wait_log(f"call ended uuid={result.uuid}")
    assert f"event uuid={result.uuid} status=completed" in log


def test_record_holds_what_was_played_resampled(start_daemon, tmp_path):
    """A 44.1 kHz stereo file played into a 16 kHz echo call comes back as the resampled file."""
    daemon = start_daemon()
    played = tmp_path / "hello.wav"
    stereo = np.stack([tone(44100, 0.8, 440), tone(44100, 0.8, 660)], axis=1)
    write_wav(played, stereo, 44100)
    heard = tmp_path / "heard.wav"
    code = main([daemon.base + "/webhooks/answer", "--play", str(played), "--record", str(heard),
                 "--fast", "--seconds", "1.2"])
    assert code == 0
    samples, rate = read_wav(heard)
    assert rate == 16000
    expected = np.zeros(60 * 320, dtype=np.int16)  # 1.2 s in frames of 320 samples
    resampled = load_audio(played, 16000)
    expected[: len(resampled)] = resampled
    assert np.array_equal(samples, expected)
    assert np.abs(resampled).max() > 3000  # the file really was in it


def test_gain_pipeline_is_six_db_louder(start_daemon):
    daemon = start_daemon(base_config(numbers={"447700900123": "louder"}))
    result = simulate(CallSpec(
        answer_url=daemon.base + "/webhooks/answer", to="447700900123",
        play=noise(16000, 1.0, level=6000), play_rate=16000, fast=True, method="POST",
    ))
    assert result.ok, result.error
    assert result.frames_received == result.frames_sent
    sent = result.sent.astype(np.float64)
    got = result.received.astype(np.float64)
    factor = float(np.dot(got, sent) / np.dot(sent, sent))
    assert factor == pytest.approx(1.995, rel=0.01)
    assert "pipeline=louder" in daemon.wait_log(f"call started uuid={result.uuid}")


def test_twenty_concurrent_calls_from_the_command_line(start_daemon, tmp_path):
    daemon = start_daemon()
    played = tmp_path / "hello.wav"
    write_wav(played, tone(16000, 0.5), 16000)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "voicews.simulator", daemon.base + "/webhooks/answer",
         "--play", str(played), "--calls", "20", "--fast", "--dtmf", "1@0.2"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len([line for line in lines if line.startswith("call ") and ": ok," in line]) == 20
    assert lines[-1].startswith("total: 20 calls, 20 ok, 0 failed, frames sent 1500 received 1500")
    assert daemon.get_json("/health")["active_calls"] == 0


def test_a_refused_call_fails_with_the_close_code(start_daemon, capsys):
    daemon = start_daemon()
    code = main([daemon.ws, "--header", "pipeline=nope", "--fast", "--seconds", "0.2", "-q"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED" in out and "code 1008" in out and "unknown pipeline 'nope'" in out


MARKER_PLUGIN = '''
import numpy as np
import voicews


class Marker(voicews.Processor):
    """Plays a one-second prompt with a mark after it; a key press barges in."""

    name = "marker"

    def __init__(self, session, params):
        super().__init__(session, params)
        self.frames = 0

    def process(self, inbound, outbound):
        self.frames += 1
        if self.frames == 1:
            self.session.play(np.full(self.session.rate, 1000, dtype="<i2"))
            self.session.notify({"mark": "prompt"})
        return outbound

    def on_event(self, event):
        if event.kind == "dtmf":
            self.session.clear()
            self.session.notify({"mark": "after-clear", "digit": event.digit})
        elif event.kind == "notify":
            # Proves the round trip: a short beep once each mark has played.
            self.session.play(np.full(self.session.rate // 10, 2000, dtype="<i2"))


@voicews.hookimpl
def register_processors(register):
    register(Marker)
'''


@pytest.fixture
def marker_daemon(start_daemon, tmp_path):
    plugin = tmp_path / "marker.py"
    plugin.write_text(MARKER_PLUGIN)
    return start_daemon(base_config(
        plugins=[str(plugin)], pipelines={"marker": ["marker"]}, default_pipeline="marker",
        log_level="debug",  # the notify/cleared answers are debug lines
    ))


def test_notify_is_answered_once_the_audio_before_it_has_played(marker_daemon):
    """Played audio goes out one frame per caller frame (the mix bus), the notify right
    after its last frame; the simulator answers once that has "played"."""
    result = simulate(CallSpec(answer_url=marker_daemon.base + "/webhooks/answer",
                               seconds=1.5))
    assert result.ok, result.error
    assert result.commands == [{"action": "notify", "payload": {"mark": "prompt"}}]
    assert result.events_sent == [{"event": "websocket:notify", "payload": {"mark": "prompt"}}]
    # 50 frames of prompt, then the 5-frame beep the daemon played on getting the notify.
    assert result.frames_received == 55
    assert set(result.received[: 50 * 320].tolist()) == {1000}
    assert set(result.received[50 * 320 :].tolist()) == {2000}
    marker_daemon.wait_log("event notify uuid=")


def test_clear_drops_playout_and_is_acknowledged(marker_daemon):
    result = simulate(CallSpec(answer_url=marker_daemon.base + "/webhooks/answer",
                               seconds=1.5, dtmf=[("5", 0.1)]))
    assert result.ok, result.error
    # The prompt's mark is released by the clear (its audio will never play), then the
    # step's own mark: Vonage answers both at once.
    assert result.commands == [
        {"action": "clear"},
        {"action": "notify", "payload": {"mark": "prompt"}},
        {"action": "notify", "payload": {"mark": "after-clear", "digit": "5"}},
    ]
    assert result.events_sent == [
        {"event": "websocket:dtmf", "digit": "5", "duration": 260},
        {"event": "websocket:cleared"},
        {"event": "websocket:notify", "payload": {"mark": "prompt"}},
        {"event": "websocket:notify", "payload": {"mark": "after-clear", "digit": "5"}},
    ]
    frames = result.received.reshape(-1, 320)
    prompt = [f for f in frames if set(f.tolist()) == {1000}]
    beeps = [f for f in frames if set(f.tolist()) == {2000}]
    assert 3 <= len(prompt) <= 10  # the prompt stopped at the key press, 0.1 s in
    assert len(beeps) == 10  # a 5-frame beep for each notify answered
    assert len(frames) == len(prompt) + len(beeps)
    log = marker_daemon.wait_log("event cleared uuid=")
    assert "event dtmf uuid=" in log and "digit=5" in log


class TinyVonagePeer:
    """A websockets server of our own that sends what voicews must never send."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.first: dict | None = None
        self.authorization: str | None = None

    async def handler(self, ws) -> None:
        self.authorization = ws.request.headers.get("Authorization")
        self.first = json.loads(await ws.recv())
        for frame in self.frames:
            await ws.send(frame)
        async for _ in ws:
            pass

    def run(self, spec: CallSpec):
        async def go():
            async with serve(self.handler, "127.0.0.1", 0) as server:
                port = server.sockets[0].getsockname()[1]
                spec.socket_uri = f"ws://127.0.0.1:{port}/socket"
                return await simulate_call(spec)
        return asyncio.run(go())


def test_wrong_sized_frames_are_reported():
    peer = TinyVonagePeer([b"\0" * 320, b"\1" * 640, b"\0" * 641])
    result = peer.run(CallSpec(content_type="audio/l16;rate=16000", headers={"pipeline": "x"},
                               authorization={"type": "custom", "value": "Token abc"},
                               seconds=0.1, fast=True))
    assert not result.ok
    assert result.wrong_sized == [320, 641]
    assert result.frames_received == 1
    assert "2 wrong-sized frame(s) of [320, 641] bytes, expected 640" in result.error
    assert peer.first == {"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
                          "pipeline": "x"}
    assert peer.authorization == "Token abc"


def test_vonage_handshake_authorization_is_a_signed_jwt():
    peer = TinyVonagePeer([])
    result = peer.run(CallSpec(content_type="audio/l16;rate=8000", authorization={"type": "vonage"},
                               signature_secret=SECRET, seconds=0.1, fast=True))
    assert result.ok, result.error
    assert verify_token(bearer(peer.authorization), SECRET)["iss"] == "Vonage"


class EventSink(BaseHTTPRequestHandler):
    posts: list[tuple[str, bytes]] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.posts.append((self.headers.get("Authorization"), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_event_webhooks_are_signed_when_a_secret_is_given(start_daemon):
    daemon = start_daemon(base_config(security={"signature_secret": SECRET}))
    EventSink.posts = []
    sink = ThreadingHTTPServer(("127.0.0.1", 0), EventSink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        result = simulate(CallSpec(
            answer_url=daemon.base + "/webhooks/answer", signature_secret=SECRET,
            event_url=f"http://127.0.0.1:{sink.server_port}/events", seconds=0.2, fast=True,
            play=noise(16000, 0.1), method="POST",
        ))
    finally:
        sink.shutdown()
        sink.server_close()
    assert result.ok, result.error
    statuses = []
    for authorization, body in EventSink.posts:
        verify_token(bearer(authorization), SECRET, body)  # raises when unsigned or wrong
        event = json.loads(body)
        assert event["uuid"] == result.uuid
        statuses.append(event["status"])
    assert statuses == ["started", "ringing", "answered", "completed"]
    assert json.loads(EventSink.posts[-1][1])["duration"].isdigit()


def test_direct_socket_entry_skips_the_webhooks(daemon):
    result = simulate_socket(daemon.ws, "audio/l16;rate=24000", {"pipeline": "louder"},
                             play=tone(24000, 0.3), play_rate=24000, fast=True)
    assert result.ok, result.error
    assert result.webhooks == [] and result.ncco is None
    assert result.frames_received == result.frames_sent == 65


def test_console_script_help_from_the_installed_venv():
    script = Path(sys.executable).with_name("voicews-call")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for option in ("--play", "--record", "--dtmf", "--calls", "--fast", "--signature-secret",
                   "--ws-host", "--event-url", "--method", "--seconds"):
        assert option in proc.stdout


def test_ws_host_reaches_a_daemon_behind_a_public_name(start_daemon):
    """The NCCO names wss://voice.example.com; --ws-host points the call at loopback instead."""
    daemon = start_daemon(base_config(public_url="https://voice.example.com"))
    result = simulate(CallSpec(answer_url=daemon.base + "/webhooks/answer",
                               ws_host=f"ws://127.0.0.1:{daemon.port}", seconds=0.2, fast=True))
    assert result.ok, result.error
    assert result.ncco[-1]["endpoint"][0]["uri"] == "wss://voice.example.com/socket"
    assert result.uri == daemon.ws
    assert {w.url for w in result.webhooks} == {daemon.base + "/webhooks/event"}
