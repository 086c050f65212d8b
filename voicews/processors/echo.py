"""echo: the caller hears themself, bit-exact and in order."""

from __future__ import annotations

import numpy as np

from voicews import Processor, hookimpl
from voicews.audio.samples import mix


class Echo(Processor):
    """The caller's own frame, untouched (no copy), added to whatever is on the bus.

    Usually the first step, where nothing is: the output is the caller's frame
    itself.  Audio the app plays into the call (the head of the bus) is mixed in.
    """

    name = "echo"

    def process(self, inbound: np.ndarray, outbound: np.ndarray | None) -> np.ndarray:
        if outbound is None:
            return inbound
        return mix(outbound, inbound)


@hookimpl
def register_processors(register):
    register(Echo)
