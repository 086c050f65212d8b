"""Steps that write a call's events and says to the daemon's log, for the real-daemon tests.

Loaded from config.yaml (``plugins: [.../voice_probe.py]``) like a user's plugin.  Each line
is ``EVENT {json}`` or ``SAID {json}``, with the call's uuid, so a test can read what a step
would have seen without the app's event delivery.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from twisted.logger import Logger

from voicews import Processor, hookimpl

log = Logger(namespace="voice_probe")


class EventLog(Processor):
    """Logs every event the step hears."""

    name = "event-log"

    def on_event(self, event):
        log.info("EVENT {line}", line=json.dumps({
            "uuid": self.session.info.uuid, "kind": event.kind, "source": event.source,
            "time": round(event.time, 3), "data": dict(event.data)}))


@dataclass(frozen=True)
class ProbeParams:
    text: str


class SayProbe(Processor):
    """Says `text` through session.say at the start, and logs what its Deferred fired with."""

    name = "say-probe"
    Params = ProbeParams

    def start(self):
        self.session.say(self.params.text).addBoth(self.said)

    def said(self, result):
        line = {"uuid": self.session.info.uuid, "time": round(self.session.time, 3)}
        if hasattr(result, "outcome"):
            line.update(outcome=result.outcome, heard=result.heard, length=result.seconds)
        else:
            line.update(error=result.getErrorMessage())
        log.info("SAID {line}", line=json.dumps(line))


@hookimpl
def register_processors(register):
    register(EventLog)
    register(SayProbe)
