"""Cut a pipeline's output into exact 20 ms frames.

Vonage drops a call on a single wrong-sized frame, so nothing leaves voicews
except through here: output of any length is buffered until a whole frame is
there, and ``flush`` pads the last partial frame with silence.
"""

from __future__ import annotations

import numpy as np

from voicews.audio.samples import SAMPLE_DTYPE, saturate


class Framer:
    """Turns int16 sample arrays of any length into frames of exactly `samples` samples."""

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self._pending = _EMPTY
        self.pending = 0
        """Samples waiting for the rest of their frame."""

    def whole(self, audio: np.ndarray) -> bytes | None:
        """`audio` as one frame's bytes when it is exactly one int16 frame and nothing waits.

        The usual case of every processed frame, checked without building a list.
        """
        if (
            not self.pending
            and type(audio) is np.ndarray
            and audio.dtype is SAMPLE_DTYPE
            and audio.size == self.samples
        ):
            return audio.tobytes()
        return None

    def push(self, audio: np.ndarray) -> list[bytes]:
        """Add samples; return every whole frame now available, as bytes."""
        one = self.whole(audio)
        if one is not None:
            return [one]
        n = self.samples
        audio = np.asarray(audio)
        if audio.dtype != SAMPLE_DTYPE:
            audio = saturate(audio)
        audio = audio.reshape(-1)
        if self.pending:
            audio = np.concatenate((self._pending, audio))
        whole = len(audio) - len(audio) % n
        self._pending = audio[whole:].copy()
        self.pending = len(self._pending)
        if not whole:
            return []
        data = audio[:whole].tobytes()
        size = n * SAMPLE_DTYPE.itemsize
        return [data[i : i + size] for i in range(0, len(data), size)]

    def flush(self) -> list[bytes]:
        """The partial frame padded with silence, if any."""
        if not self.pending:
            return []
        padding = np.zeros(self.samples - self.pending, dtype=SAMPLE_DTYPE)
        return self.push(padding)

    def reset(self) -> None:
        """Forget the partial frame (after a clear)."""
        self._pending = _EMPTY
        self.pending = 0


_EMPTY = np.empty(0, dtype=SAMPLE_DTYPE)
_EMPTY.flags.writeable = False
