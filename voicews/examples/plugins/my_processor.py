"""my-processor: a skeleton to start your own processor from (rename it and edit).

Every method a processor may override is here, each doing the least it can:
the audio passes through, changed by ``level`` dB (0, the default, leaves it
bit-exact), and the call's start, key presses and end are logged.

Use it in config.yaml:

    plugins:
      - plugins/my_processor.py      # relative to config.yaml
    pipelines:
      mine:
        - echo                       # the caller's voice ...
        - my-processor: {level: 0}   # ... through this step

`voicews processors --config config.yaml` lists it with its parameters, and
`voicews check` loads it as the daemon would.  To make it a package others can
`pip install`, see `voicews init --plugin NAME`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from twisted.logger import Logger

from voicews import Event, PrepareContext, Processor, hookimpl
from voicews.audio.samples import db_to_factor, saturate

log = Logger(namespace="plugins.my_processor")


@dataclass(frozen=True)
class MyParams:
    level: float = 0.0
    """Level change in dB applied to what earlier steps produced; 0 passes it unchanged."""


class MyProcessor(Processor):
    """Passes the audio through (with an optional level change) and logs the call's life."""

    name = "my-processor"  # the name pipeline steps use; unique across all plugins
    Params = MyParams

    @classmethod
    def prepare(cls, params: MyParams, context: PrepareContext) -> float:
        """Once per config load: check the parameters, compute what every call shares.

        A ValueError here stops the daemon (or `voicews check`) with a config error
        naming this step.  What it returns is every call's ``self.params``.
        """
        return db_to_factor(params.level, "level")

    def __init__(self, session, params: float) -> None:
        super().__init__(session, params)  # sets self.session and self.params
        self.frames = 0  # per-call state lives on self: each call has its own instance

    def start(self) -> None:
        """The call's pipeline is built.  Return a Deferred to start something slow."""
        log.info("my-processor: call started uuid={uuid} rate={rate}",
                 uuid=self.session.info.uuid, rate=self.session.rate)

    def process(self, inbound: np.ndarray, outbound: np.ndarray | None) -> np.ndarray | None:
        """Every 20 ms frame: keep it quick.  ``inbound`` is the caller's (read-only),
        ``outbound`` what earlier steps made; return what later steps get."""
        self.frames += 1
        if outbound is None or self.params == 1.0:
            return outbound
        return saturate(outbound * self.params)

    def on_event(self, event: Event) -> None:
        """Vonage's events (dtmf, notify, cleared) and other steps' events."""
        if event.kind == "dtmf":
            log.info("my-processor: key {digit} uuid={uuid}",
                     digit=event.digit, uuid=self.session.info.uuid)

    def close(self) -> None:
        """The call has ended.  Return a Deferred to finish work (flush, write) first."""
        log.info("my-processor: call ended uuid={uuid} after {frames} frames",
                 uuid=self.session.info.uuid, frames=self.frames)


@hookimpl
def register_processors(register):
    register(MyProcessor)
