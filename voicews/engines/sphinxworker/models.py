"""The language model, loaded once, and decoders that share it.

One process holds one language model and a decoder per open stream (each decoder shares
the model: 58 MB a decoder instead of 91, see bench/asr.py), plus ``spare`` decoders made
ahead, when idle, so a new call does not wait 0.2 s for one.  pocketsphinx and numpy are
imported when the model is loaded, not at the top (see the package's docstring).
"""

from __future__ import annotations

import time
from typing import Any

from .wire import Settings

MODEL_RATE = 16000
"""The bundled en-US model's rate: 8 and 24 kHz calls are resampled to it."""

BAND_FILL_RMS = 40.0
"""Noise put where a narrowband call has no audio (4-8 kHz), about -58 dBFS.

The model's filters reach 6.8 kHz; upsampled 8 kHz audio leaves the top ones at digital
silence, which the model never heard.  A faint noise floor there instead took the reading's
word error rate from 0.75 to 0.64 (and with the reading 12 dB quieter, from 0.80 to 0.68)."""


class Models:
    """The language model, loaded once, and decoders that share it."""

    def __init__(self, settings: Settings) -> None:
        import pocketsphinx as ps

        self.ps = ps
        self.settings = settings
        started = time.monotonic()
        # The first decoder lends its config and log tables to the language model, which
        # every decoder then searches with (add_lm shares it: same words out, 33 MB less).
        self.first = ps.Decoder(lm=None, loglevel="FATAL")
        self.lm = ps.NGramModel(self.first.config, self.first.logmath,
                                ps.get_model_path("en-us/en-us.lm.bin"))
        self.cmn = self.first.get_cmn()
        self.band_fill = band_fill()
        self.first.add_lm("lm", self.lm)
        self.first.activate_search("lm")
        self.free: list[Any] = [self.first]
        self.in_use = 0
        self.load_seconds = time.monotonic() - started
        self.decoder_seconds = 0.0

    def make(self) -> Any:
        started = time.monotonic()
        decoder = self.ps.Decoder(lm=None, loglevel="FATAL")
        decoder.add_lm("lm", self.lm)
        decoder.activate_search("lm")
        self.decoder_seconds = time.monotonic() - started
        return decoder

    def take(self) -> Any:
        decoder = self.free.pop() if self.free else self.make()
        self.in_use += 1
        return decoder

    def give_back(self, decoder: Any, search: str | None) -> None:
        """A decoder as a new stream expects it: the language model searched, no grammar
        left, the channel estimate (CMN) back at the model's, so one caller's line does not
        colour the next caller's first words."""
        self.in_use -= 1
        try:
            decoder.activate_search("lm")
            if search:
                decoder.remove_search(search)
            decoder.set_cmn(self.cmn)
        except (RuntimeError, KeyError):
            return  # not reusable: dropped
        if len(self.free) < self.settings.spare_decoders:
            self.free.append(decoder)

    def top_up(self) -> None:
        """Make spare decoders while nothing waits (called when stdin is idle)."""
        if len(self.free) < self.settings.spare_decoders \
                and self.in_use + len(self.free) < self.settings.max_streams:
            self.free.append(self.make())


def band_fill(seconds: int = 1) -> Any:
    """`seconds` of white noise above 4 kHz at BAND_FILL_RMS, as int16, repeated per stream
    (made once, seeded: the same audio decodes the same)."""
    import numpy as np

    n = seconds * MODEL_RATE
    spectrum = np.fft.rfft(np.random.default_rng(8000).normal(0.0, 1.0, n))
    spectrum[np.fft.rfftfreq(n, 1 / MODEL_RATE) < 4000] = 0
    noise = np.fft.irfft(spectrum, n)
    return np.rint(noise * (BAND_FILL_RMS / noise.std())).astype(np.int16)
