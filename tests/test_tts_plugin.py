"""The worked example of a text-to-speech engine plugin (plugins/http_tts.py), through twistd.

A local HTTP server stands in for the cloud service: it answers every text with a phrase of
the real reading (16 kHz WAV), so what the caller hears must be exactly that phrase resampled
to the call's rate.  It refuses one text with HTTP 500, which the `say` step logs.
"""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile
from test_engines_vad import PHRASE_B, compose

from voicews.audio.files import resample
from voicews.simulator import CallSpec, simulate_many

from conftest import REPO

CLIP, _ = compose(16000, PHRASE_B)


class FakeCloud(BaseHTTPRequestHandler):
    requests: list[tuple[str, dict]] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeCloud.requests.append((self.headers.get("Authorization"), body))
        if body["text"] == "fail please":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"quota exceeded")
            return
        wav = io.BytesIO()
        soundfile.write(wav, CLIP, 16000, format="WAV", subtype="PCM_16")
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(wav.getvalue())))
        self.end_headers()
        self.wfile.write(wav.getvalue())

    def log_message(self, *args):
        pass


@pytest.fixture
def cloud():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeCloud)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeCloud.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}/speak"
    server.shutdown()
    server.server_close()


def test_a_plugin_engine_speaks_through_say_resampled_and_cached(start_daemon, cloud):
    daemon = start_daemon({
        "plugins": [str(REPO / "plugins" / "http_tts.py")],
        "tts": {"engine": "http-tts", "voice": "en-1",
                "options": {"url": cloud, "token": "s3cret", "timeout": 5}},
        "pipelines": {"greet": [{"say": {"text": "Good morning"}}],
                      "broken": [{"say": {"text": "fail please"}}]},
        "default_pipeline": "greet",
    })

    def greet(rate: int) -> CallSpec:
        return CallSpec(socket_uri=daemon.ws, content_type=f"audio/l16;rate={rate}",
                        headers={"pipeline": "greet"}, seconds=1.8)

    first = simulate_many([greet(8000), greet(24000)])
    again = simulate_many([greet(8000), CallSpec(socket_uri=daemon.ws, seconds=0.6,
                                                 headers={"pipeline": "broken"})])
    for result in [*first, again[0]]:
        assert result.ok, result.errors
        rate = result.rate
        expected = resample(CLIP, 16000, rate)
        heard = result.received
        assert len(heard) == -(-len(expected) // (rate // 50)) * (rate // 50)
        np.testing.assert_array_equal(heard[: len(expected)], expected)
        assert not heard[len(expected):].any()
        assert result.commands == [{"action": "notify", "payload": {"say": 1}}]
    # Asked once per rate (the second 8 kHz call came from the engine's cache), then the
    # text the service refuses.
    said = [("Bearer s3cret", {"text": "Good morning", "voice": "en-1"})] * 2
    assert FakeCloud.requests == [*said, ("Bearer s3cret", {"text": "fail please",
                                                            "voice": "en-1"})]
    assert again[1].ok and again[1].frames_received == 0
    daemon.wait_log("say: could not speak 'fail please': http-tts: "
                    f"{cloud} answered HTTP 500: quota exceeded")


def test_the_plugin_engines_settings_are_checked_at_load(start_daemon, cloud):
    daemon = start_daemon({
        "plugins": [str(REPO / "plugins" / "http_tts.py")],
        "tts": {"engine": "http-tts", "options": {"url": "ftp://example.com"}},
    }, wait=False)
    assert daemon.proc.wait(20) == 2
    assert "tts.options: url must start with http:// or https://, got 'ftp://example.com'" \
        in daemon.log()
