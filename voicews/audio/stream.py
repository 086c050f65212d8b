"""A streaming resampler for live L16: chunks of any size in, the same audio out, seamless.

Audio that arrives in pieces (20 ms frames from a call, μ-law messages of any
length from a bot) must be resampled as one continuous signal: resampling each
piece on its own would put a click at every boundary.  libsoxr's streaming
resampler keeps the filter's state between calls, so the output does not depend
on how the input was cut (the tests feed one signal in different cuts and get
identical samples).

It runs libsoxr in its variable-rate mode (``vr=True``) on purpose.  The default
streaming mode works in blocks of about 100 ms: fed 20 ms frames it returns
nothing for five frames and then 100 ms at once, which would add over 100 ms of
delay to a live call.  The variable-rate mode returns output with every chunk
after a fixed delay (15 ms at 16 kHz -> 8 kHz, 25 ms at 24 kHz -> 8 kHz, 30 ms at
8 kHz -> 16 or 24 kHz) with a flat passband to 3.8 kHz and more than 100 dB of
rejection from 4.2 kHz (measured; see tests/test_bridge_audio.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from voicews.audio.files import FULL_SCALE
from voicews.audio.samples import SAMPLE_DTYPE, saturate


class StreamResampler:
    """int16 mono at `in_rate` to int16 mono at `out_rate`, one continuous signal at a time."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._soxr: Any = None  # a soxr.ResampleStream while the rates differ
        self._taken = 0
        self._given = 0
        self._fresh()

    def _fresh(self) -> None:
        self._taken = self._given = 0
        if self.in_rate != self.out_rate:
            import soxr  # loaded where rates differ only

            self._soxr = soxr.ResampleStream(
                self.in_rate, self.out_rate, 1, dtype="float32", vr=True
            )

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample the next piece; the output may be shorter than its share at first."""
        samples = np.asarray(samples, dtype=SAMPLE_DTYPE)
        if self._soxr is None:
            return samples.copy()
        if not len(samples):
            return np.empty(0, dtype=SAMPLE_DTYPE)
        out = self._soxr.resample_chunk(samples.astype(np.float32) / np.float32(FULL_SCALE))
        self._taken += len(samples)
        self._given += len(out)
        return saturate(out * FULL_SCALE)

    @property
    def held(self) -> int:
        """Output samples the filter owes for the input so far (its delay): they come out
        with the next pieces, or from :meth:`flush`.  A playback mark placed after the
        output so far would be answered this many samples early."""
        return max(0, self._taken * self.out_rate // self.in_rate - self._given)

    def flush(self) -> np.ndarray:
        """What the filter still holds (the last few ms), then start afresh.

        For the end of a signal: the next piece is treated as a new signal.
        """
        if self._soxr is None:
            return np.empty(0, dtype=SAMPLE_DTYPE)
        out = self._soxr.resample_chunk(np.empty(0, dtype=np.float32), last=True)
        self._fresh()
        return saturate(out * FULL_SCALE)

    def reset(self) -> None:
        """Forget what the filter holds (audio that was cleared)."""
        self._fresh()
