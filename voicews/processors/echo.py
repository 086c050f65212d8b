"""echo: the caller hears themself, bit-exact and in order."""

from __future__ import annotations

import numpy as np

from voicews import Processor, hookimpl


class Echo(Processor):
    """Replace the output with the caller's own frame (untouched, so no copy is made)."""

    name = "echo"

    def process(self, inbound: np.ndarray, outbound: np.ndarray | None) -> np.ndarray:
        return inbound


@hookimpl
def register_processors(register):
    register(Echo)
