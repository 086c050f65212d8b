"""Cost of the speech engines on this machine: VAD µs a frame, eSpeak NG time a second of speech.

    .venv/bin/python bench/engines.py [--seconds 20] [--no-tts] [--json]

VAD: VoiceActivity.feed on 20 ms frames at each call rate, on real speech (the test reading),
digital silence, a 440 Hz tone and white noise at -30 dBFS; the best of 5 passes (the machine
is shared), as µs of one core a frame, and the calls one core could serve at 50 frames/s.

TTS: eSpeak NG synthesizing sentences at each rate (wall time and the children's CPU per second
of speech produced), a cache hit, and 100 different texts asked for at once through the
default limit of 2 processes (what 100 calls starting to speak together would see).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voicews.audio.files import load_audio, tone  # noqa: E402
from voicews.audio.samples import RATES, frame_samples  # noqa: E402
from voicews.engines.vad import VadParams, VoiceActivity  # noqa: E402

SPEECH = ROOT / "tests" / "data" / "speech" / "two_cities.wav"
SENTENCES = [
    "Thank you for calling. Please hold while we connect you.",
    "Your account balance is one hundred and twenty three dollars and forty cents.",
    "For billing, say billing. For sales, say sales. For anything else, stay on the line.",
]


def signals(rate: int, seconds: float) -> dict[str, np.ndarray]:
    speech = load_audio(SPEECH, rate)
    speech = np.tile(speech, int(np.ceil(seconds * rate / len(speech))))[: int(seconds * rate)]
    noise = np.random.default_rng(1).normal(0, 1000, int(seconds * rate))
    return {
        "speech": speech,
        "silence": np.zeros(int(seconds * rate), np.int16),
        "tone": tone(rate, seconds, 440, 0.3),
        "noise": noise.astype(np.int16),
    }


def vad_us_per_frame(samples: np.ndarray, rate: int, passes: int = 5) -> float:
    n = frame_samples(rate)
    frames = [samples[i * n:(i + 1) * n] for i in range(len(samples) // n)]
    best = float("inf")
    for _ in range(passes):
        vad = VoiceActivity(rate, VadParams())
        feed = vad.feed
        start = time.process_time_ns()
        for frame in frames:
            feed(frame)
        best = min(best, (time.process_time_ns() - start) / 1000 / len(frames))
    return best


def bench_vad(seconds: float) -> dict:
    out: dict = {}
    for rate in RATES:
        out[rate] = {kind: round(vad_us_per_frame(x, rate), 2)
                     for kind, x in signals(rate, seconds).items()}
    return out


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_tts() -> dict:
    from twisted.internet import defer, reactor

    from voicews.engines.espeak import Espeak

    results: dict = {}

    async def run() -> None:
        for rate in RATES:
            engine = Espeak()
            cpu, wall, spoken = children_cpu(), time.perf_counter(), 0.0
            for text in SENTENCES:
                samples = await engine.synthesize(text, rate)
                spoken += len(samples) / rate
            wall = time.perf_counter() - wall
            cpu = children_cpu() - cpu
            results[f"synthesis {rate}"] = {
                "speech_s": round(spoken, 2),
                "wall_ms_per_speech_s": round(1000 * wall / spoken, 1),
                "child_cpu_ms_per_speech_s": round(1000 * cpu / spoken, 1),
            }
            start = time.perf_counter()
            hits = 1000
            for _ in range(hits):
                await engine.synthesize(SENTENCES[0], rate)
            results[f"cache hit {rate}"] = {
                "us": round(1e6 * (time.perf_counter() - start) / hits, 1),
                "cache_bytes": engine.cache.bytes,
            }
        engine = Espeak()
        start = time.perf_counter()
        done = [engine.synthesize(f"Caller number {i}, please hold.", 8000) for i in range(100)]
        firsts = []
        for d in done:
            d.addCallback(lambda _: firsts.append(time.perf_counter() - start))
        await defer.gatherResults(done)
        results["100 texts at once, 2 processes"] = {
            "first_ms": round(1000 * min(firsts)),
            "median_ms": round(1000 * sorted(firsts)[50]),
            "last_ms": round(1000 * max(firsts)),
            "processes": engine.processes_started,
        }

    def main() -> None:
        d = defer.Deferred.fromCoroutine(run())
        d.addErrback(lambda f: f.printTraceback())
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(main)
    reactor.run()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per VAD run")
    parser.add_argument("--no-tts", action="store_true", help="skip eSpeak NG")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    report: dict = {"vad_us_per_frame": bench_vad(args.seconds)}
    if not args.no_tts:
        report["tts"] = bench_tts()
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print("VoiceActivity.feed, µs of one core per 20 ms frame (calls per core at 50 frames/s)")
    for rate, kinds in report["vad_us_per_frame"].items():
        row = "  ".join(f"{k} {us:6.1f} ({int(1e6 / 50 / us):5d})" for k, us in kinds.items())
        print(f"  {rate:5d} Hz  {row}")
    for name, figures in report.get("tts", {}).items():
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
