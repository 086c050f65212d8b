"""The load generator: N paced Vonage-like calls from one cheap asyncio process.

Each call is a raw asyncio Protocol, not a WebSocket library client: the
handshake is written by hand and every outgoing frame is one precomputed,
already-masked byte string (same mask key, same payload), so sending a frame
costs one ``transport.write``.  Incoming (unmasked) server frames are parsed
with a few byte reads.  On a 2-core machine the client's own CPU decides
whether the figures mean anything, so it measures its own pacing too.

Echo pipelines answer each inbound frame with exactly one frame, in order, so
the k-th frame back on a call is the echo of the k-th frame sent: latency is
``recv_time[k] - send_time[k]`` with no payload tagging.

Prints one JSON object on stdout; run.py drives it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import struct
import sys
import time
from array import array
from collections import deque

MASK = b"\x37\xfa\x21\x3d"
SLOTS = 20  # calls are spread over 20 one-millisecond slots of each 20 ms period
FRAME_SECONDS = 0.02


def mask(data: bytes, key: bytes = MASK) -> bytes:
    """XOR `data` with the 4-byte key (RFC 6455 client masking)."""
    n = len(data)
    rep = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(rep, "big")).to_bytes(n, "big")


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A complete, final, masked client frame."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    else:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    return header + MASK + mask(payload)


def test_payload(samples: int) -> bytes:
    """A quiet 440 Hz tone: real-looking audio that a +6 dB gain does not clip."""
    rate = samples * 50
    return b"".join(
        struct.pack("<h", int(3000 * math.sin(2 * math.pi * 440 * i / rate)))
        for i in range(samples)
    )


def proc_cpu(pid: int) -> float:
    """utime + stime of a process in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values, q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


class Stats:
    """Counters shared by all calls; the window flag gates what the steady figures count."""

    def __init__(self) -> None:
        self.window = False
        self.latencies = array("d")
        self.window_frames = 0
        self.wrong_size = 0
        self.wrong_content = 0
        self.text_in = 0
        self.closed_by_server = 0
        self.close_codes: dict[int, int] = {}


class Call(asyncio.Protocol):
    """One simulated Vonage socket."""

    def __init__(self, gen: Generator, index: int) -> None:
        self.gen = gen
        self.index = index
        self.transport: asyncio.Transport | None = None
        self.opened = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.buf = b""
        self.handshaken = False
        self.sent_times: deque[float] = deque()
        self.sent = 0
        self.received = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        g = self.gen
        transport.write(
            (
                f"GET {g.path} HTTP/1.1\r\nHost: {g.host}:{g.port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"call {self.index}: connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send_frame(self, now: float) -> None:
        self.transport.write(self.gen.frame)
        self.sent_times.append(now)
        self.sent += 1

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.buf + data if self.buf else data
        if not self.handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            status = buf[: buf.find(b"\r\n")]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(status.decode(errors="replace")))
                self.transport.close()
                return
            self.handshaken = True
            self.opened.set_result(None)
            buf = buf[end + 4 :]
        stats = self.gen.stats
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, length = buf[pos], buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + length
            if end > n:
                break
            opcode = b0 & 0x0F
            if opcode == 2:
                self.received += 1
                if length != self.gen.frame_bytes:
                    stats.wrong_size += 1
                elif self.gen.expect is not None and buf[pos + head : end] != self.gen.expect:
                    stats.wrong_content += 1
                if self.sent_times:
                    sent_at = self.sent_times.popleft()
                    if stats.window:
                        stats.latencies.append(now - sent_at)
                        stats.window_frames += 1
            elif opcode == 1:
                stats.text_in += 1
            elif opcode == 8:
                code = (buf[pos + head] << 8 | buf[pos + head + 1]) if length >= 2 else 1005
                stats.close_codes[code] = stats.close_codes.get(code, 0) + 1
                if not self.gen.closing:
                    stats.closed_by_server += 1
                    self.transport.write(client_frame(8, buf[pos + head : pos + head + 2]))
                self.transport.close()
            elif opcode == 9:
                self.transport.write(client_frame(10, buf[pos + head : end]))
            pos = end
        self.buf = buf[pos:] if pos < n else b""


class Generator:
    def __init__(self, args) -> None:
        self.host, self.port, self.path = args.host, args.port, args.path
        samples = args.rate // 50
        self.frame_bytes = samples * 2
        payload = test_payload(samples)
        self.frame = client_frame(2, payload)
        self.expect = payload if args.check_echo else None
        first = {
            "event": "websocket:connected",
            "content-type": f"audio/l16;rate={args.rate}",
            "pipeline": args.pipeline,
        }
        self.first = first
        self.stats = Stats()
        self.closing = False
        self.calls: list[Call] = []
        self.lateness = array("d")

    async def connect(self, count: int, batch: int = 50) -> None:
        loop = asyncio.get_running_loop()
        for start in range(0, count, batch):
            made = []
            for i in range(start, min(count, start + batch)):
                call = Call(self, i)
                made.append(call)
                await loop.create_connection(lambda c=call: c, self.host, self.port)
            await asyncio.wait_for(asyncio.gather(*(c.opened for c in made)), 30)
            for call in made:
                first = dict(self.first, call_uuid=f"bench-{call.index}")
                call.transport.write(client_frame(1, json.dumps(first).encode()))
            self.calls.extend(made)

    async def pace(self, stop: asyncio.Event) -> None:
        """Send one frame per call every 20 ms, calls spread over 1 ms slots."""
        slots: list[list[Call]] = [[] for _ in range(SLOTS)]
        for call in self.calls:
            slots[call.index % SLOTS].append(call)
        step = FRAME_SECONDS / SLOTS
        start = time.perf_counter() + 0.005
        k = 0
        while not stop.is_set():
            due = start + k * step
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter()
            if self.stats.window:
                self.lateness.append(now - due)
            for call in slots[k % SLOTS]:
                if not call.closed.done():
                    call.send_frame(now)
            k += 1


async def run(args) -> dict:
    gen = Generator(args)
    pid = args.server_pid
    out: dict = {"calls": args.calls, "pipeline": args.pipeline, "rate": args.rate}
    rss_base = proc_rss_kb(pid)
    t0 = time.perf_counter()
    await gen.connect(args.calls)
    out["connect_seconds"] = round(time.perf_counter() - t0, 3)
    await asyncio.sleep(args.idle)
    rss_idle = proc_rss_kb(pid)
    out["rss_base_kb"] = rss_base
    out["rss_idle_kb"] = rss_idle
    out["rss_per_idle_call_kb"] = round((rss_idle - rss_base) / args.calls, 2)

    stop = asyncio.Event()
    pacer = asyncio.create_task(gen.pace(stop))
    await asyncio.sleep(args.warmup)
    cpu0, own0, wall0 = proc_cpu(pid), time.process_time(), time.perf_counter()
    gen.stats.window = True
    await asyncio.sleep(args.seconds)
    gen.stats.window = False
    cpu1, own1, wall1 = proc_cpu(pid), time.process_time(), time.perf_counter()
    rss_load = proc_rss_kb(pid)
    stop.set()
    await pacer
    # Let in-flight echoes arrive before counting losses.
    deadline = time.perf_counter() + args.grace
    while time.perf_counter() < deadline:
        if all(c.received >= c.sent or c.closed.done() for c in gen.calls):
            break
        await asyncio.sleep(0.05)

    stats = gen.stats
    wall = wall1 - wall0
    frames = stats.window_frames
    server_cpu = cpu1 - cpu0
    sent = sum(c.sent for c in gen.calls)
    received = sum(c.received for c in gen.calls)
    lat = stats.latencies
    late = gen.lateness
    out.update(
        window_seconds=round(wall, 3),
        frames_sent=sent,
        frames_received=received,
        frames_lost=max(0, sent - received),
        wrong_size_frames=stats.wrong_size,
        wrong_content_frames=stats.wrong_content,
        closed_by_server=stats.closed_by_server,
        close_codes={str(k): v for k, v in stats.close_codes.items()},
        window_frames=frames,
        expected_window_frames=round(args.calls * wall / FRAME_SECONDS),
        server_cpu_seconds=round(server_cpu, 3),
        server_cpu_percent=round(100 * server_cpu / wall, 1),
        server_us_per_frame=round(1e6 * server_cpu / frames, 2) if frames else None,
        calls_per_core=round(FRAME_SECONDS * frames / server_cpu) if server_cpu > 0 else None,
        latency_ms={
            "p50": _ms(percentile(lat, 50)),
            "p99": _ms(percentile(lat, 99)),
            "max": _ms(max(lat) if lat else None),
        },
        rss_load_kb=rss_load,
        rss_per_call_kb=round((rss_load - rss_base) / args.calls, 2),
        client_cpu_percent=round(100 * (own1 - own0) / wall, 1),
        client_pacing_ms={
            "p50": _ms(percentile(late, 50)),
            "p99": _ms(percentile(late, 99)),
            "max": _ms(max(late) if late else None),
        },
    )
    out["client_kept_pacing"] = bool(late) and out["client_pacing_ms"]["p99"] < 2.0

    gen.closing = True
    for call in gen.calls:
        if not call.closed.done():
            call.transport.write(client_frame(8, struct.pack("!H", 1000)))
    try:
        await asyncio.wait_for(asyncio.gather(*(c.closed for c in gen.calls)), 5)
    except TimeoutError:
        for call in gen.calls:
            call.transport.abort()
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/socket")
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--rate", type=int, default=16000, choices=(8000, 16000, 24000))
    p.add_argument("--pipeline", default="echo")
    p.add_argument("--check-echo", action="store_true", help="frames must come back bit-exact")
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--idle", type=float, default=1.0, help="seconds idle before frames start")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=10.0, help="steady measuring window")
    p.add_argument("--grace", type=float, default=2.0, help="seconds to wait for late echoes")
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
