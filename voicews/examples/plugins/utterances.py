"""utterances: a note of every utterance the caller makes: when, how long, how loud, what pitch.

An example of a processor that works beside others rather than on the audio itself:

  - it listens to another step's events: ``speech_started`` / ``speech_stopped`` from
    the ``vad`` step (``on_event``);
  - it does CPU work off the reactor with ``session.run_in_thread``: results come back
    in the order asked, one call's work at a time, and no call's audio waits for it;
  - it emits an event of its own, ``utterance``, which every other step and the
    application (HTTP callbacks, ``/events``) receive;
  - its ``close()`` returns a Deferred: the call's end waits until the call's notes are
    written to a JSON file.

Use it after a ``vad`` step (the shipped config's ``notes`` pipeline does):

    pipelines:
      notes:
        - vad
        - echo
        - utterances: {folder: notes}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from twisted.internet import defer
from twisted.logger import Logger

from voicews import Event, PrepareContext, Processor, hookimpl

log = Logger(namespace="plugins.utterances")

MAX_SECONDS = 30.0
"""Audio kept per utterance: a caller who never pauses cannot grow our memory."""


@dataclass(frozen=True)
class UtterancesParams:
    folder: str = "notes"
    """Where each call's notes go (``<uuid>.json``), relative to config.yaml."""


def measure(samples: np.ndarray, rate: int) -> tuple[float, float | None]:
    """Loudness (dBFS, RMS) and pitch (Hz, by autocorrelation; None when unvoiced)."""
    x = samples.astype(np.float64) / 32768.0
    rms = float(np.sqrt(np.mean(x * x))) if len(x) else 0.0
    loudness = 20 * np.log10(rms) if rms > 0 else -120.0
    lo, hi = rate // 400, rate // 60  # look for a fundamental between 60 and 400 Hz
    if len(x) < 2 * hi:
        return loudness, None
    x = x - x.mean()
    spectrum = np.fft.rfft(x, 2 * len(x))
    corr = np.fft.irfft(spectrum * np.conj(spectrum))[: hi + 1]
    lag = lo + int(np.argmax(corr[lo : hi + 1]))
    voiced = corr[0] > 0 and corr[lag] / corr[0] > 0.3
    return loudness, (rate / lag if voiced else None)


class Utterances(Processor):
    name = "utterances"
    Params = UtterancesParams

    @classmethod
    def prepare(cls, params: UtterancesParams, context: PrepareContext) -> Path:
        return context.resolve(params.folder)  # the folder is made at the call's end

    def __init__(self, session, params: Path) -> None:
        super().__init__(session, params)
        self.notes: list[dict] = []
        self.heard: list[np.ndarray] = []
        self.kept = 0
        self.started_at: float | None = None
        self.last: defer.Deferred = defer.succeed(None)  # the newest measurement's result

    def process(self, inbound: np.ndarray, outbound: np.ndarray | None) -> np.ndarray | None:
        if self.started_at is not None and self.kept < MAX_SECONDS * self.session.rate:
            self.heard.append(inbound.copy())  # inbound is the reactor's: keep a copy
            self.kept += len(inbound)
        return outbound  # audio passes through untouched

    def on_event(self, event: Event) -> None:
        if event.kind == "speech_started":
            self.started_at = event.data.get("time", event.time)
            self.heard, self.kept = [], 0
        elif event.kind == "speech_stopped" and self.started_at is not None:
            start, end = self.started_at, event.data.get("time", event.time)
            samples = np.concatenate(self.heard) if self.heard else np.zeros(0, np.int16)
            self.started_at, self.heard = None, []
            self.last = self.session.run_in_thread(measure, samples, self.session.rate)
            self.last.addCallback(self._measured, start, end)

    def _measured(self, result: tuple[float, float | None], start: float, end: float) -> None:
        loudness, pitch = result
        note = {"start": round(start, 2), "end": round(end, 2),
                "loudness_db": round(loudness, 1),
                "pitch_hz": round(pitch) if pitch is not None else None}
        self.notes.append(note)
        self.session.emit("utterance", **note)

    def close(self) -> defer.Deferred:
        """Write the call's notes once its last measurement is in; the call's end waits."""
        path = self.params / f"{self.session.info.uuid or 'call'}.json"

        def write(_: object) -> defer.Deferred:
            return self.session.run_in_thread(_write, path, list(self.notes))

        return self.last.addBoth(write)


def _write(path: Path, notes: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"utterances": notes}, indent=1))


@hookimpl
def register_processors(register):
    register(Utterances)
