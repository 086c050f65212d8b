"""Audio files for prompts: decode once, resample once per call rate, share the result.

A prompt is decoded with libsndfile (through ``soundfile``: PCM WAV of any
width, float WAV, FLAC, OGG/Vorbis, MP3, ...), mixed down to mono and
resampled with libsoxr to each rate a call may use.  The resulting int16
buffers are read-only and cached per (resolved path, mtime, size) for every rate, so a
thousand calls playing one prompt share one buffer, and a SIGHUP reload
re-decodes only files that changed.

Decoding happens when config.yaml is loaded (a processor's ``prepare``), so a
missing or undecodable file stops the daemon at start rather than failing a call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from voicews.audio import RATES, saturate

_cache: dict[tuple[str, int, int], Prompt] = {}
_lock = threading.Lock()  # prepare runs in the reactor thread, but tests and tools may not


@dataclass(frozen=True)
class Prompt:
    """One decoded file at every call rate: ``samples(rate)`` is a read-only int16 buffer."""

    path: Path
    source_rate: int
    source_channels: int
    by_rate: dict[int, np.ndarray]

    def samples(self, rate: int) -> np.ndarray:
        return self.by_rate[rate]

    def seconds(self) -> float:
        rate = RATES[0]
        return len(self.by_rate[rate]) / rate


def decode(path: Path) -> tuple[np.ndarray, int, int]:
    """The file as mono float64 in [-1, 1], its sample rate and its channel count.

    Raises ValueError with a one-line reason for anything that is not a usable sound file.
    """
    if not path.exists():
        raise ValueError(f"no such file: {path}")
    if not path.is_file():
        raise ValueError(f"not a file: {path}")
    try:
        data, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        reason = " ".join(str(exc).split())
        raise ValueError(f"cannot decode {path}: {reason}") from None
    if not len(data):
        raise ValueError(f"{path} holds no audio")
    channels = data.shape[1]
    # Mean rather than sum: a stereo file cannot clip when mixed down.
    mono = data[:, 0] if channels == 1 else data.mean(axis=1)
    return mono, int(rate), channels


def resample(mono: np.ndarray, source_rate: int, rate: int) -> np.ndarray:
    """Resample with libsoxr (band-limited, no aliasing) and convert to read-only int16."""
    if source_rate != rate:
        mono = soxr.resample(mono, source_rate, rate, quality="HQ")
    samples = saturate(mono * 32768.0)
    samples.flags.writeable = False
    return samples


def load(path: Path) -> Prompt:
    """Decode `path` at every call rate, or return the cached Prompt when the file is unchanged."""
    path = path.resolve()
    try:
        stat = path.stat()
    except OSError:
        decode(path)  # raises the one-line reason (no such file, ...)
        raise
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    mono, source_rate, channels = decode(path)
    prompt = Prompt(
        path=path,
        source_rate=source_rate,
        source_channels=channels,
        by_rate={rate: resample(mono, source_rate, rate) for rate in RATES},
    )
    with _lock:
        # A file that changed on disk replaces its old buffers rather than adding to them.
        for old in [k for k in _cache if k[0] == key[0] and k != key]:
            del _cache[old]
        return _cache.setdefault(key, prompt)


def cache_size() -> int:
    """How many decoded files are held (for tests and diagnostics)."""
    with _lock:
        return len(_cache)
