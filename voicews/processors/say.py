"""say: speak a text to the caller when the call starts (text to speech on the mix bus).

``- say: {text: "Thanks for calling.", voice: en-us, options: {speed: 160}}``.  The text
is spoken with the daemon's engine (config.yaml's ``tts:``; eSpeak NG by default) through
``session.say``: synthesized off the reactor, cached, played from this step onwards while
the call's frames keep flowing, and interruptible by a ``barge-in`` step.  The voice and
options are checked when config.yaml loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from voicews import Playback, PrepareContext, Processor, hookimpl

log = Logger(namespace="voicews.processors.say")


@dataclass(frozen=True)
class SayParams:
    text: str
    """What to say."""
    voice: str | None = None
    """The engine's voice (espeak-ng: en-us, fr, en-us+f3...); default: ``tts.voice``."""
    options: dict[str, Any] = field(default_factory=dict)
    """The engine's per-text options (espeak-ng: speed, pitch, amplitude, word_gap)."""


class Say(Processor):
    name = "say"
    Params = SayParams

    @classmethod
    def prepare(cls, params: SayParams, context: PrepareContext) -> SayParams:
        if not params.text.strip():
            raise ValueError("text: nothing to say")
        if context.tts is None:
            raise ValueError("no text-to-speech engine configured")
        context.tts.check(params.voice, **params.options)
        return params

    def start(self) -> None:
        said = self.session.say(self.params.text, voice=self.params.voice,
                                **self.params.options)
        said.addCallbacks(self._said, self._failed)

    def _said(self, playback: Playback) -> None:
        log.debug("say: {outcome} after {heard:.2f} of {length:.2f} s uuid={uuid}",
                  outcome=playback.outcome, heard=playback.heard, length=playback.seconds,
                  uuid=self.session.info.uuid)

    def _failed(self, failure: Failure) -> None:
        log.error("say: could not speak {text!r}: {error} uuid={uuid}",
                  text=self.params.text[:60], error=failure.getErrorMessage(),
                  uuid=self.session.info.uuid)


@hookimpl
def register_processors(register):
    register(Say)
