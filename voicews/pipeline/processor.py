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
    from twisted.internet.defer import Deferred

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
    transcriber: Any = None
    """The daemon's speech recognizer as configured (config.yaml's ``transcribe:``), for
    steps that transcribe: ``context.transcriber.require(grammar=..., keywords=...)``
    raises ValueError when it cannot serve them, and makes the daemon start it."""
    steps: tuple[str, ...] = ()
    """The processor names of the pipeline's steps, in order (``("vad", "transcribe")``)."""
    tts: Any = None
    """The daemon's text-to-speech engine (config.yaml's ``tts:``), for steps that speak:
    ``context.tts.check(voice, **options)`` raises ValueError when it cannot."""

    def resolve(self, path: str) -> Path:
        """A path from config.yaml, relative to the config file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.config_dir / p


class Processor:
    """One pipeline step.  Override what you need; the defaults pass audio through.

    ``Params`` is a dataclass describing the step's parameters in config.yaml;
    they are type-checked at start and handed to ``prepare`` and then (as
    whatever ``prepare`` returned) to ``__init__`` for every call.

    The life of a step, all on the reactor thread:

    1. ``__init__(session, params)`` when the call's first message arrives;
    2. ``start()``; it may return a Deferred (open a connection to a speech
       service): frames keep flowing meanwhile, and ``process`` decides what to
       do with them.  A failure ends the call (1011);
    3. ``process(inbound, outbound)`` for every 20 ms frame, ``on_event(event)``
       for every event of the call (Vonage's, other steps', the app's);
    4. ``close()`` when the call ends, for any reason; it may return a Deferred
       (flush a final transcript): the call's end waits for it, up to
       ``limits.close_timeout``.
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

    def start(self) -> Deferred[Any] | None:
        """The call's pipeline is built: start what takes time (return a Deferred), or not."""
        return None

    def process(self, inbound: np.ndarray, outbound: np.ndarray | None) -> np.ndarray | None:
        """Called once per 20 ms frame from the caller: keep it quick and synchronous.

        ``inbound`` is the caller's frame (read-only int16 samples).  ``outbound``
        is what the steps before this one produced for the caller to hear, with
        what they played mixed in (``None`` when nothing).  Return what the steps
        after this one should get: usually one frame of int16 samples, or ``None``.
        Audio for later frames goes through ``self.session.play`` instead (it is
        mixed into this step's output one frame at a time).  Any other length is
        allowed and cut into exact frames at the end of the pipeline.
        """
        return outbound

    def on_event(self, event: Event) -> None:
        """An event of this call: Vonage's (``dtmf``, ``notify``, ``cleared``), another
        step's or the app's.  A step does not receive the events it emits itself."""

    def close(self) -> Deferred[Any] | None:
        """The call has ended (hang-up, error or shutdown): release what you hold.

        Return a Deferred to finish work first (write a file, flush a transcript).
        """
        return None
