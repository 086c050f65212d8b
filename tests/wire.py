"""Vonage-side socket clients for tests that need what Vonage never would do, or a held call.

Well-behaved calls in tests go through the `voicews-call` simulator's library API
(`voicews.simulator`); this module is for the rest:

- `Call`: a call held open while the test acts around it (a reload, a shutdown, a key press
  at an exact frame, an odd event, a malformed frame), recording everything it receives;
- `closed_with`: a socket whose first messages are bad, and the close it gets;
- `RawCall` and the raw-socket helpers: WebSocket over a bare TCP socket, so a test can
  send half a handshake, a frame that lies about its length, split, coalesced or unmasked
  frames, read the server's frames byte for byte, or ignore the server's goodbye (a
  WebSocket library would answer it by itself);
- `Witness`: a live echo call that must stay bit-exact while a test misbehaves beside it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import threading
import time
from urllib.parse import urlsplit

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def first_message(rate: int = 16000, **fields) -> str:
    """Vonage's first text message on the socket, with `fields` as the call's headers."""
    return json.dumps(
        {"event": "websocket:connected", "content-type": f"audio/l16;rate={rate}", **fields}
    )


def frame(i: int, nbytes: int = 640) -> bytes:
    """Frame number `i`: deterministic full-scale noise, a different frame for every `i`."""
    return np.random.default_rng(i).bytes(nbytes)


def random_frames(count: int, start: int = 0, rate: int = 16000) -> list[bytes]:
    """`count` consecutive 20 ms frames at `rate`, numbered from `start` (see `frame`)."""
    return [frame(i, rate // 50 * 2) for i in range(start, start + count)]


class Call:
    """One call held open on the daemon's socket: send audio, frames and events, read back.

    The first message carries `fields` (``pipeline=``, ``uuid=`` ...).  Everything the daemon
    sends is kept in `received` in arrival order: audio frames as bytes, text parsed as JSON.
    `handshake_headers` go on the HTTP upgrade request (``Authorization`` ...).
    """

    def __init__(self, url: str, rate: int = 16000, *, handshake_headers: dict | None = None,
                 **fields) -> None:
        self.rate = rate
        self.frame = rate // 50
        # Entered as a context manager (closed in close/__exit__): websockets 17.1 warns otherwise.
        # No permessage-deflate offer: Vonage makes none, and a compressed socket would take
        # autobahn's general path instead of CallProtocol's frame fast path.
        self.ws = connect(url, additional_headers=handshake_headers or {}, open_timeout=10,
                          close_timeout=5, max_size=None, compression=None).__enter__()
        self.ws.send(first_message(rate, **fields))
        self.received: list[bytes | dict] = []

    def send_audio(self, samples: np.ndarray) -> int:
        """Send `samples` as whole frames (the last padded with silence); returns frames sent."""
        samples = np.asarray(samples, dtype="<i2")
        pad = (-len(samples)) % self.frame
        if pad:
            samples = np.concatenate((samples, np.zeros(pad, "<i2")))
        chunks = samples.reshape(-1, self.frame)
        for chunk in chunks:
            self.ws.send(chunk.tobytes())
        return len(chunks)

    def send_silence(self, count: int) -> None:
        self.send_audio(np.zeros(count * self.frame, "<i2"))

    def send_event(self, event: dict) -> None:
        self.ws.send(json.dumps(event))

    def dtmf(self, digit: str, duration: int = 200) -> None:
        self.send_event({"event": "websocket:dtmf", "digit": digit, "duration": duration})

    def _recv(self, timeout: float) -> bytes | dict:
        message = self.ws.recv(timeout=timeout)
        item = message if isinstance(message, bytes) else json.loads(message)
        self.received.append(item)
        return item

    def receive_raw(self, count: int, timeout: float = 10.0) -> list[bytes]:
        """The next `count` audio frames (text in between is kept in `received` only)."""
        deadline = time.monotonic() + timeout
        got: list[bytes] = []
        while len(got) < count:
            item = self._recv(max(0.01, deadline - time.monotonic()))
            if isinstance(item, bytes):
                assert len(item) == self.frame * 2, f"frame of {len(item)} bytes"
                got.append(item)
        return got

    def receive_frames(self, count: int, timeout: float = 10.0) -> np.ndarray:
        """Wait for `count` more audio frames; return them as one int16 array."""
        return np.frombuffer(b"".join(self.receive_raw(count, timeout)), dtype="<i2")

    def exchange(self, samples: np.ndarray, timeout: float = 10.0) -> np.ndarray:
        """Send `samples` frame by frame and collect one frame back per frame sent."""
        return self.receive_frames(self.send_audio(samples), timeout)

    def exchange_frames(self, sent: list[bytes], timeout: float = 10.0) -> list[bytes]:
        """Send `sent` as they are; return as many audio frames as came back."""
        for message in sent:
            self.ws.send(message)
        return self.receive_raw(len(sent), timeout)

    def echo_roundtrip(self, start: int, count: int) -> None:
        """Frames `start`.. one at a time, in lockstep: each must come back next, bit-exact."""
        for i in range(start, start + count):
            sent = frame(i, self.frame * 2)
            self.ws.send(sent)
            assert self._recv(10) == sent, f"frame {i} came back different"

    def texts(self) -> list[dict]:
        return [item for item in self.received if isinstance(item, dict)]

    def wait_text(self, timeout: float = 10.0) -> dict:
        """The next text message, skipping audio frames."""
        deadline = time.monotonic() + timeout
        while True:
            item = self._recv(max(0.01, deadline - time.monotonic()))
            if isinstance(item, dict):
                return item

    def wait_closed(self, timeout: float = 20.0) -> tuple[int, str]:
        """Read until the daemon closes the socket; the (code, reason) it closed with."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    self._recv(max(0.01, deadline - time.monotonic()))
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return exc.rcvd.code, exc.rcvd.reason
        raise AssertionError("server did not close the socket")

    def close(self) -> None:
        self.ws.close()

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake (a caller vanishing)."""
        reset(self.ws.socket)

    def __enter__(self) -> Call:
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()


def echo_call(url: str, count: int = 50, start: int = 0, rate: int = 16000, **fields):
    """A whole call of `count` frames: (frames sent, audio frames received)."""
    sent = random_frames(count, start, rate)
    with Call(url, rate, **fields) as call:
        return sent, call.exchange_frames(sent)


def closed_with(url: str, *messages, timeout: float = 10) -> tuple[int, str]:
    """Open a socket, send `messages` (no first message of ours); the (code, reason) it got."""
    with connect(url, max_size=None, open_timeout=10) as ws:
        try:
            for message in messages:
                ws.send(message)
            while True:
                ws.recv(timeout=timeout)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("server did not close")


class Witness:
    """A live echo call running in a thread while a test misbehaves next to it.

    It exchanges frames in lockstep (send one, receive it back) and records the
    first mismatch or error; ``stop()`` checks it stayed bit-exact throughout.
    """

    def __init__(self, daemon) -> None:
        self.daemon = daemon
        self.frames = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.call = Call(daemon.ws, pipeline="echo")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Witness:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            i = 0
            while not self._stop.is_set():
                self.call.echo_roundtrip(i, 1)
                i += 1
                self.frames = i
                time.sleep(0.02)  # at most real time, like a real caller
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(20)
        assert self.error is None, f"witness call broke: {self.error!r}"
        assert self.frames > 0, "witness call exchanged no frames"
        self.call.echo_roundtrip(10**6, 5)  # still bit-exact afterwards
        self.call.close()


# -- raw sockets: what a WebSocket library would not let a client do ------------------------


def raw_socket(port: int, timeout: float = 10.0, rcvbuf: int | None = None) -> socket.socket:
    """A TCP connection to the daemon; `rcvbuf` shrinks its receive buffer (a peer that
    will not read then stops the daemon's output after a few KB)."""
    if rcvbuf is None:
        return socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return sock


def raw_handshake(port: int, path: str = "/socket", headers: dict | None = None,
                  timeout: float = 10.0, rcvbuf: int | None = None,
                  ) -> tuple[socket.socket, bytes]:
    """A WebSocket handshake over a plain socket; returns the socket and the response head."""
    sock = raw_socket(port, timeout, rcvbuf)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
        "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head


def ws_frame(payload: bytes, opcode: int = 2, length: int | None = None, *,
             masked: bool = True) -> bytes:
    """A final client frame, masked with a fresh random key as RFC 6455 requires.

    `length` may claim more than `payload` holds; ``masked=False`` breaks the rule that
    every client frame is masked.
    """
    n = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class ServerFrames:
    """The server's frames read off a raw socket, one at a time, exactly as sent.

    Bytes past one frame are kept for the next (TCP splits and coalesces frames), and a
    masked server frame fails the test: RFC 6455 forbids it, and a client would drop us.
    """

    def __init__(self, sock: socket.socket, buf: bytes = b"") -> None:
        self.sock = sock
        self.buf = buf

    def next(self) -> tuple[int, bytes]:
        """The next frame's (opcode, payload); ConnectionError when the socket ends first."""
        while True:
            frame = self._parse()
            if frame is not None:
                return frame
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        assert not buf[1] & 0x80, "the server masked a frame"
        n, off = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, off = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, off = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < off + n:
            return None
        self.buf = buf[off + n :]
        return buf[0] & 0x0F, buf[off : off + n]


def read_close_frame(sock: socket.socket) -> int | None:
    """Read server frames until a close frame; its code (None when the socket just ended)."""
    frames = ServerFrames(sock)
    while True:
        try:
            opcode, payload = frames.next()
        except (ConnectionError, TimeoutError):
            return None
        if opcode == 8:
            return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None


def closed_by_server(sock: socket.socket, timeout: float = 10.0) -> bool:
    """Whether the server ends the connection (FIN or RST) within `timeout`, ignoring data."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer sees a TCP RST, not a goodbye."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class RawCall:
    """A call over a bare socket: it opens properly, then sends and reads only when told.

    `send` puts bytes on the wire as they are (split frames, several frames in one write,
    frames built with `ws_frame`); `frame` reads the server's next frame.  A test that never
    calls `frame` never answers the server's close, as a vanished caller would not.
    """

    def __init__(self, url: str, **fields) -> None:
        parts = urlsplit(url)
        self.sock, head = raw_handshake(parts.port, parts.path)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.frames = ServerFrames(self.sock, head.partition(b"\r\n\r\n")[2])
        self.send(ws_frame(first_message(**fields).encode(), opcode=1))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self) -> tuple[int, bytes]:
        """The server's next frame: (opcode, payload)."""
        return self.frames.next()

    def closed_by_server(self, timeout: float = 20) -> bool:
        """Whether the server dropped the TCP connection (read to EOF, ignoring frames)."""
        return closed_by_server(self.sock, timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawCall:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()
