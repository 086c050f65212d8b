"""keypad-tones: an example processor that reacts to DTMF and uses notify and clear.

When the caller presses a key, Vonage sends a ``websocket:dtmf`` event; this
processor then mixes that key's telephone tone (the two DTMF frequencies) into
what the caller hears, and once the tone has been sent it asks Vonage to
``notify`` us when the caller has actually heard it.  Pressing ``*`` cancels
any tone and clears audio Vonage has buffered (barge-in).

It shows the three things a stateful processor does:
  - keeps per-call state on ``self`` (each call gets its own instance),
  - reacts to events in ``on_event``,
  - talks back to Vonage through ``self.session`` (``notify``, ``clear``).

Use it in config.yaml:

    plugins:
      - plugins/keypad.py
    pipelines:
      keypad:
        - echo
        - keypad-tones: {seconds: 0.2, level: -12}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from twisted.logger import Logger

from voicews import Event, PrepareContext, Processor, hookimpl

# twisted.logger with fields: the daemon writes them as text or JSON lines.
log = Logger(namespace="plugins.keypad")

# The two frequencies (Hz) of each telephone key: a row tone and a column tone.
ROWS = {"1": 697, "2": 697, "3": 697, "A": 697, "4": 770, "5": 770, "6": 770, "B": 770,
        "7": 852, "8": 852, "9": 852, "C": 852, "*": 941, "0": 941, "#": 941, "D": 941}
COLUMNS = {"1": 1209, "4": 1209, "7": 1209, "*": 1209, "2": 1336, "5": 1336, "8": 1336,
           "0": 1336, "3": 1477, "6": 1477, "9": 1477, "#": 1477, "A": 1633, "B": 1633,
           "C": 1633, "D": 1633}


@dataclass(frozen=True)
class KeypadParams:
    seconds: float = 0.2
    """How long each key's tone lasts."""
    level: float = -12.0
    """Tone level in dB below full scale."""


class KeypadTones(Processor):
    name = "keypad-tones"
    Params = KeypadParams

    @classmethod
    def prepare(cls, params: KeypadParams, context: PrepareContext) -> KeypadParams:
        if not 0.02 <= params.seconds <= 5:
            raise ValueError(f"seconds must be between 0.02 and 5, got {params.seconds}")
        if params.level > 0:
            raise ValueError(f"level must be 0 dB or less, got {params.level}")
        return params

    def __init__(self, session, params: KeypadParams) -> None:
        # Always call the base __init__: it sets self.session and self.params.
        super().__init__(session, params)
        self.tone = np.empty(0, dtype=np.int16)  # what is left of the tone being played
        self.digit: str | None = None
        self.notify_due = False

    def on_event(self, event: Event) -> None:
        """DTMF, notify and cleared events from Vonage for this call."""
        if event.kind == "dtmf" and event.digit == "*":
            # Barge-in: forget our tone and make Vonage drop what it has buffered.
            self.tone = np.empty(0, dtype=np.int16)
            self.notify_due = False
            self.session.clear()
        elif event.kind == "dtmf" and event.digit in ROWS:
            self.digit = event.digit
            self.tone = self._make_tone(event.digit)
        elif event.kind == "notify" and isinstance(event.payload, dict) \
                and event.payload.get("processor") == self.name:
            # Vonage played everything we sent before the notify: the caller heard the tone.
            log.info("caller heard key {digit} uuid={uuid}",
                     digit=event.payload.get("digit"), uuid=self.session.info.uuid)

    def _make_tone(self, digit: str) -> np.ndarray:
        rate = self.session.rate  # the call's sample rate: 8000, 16000 or 24000
        t = np.arange(int(self.params.seconds * rate)) / rate
        amplitude = 32767 * 10 ** (self.params.level / 20) / 2  # two tones share the level
        wave = np.sin(2 * np.pi * ROWS[digit] * t) + np.sin(2 * np.pi * COLUMNS[digit] * t)
        return np.rint(amplitude * wave).astype(np.int16)

    def process(self, inbound: np.ndarray, outbound: np.ndarray | None) -> np.ndarray | None:
        if self.notify_due:
            # The tone's last frame left on the previous frame, so a notify sent now is
            # queued behind it: Vonage answers once the caller has heard the whole tone.
            self.notify_due = False
            self.session.notify({"processor": self.name, "digit": self.digit})
        if not len(self.tone):
            return outbound  # no tone playing: pass audio through untouched
        frame = len(inbound)  # one frame of the call's audio
        chunk, self.tone = self.tone[:frame], self.tone[frame:]
        if not len(self.tone):
            self.notify_due = True
        base = np.zeros(frame, dtype=np.int32) if outbound is None else outbound.astype(np.int32)
        base[: len(chunk)] += chunk
        # Mix in int32 and clip: adding two loud int16 signals must not wrap around.
        return np.clip(base, -32768, 32767).astype(np.int16)


@hookimpl
def register_processors(register):
    register(KeypadTones)
