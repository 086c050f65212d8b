"""Run a pipeline in-process, on a ``task.Clock``: unit tests for processors, no daemon.

    from voicews.testing import call_with

    call = call_with([MyProcessor], params=[MyParams()], rate=16000)
    call.frames(50)                       # one second of silence from the caller
    call.pipeline.receive_event("dtmf", {"digit": "5"})
    assert call.texts() == [...]          # commands sent to Vonage
    call.audio()                          # every frame sent back, as int16

The pipeline is the real one (mix bus, events, paced sender); only the socket is
replaced by :class:`Wire`, which records what would have gone to Vonage.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from twisted.internet.task import Clock

from voicews.audio.samples import SAMPLE_DTYPE, frame_bytes
from voicews.pipeline.info import CallInfo
from voicews.pipeline.pipeline import Pipeline
from voicews.pipeline.processor import Processor
from voicews.pipeline.services import CallServices
from voicews.pipeline.steps import PipelineSpec, Step


@dataclass
class Wire:
    """A CallLink that keeps what the pipeline sends: (clock time, bytes or text) items."""

    clock: Clock
    items: list[tuple[float, bytes | str]] = field(default_factory=list)
    hangups: list[tuple[int, str, str]] = field(default_factory=list)

    def send_audio(self, frame: bytes) -> None:
        self.items.append((self.clock.seconds(), frame))

    def send_text(self, message: str) -> None:
        self.items.append((self.clock.seconds(), message))

    def hangup(self, code: int, reason: str, outcome: str) -> None:
        self.hangups.append((code, reason, outcome))


@dataclass
class LocalCall:
    """A started pipeline, its clock and its wire."""

    pipeline: Pipeline
    clock: Clock
    wire: Wire

    def frames(self, count: int, samples: np.ndarray | None = None, step: float = 0.02) -> None:
        """Send `count` caller frames (silence, or consecutive frames of `samples`),
        advancing the clock by `step` seconds after each."""
        size = frame_bytes(self.pipeline.info.rate)
        n = size // 2
        for i in range(count):
            if samples is None:
                payload = bytes(size)
            else:
                chunk = np.zeros(n, SAMPLE_DTYPE)
                piece = np.asarray(samples[i * n : (i + 1) * n], SAMPLE_DTYPE)
                chunk[: len(piece)] = piece
                payload = chunk.tobytes()
            self.pipeline.receive_frame(payload)
            self.clock.advance(step)

    def audio(self) -> np.ndarray:
        """Every audio frame sent back, joined, as int16."""
        data = b"".join(item for _, item in self.wire.items if isinstance(item, bytes))
        return np.frombuffer(data, SAMPLE_DTYPE)

    def texts(self) -> list[Any]:
        """Every command sent back, parsed."""
        return [json.loads(item) for _, item in self.wire.items if isinstance(item, str)]


def call_with(
    processors: Sequence[type[Processor]], params: Sequence[Any] | None = None,
    rate: int = 16000, headers: dict[str, Any] | None = None, clock: Clock | None = None,
    **services: Any,
) -> LocalCall:
    """Build and start a pipeline of `processors` (with `params`, default None each)."""
    clock = clock or Clock()
    params = list(params) if params is not None else [None] * len(processors)
    spec = PipelineSpec(
        "test", tuple(Step(cls.name or cls.__name__, cls, p) for cls, p in zip(processors, params,
                                                                                 strict=True))
    )
    return start(spec, rate=rate, headers=headers, clock=clock, **services)


def start(
    spec: PipelineSpec, rate: int = 16000, headers: dict[str, Any] | None = None,
    clock: Clock | None = None, **services: Any,
) -> LocalCall:
    """Build and start a pipeline from a spec (e.g. one from ``load_settings``)."""
    clock = clock or Clock()
    info = CallInfo(rate=rate, content_type=f"audio/l16;rate={rate}", pipeline=spec.name,
                    headers=dict(headers or {}))
    wire = Wire(clock)
    pipeline = Pipeline(spec, info, CallServices(clock=clock, **services), wire)
    pipeline.start()
    return LocalCall(pipeline, clock, wire)
