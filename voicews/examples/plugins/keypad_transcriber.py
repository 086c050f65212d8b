"""keypad: an example speech recognizer engine that "hears" telephone keypad tones.

It shows how to plug a recognizer into voicews with the ``register_transcribers`` hook,
the way a cloud speech-to-text service would be plugged in: a class with a ``name``, its
settings as a ``Params`` dataclass (config.yaml's ``transcribe.options``), ``check`` (run
when config.yaml loads), ``start``/``stop`` (once for the daemon) and ``open`` (one stream
per call, fed 20 ms frames, answering through ``on_result``).  The ``transcribe`` step and
the app then get its results as ``transcript`` events like PocketSphinx's.

What it recognizes: the keypad tones (DTMF) in the caller's *audio*, as words: pressing
1, 2, 3 is heard as "one two three".  An utterance ends after ``pause`` seconds without a
key (the engine's own endpointing), or when a VAD step says the caller stopped
(``end_utterance``).  Detection is cheap (8 frequencies a frame, a few µs), so it runs on
the reactor; an engine with real work to do decodes in worker processes (PocketSphinx) or
on a remote service, and calls ``on_result`` from the reactor when results come back.

Use it in config.yaml:

    plugins:
      - plugins/keypad_transcriber.py
    transcribe:
      engine: keypad
      options: {pause: 1.0}
    pipelines:
      menu:
        - echo
        - transcribe: {grammar: ["one", "two", "star"]}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from twisted.internet import defer

from voicews import hookimpl
from voicews.engines.asr import TranscriberBusy, Transcript

# The row and column frequency (Hz) of each key, and the word it is heard as.
ROWS = (697, 770, 852, 941)
COLUMNS = (1209, 1336, 1477, 1633)
KEYS = ("1", "2", "3", "A", "4", "5", "6", "B", "7", "8", "9", "C", "*", "0", "#", "D")
WORDS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five",
         "6": "six", "7": "seven", "8": "eight", "9": "nine", "*": "star", "#": "hash",
         "A": "a", "B": "b", "C": "c", "D": "d"}


@dataclass(frozen=True)
class KeypadOptions:
    """config.yaml's ``transcribe.options`` for this engine."""

    pause: float = 1.0
    """Seconds without a key that end an utterance (when the engine endpoints)."""
    min_level: float = -40.0
    """A key's two tones must reach this level (dB below full scale, each)."""

    def __post_init__(self) -> None:
        if not 0.1 <= self.pause <= 10:
            raise ValueError(f"keypad: pause must be between 0.1 and 10 s, got {self.pause}")


class KeypadTranscriber:
    """The engine: process-wide settings; a stream per call."""

    name = "keypad"
    Params = KeypadOptions

    def __init__(self, options: KeypadOptions | None = None) -> None:
        self.options = options or KeypadOptions()
        self.streams: set[KeypadStream] = set()
        self.running = False

    def check(self, *, grammar=None, keywords=None) -> None:
        """Config load: refuse what this engine cannot do, naming it (a config error)."""
        if keywords:
            raise ValueError("keypad: keywords are not supported, use a grammar")
        known = set(WORDS.values())
        unknown = sorted({w for phrase in grammar or [] for w in phrase.split()} - known)
        if unknown:
            raise ValueError(f"keypad: words no key makes: {', '.join(unknown)}")

    def start(self) -> defer.Deferred:
        # A cloud engine would check its credentials or open a connection pool here.
        self.running = True
        return defer.succeed(None)

    def stop(self) -> defer.Deferred:
        self.running = False
        return defer.gatherResults([s.close() for s in list(self.streams)]).addCallback(
            lambda _: None)

    def open(self, rate, on_result, *, grammar=None, keywords=None, endpointing=True,
             on_error=None) -> KeypadStream:
        if not self.running:
            raise TranscriberBusy("keypad: not running")
        stream = KeypadStream(self, rate, on_result, grammar, endpointing)
        self.streams.add(stream)
        return stream


class KeypadStream:
    """One call: the key heard in each 20 ms frame, gathered into utterances."""

    dropped_seconds = 0.0
    backlog_seconds = 0.0  # nothing waits: each frame is judged as it comes

    def __init__(self, engine: KeypadTranscriber, rate: int, on_result, grammar,
                 endpointing: bool) -> None:
        self.engine = engine
        self.rate = rate
        self.on_result = on_result
        self.grammar = [" ".join(p.split()) for p in grammar] if grammar else None
        self.endpointing = endpointing
        self.fed = 0  # samples so far: the stream's clock
        self.words: list[str] = []
        self.start = self.end = 0.0  # the utterance's first and last key, in seconds
        self.key: str | None = None  # the key sounding in the previous frame
        self.closed = False
        self._probes: dict[int, np.ndarray] = {}

    def _probe(self, n: int) -> np.ndarray:
        """Complex exponentials of the 8 frequencies over an n-sample frame (made once)."""
        if n not in self._probes:
            t = np.arange(n) / self.rate
            hz = np.array(ROWS + COLUMNS, dtype=np.float64)
            self._probes[n] = np.exp(-2j * np.pi * np.outer(hz, t)) * (2 / n)
        return self._probes[n]

    def _key_in(self, samples: np.ndarray) -> str | None:
        x = samples.astype(np.float64) / 32768
        levels = np.abs(self._probe(len(x)) @ x)  # amplitude of each tone, 0..1
        row, col = int(np.argmax(levels[:4])), int(np.argmax(levels[4:]))
        floor = 10 ** (self.engine.options.min_level / 20)
        rms = float(np.sqrt(np.mean(x * x))) or 1.0
        # Both tones loud enough, and together most of the frame's power.
        tones = (levels[row] ** 2 + levels[4 + col] ** 2) / 2
        if min(levels[row], levels[4 + col]) < floor or tones < 0.6 * rms * rms:
            return None
        return KEYS[row * 4 + col]

    def feed(self, samples: np.ndarray) -> None:
        if self.closed:
            self.dropped_seconds += len(samples) / self.rate
            return
        now = self.fed / self.rate
        self.fed += len(samples)
        key = self._key_in(samples)
        if key is not None and key != self.key:  # a key went down
            if not self.words:
                self.start = now
            self.words.append(WORDS[key])
            self.on_result(_transcript(" ".join(self.words), False, self.start, now))
        if key is not None:
            self.end = self.fed / self.rate
        self.key = key
        if self.endpointing and self.words and self.fed / self.rate - self.end \
                >= self.engine.options.pause:
            self.end_utterance()

    def end_utterance(self) -> None:
        if not self.words:
            return
        text = " ".join(self.words)
        if self.grammar is not None and text not in self.grammar:
            text = ""  # not one of the phrases: an empty final retracts the partials
        self.on_result(_transcript(text, True, self.start, self.end))
        self.words = []

    def close(self) -> defer.Deferred:
        if not self.closed:
            self.end_utterance()  # the last final before the Deferred fires
            self.closed = True
            self.engine.streams.discard(self)
        return defer.succeed(None)


def _transcript(text: str, final: bool, start: float, end: float) -> Transcript:
    return Transcript(text, final, round(start, 3), round(end, 3))


@hookimpl
def register_transcribers(register):
    register(KeypadTranscriber)
