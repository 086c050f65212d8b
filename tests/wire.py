"""Minimal Vonage-side socket clients for tests that need what Vonage never would do.

Well-behaved calls in tests go through the `voicews-call` simulator's library API; these exist
for the malformed, the oversized and the rude, and for calls held open across a reload or a
shutdown.  `RudeCall` speaks WebSocket over a bare TCP socket so it can ignore the server's
goodbye, which a real WebSocket library would answer by itself.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from contextlib import ExitStack
from urllib.parse import urlsplit

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def first_message(rate: int = 16000, **headers) -> str:
    return json.dumps(
        {"event": "websocket:connected", "content-type": f"audio/l16;rate={rate}", **headers}
    )


def random_frames(count: int, seed: int = 0, rate: int = 16000) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(-32768, 32768, rate // 50, dtype=np.int64).astype("<i2").tobytes()
        for _ in range(count)
    ]


class LiveCall:
    """An open call: send frames, read back what the pipeline sends."""

    def __init__(self, url: str, rate: int = 16000, **headers) -> None:
        self._stack = ExitStack()
        self.ws = self._stack.enter_context(connect(url, max_size=None, open_timeout=10))
        self.ws.send(first_message(rate, **headers))

    def exchange(self, frames: list[bytes]) -> list[bytes]:
        """Send `frames`; return as many binary frames as came back (text is skipped)."""
        for frame in frames:
            self.ws.send(frame)
        received: list[bytes] = []
        while len(received) < len(frames):
            message = self.ws.recv(timeout=10)
            if isinstance(message, bytes):
                received.append(message)
        return received

    def wait_closed(self, timeout: float = 20) -> tuple[int, str]:
        """Read until the server closes; the (code, reason) it closed with."""
        try:
            while True:
                self.ws.recv(timeout=timeout)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return exc.rcvd.code, exc.rcvd.reason

    def close(self) -> None:
        self._stack.close()


def echo_call(url: str, count: int = 50, seed: int = 0, rate: int = 16000, **headers):
    """A whole call: (frames sent, binary frames received)."""
    frames = random_frames(count, seed, rate)
    call = LiveCall(url, rate, **headers)
    try:
        return frames, call.exchange(frames)
    finally:
        call.close()


def closed_with(url: str, *messages, timeout: float = 10) -> tuple[int, str]:
    """Send `messages` and return the (code, reason) the server closed with."""
    with connect(url, max_size=None) as ws:
        try:
            for message in messages:
                ws.send(message)
            while True:
                ws.recv(timeout=timeout)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("server did not close")


class RudeCall:
    """A call that opens properly, then never reads again (so never answers a close)."""

    def __init__(self, url: str, **headers) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            assert chunk, f"connection closed during handshake: {response!r}"
            response += chunk
        assert response.startswith(b"HTTP/1.1 101"), response
        self._send_text(first_message(**headers).encode())

    def _send_text(self, payload: bytes) -> None:
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)

    def closed_by_server(self, timeout: float = 20) -> bool:
        """Whether the server dropped the TCP connection (read to EOF, ignoring frames)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()
