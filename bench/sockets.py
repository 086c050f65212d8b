"""micro.py --sockets N: the whole daemon's frame path over real loopback sockets, in-process.

micro.py's default drives one protocol on an in-memory transport: the frame path
without the I/O around it.  Over sockets a frame also costs a reactor wake-up (shared
by every call ready at that moment), an epoll poll, a recv and a send: the part
bench/run.py measures and this does not see.  Here the real service (the real
reactor, Site, read loop and pipelines) listens on loopback, and N calls of our own
each send one frame; one reactor iteration then reads and echoes all N (so N is the
number of frames per wake-up), and the calls read their echoes back.  Under
``--instructions`` that is a repeatable count of the I/O path too; it includes the
calls' own sends and receives (the same for every version of voicews, so a
difference between two versions is the server's).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from typing import Any

from load import client_frame, test_payload

HANDSHAKE = (
    b"GET /socket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(reactor: Any, done, what: str, turns: int = 100_000) -> None:
    for _ in range(turns):
        if done():
            return
        reactor.iterate(0.001)
    raise RuntimeError(f"gave up waiting for {what}")


def run(settings: Any, pm: Any, pipeline: str, calls: int, frames: int) -> dict:
    """Open `calls` calls on `pipeline`, then echo `frames` frames in rounds of one per call."""
    from twisted.internet import reactor

    from voicews.app.service import VoicewsService
    from voicews.runtime.state import Runtime

    runtime = Runtime(settings=settings, pm=pm, clock=reactor)
    port = _free_port()
    service = VoicewsService(runtime, f"tcp:{port}:interface=127.0.0.1", reactor)
    service.startService()
    socks = []
    for _ in range(calls):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(HANDSHAKE)
        socks.append(s)
    for s in socks:
        s.setblocking(False)
    answers = {s: b"" for s in socks}

    def handshaken() -> bool:
        for s in socks:
            with contextlib.suppress(BlockingIOError):
                answers[s] += s.recv(4096)
        return all(b"\r\n\r\n" in a for a in answers.values())

    _until(reactor, handshaken, "the handshakes")
    first = {"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
             "pipeline": pipeline}
    for s in socks:
        s.sendall(client_frame(1, json.dumps(first).encode()))
    _until(reactor, lambda: sum(c.pipeline is not None for c in runtime.calls) == calls,
           "the calls to start")
    frame = client_frame(2, test_payload(320))
    echo = 4 + 640
    rounds = max(1, frames // calls)
    extra_turns = 0
    iterate = reactor.iterate
    started = time.process_time()
    for _ in range(rounds):
        for s in socks:
            s.send(frame)
        iterate(0)
        for s in socks:
            while True:
                try:
                    got = s.recv(echo)
                except BlockingIOError:
                    extra_turns += 1  # not echoed in that one wake-up: turn again
                    iterate(0)
                    continue
                if len(got) != echo:  # a frame in pieces: not expected on loopback
                    raise RuntimeError(f"echo of {len(got)} bytes")
                break
    spent = time.process_time() - started
    for s in socks:
        s.close()
    _until(reactor, lambda: len(runtime.calls) == 0, "the calls to end")
    return {"pipeline": pipeline, "sockets": calls, "frames": rounds * calls,
            "extra_turns": extra_turns,
            "us_per_frame": round(1e6 * spent / (rounds * calls), 2),
            "note": "process CPU of the server and the calls together"}
