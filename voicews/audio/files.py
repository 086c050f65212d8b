"""Audio files: decode once, resample once per call rate, share the result.

A prompt is decoded with libsndfile (through ``soundfile``: PCM WAV of any
width, float WAV, FLAC, OGG/Vorbis, MP3, ...), mixed down to mono and
resampled with libsoxr to each rate a call may use.  The resulting int16
buffers are read-only and cached per (resolved path, mtime, size) for every rate, so a
thousand calls playing one prompt share one buffer, and a SIGHUP reload
re-decodes only files that changed.

Decoding happens when config.yaml is loaded (a processor's ``prepare``), so a
missing or undecodable file stops the daemon at start rather than failing a call.
libsndfile and libsoxr are loaded the first time a file is read, written or
resampled: a daemon whose pipelines play and record nothing never holds them.
The call simulator reads the files it plays and writes what it heard through the
same functions, so both sides of a test decode and resample alike.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voicews.audio.samples import RATES, SAMPLE_DTYPE, saturate

FULL_SCALE = 32768.0
"""soundfile maps int16 to floats by dividing by this; multiplying restores them exactly."""

_cache: dict[tuple[str, int, int], Prompt] = {}
_lock = threading.Lock()  # prepare runs in the reactor thread, but tests and tools may not


@dataclass(frozen=True)
class Prompt:
    """One decoded file at every call rate: ``samples(rate)`` is a read-only int16 buffer."""

    path: Path
    source_rate: int
    source_channels: int
    by_rate: dict[int, np.ndarray]
    _scaled: dict[float, Prompt] = field(default_factory=dict, compare=False, repr=False)

    def samples(self, rate: int) -> np.ndarray:
        return self.by_rate[rate]

    def scaled(self, factor: float) -> Prompt:
        """This prompt at another level (saturating), made once per factor and shared.

        A level set in config.yaml is applied here, at load, not to every frame of
        every call that plays the prompt.
        """
        if factor == 1.0:
            return self
        with _lock:
            done = self._scaled.get(factor)
            if done is None:
                by_rate = {}
                for rate, samples in self.by_rate.items():
                    louder = saturate(samples * factor)
                    louder.flags.writeable = False
                    by_rate[rate] = louder
                done = self._scaled[factor] = Prompt(
                    self.path, self.source_rate, self.source_channels, by_rate
                )
        return done

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
    import soundfile  # here, not at import: see the module's docstring

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
    """Resample with libsoxr (band-limited, no aliasing) to read-only int16 at `rate`.

    `mono` is float in [-1, 1] or int16; int16 at the same rate comes back unchanged.
    """
    mono = np.asarray(mono)
    if mono.dtype.kind in "iu":
        mono = mono.astype(np.float64) / FULL_SCALE
    if source_rate != rate and len(mono):
        import soxr  # see the module's docstring

        mono = soxr.resample(mono, source_rate, rate, quality="HQ")
    samples = saturate(mono * FULL_SCALE)
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


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A sound file as int16 mono at its own rate (channels averaged)."""
    mono, rate, _ = decode(Path(path))
    return saturate(mono * FULL_SCALE), rate


def load_audio(path: str | Path, rate: int) -> np.ndarray:
    """A sound file as int16 mono at `rate`, exactly as the simulator plays it."""
    return resample(*read_audio(path), rate)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A sound file's first channel as int16 exactly as stored, and its rate."""
    import soundfile

    data, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    return np.ascontiguousarray(data[:, 0]), rate


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write int16 samples (mono, or one column per channel) as a 16-bit PCM WAV file."""
    import soundfile

    soundfile.write(
        str(path), np.asarray(samples, dtype=SAMPLE_DTYPE), rate, subtype="PCM_16", format="WAV"
    )


def tone(rate: int, seconds: float, hz: float = 440.0, level: float = 0.3) -> np.ndarray:
    """A sine tone as int16 at `level` of full scale, for tests and for trying a pipeline."""
    t = np.arange(int(round(rate * seconds)), dtype=np.float64) / rate
    return saturate(level * np.sin(2 * np.pi * hz * t) * FULL_SCALE)
