"""The bridge step's CPU per frame: a call bridged to a local bot, against the same call echoed.

The call side is micro.py's harness (one real CallProtocol fed masked frames
through an in-memory transport); the bot is a test bot of tests/bots.py
(websockets, inverted echo, no marks) in a process of its own, so only
voicews's work is timed: each caller frame encoded for the bot (Twilio:
resampled to 8 kHz, μ-law, base64, JSON) and sent over a real loopback
WebSocket, and each echo received, decoded (Twilio: resampled back) and played
through the mix bus.  Frames go in batches of `--batch` (default 10: 200 ms of
audio) and the harness turns the reactor until every echo of the batch has come
back, so the figure includes the reactor's socket work for both messages.

    .venv/bin/python bench/bridge.py [--frames 20000] [--protocols twilio,vonage]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from load import client_frame, test_payload  # noqa: E402
from micro import make_protocol  # noqa: E402

FRAME_SAMPLES = 320


def serve_bot(protocol: str) -> None:
    """Run one test bot until stdin closes; print its port first."""
    sys.path.insert(0, str(BENCH.parent / "tests"))
    from bots import TwilioBot, VonageBot

    cls = TwilioBot if protocol == "twilio" else VonageBot
    with cls(marks=False) as bot:
        print(bot.port, flush=True)
        sys.stdin.read()


def turn_until(done, timeout: float = 10.0) -> None:
    from twisted.internet import reactor

    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit("timed out: the bot did not answer")
        reactor.iterate(0.05)  # type: ignore[attr-defined]  # returns on the first event


def measure(pipeline: str, config: Path, frames: int, batch: int) -> float:
    proto, transport = make_protocol(pipeline, str(config))
    step = proto.pipeline.processors[-1]
    bridged = hasattr(step, "stream")
    if bridged:
        turn_until(lambda: step.stream is not None)
    frame = client_frame(2, test_payload(FRAME_SAMPLES))
    feed = proto.dataReceived
    fed = 0
    before = time.process_time()
    for _ in range(frames // batch):
        for _ in range(batch):
            feed(frame)
        fed += batch
        if bridged:
            # Every echo back but the resampler's delay (30 ms at 16 kHz).
            want = fed * FRAME_SAMPLES - 480
            turn_until(lambda want=want: step.out >= want)
    spent = time.process_time() - before
    assert proto.pipeline.frames_in >= fed
    if bridged:
        assert step.ignored == 0 and step.dropped_samples == 0 and step.frames_unsent == 0
        assert transport.writes >= fed - 2 * batch  # the echoes reached the caller
    return 1e6 * spent / fed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--protocols", default="twilio,vonage")
    p.add_argument("--serve-bot", choices=("twilio", "vonage"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_bot:
        serve_bot(args.serve_bot)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="voicews-bridge-bench-"))
    bots: list[subprocess.Popen[str]] = []
    pipelines: dict[str, list] = {"echo": ["echo"]}
    try:
        for protocol in args.protocols.split(","):
            bot = subprocess.Popen([sys.executable, __file__, "--serve-bot", protocol],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            bots.append(bot)
            assert bot.stdout is not None
            port = int(bot.stdout.readline())
            pipelines[f"bridge-{protocol}"] = [{"bridge": {
                "url": f"ws://127.0.0.1:{port}/stream", "protocol": protocol,
                "max_lead_seconds": 3600}}]
        config = workdir / "config.yaml"
        config.write_text(yaml.safe_dump({"pipelines": pipelines}))
        results = {name: round(measure(name, config, args.frames, args.batch), 1)
                   for name in pipelines}
    finally:
        for bot in bots:
            if bot.stdin is not None:
                bot.stdin.close()
            bot.wait(10)
    print(json.dumps({"frames": args.frames, "batch": args.batch,
                      "us_per_frame": results,
                      "bridge_us_per_frame": {name: round(us - results["echo"], 1)
                                              for name, us in results.items()
                                              if name != "echo"}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
