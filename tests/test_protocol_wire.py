"""The socket's wire behaviour, through a real twistd, with the frame fast path in place.

CallProtocol delivers whole masked binary frames itself and sends audio frames
with one write (see CallProtocol.dataReceived and _send_audio); everything else
must still behave exactly as autobahn makes it behave.  These tests speak to a
real daemon with the `websockets` client (which masks every frame with a fresh
random key) and, where a client library would refuse to misbehave, with a raw
socket.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from contextlib import contextmanager

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

FIRST = {"event": "websocket:connected", "content-type": "audio/l16;rate=16000"}
FRAME = 640


def tone(seed: int = 0) -> bytes:
    """One 20 ms frame of noise: every byte value shows up under every mask byte."""
    rng = np.random.default_rng(seed)
    return rng.integers(-20000, 20000, FRAME // 2, dtype=np.int16).astype("<i2").tobytes()


@contextmanager
def open_call(daemon, pipeline: str = "echo"):
    with connect(daemon.ws, open_timeout=10, compression=None) as ws:
        ws.send(json.dumps({**FIRST, "pipeline": pipeline}))
        yield ws


def closed_code(ws) -> int | None:
    """Read until the server closes; the close code it sent."""
    with pytest.raises(ConnectionClosed):
        while True:
            ws.recv(timeout=10)
    return ws.close_code


# A raw client, for what a library will not send: split, coalesced, unmasked frames.

def masked_frame(opcode: int, payload: bytes, fin: bool = True, key: bytes | None = None) -> bytes:
    key = key if key is not None else os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + body


def unmasked_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    head = bytes([0x80 | opcode]) + (
        bytes([n]) if n < 126 else bytes([126]) + struct.pack("!H", n)
    )
    return head + payload


class RawCall:
    def __init__(self, daemon, pipeline: str = "echo") -> None:
        self.sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
        self.sock.sendall(
            f"GET /socket HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        status, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert b" 101 " in status.split(b"\r\n")[0], status
        self.send(masked_frame(1, json.dumps({**FIRST, "pipeline": pipeline}).encode()))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload).  Server frames must be unmasked."""
        while True:
            if len(self.buf) >= 2:
                assert not self.buf[1] & 0x80, "the server masked a frame"
                n, head = self.buf[1] & 0x7F, 2
                if n == 126 and len(self.buf) >= 4:
                    n, head = struct.unpack("!H", self.buf[2:4])[0], 4
                if n != 126 and len(self.buf) >= head + n:
                    opcode, payload = self.buf[0] & 0x0F, self.buf[head : head + n]
                    self.buf = self.buf[head + n :]
                    return opcode, payload
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buf += data

    def close(self) -> None:
        self.sock.close()


def test_frames_echo_bit_exact_under_random_masks(daemon):
    with open_call(daemon) as ws:
        for i in range(60):
            frame = tone(i)
            ws.send(frame)
            assert ws.recv(timeout=10) == frame


def test_fragmented_binary_message_is_reassembled(daemon):
    frame = tone(1)
    with open_call(daemon) as ws:
        ws.send([frame[:100], frame[100:101], frame[101:]])  # three fragments, one message
        assert ws.recv(timeout=10) == frame
        ws.send(frame)  # and the fast path resumes afterwards
        assert ws.recv(timeout=10) == frame


def test_fragmented_first_message_is_accepted(daemon):
    with connect(daemon.ws, open_timeout=10) as ws:
        text = json.dumps({**FIRST, "pipeline": "louder"})
        ws.send([text[:10], text[10:]])
        frame = np.full(320, 1000, dtype="<i2").tobytes()
        ws.send(frame)
        louder = np.frombuffer(ws.recv(timeout=10), dtype="<i2")
        assert louder.tolist() == [1995] * 320  # round(1000 * 10 ** (6 / 20))


def test_ping_between_frames_gets_its_pong(daemon):
    with open_call(daemon) as ws:
        ws.send(tone(2))
        assert ws.recv(timeout=10) == tone(2)
        pong = ws.ping(b"are you there")
        assert pong.wait(10)
        ws.send(tone(3))
        assert ws.recv(timeout=10) == tone(3)


def test_frame_split_across_tcp_writes_and_frames_coalesced(daemon):
    call = RawCall(daemon)
    try:
        frames = [tone(10 + i) for i in range(5)]
        wire = masked_frame(2, frames[0])
        for i in range(len(wire)):  # one byte at a time: the header too
            call.send(wire[i : i + 1])
        # Four frames and a ping in one write: all echoed in order, the pong in between.
        call.send(b"".join([masked_frame(2, frames[1]), masked_frame(2, frames[2]),
                            masked_frame(9, b"mark"), masked_frame(2, frames[3]),
                            masked_frame(2, frames[4])]))
        got = [call.frame() for _ in range(6)]
        assert got == [(2, frames[0]), (2, frames[1]), (2, frames[2]), (10, b"mark"),
                       (2, frames[3]), (2, frames[4])]
    finally:
        call.close()


def test_unmasked_client_frame_is_a_protocol_error(daemon):
    call = RawCall(daemon)
    try:
        call.send(masked_frame(2, tone(4)))
        assert call.frame() == (2, tone(4))
        call.send(unmasked_frame(2, tone(5)))
        opcode, payload = call.frame()
        assert opcode == 8 and struct.unpack("!H", payload[:2])[0] == 1002
    finally:
        call.close()


def test_wrong_sized_frame_closes_with_1007_and_a_reason(daemon):
    with open_call(daemon) as ws:
        ws.send(tone(6) + b"\0")  # odd length: not a whole number of mask words either
        assert closed_code(ws) == 1007
        assert "641 bytes, expected 640" in ws.close_reason
    daemon.wait_log("frame of 641 bytes, expected 640")


def test_oversized_frame_is_refused_by_the_message_limit(daemon):
    with open_call(daemon) as ws:
        ws.send(b"\0" * 8000)  # over limits.max_message_bytes (7680)
        assert closed_code(ws) == 1009


def test_close_handshake_from_the_client(daemon):
    with open_call(daemon) as ws:
        ws.send(tone(7))
        assert ws.recv(timeout=10) == tone(7)
        ws.close(1000, "caller hung up")
        assert ws.close_code == 1000  # the server answered our close frame
    log = daemon.wait_log("call ended")
    assert "outcome=hangup" in log


def test_close_handshake_from_the_server_on_shutdown(daemon):
    with open_call(daemon) as ws:
        ws.send(tone(8))
        assert ws.recv(timeout=10) == tone(8)
        daemon.signal(15)
        assert closed_code(ws) == 1001
    assert daemon.stop() == 0


def test_frame_counters_count_live_and_ended_calls(daemon):
    with open_call(daemon) as ws:
        for i in range(7):
            ws.send(tone(i))
            ws.recv(timeout=10)
        assert daemon.metric("voicews_frames_in_total") == 7
        assert daemon.metric("voicews_frames_out_total") == 7
    daemon.wait_log("call ended")
    with open_call(daemon) as ws:
        ws.send(tone(1))
        ws.recv(timeout=10)
        assert daemon.metric("voicews_frames_in_total") == 8
    daemon.wait_log("frames_in=1 ")
    assert daemon.metric("voicews_frames_in_total") == 8
    assert daemon.metric("voicews_frames_out_total") == 8


def test_gain_rounds_and_saturates_every_sample(daemon):
    """The gain step's lookup table gives what the arithmetic gives: rounded, clipped."""
    values = np.array([30000, -30000, 16384, -16385, 1000, -1000, 3, -3, 1, -1, 0,
                       32767, -32768] * 25, dtype="<i2")[:320]
    with open_call(daemon, "louder") as ws:
        ws.send(values.tobytes())
        got = np.frombuffer(ws.recv(timeout=10), dtype="<i2")
    expected = np.clip(np.rint(values * 10 ** (6 / 20)), -32768, 32767).astype("<i2")
    assert got.tolist() == expected.tolist()
