"""Processors that misbehave on purpose, for the bad-input tests.

Loaded from config.yaml (``plugins: [.../misbehave.py]``) exactly like a user's plugin.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from voicews import Processor, hookimpl


@dataclass(frozen=True)
class At:
    frame: int = 3
    seconds: float = 0.0
    samples: int = 100


class OnFrame(Processor):
    """Echoes, and misbehaves (`misbehave()`) on frame `frame` (1-based)."""

    Params = At

    def __init__(self, session, params):
        super().__init__(session, params)
        self.count = 0

    def process(self, inbound, outbound):
        self.count += 1
        if self.count == self.params.frame:
            self.misbehave()
        return inbound

    def misbehave(self) -> None:
        raise NotImplementedError


class Raiser(OnFrame):
    """Raises on frame `frame`."""

    name = "raiser"

    def misbehave(self) -> None:
        raise RuntimeError("raiser: deliberate failure")


class Sleeper(OnFrame):
    """Blocks the reactor with time.sleep(`seconds`) on frame `frame`."""

    name = "sleeper"

    def misbehave(self) -> None:
        time.sleep(self.params.seconds)


class Shortener(Processor):
    """Returns only the first `samples` samples of each frame: wrong-sized output."""

    name = "shortener"
    Params = At

    def process(self, inbound, outbound):
        return inbound[: self.params.samples]


class Flood(Processor):
    """Returns `seconds` of audio for every inbound frame: far faster than real time."""

    name = "flood"
    Params = At

    def process(self, inbound, outbound):
        n = int(self.session.rate * self.params.seconds)
        return np.full(n, 1000, dtype=np.int16)


@hookimpl
def register_processors(register):
    for cls in (Raiser, Sleeper, Shortener, Flood):
        register(cls)
