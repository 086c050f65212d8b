"""Text to speech: the engine interface, and the pieces every engine needs.

An engine turns text into int16 mono samples at a call's rate, later (a Deferred): eSpeak NG
runs a process, a cloud engine makes an HTTP request.  The ``say`` processor holds one engine
and never waits on the reactor; engines register through a hook, so a plugin's engine only has
to satisfy ``TextToSpeech``.

Shared here so engines behave alike: ``clean_text`` (one length limit, no control characters),
``SpeechCache`` (repeated prompts are synthesized once, memory bounded by bytes),
``SpeechError`` (synthesis failed at run time, as opposed to ValueError for bad input),
``EngineUnavailable`` (the engine is not installed here) and ``decode_audio`` (an engine's
sound file, as a call's samples).
"""

from __future__ import annotations

import io
import re
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Protocol, runtime_checkable

import numpy as np
from twisted.internet.defer import Deferred

from voicews.audio.files import resample
from voicews.audio.samples import RATES


class SpeechError(Exception):
    """Synthesis failed at run time: the engine's process or service failed, hung or is busy."""


class EngineUnavailable(ValueError):
    """The engine cannot run on this machine at all (espeak-ng is not installed), as opposed
    to a mistake in the config (an unknown voice).  Raised by ``check``: a pipeline that needs
    the engine is then left out with a warning, so an optional feature (the shipped config's
    ``assistant``) does not stop the daemon; unless the daemon routes calls to that pipeline
    itself (``default_pipeline``, ``numbers``), or the ``tts:`` section is given: then it is
    a config error like any other ValueError."""


@runtime_checkable
class TextToSpeech(Protocol):
    """What the ``say`` processor needs of an engine."""

    name: str
    """Short name for logs, metrics and config.yaml (``espeak-ng``)."""

    def check(self, voice: str | None = None, **options: object) -> None:
        """Raise ValueError with a one-line reason when the engine cannot speak (no
        credentials), or cannot with this voice or these options; EngineUnavailable when it
        cannot run on this machine at all (a missing binary).

        Called when config.yaml is loaded, so a pipeline that cannot speak stops the daemon
        at start, not a call (or, for EngineUnavailable, is left out with a warning).  May
        block briefly (it runs before the reactor does, or in a worker thread for the
        control API's ``/say``).
        """
        ...

    def synthesize(self, text: str, rate: int, voice: str | None = None,
                   **options: object) -> Deferred[np.ndarray]:
        """Speak `text` in `voice` (None: the engine's default) at `rate` (8000/16000/24000).

        Fires with read-only int16 mono samples at `rate` (possibly shared with other calls:
        never write to them), or fails with ValueError (bad text, rate, voice or option) or
        SpeechError.  Never raises.  Cancelling the Deferred abandons the work when no other
        caller waits for the same result.
        """
        ...


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def clean_text(text: object, max_chars: int) -> str:
    """`text` with control characters and runs of white space made single spaces, stripped.

    Raises ValueError when it is not a string or is longer than `max_chars` (counted after
    cleaning, so padding does not count against it).
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    text = " ".join(_CONTROL.sub(" ", text).split())
    if len(text) > max_chars:
        raise ValueError(f"text is {len(text)} characters, more than max_chars ({max_chars})")
    return text


def check_rate(rate: object) -> int:
    """`rate` when it is a call rate, else ValueError."""
    if type(rate) is not int or rate not in RATES:
        raise ValueError(f"rate must be one of {', '.join(map(str, RATES))}, got {rate!r}")
    return rate


def decode_audio(data: bytes, rate: int) -> np.ndarray:
    """A sound file's bytes (WAV, FLAC, Ogg...: what libsndfile reads) as read-only int16 mono
    at `rate`, its first channel; ValueError with libsndfile's reason when it cannot."""
    import soundfile  # on first use: libsndfile is big

    try:
        samples, source_rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        raise ValueError(str(exc)) from None
    return resample(np.ascontiguousarray(samples[:, 0]), int(source_rate), rate)


def no_speech() -> np.ndarray:
    """No samples (what empty text says), read-only like every result."""
    empty = np.zeros(0, np.int16)
    empty.flags.writeable = False
    return empty


class SpeechCache:
    """Least-recently-used synthesized speech, bounded by the bytes of samples held.

    A result larger than a quarter of the budget is not kept (one long text would otherwise
    push out every greeting).  Thread-safe, so a threaded engine may share one.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> np.ndarray | None:
        with self._lock:
            samples = self._entries.get(key)
            if samples is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return samples

    def put(self, key: Hashable, samples: np.ndarray) -> None:
        size = samples.nbytes
        if size > self.max_bytes // 4:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old.nbytes
            self._entries[key] = samples
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self.bytes -= dropped.nbytes
