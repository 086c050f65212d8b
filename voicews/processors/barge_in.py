"""barge-in: when the caller starts speaking over our audio, stop it and say how much they heard.

A step of its own, reacting to events rather than audio, so any voice detector drives it: the
builtin ``vad``, a plugin's model, a recognizer's own onset.  It sits anywhere in the
pipeline (after ``vad`` by convention); a pipeline without it is never interrupted.

On a ``speech_started`` event (or any kind listed in ``events``, e.g. ``dtmf``) while
something of ours is playing (``session.play``, ``say``, an interruptible ``file-inject``),
it clears the call: every step's queued audio is dropped, Vonage is sent
``{"action": "clear"}``, and a ``barge_in`` event goes to the other steps and the app:

``{"heard": s, "length": s, "step": name, "label": text|file|null, "by": kind,
"start": s|null, "interrupted": [{"step", "label", "heard", "length"}, ...]}``

- ``heard`` / ``length``: seconds of the audio the caller was hearing that they heard, and
  its length (the oldest playback cut short; ``interrupted`` lists all of them, queued ones
  with ``heard`` 0);
- ``step`` / ``label``: who played it and what it was (the text said, the file);
- ``by``: the event kind that interrupted; ``start``: that event's ``start`` (the speech
  onset, seconds of call audio), when it has one.

The clear happens while the event is delivered, in the frame that decided it: the onset to
clear delay is the detector's own (``vad``'s ``min_speech_ms``) plus the frame's processing.
Nothing playing, nothing happens: an utterance that began before our audio does not
interrupt it (there is no new onset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voicews import Event, Playback, Processor, hookimpl


@dataclass(frozen=True)
class BargeInParams:
    events: list[str] = field(default_factory=lambda: ["speech_started"])
    """Event kinds that interrupt our audio: ``speech_started`` (from ``vad``), ``dtmf``..."""


def describe(playback: Playback) -> dict[str, Any]:
    return {"step": playback.step, "label": playback.label,
            "heard": round(playback.heard, 3), "length": round(playback.seconds, 3)}


class BargeIn(Processor):
    name = "barge-in"
    Params = BargeInParams

    @classmethod
    def prepare(cls, params: BargeInParams, context: Any) -> frozenset[str]:
        if not params.events:
            raise ValueError("events: list at least one event kind (e.g. speech_started)")
        return frozenset(params.events)

    def on_event(self, event: Event) -> None:
        if event.kind not in self.params or not self.session.playing:
            return
        cut = self.session.clear()
        if not cut:
            return
        current = next((p for p in cut if p.start is not None), cut[0])
        start = event.data.get("start")
        self.session.emit(
            "barge_in", **describe(current), by=event.kind,
            start=start if isinstance(start, (int, float)) else None,
            interrupted=[describe(p) for p in cut],
        )


@hookimpl
def register_processors(register):
    register(BargeIn)
