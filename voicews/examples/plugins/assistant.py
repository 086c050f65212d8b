"""assistant: a small voice bot to copy.  It greets the caller, listens, answers, routes the
call to billing, sales or support, and hangs up when the caller says goodbye.

It does no audio work of its own.  Other steps turn the caller's voice into events, and this
step answers them in ``on_event`` with ``session.say`` (text to speech; the daemon's engine
is eSpeak NG by default). The shipped config's ``assistant`` pipeline is:

    pipelines:
      assistant:
        - vad          # speech_started / speech_stopped: where the caller's turns are
        - barge-in     # the caller talking over the bot cuts the bot short
        - transcribe   # a final `transcript` event per turn (after each speech_stopped)
        - assistant    # this file: answers each final transcript

There is no ``echo``: the caller hears only the bot.  Routing is by whole words in the
final transcript ("billing", "I need support"): PocketSphinx dictation names these words
rarely when they were not said, and the bot can repeat what it heard otherwise.  (The
``transcribe`` step's ``keywords`` spot single words poorly, and a ``grammar`` always
picks one of its phrases, even for a cough: see docs/voice-ai.md, "Build a voice bot".)

Swap the answers for your own: a dict lookup here is where a real bot would call its
dialogue engine or a language model.  Keep slow work off the reactor (``treq`` through
``session.http``, or ``session.run_in_thread``) and answer from its Deferred.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.logger import Logger
from twisted.python.failure import Failure

from voicews import Event, Playback, PrepareContext, Processor, Session, hookimpl

log = Logger(namespace="plugins.assistant")

ROUTES = {
    "billing": "Billing. Your last invoice is paid, thank you. Anything else?",
    "sales": "Sales. Our team will call you back today with an offer. Anything else?",
    "support": "Support. Have you tried turning it off and on again? Anything else?",
}


@dataclass(frozen=True)
class AssistantParams:
    greeting: str = "Hello! Do you need billing, sales or support?"
    """Said when the call starts."""
    routes: dict[str, str] = field(default_factory=lambda: dict(ROUTES))
    """A word (or words) the caller may say -> the bot's answer."""
    goodbye: list[str] = field(default_factory=lambda: ["goodbye", "bye"])
    """Words that end the call."""
    farewell: str = "Goodbye, and thanks for calling."
    """Said before hanging up."""
    voice: str | None = None
    """The text-to-speech voice (espeak-ng: en-us, en-gb+f3...); default: ``tts.voice``."""


class Assistant(Processor):
    name = "assistant"
    Params = AssistantParams

    @classmethod
    def prepare(cls, params: AssistantParams, context: PrepareContext) -> AssistantParams:
        """At config load: the bot can speak here, in that voice.  A missing espeak-ng
        leaves this pipeline out with a warning (the daemon starts without it)."""
        if context.tts is None:
            raise ValueError("no text-to-speech engine is configured")
        context.tts.check(params.voice)
        return params

    def __init__(self, session: Session, params: AssistantParams) -> None:
        super().__init__(session, params)
        self.leaving = False  # saying goodbye: the caller is not listened to any more

    def start(self) -> None:
        self.say(self.params.greeting)

    def on_event(self, event: Event) -> None:
        if self.leaving:
            return
        if event.kind == "transcriber_error":  # the bot is deaf for this call: say so
            self.leave("Sorry, I cannot listen right now. Please call again later.",
                       "no speech recognizer for this call")
        elif event.kind == "transcript" and event.data["final"]:
            self.answer(event.data["text"])
        # Partials (event.data["final"] false) are early guesses: a bot that wants to start
        # thinking before the caller has finished can look at them.

    def answer(self, text: str) -> None:
        """One turn: the caller said `text` (lower case, no punctuation)."""
        words = text.split()
        if not words:  # the recognizer heard noise, not words
            return
        if any(word in self.params.goodbye for word in words):
            self.leave(self.params.farewell, "the caller said goodbye")
            return
        padded = f" {text} "
        for key, reply in self.params.routes.items():
            if f" {key} " in padded:
                # Tell the other steps and the application (HTTP callbacks, /events).
                self.session.emit("routed", route=key, text=text)
                self.say(reply)
                return
        choices = ", ".join(self.params.routes)
        self.say(f"I heard: {text}. Please say one of: {choices}.")

    def leave(self, farewell: str, reason: str) -> None:
        """Say `farewell`, then hang up (close 1000, `reason`) once it has ended.

        The Deferred fires when Vonage has played it (``outcome`` "played"), or with
        "interrupted" when the caller spoke over it (barge-in) or "ended" when they hung up
        first.  We hang up in every case: the caller asked to leave, and talking over a
        farewell is usually "thanks, bye".  To let them change their mind instead, keep
        listening when ``playback.outcome == "interrupted"``.
        """
        self.leaving = True
        said = self.session.say(farewell, voice=self.params.voice)
        said.addErrback(self.failed, farewell)  # fires with None: hang up all the same
        said.addCallback(self.hang_up, reason)

    def hang_up(self, playback: Playback | None, reason: str) -> None:
        outcome = playback.outcome if playback is not None else "failed"
        log.info("assistant: {uuid} hangs up, the farewell {outcome}: {reason}",
                 uuid=self.session.info.uuid, outcome=outcome, reason=reason)
        self.session.hangup(1000, reason)

    def say(self, text: str) -> None:
        self.session.say(text, voice=self.params.voice).addErrback(self.failed, text)

    def failed(self, failure: Failure, text: str) -> None:
        """The engine could not speak (it failed, hung or is busy): logged, the call goes on."""
        log.error("assistant: could not say {text!r}: {error} uuid={uuid}", text=text[:60],
                  error=failure.getErrorMessage(), uuid=self.session.info.uuid)


@hookimpl
def register_processors(register):
    register(Assistant)
