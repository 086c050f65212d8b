"""vad: voice activity on the caller's audio, as ``speech_started`` / ``speech_stopped`` events.

Every inbound frame is fed to the engine (voicews.engines.vad: WebRTC's VAD, a spectral
flatness gate so tones and hiss are not speech, hysteresis).  The step passes audio through
untouched; put it anywhere in the pipeline.  Events, to the other steps and to the app:

- ``speech_started`` ``{"start": s}``: the caller started speaking, ``start`` seconds of
  call audio after the call's first frame (back-dated to the first speech frame: the event
  itself comes ``min_speech_ms`` later).
- ``speech_stopped`` ``{"start": s, "end": s}``: the utterance that began at ``start``
  ended at ``end`` (the end of its last speech frame; the event comes ``min_silence_ms``
  later).  An utterance still open when the call ends is closed then (the app gets it).

Times count the caller's frames (20 ms each), so they stay true however late frames arrive;
``Event.time`` is the call's clock when the event was emitted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from voicews import Processor, hookimpl
from voicews.engines.vad import Transition, VadParams, VoiceActivity


class Vad(Processor):
    """vad: voice activity of the caller as speech_started / speech_stopped events."""

    name = "vad"
    Params = VadParams

    @classmethod
    def prepare(cls, params: VadParams, context: Any) -> VadParams:
        params.check()  # ValueError: a config error naming the step and the parameter
        return params

    def __init__(self, session: Any, params: VadParams) -> None:
        super().__init__(session, params)
        self.activity = VoiceActivity(session.rate, params)
        self.started: float | None = None

    def process(self, inbound: np.ndarray, outbound: np.ndarray | None) -> np.ndarray | None:
        transitions = self.activity.feed(inbound)
        if transitions:
            self._tell(transitions)
        return outbound

    def close(self) -> None:
        self._tell(self.activity.finish())

    def _tell(self, transitions: list[Transition]) -> None:
        for transition in transitions:
            if transition.kind == "speech_started":
                self.started = transition.time
                self.session.emit("speech_started", start=transition.time)
            else:
                self.session.emit("speech_stopped", start=self.started, end=transition.time)


@hookimpl
def register_processors(register):
    register(Vad)
