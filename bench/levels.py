"""What the console's level meters cost: one reading of N live calls, in-process.

``GET /events?levels=1`` makes the daemon read every live call's latest inbound and
outbound frame 5 times a second (voicews.web.levels) and write a ``levels`` record per
call to that stream.  This builds N real echo pipelines (voicews.testing), feeds each a
frame of a tone, and times the reading with a listener that formats each record the way
an ``/events`` stream writes it: CPU µs per call per reading, and the share of one core
that N calls cost at 5 readings a second.  (The frame path's share, keeping a reference
to each frame, is measured by bench/micro.py: run it with --src on the tree before.)

    .venv/bin/python bench/levels.py --calls 100 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.task import Clock  # noqa: E402

from voicews.processors.echo import Echo  # noqa: E402
from voicews.runtime.calls import CallRecord, CallRegistry  # noqa: E402
from voicews.testing import call_with  # noqa: E402
from voicews.web.events import _message  # noqa: E402
from voicews.web.levels import INTERVAL, LevelSampler  # noqa: E402


def measure(count: int, readings: int) -> dict:
    calls = CallRegistry()
    t = np.arange(320) / 16000
    frame = np.round(3000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    for n in range(count):
        local = call_with([Echo], rate=16000, headers={"uuid": f"bench-{n}"})
        calls.add(CallRecord("127.0.0.1:1", 0.0, end=lambda *a: None, abort=lambda: None,
                             pipeline=local.pipeline))
    sampler = LevelSampler(calls, Clock())
    written: list[bytes] = []
    sampler.listen(lambda event: written.append(_message(event)))
    pipelines = [record.pipeline for record in calls]
    start = time.process_time()
    for _ in range(readings):
        for pipeline in pipelines:  # a frame in and out since the last reading: both measured
            pipeline.receive_frame(frame.tobytes())
        sampler.sample()
        written.clear()
    fed = time.process_time()
    for _ in range(readings):
        for pipeline in pipelines:
            pipeline.receive_frame(frame.tobytes())
        written.clear()
    feeding = time.process_time() - fed
    seconds = (fed - start) - feeding
    per_call = seconds / (readings * count) * 1e6
    return {"calls": count, "us_per_call_reading": round(per_call, 2),
            "core_share_at_5hz": round(per_call * count / INTERVAL / 1e6, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--readings", type=int, default=50)
    args = parser.parse_args()
    for count in args.calls:
        print(json.dumps(measure(count, args.readings)))


if __name__ == "__main__":
    main()
