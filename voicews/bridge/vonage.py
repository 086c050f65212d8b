"""Vonage's side of the Voice API WebSocket, for one call, as a state machine with no I/O.

With ``protocol: vonage`` the far end sees exactly what Vonage would send it
(shared/docs/vonage-voice-websocket.md): a first JSON text message with
``event: websocket:connected``, the ``content-type`` and the call's headers at
the top level, then one binary L16 frame every 20 ms at the call's rate (no
resampling: the far end gets the call's own rate), ``websocket:dtmf`` events for
the caller's keys, and ``websocket:notify`` once the audio before one of its
notify commands has played.  What it sends back is what voicews takes from
Vonage: binary L16 at that rate, ``{"action": "clear"}`` (answered with the
notifies it dropped, then ``websocket:cleared``, as voicews-call models Vonage)
and ``{"action": "notify", "payload": ...}``.

The same calls as :class:`~voicews.bridge.twilio.TwilioStream`: ``opening()``,
``media(frame)``, ``dtmf(digit, duration)``, ``mark_played(id)``, ``stop()``,
``receive(message)`` and ``drain()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from voicews.audio.samples import SAMPLE_DTYPE, frame_samples
from voicews.bridge.actions import (
    MAX_PENDING_MARKS,
    Action,
    Clear,
    Ignored,
    Mark,
    PendingMarks,
    Play,
    Reply,
    caller_frame,
    check_rate,
    dumps,
    json_object,
    one_line,
)

MAX_MESSAGE_BYTES = 1 << 20
"""The largest message taken from the far end: 32 s of audio at 16 kHz in one message."""


class VonageStream:
    """One Vonage-protocol session (one WebSocket connection) for one call."""

    def __init__(
        self,
        headers: Mapping[str, Any],
        rate: int,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_pending_marks: int = MAX_PENDING_MARKS,
    ) -> None:
        self.rate = check_rate(rate)
        self.frame_samples = frame_samples(rate)
        self.content_type = f"audio/l16;rate={rate}"
        self.headers = dict(headers)
        self.max_message_bytes = max_message_bytes
        self.marks = PendingMarks(max_pending_marks)
        self.opened = False
        self.stopped = False

    def opening(self) -> list[str]:
        """The first message: ``websocket:connected``, ``content-type`` and the headers.

        A header named ``event`` or ``content-type`` cannot displace Vonage's own keys.
        """
        if self.opened:
            raise RuntimeError("opening() was already sent")
        self.opened = True
        first: dict[str, Any] = {"event": "websocket:connected", "content-type": self.content_type}
        for key, value in self.headers.items():
            first.setdefault(str(key), value)
        return [dumps(first)]

    def media(self, frame: np.ndarray) -> bytes:
        """One binary message: the frame as L16 (little-endian int16), as Vonage sends it."""
        frame = caller_frame(frame, self.rate, self.frame_samples)
        return frame.astype(SAMPLE_DTYPE, copy=False).tobytes()

    def dtmf(self, digit: str, duration: int | None = None) -> str:
        """``websocket:dtmf`` for a key the caller pressed (`duration` in ms when known)."""
        event: dict[str, Any] = {"event": "websocket:dtmf", "digit": str(digit)}
        if duration is not None:
            event["duration"] = int(duration)
        return dumps(event)

    def _notify(self, payload: Any) -> str:
        return dumps({"event": "websocket:notify", "payload": payload})

    def mark_played(self, mark_id: int) -> list[str]:
        """The ``websocket:notify`` answers due now that notify `mark_id`'s audio has played."""
        return [self._notify(payload) for payload in self.marks.played(mark_id)]

    def stop(self) -> list[str]:
        """Vonage ends a call by closing the socket: nothing to send."""
        self.stopped = True
        return []

    def receive(self, message: str | bytes) -> list[Action]:
        """What one message from the far end asks for.  Never raises: garbage is `Ignored`."""
        if isinstance(message, bytes | bytearray | memoryview):
            return self._audio(bytes(message))
        data = json_object(message, self.max_message_bytes)
        if isinstance(data, Ignored):
            return [data]
        action = data.get("action")
        if action == "clear":
            notifies = [Reply(self._notify(payload)) for payload in self.marks.drain()]
            return [Clear(), *notifies, Reply(dumps({"event": "websocket:cleared"}))]
        if action == "notify":
            payload = data.get("payload")
            mark_id = self.marks.add(payload)
            if mark_id is None:
                return [Ignored(f"notify over the limit of {self.marks.limit} waiting notifies")]
            return [Mark(mark_id, one_line(payload))]
        return [Ignored(f"unknown action {one_line(action)}")]

    def _audio(self, data: bytes) -> list[Action]:
        if len(data) > self.max_message_bytes:
            return [Ignored(f"binary message of {len(data)} bytes is over the limit "
                            f"of {self.max_message_bytes}")]
        if len(data) % SAMPLE_DTYPE.itemsize:
            return [Ignored(f"binary message of {len(data)} bytes is not whole L16 samples")]
        if not data:
            return []
        return [Play(np.frombuffer(data, dtype=SAMPLE_DTYPE).copy())]

    held_samples = 0
    """Nothing is held back: a notify is due once what ``receive`` gave has played."""

    def drain(self) -> list[Action]:
        """Nothing is held back: audio is not resampled."""
        return []
