"""A minimal Vonage-side socket client for tests that need to send what Vonage never would.

Well-behaved calls in tests go through the `voicews-call` simulator's library API; this
client exists for the malformed, the oversized and the rude.
"""

from __future__ import annotations

import json

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def first_message(rate: int = 16000, **headers) -> str:
    return json.dumps(
        {"event": "websocket:connected", "content-type": f"audio/l16;rate={rate}", **headers}
    )


def random_frames(rate: int, count: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(-32768, 32768, rate // 50, dtype=np.int64).astype("<i2").tobytes()
        for _ in range(count)
    ]


def echo_call(url: str, rate: int = 16000, count: int = 100, seed: int = 0, **headers):
    """Send `count` random frames; return (sent, received binary, received text)."""
    frames = random_frames(rate, count, seed)
    received, texts = [], []
    with connect(url, max_size=None) as ws:
        ws.send(first_message(rate, **headers))
        for frame in frames:
            ws.send(frame)
        while len(received) < len(frames):
            message = ws.recv(timeout=10)
            (received if isinstance(message, bytes) else texts).append(message)
    return frames, received, texts


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
