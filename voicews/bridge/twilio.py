"""Twilio's side of a Media Streams session, for one call, as a state machine with no I/O.

In a bridge voicews plays Twilio: it is the WebSocket client, it sends what
Twilio sends (``connected``, ``start``, ``media``, ``dtmf``, ``mark``, ``stop``)
and it honours what a bot sends Twilio (``media``, ``mark``, ``clear``), so a
bot written for Twilio runs on a Vonage call unchanged.  Every message follows
Twilio's "Media Streams - WebSocket Messages" reference
(twilio.com/docs/voice/media-streams/websocket-messages; summary in
shared/docs/twilio-media-streams.md).

Audio: the caller's 20 ms L16 frames at the call's rate become 20 ms of μ-law at
8 kHz (160 bytes, base64) in one ``media`` message each; the bot's μ-law of any
length becomes L16 at the call's rate.  Both directions go through a streaming
resampler so message boundaries leave no trace.

Usage by the wrapper (all methods return what to send, or what to do):

- on open: send each of ``opening()``;
- on each caller frame: send ``media(frame)``; on a caller DTMF: send ``dtmf(digit)``;
- on each message from the bot: carry out ``receive(message)`` (see actions.py);
- when Vonage says a mark's audio has played: send each of ``mark_played(mark.id)``;
- when the bot's audio runs dry: carry out ``drain()`` (the resampler's last ms);
- at the end: send each of ``stop()``, then close the socket.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from voicews.audio import g711
from voicews.audio.samples import SAMPLE_DTYPE, frame_samples
from voicews.audio.stream import StreamResampler
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

TWILIO_RATE = 8000
"""Media Streams audio is always μ-law at 8 kHz, mono ("Value is always 8000")."""
CHUNK_BYTES = 160
"""What Twilio sends in each ``media`` message: 20 ms of μ-law."""
CHUNK_MS = 20
MAX_MESSAGE_CHARS = 1 << 20
"""The largest message taken from a bot: about 65 s of μ-law in one ``media`` message."""
MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": TWILIO_RATE, "channels": 1}


def sid(prefix: str, *parts: object) -> str:
    """A Twilio-style SID (two letters and 32 hex digits) derived stably from `parts`."""
    digest = hashlib.sha256(":".join(str(part) for part in parts).encode()).hexdigest()
    return prefix + digest[:32]


def call_sid(call_id: str) -> str:
    """``CA`` and the Vonage uuid's 32 hex digits, so a bot's logs name the Vonage call.

    An id that is not a UUID is hashed instead.
    """
    try:
        return "CA" + uuid.UUID(call_id).hex
    except ValueError:
        return sid("CA", "call", call_id)


def custom_parameters(headers: Mapping[str, Any]) -> dict[str, str]:
    """The call's headers as ``start.customParameters``: Twilio's are strings, so others are
    sent as their JSON text (``3`` -> ``"3"``, ``{"a": 1}`` -> ``'{"a": 1}'``)."""
    return {
        str(key): value if isinstance(value, str) else json.dumps(value)
        for key, value in headers.items()
    }


class TwilioStream:
    """One Media Streams session (one WebSocket connection) for one call."""

    def __init__(
        self,
        call_id: str,
        headers: Mapping[str, Any],
        rate: int,
        *,
        attempt: int = 0,
        account: str = "voicews",
        max_message_chars: int = MAX_MESSAGE_CHARS,
        max_pending_marks: int = MAX_PENDING_MARKS,
    ) -> None:
        """`attempt` numbers the connections of one call: a reconnection is a new stream
        (a new ``streamSid``) of the same call, as with Twilio.  `account` names the
        installation in ``accountSid``."""
        self.rate = check_rate(rate)
        self.frame_samples = frame_samples(rate)
        self.stream_sid = sid("MZ", "stream", call_id, attempt)
        self.call_sid = call_sid(call_id)
        self.account_sid = sid("AC", "account", account)
        self.custom_parameters = custom_parameters(headers)
        self.max_message_chars = max_message_chars
        self.marks = PendingMarks(max_pending_marks)
        self.opened = False
        self.stopped = False
        self.sequence = 0
        """The last ``sequenceNumber`` sent (``start`` is 1)."""
        self.chunk = 0
        """The last ``media.chunk`` sent (the first is 1)."""
        self._to_bot = StreamResampler(rate, TWILIO_RATE)
        self._from_bot = StreamResampler(TWILIO_RATE, rate)
        self._outgoing = np.empty(0, dtype=SAMPLE_DTYPE)

    # -- what Twilio sends ---------------------------------------------------------------

    def _next(self, event: str) -> dict[str, Any]:
        self.sequence += 1
        return {"event": event, "sequenceNumber": str(self.sequence)}

    def opening(self) -> list[str]:
        """``connected`` then ``start``: the first two messages of the stream."""
        if self.opened:
            raise RuntimeError("opening() was already sent")
        self.opened = True
        connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        start = self._next("start")
        start["start"] = {
            "accountSid": self.account_sid,
            "streamSid": self.stream_sid,
            "callSid": self.call_sid,
            "tracks": ["inbound"],
            "customParameters": self.custom_parameters,
            "mediaFormat": dict(MEDIA_FORMAT),
        }
        start["streamSid"] = self.stream_sid
        return [dumps(connected), dumps(start)]

    def media(self, frame: np.ndarray) -> str:
        """One ``media`` message (20 ms of μ-law) for one 20 ms frame of the caller.

        ``media.timestamp`` is the chunk's place in the stream in ms (0, 20, 40...).
        The first chunk starts with the resampler's delay in silence (15-25 ms).
        """
        frame = caller_frame(frame, self.rate, self.frame_samples)
        pending = np.concatenate([self._outgoing, self._to_bot.process(frame)])
        if len(pending) < CHUNK_BYTES:
            # Only before the resampler's first output: the delay, sent as silence.
            pending = np.concatenate([np.zeros(CHUNK_BYTES - len(pending), SAMPLE_DTYPE), pending])
        chunk, rest = pending[:CHUNK_BYTES], pending[CHUNK_BYTES:]
        self._outgoing = rest[-CHUNK_BYTES:]  # whole ratios leave none; bounded regardless
        message = self._next("media")
        self.chunk += 1
        message["media"] = {
            "track": "inbound",
            "chunk": str(self.chunk),
            "timestamp": str((self.chunk - 1) * CHUNK_MS),
            "payload": base64.b64encode(g711.encode(chunk)).decode("ascii"),
        }
        message["streamSid"] = self.stream_sid
        return dumps(message)

    def dtmf(self, digit: str, duration: int | None = None) -> str:
        """The ``dtmf`` message for a key the caller pressed (Twilio sends no duration)."""
        message: dict[str, Any] = {"event": "dtmf", "streamSid": self.stream_sid}
        message.update(self._next("dtmf"))
        message["dtmf"] = {"track": "inbound_track", "digit": str(digit)}
        return dumps(message)

    def _mark(self, name: str) -> str:
        message = self._next("mark")
        message["streamSid"] = self.stream_sid
        message["mark"] = {"name": name}
        return dumps(message)

    def mark_played(self, mark_id: int) -> list[str]:
        """The ``mark`` answers due now that mark `mark_id`'s audio has played.

        Marks before it are answered with it; an id already answered (by a clear) gives [].
        """
        return [self._mark(name) for name in self.marks.played(mark_id)]

    def stop(self) -> list[str]:
        """The last message, ``stop``; then close the socket.  A second call gives []."""
        if self.stopped:
            return []
        self.stopped = True
        message = self._next("stop")
        message["stop"] = {"accountSid": self.account_sid, "callSid": self.call_sid}
        message["streamSid"] = self.stream_sid
        return [dumps(message)]

    # -- what the bot sends --------------------------------------------------------------

    def receive(self, message: str | bytes) -> list[Action]:
        """What one message from the bot asks for.  Never raises: garbage is `Ignored`."""
        if isinstance(message, bytes | bytearray | memoryview):
            return [Ignored(f"binary message of {len(message)} bytes (Twilio takes only JSON)")]
        data = json_object(message, self.max_message_chars)
        if isinstance(data, Ignored):
            return [data]
        event = data.get("event")
        if event == "media":
            return self._media(data.get("media"))
        if event == "mark":
            mark = data.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                return [Ignored(f"mark without a name: {one_line(message)}")]
            mark_id = self.marks.add(name)
            if mark_id is None:
                return [Ignored(f"mark {one_line(name)} over the limit of "
                                f"{self.marks.limit} waiting marks")]
            return [Mark(mark_id, name)]
        if event == "clear":
            self._from_bot.reset()
            return [Clear(), *(Reply(self._mark(name)) for name in self.marks.drain())]
        return [Ignored(f"unknown event {one_line(event)}")]

    def _media(self, media: object) -> list[Action]:
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            return [Ignored("media without a payload")]
        try:
            mulaw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return [Ignored(f"media payload is not base64: {one_line(payload)}")]
        samples = self._from_bot.process(g711.decode(mulaw))
        return [Play(samples)] if len(samples) else []

    @property
    def held_samples(self) -> int:
        """Samples (at the call's rate) of the bot's audio still in the resampler: a mark
        is due once this many more have played after what ``receive`` gave so far."""
        return self._from_bot.held

    def drain(self) -> list[Action]:
        """The bot's last few ms still in the resampler, for when its audio has run dry."""
        samples = self._from_bot.flush()
        return [Play(samples)] if len(samples) else []
