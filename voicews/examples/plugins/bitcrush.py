"""bitcrush: an example of a stateless voicews processor (copy this file to start your own).

It makes the caller sound like an 8-bit robot by throwing away the low bits of
every sample.  "Stateless" means each 20 ms frame is transformed on its own,
so nothing needs to be kept between frames.

Use it in config.yaml:

    plugins:
      - plugins/bitcrush.py          # relative to config.yaml
    pipelines:
      robot:
        - echo                       # the caller's voice ...
        - bitcrush: {bits: 4}        # ... crushed to 4 bits
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Everything a plugin needs comes from the `voicews` package's public API.
from voicews import PrepareContext, Processor, hookimpl


# The step's parameters in config.yaml, as a dataclass.  voicews type-checks
# what the user wrote against it at start: `bitcrush: {bits: "x"}` or an
# unknown key stops the daemon with a one-line error naming the key.
@dataclass(frozen=True)
class BitcrushParams:
    bits: int = 6
    """How many of the 16 bits to keep (1-16); fewer is crunchier."""


class Bitcrush(Processor):
    # The name used in pipeline steps.  It must be unique across all plugins.
    name = "bitcrush"
    Params = BitcrushParams

    @classmethod
    def prepare(cls, params: BitcrushParams, context: PrepareContext) -> np.int16:
        """Runs once when config.yaml is loaded, not per call.

        Check the parameters here (a ValueError becomes a config error naming
        the step) and compute anything calls can share.  What it returns is
        what every call's instance gets as ``self.params``.
        """
        if not 1 <= params.bits <= 16:
            raise ValueError(f"bits must be between 1 and 16, got {params.bits}")
        # A mask that clears the low bits: for 4 bits, 0xF000 as a signed int16.
        return np.int16(np.uint16((0xFFFF << (16 - params.bits)) & 0xFFFF).view(np.int16))

    def process(self, inbound: np.ndarray, outbound: np.ndarray | None) -> np.ndarray | None:
        """Called for every 20 ms frame the caller sends.

        ``inbound`` is the caller's frame (read-only int16; never modify it).
        ``outbound`` is what the previous steps produced (None if nothing).
        Return the audio the next steps (and in the end the caller) get.
        """
        if outbound is None:
            return None  # nothing to transform (e.g. bitcrush used without echo before it)
        # A new array: the input may be a shared, read-only buffer.
        return outbound & self.params


# The hook voicews calls at start to learn which processors a plugin offers.
@hookimpl
def register_processors(register):
    register(Bitcrush)
