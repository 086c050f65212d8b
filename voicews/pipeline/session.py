"""The per-call session: what a processor may know about and do to its call.

The session sits between the socket and the pipeline.  It holds the call's
metadata, feeds frames through the pipeline and its output through the framer
to the paced sender, and offers ``clear``, ``notify`` and ``play`` to
processors.  It never sees the socket: the protocol gives it a sender.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np

from voicews.audio.samples import SAMPLE_DTYPE, frame_bytes, frame_samples
from voicews.pipeline.events import Event
from voicews.pipeline.framer import Framer
from voicews.pipeline.sender import PacedSender
from voicews.runtime.metrics import PROCESSING, PROCESSING_SAMPLE

if TYPE_CHECKING:
    from voicews.pipeline.steps import Pipeline, PipelineSpec


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


class Session:
    """One live call: metadata, its pipeline, and the way back to the caller."""

    def __init__(self, info: CallInfo, spec: PipelineSpec, sender: PacedSender) -> None:
        self.info = info
        self.sender = sender
        self.framer = Framer(info.frame_samples)
        self.frames_in = 0
        self.closed = False
        self.pipeline: Pipeline = spec.build(self)

    @property
    def rate(self) -> int:
        return self.info.rate

    @property
    def frames_out(self) -> int:
        return self.sender.frames_sent

    def receive_frame(self, payload: bytes) -> None:
        """Run one inbound frame (exactly one frame of bytes) through the pipeline."""
        self.frames_in += 1
        inbound = np.frombuffer(payload, SAMPLE_DTYPE)
        if self.frames_in % PROCESSING_SAMPLE:
            outbound = self.pipeline.process(inbound)
        else:  # time one frame in PROCESSING_SAMPLE: no per-frame metric cost
            started = perf_counter()
            outbound = self.pipeline.process(inbound)
            PROCESSING.observe(perf_counter() - started)
        if outbound is None:
            return
        if outbound is inbound and not self.framer.pending:
            self.sender.audio(payload)  # untouched echo: no copy
            return
        frame = self.framer.whole(outbound)
        if frame is not None:
            self.sender.audio(frame)
            return
        self.play(outbound)

    def receive_event(self, event: Event) -> None:
        self.pipeline.on_event(event)

    def play(self, samples: np.ndarray) -> None:
        """Queue audio for the caller outside the frame cycle (e.g. from a Deferred)."""
        if self.closed:
            return
        for frame in self.framer.push(samples):
            self.sender.audio(frame)

    def clear(self) -> None:
        """Barge-in: drop our queued audio and tell Vonage to drop its buffer."""
        if self.closed:
            return
        self.framer.reset()
        self.sender.clear()
        self.sender.text(json.dumps({"action": "clear"}))

    def notify(self, payload: Any) -> None:
        """Ask Vonage to echo `payload` back once the audio sent before it has played."""
        if self.closed:
            return
        for frame in self.framer.flush():
            self.sender.audio(frame)
        self.sender.text(json.dumps({"action": "notify", "payload": payload}))

    def close(self) -> list[BaseException]:
        """End the call's processing; return errors raised by processors' close()."""
        if self.closed:
            return []
        self.closed = True
        self.sender.stop()
        return self.pipeline.close()
