"""Pipelines: named chains of processor steps, resolved from config.yaml at load.

A :class:`PipelineSpec` is what config holds (processor classes and their
prepared parameters); :meth:`PipelineSpec.build` makes the per-call
:class:`Pipeline` with fresh processor instances, so no state leaks between calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from voicews.pipeline.events import Event
from voicews.pipeline.processor import Processor

if TYPE_CHECKING:
    from voicews.pipeline.session import Session


@dataclass(frozen=True)
class Step:
    """One step of a pipeline: a processor class and the parameters `prepare` returned."""

    name: str
    processor: type[Processor]
    params: Any


@dataclass(frozen=True)
class PipelineSpec:
    """A named pipeline from config.yaml."""

    name: str
    steps: tuple[Step, ...]

    def build(self, session: Session) -> Pipeline:
        """Fresh processors for one call; if one cannot start, those already made are closed."""
        processors: list[Processor] = []
        try:
            for step in self.steps:
                processors.append(step.processor(session, step.params))
        except Exception:
            Pipeline(self, processors).close()  # e.g. a recording already opened: finish it
            raise
        return Pipeline(self, processors)


class Pipeline:
    """The processors of one call, run in order on every inbound frame."""

    def __init__(self, spec: PipelineSpec, processors: list[Processor]) -> None:
        self.spec = spec
        self.processors = processors

    def process(self, inbound: np.ndarray) -> np.ndarray | None:
        outbound = None
        for processor in self.processors:
            outbound = processor.process(inbound, outbound)
        return outbound

    def on_event(self, event: Event) -> None:
        for processor in self.processors:
            processor.on_event(event)

    def close(self) -> list[BaseException]:
        """Close every processor, even when one raises; return what was raised."""
        errors: list[BaseException] = []
        for processor in self.processors:
            try:
                processor.close()
            except Exception as exc:  # a plugin's bug must not stop the others closing
                errors.append(exc)
        return errors
