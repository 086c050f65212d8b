"""What the benchmark host is and how busy the rest of it is (a shared VM has other tenants)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import resource
import time
from pathlib import Path


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("Twisted", "autobahn", "websockets", "picows", "aiofastnet", "uvloop"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist.lower()] = importlib.metadata.version(dist)
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), **versions}


class Background:
    """CPU the rest of the machine used while one target ran (other tenants of a shared VM).

    Machine busy time from /proc/stat minus everything this script and its children (the
    server and the load generator, both waited for) used, as % of one core over the run.
    """

    def __init__(self) -> None:
        self.busy, self.ours, self.wall = self._busy(), self._ours(), time.perf_counter()

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # not idle

    @staticmethod
    def _ours() -> float:
        return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                     resource.getrusage(resource.RUSAGE_CHILDREN)))

    def percent(self) -> float:
        others = (self._busy() - self.busy) - (self._ours() - self.ours)
        return round(100 * max(0.0, others) / (time.perf_counter() - self.wall), 1)


def wait_quiet(percent: float, sample: float = 5.0, limit: float = 600.0) -> float:
    """Wait until the rest of the machine uses under `percent` % of one core; seconds waited.

    On a shared VM other tenants' bursts skew CPU per frame (a starved server batches more
    frames per wake-up) and wreck latency; this starts each target in a quiet spell.
    """
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        background = Background()
        time.sleep(sample)
        if background.percent() < percent:
            break
    return round(time.perf_counter() - started, 1)
