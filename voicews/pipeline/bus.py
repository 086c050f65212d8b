"""The mix bus: audio a step plays enters the pipeline at that step, one frame at a time.

A call has one bus: the chain of its steps.  ``session.play(samples)`` from step
*k* queues the samples on *k*'s lane; on each frame the lane's next 20 ms is
mixed (saturating) into *k*'s output, so every later step (gain, record, ...)
treats it like any other audio, and it plays *with* the live output rather than
after it: an echo keeps lag 0 while a prompt plays over it.  A lane can also
*replace* its step's output while it has audio (``play(..., replace=True)``).

A ``notify`` queued behind played audio waits in the lane as a marker and is
released once the audio before it has left the step; the pipeline sends it after
the frame that carried that audio.  Lanes are bounded: past ``limit`` samples,
new audio is dropped and counted, so a step playing faster than real time cannot
grow memory.

Each chunk belongs to a :class:`~voicews.pipeline.playback.Playback`; taking a frame
counts the playback's samples out and notes where its first one sits in the output
stream (``base()``: the stream index of the frame being made), which is how a barge-in
knows how much of it the caller heard.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from voicews.audio.samples import SAMPLE_DTYPE, mix, saturate

if TYPE_CHECKING:
    from voicews.pipeline.playback import Mark, Playback


def as_samples(samples: Any) -> np.ndarray:
    """Any array-like of samples as a flat int16 array (floats rounded, loud audio clipped)."""
    audio = np.asarray(samples)
    if audio.dtype != SAMPLE_DTYPE:
        audio = saturate(audio)
    return audio.reshape(-1)


class Lane:
    """One step's played audio (and notify markers), taken a frame at a time."""

    __slots__ = ("_chunks", "_offset", "frame", "limit", "queued", "dropped")

    def __init__(self, frame: int, limit: int) -> None:
        self.frame = frame
        self.limit = limit
        self._chunks: deque[tuple[np.ndarray, bool, Playback] | Mark] = deque()
        self._offset = 0  # samples of the first chunk already taken
        self.queued = 0
        """Samples waiting."""
        self.dropped = 0
        """Samples refused at the bound, over the lane's life."""

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def push(self, samples: np.ndarray, playback: Playback) -> None:
        """Queue audio (int16, flat) after what is queued; drop what does not fit."""
        room = self.limit - self.queued
        if len(samples) > room:
            self.dropped += len(samples) - max(room, 0)
            samples = samples[: max(room, 0)]
        if len(samples):
            self._chunks.append((samples, playback.replace, playback))
            self.queued += len(samples)
            playback.samples += len(samples)

    def mark(self, mark: Mark) -> None:
        """Release `mark` once everything queued before it has been taken."""
        self._chunks.append(mark)

    def take(self, out: np.ndarray | None, due: list[Any],
             base: Callable[[], int]) -> np.ndarray | None:
        """Mix the next frame of queued audio into `out`; markers reached go to `due`.

        `base()` says where this frame starts in the stream of samples sent to the caller
        (asked only when a playback's first sample goes out).

        A frame cut short by a marker (the end of a prompt whose length is not a
        whole number of frames) is padded with silence, so the notify behind it
        is answered only after that audio has played.
        """
        frame = self.frame
        parts: list[np.ndarray] = []
        need = frame
        replace = False
        chunks = self._chunks
        while chunks and need:
            head = chunks[0]
            if not isinstance(head, tuple):
                chunks.popleft()
                due.append(head)
                if parts:
                    break
                continue
            samples, replace_this, playback = head
            replace = replace or replace_this
            start = self._offset
            piece = samples[start : start + need]
            if playback.start is None:
                playback.start = base() + frame - need
            playback.taken += len(piece)
            parts.append(piece)
            need -= len(piece)
            self.queued -= len(piece)
            if start + len(piece) >= len(samples):
                chunks.popleft()
                self._offset = 0
            else:
                self._offset = start + len(piece)
        while chunks and not need and not isinstance(chunks[0], tuple):
            due.append(chunks.popleft())
        if not parts:
            return out
        if len(parts) == 1 and not need:
            played = parts[0]
        else:
            played = np.zeros(frame, SAMPLE_DTYPE)
            played[: frame - need] = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if out is None or replace:
            return played
        return mix(out, played)

    def clear(self, due: list[Mark]) -> None:
        """Forget the queued audio; its markers go to `due` (Vonage answers them at once)."""
        for item in self._chunks:
            if not isinstance(item, tuple):
                due.append(item)
        self._chunks.clear()
        self._offset = 0
        self.queued = 0
