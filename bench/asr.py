"""Speech to text figures: decode speed, memory per decoder and worker, reactor lateness.

Runs the real PocketSphinx pool (voicews.engines.pocketsphinx) on the test reading
(tests/data/speech/two_cities.wav, 44 s) and reports:

- speed: one stream at 16 kHz and one at 8 kHz fed as fast as the worker decodes, worker
  CPU seconds per second of audio (and x real time), with the word error rate;
- memory: a worker's RSS when ready (language model + one decoder) and per decoder added
  (streams opened and decoding), and the time to make a decoder;
- lateness: a 20 ms reactor timer beside `--streams` streams fed in real time (20 ms
  frames on the reactor, decoded in `--workers` processes): max and p99 lateness, against
  the same timer with no stream (the machine's own noise).

    .venv/bin/python bench/asr.py [--seconds 44] [--streams 4] [--workers 2] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from twisted.internet import defer, task  # noqa: E402

from voicews.audio.files import load_audio  # noqa: E402
from voicews.engines.asr import word_error_rate  # noqa: E402
from voicews.engines.pocketsphinx import PocketSphinx, PocketSphinxOptions  # noqa: E402

SPEECH = BENCH.parent / "tests" / "data" / "speech"
REFERENCE = (SPEECH / "two_cities.txt").read_text().strip()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


class Fed:
    """A stream fed a clip frame by frame; its finals."""

    def __init__(self, engine: PocketSphinx, rate: int, samples: np.ndarray) -> None:
        self.rate = rate
        self.samples = samples
        self.frame = rate // 50
        self.fed = 0
        self.finals: list[str] = []
        self.stream = engine.open(rate, self._got)

    def _got(self, transcript) -> None:
        if transcript.final:
            self.finals.append(transcript.text)

    def feed_frames(self, count: int) -> None:
        for _ in range(count):
            if self.fed >= len(self.samples):
                return
            self.stream.feed(self.samples[self.fed:self.fed + self.frame])
            self.fed += self.frame

    def fast(self, backlog: float = 1.0) -> defer.Deferred:
        """Feed everything as fast as the engine decodes (never dropping)."""
        def tick() -> None:
            while self.fed < len(self.samples) and self.stream.backlog_seconds < backlog:
                self.feed_frames(1)
            if self.fed >= len(self.samples):
                loop.stop()

        loop = task.LoopingCall(tick)
        return loop.start(0.005)

    def wer(self) -> float:
        return word_error_rate(REFERENCE, " ".join(self.finals))


@defer.inlineCallbacks
def speed(reactor, seconds: float):
    """One stream per rate, one after the other, on a one-worker pool."""
    engine = PocketSphinx(PocketSphinxOptions(workers=1))
    yield engine.start()
    results = {}
    try:
        for rate in (16000, 8000):
            samples = load_audio(SPEECH / "two_cities.wav", rate)[:int(seconds * rate)]
            before = (yield engine.stats())[0]["cpu_seconds"]
            started = time.monotonic()
            fed = Fed(engine, rate, samples)
            yield fed.fast()
            yield fed.stream.close()
            wall = time.monotonic() - started
            cpu = (yield engine.stats())[0]["cpu_seconds"] - before
            audio = len(samples) / rate
            results[f"{rate // 1000}k"] = {
                "audio_seconds": round(audio, 2), "cpu_seconds": round(cpu, 2),
                "cpu_per_audio_second": round(cpu / audio, 3),
                "x_real_time": round(audio / cpu, 1), "wall_seconds": round(wall, 2),
                "word_error_rate": round(fed.wer(), 3) if seconds >= 44 else None,
            }
    finally:
        yield engine.stop()
    return results


@defer.inlineCallbacks
def memory(reactor, decoders: int):
    """A worker's RSS when ready, then with each decoder opened and decoding 5 s."""
    engine = PocketSphinx(PocketSphinxOptions(workers=1, spare_decoders=0,
                                              streams_per_worker=decoders))
    yield engine.start()
    samples = load_audio(SPEECH / "two_cities.wav", 16000)[:5 * 16000]
    try:
        ready = (yield engine.stats())[0]
        rss = [ready["rss_kb"]]
        made = []
        open_streams = []
        for _ in range(decoders):
            fed = Fed(engine, 16000, samples)
            open_streams.append(fed)
            yield fed.fast()
            info = (yield engine.stats())[0]
            rss.append(info["rss_kb"])
            made.append(info["decoder_seconds"])
        for fed in open_streams:
            yield fed.stream.close()
    finally:
        yield engine.stop()
    steps = np.diff(rss[1:]) / 1024 if len(rss) > 2 else np.array([])
    return {
        "worker_ready_mb": round(rss[0] / 1024, 1),
        "worker_with_decoders_mb": [round(r / 1024, 1) for r in rss],
        "first_stream_mb": round((rss[1] - rss[0]) / 1024, 1),
        "per_added_decoder_mb": round(float(steps.mean()), 1) if len(steps) else None,
        "worker_load_seconds": round(ready["load_seconds"], 3),
        "decoder_seconds": round(float(np.mean(made[1:] or made)), 3),
    }


@defer.inlineCallbacks
def lateness(reactor, streams: int, workers: int, seconds: float, nice: int):
    """A 20 ms timer's lateness, alone and beside `streams` real-time decoding streams."""

    def timer(duration: float) -> defer.Deferred:
        late: list[float] = []
        done: defer.Deferred = defer.Deferred()
        start = reactor.seconds()

        def fire(target: float) -> None:
            now = reactor.seconds()
            late.append(now - target)
            if now - start >= duration:
                done.callback(late)
                return
            target += 0.02
            reactor.callLater(max(0.0, target - reactor.seconds()), fire, target)

        reactor.callLater(0.02, fire, start + 0.02)
        return done

    alone = yield timer(min(seconds, 5.0))
    engine = PocketSphinx(PocketSphinxOptions(workers=workers, streams_per_worker=streams,
                                              nice=nice))
    yield engine.start()
    clip = load_audio(SPEECH / "two_cities.wav", 16000)
    samples = np.tile(clip, int(seconds // (len(clip) / 16000)) + 1)[:int(seconds * 16000)]
    callers = [Fed(engine, 16000, samples) for _ in range(streams)]
    begun = reactor.seconds()

    def real_time() -> None:  # every stream gets the frames its call would have sent by now
        due = int((reactor.seconds() - begun) * 50)
        for caller in callers:
            caller.feed_frames(due - caller.fed // caller.frame)

    feeder = task.LoopingCall(real_time)
    feeder.start(0.02)
    try:
        beside = yield timer(seconds)
    finally:
        feeder.stop()
        for caller in callers:
            yield caller.stream.close()
        dropped = sum(c.stream.dropped_seconds for c in callers)
        yield engine.stop()
    ms = 1000.0
    return {
        "streams": streams, "workers": workers, "seconds": seconds, "nice": nice,
        "alone_ms": {"p99": round(percentile(alone, 99) * ms, 2),
                     "max": round(max(alone) * ms, 2)},
        "beside_streams_ms": {"p99": round(percentile(beside, 99) * ms, 2),
                              "max": round(max(beside) * ms, 2)},
        "dropped_seconds": round(dropped, 2),
    }


@defer.inlineCallbacks
def main(reactor, args):
    report = {}
    if "speed" in args.only:
        report["speed"] = yield speed(reactor, args.seconds)
    if "memory" in args.only:
        report["memory"] = yield memory(reactor, args.decoders)
    if "lateness" in args.only:
        report["lateness"] = yield lateness(reactor, args.streams, args.workers, args.seconds,
                                            args.nice)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=44.0, help="audio per measurement")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--decoders", type=int, default=4, help="decoders for the memory step")
    parser.add_argument("--nice", type=int, default=PocketSphinxOptions.nice,
                        help="workers' niceness for the lateness step")
    parser.add_argument("--only", default="speed,memory,lateness",
                        help="comma-separated steps to run")
    parser.add_argument("--out", help="also write the JSON here")
    task.react(main, [parser.parse_args()])
