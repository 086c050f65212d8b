"""Cut a pipeline's output into exact 20 ms frames.

Vonage drops a call on a single wrong-sized frame, so nothing leaves voicews
except through here: output of any length is buffered until a whole frame is
there, and ``flush`` pads the last partial frame with silence.
"""

from __future__ import annotations

import numpy as np

from voicews.audio import SAMPLE_DTYPE, saturate


class Framer:
    """Turns int16 sample arrays of any length into frames of exactly `samples` samples."""

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self._pending = np.empty(0, dtype=SAMPLE_DTYPE)

    @property
    def pending(self) -> int:
        """Samples waiting for the rest of their frame."""
        return len(self._pending)

    def push(self, audio: np.ndarray) -> list[bytes]:
        """Add samples; return every whole frame now available, as bytes."""
        n = self.samples
        if (
            type(audio) is np.ndarray and audio.dtype == SAMPLE_DTYPE and audio.size == n
            and not len(self._pending)
        ):
            return [audio.tobytes()]  # the usual case: one whole frame in, one frame out
        audio = np.asarray(audio)
        if audio.dtype != SAMPLE_DTYPE:
            audio = saturate(audio)
        audio = audio.reshape(-1)
        if not len(self._pending) and len(audio) == n:
            return [audio.tobytes()]
        if len(self._pending):
            audio = np.concatenate((self._pending, audio))
        whole = len(audio) - len(audio) % n
        self._pending = audio[whole:].copy()
        if not whole:
            return []
        data = audio[:whole].tobytes()
        size = n * SAMPLE_DTYPE.itemsize
        return [data[i : i + size] for i in range(0, len(data), size)]

    def flush(self) -> list[bytes]:
        """The partial frame padded with silence, if any."""
        if not len(self._pending):
            return []
        padding = np.zeros(self.samples - len(self._pending), dtype=SAMPLE_DTYPE)
        return self.push(padding)

    def reset(self) -> None:
        """Forget the partial frame (after a clear)."""
        self._pending = np.empty(0, dtype=SAMPLE_DTYPE)
