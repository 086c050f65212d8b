"""A step that emits many events, for the call-events tests (loaded like a user's plugin).

``chatter`` echoes the caller and emits ``per_frame`` ``chat`` events on each inbound
frame until it has emitted ``count`` (data: ``n``, the event's number in the call,
and ``pad``, ``size`` characters).  With ``odd: true`` its first frame also emits an
``odd`` event whose data JSON cannot carry.  A DTMF key makes it play 0.2 s of tone
with a notify mark ``{"key": digit}`` behind it, so Vonage answers ``notify``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voicews import Processor, hookimpl


@dataclass(frozen=True)
class ChatterParams:
    count: int = 0
    per_frame: int = 1
    size: int = 0
    odd: bool = False


class Chatter(Processor):
    name = "chatter"
    Params = ChatterParams

    def __init__(self, session, params):
        super().__init__(session, params)
        self.sent = 0

    def process(self, inbound, outbound):
        params = self.params
        if params.odd and self.session.frames_in == 1:
            self.session.emit("odd", blob=b"\x00\x01", thing=object(), nan=float("nan"),
                              numpy=np.int64(7), pair=(1, 2), keys={3: "three"})
        pad = "x" * params.size
        for _ in range(min(params.per_frame, params.count - self.sent)):
            self.session.emit("chat", n=self.sent, pad=pad)
            self.sent += 1
        return inbound

    def on_event(self, event):
        if event.kind == "dtmf" and event.digit:
            t = np.arange(int(0.2 * self.session.rate)) / self.session.rate
            self.session.play((3000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))
            self.session.notify({"key": event.digit})


@hookimpl
def register_processors(register):
    register(Chatter)
