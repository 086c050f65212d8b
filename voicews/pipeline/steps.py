"""Pipelines as config holds them: named chains of processor steps, resolved at load.

A :class:`PipelineSpec` holds processor classes and their prepared parameters;
each call builds its own :class:`voicews.pipeline.pipeline.Pipeline` from it, with
fresh processor instances, so no state leaks between calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voicews.pipeline.processor import Processor


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
