"""Clients for the security and bad-input tests: calls, a witness call, raw sockets."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import time
from pathlib import Path

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

PLUGIN = str(Path(__file__).resolve().parent / "plugins" / "misbehave.py")


def frame(i: int, nbytes: int = 640) -> bytes:
    """A distinct, deterministic frame: frame `i` never equals frame `i+1`."""
    head = struct.pack("<I", i & 0xFFFFFFFF)
    return (head * (nbytes // 4 + 1))[:nbytes]


def first_message(rate: int = 16000, **headers) -> str:
    return json.dumps(
        {"event": "websocket:connected", "content-type": f"audio/l16;rate={rate}", **headers}
    )


def open_call(daemon, pipeline: str = "echo", rate: int = 16000, headers: dict | None = None,
              **fields):
    """A started call: handshake plus first message."""
    # __enter__ without `with`: the call outlives this function (websockets >= 17 wants it).
    ws = connect(daemon.ws, additional_headers=headers or {}, open_timeout=10,
                 max_size=None).__enter__()
    ws.send(first_message(rate, pipeline=pipeline, **fields))
    return ws


def expect_close(ws, timeout: float = 15.0) -> tuple[int | None, str]:
    """Read until the server closes; the close code and reason it sent."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    except ConnectionClosed as exc:
        rcvd = exc.rcvd
        return (rcvd.code, rcvd.reason) if rcvd else (None, "")
    except TimeoutError:
        pass
    raise AssertionError("server did not close the socket")


def echo_roundtrip(ws, start: int, count: int, nbytes: int = 640) -> None:
    """Send `count` frames one at a time; each must come back bit-exact, in order."""
    for i in range(start, start + count):
        sent = frame(i, nbytes)
        ws.send(sent)
        got = ws.recv(timeout=10)
        assert got == sent, f"frame {i} came back different"


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
        self.ws = open_call(daemon, "echo")
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
                echo_roundtrip(self.ws, i, 1)
                i += 1
                self.frames = i
                time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(20)
        assert self.error is None, f"witness call broke: {self.error!r}"
        assert self.frames > 0, "witness call exchanged no frames"
        echo_roundtrip(self.ws, 10**6, 5)  # still bit-exact afterwards
        self.ws.close()


def wait_metric(daemon, name: str, value: float, labels: str = "", timeout: float = 10.0):
    """Wait until a /metrics sample equals `value`; return it."""
    deadline = time.monotonic() + timeout
    while True:
        got = daemon.metric(name, labels)
        if got == value or time.monotonic() > deadline:
            assert got == value, f"{name}{{{labels}}} = {got}, expected {value}"
            return got
        time.sleep(0.05)


def metric_or_zero(daemon, name: str, labels: str = "") -> float:
    try:
        return daemon.metric(name, labels)
    except AssertionError:
        return 0.0


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def raw_socket(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def raw_handshake(port: int, path: str = "/socket", headers: dict | None = None,
                  timeout: float = 10.0) -> tuple[socket.socket, bytes]:
    """A WebSocket handshake over a plain socket; returns the socket and the response head."""
    sock = raw_socket(port, timeout)
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


def ws_frame(payload: bytes, opcode: int = 2, length: int | None = None) -> bytes:
    """A masked client frame; `length` may claim more than `payload` holds."""
    n = len(payload) if length is None else length
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def read_close_frame(sock: socket.socket) -> int | None:
    """Read server frames until a close frame; its code (None when the socket just ended)."""
    buf = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return None
        if not chunk:
            return None
        buf += chunk
        while len(buf) >= 2:
            opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
            off = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, off = struct.unpack(">H", buf[2:4])[0], 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, off = struct.unpack(">Q", buf[2:10])[0], 10
            if len(buf) < off + n:
                break
            payload, buf = buf[off : off + n], buf[off + n :]
            if opcode == 8:
                return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer sees a TCP RST, not a goodbye."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
