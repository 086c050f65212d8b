"""Does live transcription delay anyone's audio?  An echo call beside transcribing calls.

Starts twistd (voicews) on loopback with an ``echo`` pipeline and a ``listen`` pipeline
(``[echo, transcribe]``, PocketSphinx with its default pool: one worker per core), then:

1. baseline: one echo call alone, its per-frame round trip measured by bench/load.py
   (paced 20 ms frames, frame k back matched to frame k sent);
2. loaded: the same echo call while ``--calls`` calls play the test reading
   (tests/data/speech/two_cities.wav, 44 s) in real time through the simulator and are
   transcribed; the word error rate of each call's finals shows they really were.

The goal (issue 16): p99 round trip of the echo call under 10 ms with 4 calls transcribing.

    .venv/bin/python bench/transcribe.py [--calls 4] [--seconds 30] [--out result.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from run import PY, Server, machine, start_target  # noqa: E402

from voicews.audio.files import load_audio  # noqa: E402
from voicews.engines.asr import word_error_rate  # noqa: E402
from voicews.simulator import CallSpec  # noqa: E402
from voicews.simulator.call import simulate_calls  # noqa: E402

SPEECH = REPO / "tests" / "data" / "speech"
REFERENCE = (SPEECH / "two_cities.txt").read_text().strip()
EVENT_LOG = REPO / "tests" / "plugins" / "event_log.py"


def echo_call(server: Server, seconds: float) -> dict:
    """One paced echo call through bench/load.py: its round-trip figures."""
    command = [PY, str(BENCH / "load.py"), "--port", str(server.port), "--calls", "1",
               "--pipeline", "echo", "--server-pid", str(server.proc.pid),
               "--seconds", str(seconds), "--warmup", "1", "--idle", "0.5", "--check-echo"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"load.py failed: {done.stderr[-2000:]}")
    out = json.loads(done.stdout)
    return {"latency_ms": out["latency_ms"], "frames_lost": out["frames_lost"],
            "wrong_content_frames": out["wrong_content_frames"],
            "client_pacing_ms": out["client_pacing_ms"],
            "server_cpu_percent": out["server_cpu_percent"]}


def transcribing_calls(server: Server, calls: int) -> tuple[threading.Thread, list]:
    """`calls` simulated callers reading the clip in real time, in a thread of their own."""
    clip = load_audio(SPEECH / "two_cities.wav", 16000)
    specs = [CallSpec(socket_uri=f"ws://127.0.0.1:{server.port}/socket",
                      headers={"pipeline": "listen", "uuid": f"reader-{i}"}, play=clip,
                      play_rate=16000, label=f"reader-{i}", settle_timeout=10)
             for i in range(calls)]
    results: list = []
    thread = threading.Thread(target=lambda: results.extend(asyncio.run(simulate_calls(specs))))
    thread.start()
    return thread, results


def events(workdir: Path) -> list[dict]:
    path = workdir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_ended(workdir: Path, calls: int, timeout: float = 15.0) -> None:
    """Until every reader's call_ended is published: its last final comes before it (the
    daemon waits up to limits.close_timeout for it after the caller hung up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(e["kind"] == "call_ended" and e["pipeline"] == "listen"
               for e in events(workdir)) >= calls:
            return
        time.sleep(0.2)


def transcripts(workdir: Path) -> tuple[dict[str, str], dict[str, float]]:
    """Each reader's final text, and how late finals reached the app after their last
    word (seconds: median and max over all readers)."""
    text: dict[str, list[str]] = {}
    began: dict[str, float] = {}
    lags = []
    for event in events(workdir):
        uuid = event["uuid"]
        if event["kind"] == "call_started":
            began[uuid] = event["wall"]
        if event["kind"] == "transcript" and event["data"]["final"]:
            text.setdefault(uuid, []).append(event["data"]["text"])
            lags.append(event["wall"] - began[uuid] - event["data"]["end"])
    lag = {"median": round(float(np.median(lags)), 2), "max": round(max(lags), 2)} if lags \
        else {}
    return {uuid: " ".join(words) for uuid, words in text.items()}, lag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=4, help="calls transcribing at once")
    parser.add_argument("--seconds", type=float, default=30.0, help="echo call's measured window")
    parser.add_argument("--workers", type=int, default=0,
                        help="PocketSphinx workers (0: a core each)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.seconds > 40:
        parser.error("--seconds: at most 40 (the reading lasts 44 s)")
    with tempfile.TemporaryDirectory(prefix="voicews-bench-asr-") as tmp:
        workdir = Path(tmp)
        config = workdir / "config.yaml"
        config.write_text(yaml.safe_dump({
            "plugins": [str(EVENT_LOG)],
            "pipelines": {"echo": ["echo"], "listen": ["echo", "transcribe"]},
            "transcribe": {"options": {"workers": args.workers}},
            "limits": {"max_lead_seconds": 60, "idle_timeout": 600},
        }))
        server = start_target("voicews", workdir, config)
        try:
            time.sleep(3.0)  # the workers load their model
            baseline = echo_call(server, args.seconds)
            thread, results = transcribing_calls(server, args.calls)
            time.sleep(1.5)  # every caller speaking
            loaded = echo_call(server, args.seconds)
            thread.join()
            wait_ended(workdir, args.calls)
            texts, lag = transcripts(workdir)
        finally:
            server.stop()
        warnings = [line.split("] ", 1)[-1] for line in
                    server.log_path.read_text(errors="replace").splitlines()
                    if "behind" in line or "still closing" in line or "Traceback" in line]
        wers = {uuid: round(word_error_rate(REFERENCE, text), 3) for uuid, text in texts.items()}
        out = {
            "machine": machine(),
            "transcribing_calls": args.calls,
            "workers": args.workers or "one per core",
            "echo_alone": baseline,
            "echo_beside_transcribing_calls": loaded,
            "word_error_rates": wers,
            "final_lag_seconds": lag,
            "texts": texts,
            "daemon_warnings": warnings,
            "transcribing_calls_ok": sum(1 for r in results if r.ok),
            "goal_p99_ms": 10.0,
            "goal_met": loaded["latency_ms"]["p99"] is not None
            and loaded["latency_ms"]["p99"] < 10.0,
        }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
