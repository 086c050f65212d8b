"""Test audio: tones to play or write to a file, what a listener would check in a reply
(its pitch and how pure it is), and the speech the daemon's espeak-ng makes of a text."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from voicews.audio import files as audiofile
from voicews.engines.espeak import _child_env, decode_wav

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng (Debian package espeak-ng) is not installed")


def spoken(text: str, rate: int = 16000, voice: str = "en-us") -> np.ndarray:
    """What the daemon's espeak-ng engine says for `text` (its command and decoder: eSpeak NG
    is deterministic, so a caller must hear exactly these samples)."""
    wav = subprocess.run([shutil.which("espeak-ng") or "espeak-ng", "--stdout", "--stdin",
                          "-b", "1", "-v", voice], input=text.encode(), capture_output=True,
                         env=_child_env(), check=True).stdout
    return decode_wav(wav, rate)


def tone(freq: float, seconds: float, rate: int, amplitude: float = 8000.0) -> np.ndarray:
    """`voicews.audiofile.tone` with the frequency first and the amplitude in sample units."""
    return audiofile.tone(rate, seconds, freq, amplitude / audiofile.FULL_SCALE)


def write_tone(path, rate: int, seconds: float = 0.5, freq: float = 440.0, channels: int = 1,
               amplitude: float = 0.5, **kwargs) -> str:
    """A sine file (float samples, any rate, `channels` identical channels); its path as text.

    `kwargs` go to ``soundfile.write`` (``subtype=``, ``format=``).
    """
    t = np.arange(int(rate * seconds)) / rate
    mono = amplitude * np.sin(2 * np.pi * freq * t)
    data = mono if channels == 1 else np.column_stack([mono] * channels)
    sf.write(str(path), data, rate, **kwargs)
    return str(path)


def level_db(samples: np.ndarray) -> float:
    """The RMS level in dBFS (full scale 32768); silence is -180."""
    rms = np.sqrt(np.mean(samples.astype(np.float64) ** 2))
    return float(20 * np.log10(max(rms, 1e-9) / 32768))


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    """The strongest frequency in `samples` (Hann window, FFT)."""
    x = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(x))
    spectrum[0] = 0
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def band_level(samples: np.ndarray, rate: int, freq: float, width: float = 20.0) -> float:
    """Spectral energy within `width` Hz of `freq`, relative to the whole spectrum."""
    x = samples.astype(np.float64) * np.hanning(len(samples))
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    band = power[np.abs(freqs - freq) <= width].sum()
    return float(band / power.sum())
