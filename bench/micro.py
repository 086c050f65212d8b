"""In-process microbenchmark of the socket hot path: CPU per frame without the network.

The full benchmark (run.py) measures whole processes on loopback, which on a
shared 2-core machine is noisy.  This drives one real CallProtocol (the real
factory, config, session, pipeline and sender) through an in-memory transport:
the handshake, the Vonage first message, then `--frames` masked binary frames,
and reports process CPU µs per frame.  Stable enough to compare one code change.

    .venv/bin/python bench/micro.py --frames 200000 [--pipeline gain] [--profile]
    .venv/bin/python bench/micro.py --pipeline vad --signal speech   # the VAD on real speech

The caller's frames are a quiet 440 Hz tone by default (``--signal silence`` or ``speech``:
the test reading, looped): a voice detector does more work on what sounds like speech.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
# --src DIR measures another voicews source tree (e.g. `git archive main`): before/after.
_src = sys.argv[sys.argv.index("--src") + 1] if "--src" in sys.argv else str(BENCH.parent)
sys.path.insert(0, _src)
sys.path.insert(0, str(BENCH))

from load import client_frame, test_payload  # noqa: E402


class NullTransport:
    """Enough of ITCPTransport for the protocol; counts what it is given."""

    disconnecting = False

    def __init__(self) -> None:
        self.written = 0
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.writes += 1

    def writeSequence(self, seq) -> None:  # noqa: N802
        for data in seq:
            self.write(data)

    def getPeer(self):  # noqa: N802
        from twisted.internet.address import IPv4Address

        return IPv4Address("TCP", "127.0.0.1", 40000)

    def getHost(self):  # noqa: N802
        from twisted.internet.address import IPv4Address

        return IPv4Address("TCP", "127.0.0.1", 8080)

    def setTcpNoDelay(self, enabled) -> None:  # noqa: N802
        pass

    def loseConnection(self) -> None:
        pass

    def abortConnection(self) -> None:
        pass

    def registerProducer(self, producer, streaming) -> None:  # noqa: N802
        pass

    def unregisterProducer(self) -> None:  # noqa: N802
        pass


def bench_settings(pm, config: str | None):
    """Settings with the builtin pipelines (echo, gain, file-inject, vad, barge-in), or those
    of `config`.

    Frames arrive here far faster than real time, so the paced sender's lead is lifted:
    otherwise it would hold, then drop, output after a second's worth.
    """
    from dataclasses import replace

    from voicews.config import plugins
    from voicews.config.settings import load_settings

    if config is None:
        workdir = Path(tempfile.mkdtemp(prefix="voicews-micro-"))
        pipelines = {"echo": ["echo"], "gain": ["echo", {"gain": {"db": 6}}]}
        known = plugins.collect_processors(pm)
        if "vad" in known:  # voice activity (and barge-in, which only reacts to its events)
            pipelines["vad"] = ["echo", "vad"]
            pipelines["barge-in"] = ["echo", "vad", "barge-in"]
        if "file-inject" in known:
            from run import write_tone

            write_tone(workdir / "tone.wav")
            pipelines["file-inject"] = [
                "echo", {"file-inject": {"path": "tone.wav", "mode": "mix", "loop": True}},
            ]
        config = workdir / "config.yaml"
        config.write_text(yaml.safe_dump({"pipelines": pipelines}))
    settings = load_settings(Path(config), pm)
    # (--sockets runs the real service: its stall watch's heartbeat, a reactor turn every
    # stall_seconds / 5 of wall time, would count more the slower the run, e.g. in valgrind.)
    limits = replace(settings.raw.limits, max_lead_seconds=1e9, idle_timeout=1e6,
                     max_burst_seconds=1e9, stall_seconds=1e6)
    return replace(settings, raw=replace(settings.raw, limits=limits))


def make_protocol(pipeline: str, config: str | None = None):
    from twisted.internet import reactor

    from voicews.call.protocol import CallFactory
    from voicews.config import plugins
    from voicews.runtime.state import Runtime

    pm = plugins.make_plugin_manager()
    runtime = Runtime(settings=bench_settings(pm, config), pm=pm, clock=reactor)
    factory = CallFactory(runtime)
    from twisted.internet.address import IPv4Address

    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = NullTransport()
    proto.makeConnection(transport)
    proto.dataReceived(
        b"GET /socket HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    first = {"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
             "pipeline": pipeline}
    proto.dataReceived(client_frame(1, json.dumps(first).encode()))
    assert proto.pipeline is not None, "the first message was not accepted"
    return proto, transport


def payloads(signal: str) -> list[bytes]:
    """The caller's frames (16 kHz), one WebSocket message each; the list is cycled."""
    if signal == "tone":
        return [client_frame(2, test_payload(320))]
    if signal == "silence":
        return [client_frame(2, bytes(640))]
    import soundfile

    speech, _ = soundfile.read(BENCH.parent / "tests" / "data" / "speech" / "two_cities.wav",
                               dtype="int16")
    whole = len(speech) // 320 * 320
    return [client_frame(2, speech[i:i + 320].tobytes()) for i in range(0, whole, 320)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=200_000)
    p.add_argument("--pipeline", default="echo")
    p.add_argument("--batch", type=int, default=1, help="frames per dataReceived call")
    p.add_argument("--signal", choices=("tone", "silence", "speech"), default="tone",
                   help="what the caller sends (speech: the test reading, 16 kHz, looped)")
    p.add_argument("--profile", action="store_true", help="print a cProfile of the frame loop")
    p.add_argument("--src", help="voicews source tree to measure (default: this one)")
    p.add_argument("--config", help="measure a pipeline of this config.yaml (your plugins "
                                    "included) instead of the builtin ones")
    p.add_argument("--sockets", type=int, metavar="N",
                   help="over real loopback sockets: the real service and N calls, one frame "
                        "each per reactor wake-up (bench/sockets.py): the I/O path included")
    p.add_argument("--instructions", action="store_true",
                   help="count instructions per frame under valgrind (callgrind) instead of "
                        "timing: the same figure on every run, whatever the machine is doing")
    args = p.parse_args(argv)
    if args.instructions:
        return count_instructions(args)
    if args.sockets:
        import sockets

        from voicews.config import plugins

        pm = plugins.make_plugin_manager()
        result = sockets.run(bench_settings(pm, args.config), pm, args.pipeline, args.sockets,
                             args.frames)
        print(json.dumps(result))
        return 0
    proto, transport = make_protocol(args.pipeline, args.config)
    frames_list = payloads(args.signal)
    chunks = [b"".join(frames_list[(i + j) % len(frames_list)] for j in range(args.batch))
              for i in range(0, len(frames_list), args.batch)]
    chunk = chunks[0]
    rounds = args.frames // args.batch
    feed = proto.dataReceived
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    before, writes0 = time.process_time(), transport.writes
    if len(chunks) == 1:
        for _ in range(rounds):
            feed(chunk)
    else:
        count = len(chunks)
        for i in range(rounds):
            feed(chunks[i % count])
    spent = time.process_time() - before
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    frames = rounds * args.batch
    out = transport.writes - writes0
    assert proto.pipeline.frames_in >= frames and out >= frames, (proto.pipeline.frames_in, out)
    print(json.dumps({"pipeline": args.pipeline, "signal": args.signal, "frames": frames,
                      "us_per_frame": round(1e6 * spent / frames, 2)}))
    return 0


def count_instructions(args) -> int:
    """Instructions per frame: callgrind totals of two runs, differing only in frame count.

    Start-up (imports, config, handshake) is the same in both runs and cancels out.
    Hash seeds and OpenBLAS's spinning threads are pinned so the counts repeat exactly.
    """
    import os
    import re
    import subprocess

    env = dict(os.environ, PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1")
    counts = {}
    for frames in (1000, 5000):
        command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                   sys.executable, __file__, "--frames", str(frames),
                   "--pipeline", args.pipeline, "--signal", args.signal, "--src", _src]
        if args.config:
            command += ["--config", args.config]
        if args.sockets:
            command += ["--sockets", str(args.sockets)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        counts[frames] = int(re.search(r"Collected : (\d+)", done.stderr).group(1))
    print(json.dumps({"pipeline": args.pipeline, "signal": args.signal, "src": _src,
                      "instructions_per_frame": (counts[5000] - counts[1000]) // 4000}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
