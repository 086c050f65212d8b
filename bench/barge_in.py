"""Barge-in delay through a real `twistd voicews`: from the caller's speech onset to our `clear`.

    .venv/bin/python bench/barge_in.py [--trials 5] [--concurrent 4] [--json]

A pipeline plays a 10 s prompt (file-inject, interruptible) with `vad` and `barge-in`; a
WebSocket client plays Vonage: it sends silence, then a phrase of the test reading (real
speech, true onset known to ~20 ms), one frame each 20 ms *after* the frame's audio has
happened (as a phone would), and notes when the `clear` arrives.  Onsets are placed at
several offsets within a frame, at 8 and 16 kHz.

Reported, in ms (median / 90th percentile / worst):

- ``from_true_onset``: clear arrival - the moment the caller started speaking;
- ``from_vad_onset``: clear arrival - the onset the VAD reports (``speech_started.start``,
  recomputed here on the same frames): the goal is the VAD's own onset delay
  (``min_speech_ms``) + 20 ms;
- ``after_deciding_frame``: clear arrival - when the frame that decided it was sent (the
  daemon's reaction plus the loopback round trip).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from run import Server, start_target  # noqa: E402

from voicews.audio.files import load_audio, tone, write_wav  # noqa: E402
from voicews.audio.samples import FRAME_SECONDS, frame_samples  # noqa: E402
from voicews.engines.vad import VadParams, VoiceActivity  # noqa: E402

SPEECH = BENCH.parent / "tests" / "data" / "speech" / "two_cities.wav"
# (cut from, cut to, speech starts) in the reading, seconds (tests/data/speech/README.md).
PHRASES = [(1.10, 4.65, 1.20), (4.95, 6.30, 5.02)]
SILENCES = [0.6, 1.013, 1.37, 1.806, 2.2]
RATES = (8000, 16000)
AFTER_CLEAR = 0.3


def trial_audio(rate: int, silence: float, phrase: tuple[float, float, float]):
    """Silence then the phrase: the samples, the true onset and the VAD's reported onset."""
    cut_from, cut_to, starts = phrase
    clip = load_audio(SPEECH, rate)[round(cut_from * rate):round(cut_to * rate)]
    audio = np.concatenate([np.zeros(round(silence * rate), np.int16), clip])
    n = frame_samples(rate)
    vad = VoiceActivity(rate, VadParams())
    onset = None
    for i in range(len(audio) // n):
        for transition in vad.feed(audio[i * n:(i + 1) * n]):
            if transition.kind == "speech_started" and onset is None:
                onset = transition.time
    return audio, silence + starts - cut_from, onset


async def one_call(port: int, rate: int, audio: np.ndarray) -> dict:
    import websockets

    n = frame_samples(rate)
    frames = [audio[i * n:(i + 1) * n].tobytes() for i in range(len(audio) // n)]
    sent: list[float] = []
    clear_at: list[float] = []
    async with websockets.connect(f"ws://127.0.0.1:{port}/socket", compression=None,
                                  ping_interval=None, max_size=1 << 20, close_timeout=1) as ws:
        await ws.send(json.dumps({"event": "websocket:connected", "pipeline": "barge",
                                  "content-type": f"audio/l16;rate={rate}"}))

        async def receive() -> None:
            async for message in ws:
                if isinstance(message, str) and json.loads(message).get("action") == "clear":
                    clear_at.append(time.perf_counter())
                    return

        receiver = asyncio.create_task(receive())
        start = time.perf_counter()
        for i, frame in enumerate(frames):
            delay = start + (i + 1) * FRAME_SECONDS - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(frame)
            sent.append(time.perf_counter())
            if clear_at and sent[-1] - clear_at[0] > AFTER_CLEAR:
                break
        await asyncio.wait_for(receiver, 2.0)
    return {"start": start, "sent": sent, "clear": clear_at[0]}


async def run_trials(port: int, trials: list[dict], concurrent: int) -> None:
    for group in range(0, len(trials), concurrent):
        batch = trials[group:group + concurrent]
        got = await asyncio.gather(*(one_call(port, t["rate"], t["audio"]) for t in batch))
        for trial, result in zip(batch, got, strict=True):
            trial.update(result)


def summary(values: list[float]) -> dict:
    ms = np.array(values) * 1000
    return {"median": round(float(np.median(ms)), 1), "p90": round(float(np.percentile(ms, 90)), 1),
            "max": round(float(ms.max()), 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=len(SILENCES),
                   help="onset offsets per phrase and rate")
    p.add_argument("--concurrent", type=int, default=4, help="calls at once")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="voicews-barge-"))
    write_wav(workdir / "prompt.wav", tone(16000, 10.0, 1000, 0.2), 16000)
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump({
        "pipelines": {"barge": [{"file-inject": {"path": "prompt.wav", "interruptible": True}},
                                "vad", "barge-in"]},
        "default_pipeline": "barge", "limits": {"idle_timeout": 600},
    }))
    trials = []
    for rate in RATES:
        for phrase in PHRASES:
            for silence in SILENCES[:args.trials]:
                audio, true_onset, vad_onset = trial_audio(rate, silence, phrase)
                trials.append({"rate": rate, "audio": audio, "true_onset": true_onset,
                               "vad_onset": vad_onset})
    server: Server = start_target("voicews", workdir, config)
    try:
        asyncio.run(run_trials(server.port, trials, args.concurrent))
    finally:
        server.stop()
    min_speech = VadParams().min_speech_ms / 1000
    rows = []
    for t in trials:
        deciding = round(t["vad_onset"] / FRAME_SECONDS) + round(min_speech / FRAME_SECONDS) - 1
        rows.append({
            "rate": t["rate"], "true_onset": round(t["true_onset"], 3),
            "vad_onset": t["vad_onset"],
            "from_true_onset": t["clear"] - (t["start"] + t["true_onset"]),
            "from_vad_onset": t["clear"] - (t["start"] + t["vad_onset"]),
            "after_deciding_frame": t["clear"] - t["sent"][deciding],
        })
    report = {
        "trials": len(rows), "min_speech_ms": VadParams().min_speech_ms,
        "goal_ms": VadParams().min_speech_ms + 20,
        **{key: summary([r[key] for r in rows])
           for key in ("from_true_onset", "from_vad_onset", "after_deciding_frame")},
    }
    if args.json:
        print(json.dumps({**report, "rows": rows}, indent=2))
    else:
        for r in rows:
            print(f"{r['rate']:>6} Hz  onset {r['true_onset']:6.3f} s (vad {r['vad_onset']:6.3f})"
                  f"  clear after {1000 * r['from_true_onset']:6.1f} ms"
                  f" ({1000 * r['from_vad_onset']:6.1f} from the vad onset,"
                  f" {1000 * r['after_deciding_frame']:5.1f} after the deciding frame)")
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
