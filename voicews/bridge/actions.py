"""What a bot's messages ask of the call, whatever protocol the bot speaks.

``receive()`` of :class:`~voicews.bridge.twilio.TwilioStream` and of
:class:`~voicews.bridge.vonage.VonageStream` turn each message from the far end
into a list of these, in order.  The processor wrapper carries them out:

- :class:`Play`: queue these samples (int16 at the call's rate) for the caller.
- :class:`Mark`: once everything queued before it has played, call
  ``stream.mark_played(mark.id)`` and send what it returns to the far end.  The
  wrapper learns that from Vonage: it sends ``{"action": "notify"}`` after the
  audio, with the id in its payload, and Vonage answers ``websocket:notify``.
- :class:`Clear`: drop the queued audio (our queue and Vonage's, with
  ``{"action": "clear"}``).  The :class:`Reply` actions that follow it answer the
  marks the clear dropped, as the reference asks.
- :class:`Reply`: send this text to the far end now.
- :class:`Ignored`: the message was not understood; log ``reason`` (rate-limited).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from voicews.audio.samples import RATES


@dataclass(frozen=True, eq=False)
class Play:
    """Audio for the caller: int16 samples at the call's rate."""

    samples: np.ndarray


@dataclass(frozen=True)
class Mark:
    """A playback mark: answer it with ``mark_played(id)`` once the audio before it played."""

    id: int
    name: str


@dataclass(frozen=True)
class Clear:
    """Drop every queued sample for the caller (barge-in)."""


@dataclass(frozen=True)
class Reply:
    """A text message to send to the far end at once."""

    message: str


@dataclass(frozen=True)
class Ignored:
    """A message that was not understood, and why, in one line."""

    reason: str


Action = Play | Mark | Clear | Reply | Ignored

class FarEnd(Protocol):
    """What TwilioStream and VonageStream both offer: the wrapper needs nothing else.

    Each returns the messages to send (str: text, bytes: binary) or the actions to take.
    """

    rate: int
    stopped: bool

    @property
    def held_samples(self) -> int: ...

    def opening(self) -> list[str]: ...
    def media(self, frame: np.ndarray) -> str | bytes: ...
    def dtmf(self, digit: str, duration: int | None = None) -> str: ...
    def mark_played(self, mark_id: int) -> list[str]: ...
    def stop(self) -> list[str]: ...
    def receive(self, message: str | bytes) -> list[Action]: ...
    def drain(self) -> list[Action]: ...


MAX_PENDING_MARKS = 1000
"""Marks waiting for their audio; a bot past this gets its new marks ignored."""


class PendingMarks:
    """Marks in the order they came, each waiting until the audio before it has played."""

    def __init__(self, limit: int = MAX_PENDING_MARKS) -> None:
        self.limit = limit
        self._next_id = 1
        self._waiting: deque[tuple[int, Any]] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, value: Any) -> int | None:
        """Queue a mark's value; its id, or None when `limit` marks are already waiting."""
        if len(self._waiting) >= self.limit:
            return None
        mark_id = self._next_id
        self._next_id += 1
        self._waiting.append((mark_id, value))
        return mark_id

    def played(self, mark_id: int) -> list[Any]:
        """The values of every mark up to `mark_id`, which have all played, oldest first.

        A mark played means the marks before it played too, so they are answered
        with it even if their own notify was lost.  An unknown or answered id gives [].
        """
        if not any(waiting == mark_id for waiting, _ in self._waiting):
            return []
        done = []
        while self._waiting:
            waiting, value = self._waiting.popleft()
            done.append(value)
            if waiting == mark_id:
                break
        return done

    def drain(self) -> list[Any]:
        """Every waiting value, oldest first (a clear answers them all)."""
        done = [value for _, value in self._waiting]
        self._waiting.clear()
        return done


def one_line(value: object, limit: int = 60) -> str:
    """A short printable form of something a far end sent, for a reason string."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_object(message: str, limit: int) -> dict[str, Any] | Ignored:
    """A text message from the far end as a JSON object, or why it is `Ignored`."""
    if len(message) > limit:
        return Ignored(f"message of {len(message)} characters is over the limit of {limit}")
    try:
        data = json.loads(message)
    except ValueError:
        return Ignored(f"not JSON: {one_line(message)}")
    if not isinstance(data, dict):
        return Ignored(f"not a JSON object: {one_line(message)}")
    return data


def dumps(message: dict[str, Any]) -> str:
    """A message for the far end as compact JSON, as Twilio and Vonage write theirs."""
    return json.dumps(message, separators=(",", ":"))


def check_rate(rate: int) -> int:
    """The call's rate, if it is one a Vonage call may have, else ValueError."""
    if rate not in RATES:
        raise ValueError(f"rate must be one of {RATES}, got {rate}")
    return rate


def caller_frame(frame: np.ndarray, rate: int, samples: int) -> np.ndarray:
    """One 20 ms frame of the caller (`samples` long at `rate`) as an array, else ValueError."""
    frame = np.asarray(frame)
    if frame.shape != (samples,):
        raise ValueError(f"a frame at {rate} Hz has {samples} samples, got {frame.shape}")
    return frame
