"""What a call is: its audio format and the NCCO's headers, from the socket's first message."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from voicews.audio.samples import frame_bytes, frame_samples


@dataclass
class CallInfo:
    """Metadata of one call, from the socket's first message."""

    rate: int
    content_type: str
    pipeline: str
    headers: dict[str, Any] = field(default_factory=dict)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def uuid(self) -> str | None:
        """The call leg's uuid, when the NCCO put it in the headers (ours does)."""
        value = self.headers.get("uuid") or self.headers.get("call_uuid")
        return str(value) if value is not None else None

    @property
    def conversation_uuid(self) -> str | None:
        value = self.headers.get("conversation_uuid")
        return str(value) if value is not None else None

    @property
    def frame_samples(self) -> int:
        return frame_samples(self.rate)

    @property
    def frame_bytes(self) -> int:
        return frame_bytes(self.rate)
