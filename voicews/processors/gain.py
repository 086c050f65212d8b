"""gain: make what earlier steps produced louder or quieter, saturating instead of wrapping."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voicews import Processor, hookimpl
from voicews.audio import db_to_factor, saturate


@dataclass(frozen=True)
class GainParams:
    db: float = 0.0
    """Level change in dB; may be negative.  +6 dB is x1.995."""


class Gain(Processor):
    name = "gain"
    Params = GainParams

    @classmethod
    def prepare(cls, params: GainParams, context) -> float:
        return db_to_factor(params.db, "db")

    def process(self, inbound: np.ndarray, outbound: np.ndarray | None) -> np.ndarray | None:
        if outbound is None:
            return None
        return saturate(outbound * self.params)


@hookimpl
def register_processors(register):
    register(Gain)
