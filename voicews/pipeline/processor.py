"""The base class a processor plugin subclasses.

A processor is one step of a pipeline.  Each call gets its own instance of each
step, so instance state is per call.  Work that should happen once (decoding a
prompt, validating a path) belongs in :meth:`Processor.prepare`, which runs when
config.yaml is loaded and turns a mistake into a config error at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from voicews.pipeline.events import Event
    from voicews.pipeline.session import Session


@dataclass(frozen=True)
class NoParams:
    """The parameters of a processor that takes none."""


@dataclass(frozen=True)
class PrepareContext:
    """What :meth:`Processor.prepare` may need to know about the config being loaded."""

    config_dir: Path
    key: str

    def resolve(self, path: str) -> Path:
        """A path from config.yaml, relative to the config file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.config_dir / p


class Processor:
    """One pipeline step.  Override what you need; the defaults pass audio through.

    ``Params`` is a dataclass describing the step's parameters in config.yaml;
    they are type-checked at start and handed to ``prepare`` and then (as
    whatever ``prepare`` returned) to ``__init__`` for every call.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams

    @classmethod
    def prepare(cls, params: Any, context: PrepareContext) -> Any:
        """Check and pre-compute at config load; raise ValueError to refuse the config."""
        return params

    def __init__(self, session: Session, params: Any) -> None:
        self.session = session
        self.params = params

    def process(self, inbound: np.ndarray, outbound: np.ndarray | None) -> np.ndarray | None:
        """Called once per 20 ms frame from the caller.

        ``inbound`` is the caller's frame (read-only int16 samples).  ``outbound``
        is what the steps before this one produced for the caller to hear
        (``None`` when nothing).  Return what the steps after this one should
        get: any number of int16 samples, or ``None``.  The sender cuts the
        pipeline's output into exact frames and paces it.
        """
        return outbound

    def on_event(self, event: Event) -> None:
        """A DTMF, notify or cleared event from Vonage for this call."""

    def close(self) -> None:
        """The call has ended (hang-up, error or shutdown): release what you hold."""
