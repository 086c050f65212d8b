"""A small Vonage-like socket client for tests: first message, 20 ms frames, events.

It plays Vonage's part with ``websockets.sync.client``: sends the first JSON
message with a content-type and headers, then L16 frames, and collects what
the daemon sends back (audio frames and text commands, in arrival order).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from voicews import audiofile


def tone(freq: float, seconds: float, rate: int, amplitude: float = 8000.0) -> np.ndarray:
    """audiofile.tone with the frequency first and the amplitude in sample units."""
    return audiofile.tone(rate, seconds, freq, amplitude / audiofile.FULL_SCALE)


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    """The strongest frequency in `samples` (Hann window, FFT)."""
    x = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(x))
    spectrum[0] = 0
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def band_level(samples: np.ndarray, rate: int, freq: float, width: float = 20.0) -> float:
    """Spectral energy within `width` Hz of `freq`, relative to the whole spectrum."""
    x = samples.astype(np.float64) * np.hanning(len(samples))
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    band = power[np.abs(freqs - freq) <= width].sum()
    return float(band / power.sum())


class Call:
    """One simulated Vonage call on the daemon's socket."""

    def __init__(self, url: str, rate: int = 16000, pipeline: str | None = None,
                 headers: dict | None = None, legacy: bool = False) -> None:
        self.rate = rate
        self.frame = rate // 50
        # Entered as a context manager (closed in close/__exit__): websockets 17.1 warns otherwise.
        self.ws = connect(url, open_timeout=10, close_timeout=5, max_size=2**20).__enter__()
        first = {} if legacy else {"event": "websocket:connected"}
        first["content-type"] = f"audio/l16;rate={rate}"
        if pipeline is not None:
            first["pipeline"] = pipeline
        first.update(headers or {})
        self.ws.send(json.dumps(first))
        self.received: list[bytes | dict] = []  # audio frames and parsed text, in order

    def send_audio(self, samples: np.ndarray) -> int:
        """Send `samples` as whole frames (the last padded with silence); returns frames sent."""
        samples = np.asarray(samples, dtype="<i2")
        pad = (-len(samples)) % self.frame
        if pad:
            samples = np.concatenate((samples, np.zeros(pad, "<i2")))
        frames = samples.reshape(-1, self.frame)
        for frame in frames:
            self.ws.send(frame.tobytes())
        return len(frames)

    def send_silence(self, frames: int) -> None:
        self.send_audio(np.zeros(frames * self.frame, "<i2"))

    def send_event(self, event: dict) -> None:
        self.ws.send(json.dumps(event))

    def dtmf(self, digit: str, duration: int = 200) -> None:
        self.send_event({"event": "websocket:dtmf", "digit": digit, "duration": duration})

    def _recv(self, timeout: float) -> bytes | dict:
        message = self.ws.recv(timeout=timeout)
        item = message if isinstance(message, bytes) else json.loads(message)
        self.received.append(item)
        return item

    def receive_frames(self, count: int, timeout: float = 10.0) -> np.ndarray:
        """Wait for `count` more audio frames; return them as one int16 array."""
        deadline = time.monotonic() + timeout
        frames: list[bytes] = []
        while len(frames) < count:
            item = self._recv(max(0.01, deadline - time.monotonic()))
            if isinstance(item, bytes):
                assert len(item) == self.frame * 2, f"frame of {len(item)} bytes"
                frames.append(item)
        return np.frombuffer(b"".join(frames), dtype="<i2")

    def exchange(self, samples: np.ndarray, timeout: float = 10.0) -> np.ndarray:
        """Send `samples` frame by frame and collect one frame back per frame sent."""
        n = self.send_audio(samples)
        return self.receive_frames(n, timeout)

    def texts(self) -> list[dict]:
        return [item for item in self.received if isinstance(item, dict)]

    def wait_text(self, timeout: float = 10.0) -> dict:
        """The next text message, skipping audio frames."""
        deadline = time.monotonic() + timeout
        while True:
            item = self._recv(max(0.01, deadline - time.monotonic()))
            if isinstance(item, dict):
                return item

    def wait_closed(self, timeout: float = 10.0) -> int | None:
        """Read until the daemon closes the socket; return its close code."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self._recv(max(0.01, deadline - time.monotonic()))
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
        raise AssertionError("socket still open")

    def close(self) -> None:
        self.ws.close()

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake (a caller vanishing)."""
        sock = self.ws.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()

    def __enter__(self) -> Call:
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
