"""Audio files in and out of the call simulator: any format libsndfile reads, L16 out.

Decoding goes through soundfile (WAV, FLAC, OGG, MP3 ...) and resampling through
soxr, so a prompt recorded at 44.1 kHz stereo plays into a 16 kHz call as the
caller would send it.  When the file is already mono at the call's rate nothing
is resampled, so echo tests can compare bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import soxr

from voicews.audio import SAMPLE_DTYPE, saturate

FULL_SCALE = 32768.0
"""soundfile maps int16 to floats by dividing by this; multiplying restores them exactly."""


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1) as int16, rounded and clipped (never wrapped)."""
    return saturate(np.asarray(audio, dtype=np.float64) * FULL_SCALE)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """int16 mono samples at `from_rate` as int16 at `to_rate` (unchanged when equal)."""
    samples = np.asarray(samples)
    if from_rate == to_rate:
        return samples.astype(SAMPLE_DTYPE, copy=False)
    if not len(samples):
        return np.empty(0, dtype=SAMPLE_DTYPE)
    floats = samples.astype(np.float64) / FULL_SCALE
    return to_int16(soxr.resample(floats, from_rate, to_rate, quality="HQ"))


def load_audio(path: str | Path, rate: int) -> np.ndarray:
    """A sound file as int16 mono at `rate`, exactly as the simulator sends it."""
    samples, file_rate = read_audio(path)
    return resample(samples, file_rate, rate)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A sound file's first channel as int16 exactly as stored, and its rate."""
    data, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    return np.ascontiguousarray(data[:, 0]), rate


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write int16 mono samples as a 16-bit PCM WAV file."""
    soundfile.write(str(path), np.asarray(samples, dtype=SAMPLE_DTYPE), rate, subtype="PCM_16",
                    format="WAV")


def tone(rate: int, seconds: float, hz: float = 440.0, level: float = 0.3) -> np.ndarray:
    """A sine tone as int16, for tests and for calls without a file to play."""
    n = int(round(rate * seconds))
    t = np.arange(n, dtype=np.float64) / rate
    return to_int16(level * np.sin(2 * np.pi * hz * t))


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A sound file as int16 mono at its own rate (channels averaged)."""
    data, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)
    return to_int16(mono), rate
