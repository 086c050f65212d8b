"""What a listener would check in audio a call sent back: its pitch and how pure it is."""

from __future__ import annotations

import numpy as np

from voicews import audiofile


def tone(freq: float, seconds: float, rate: int, amplitude: float = 8000.0) -> np.ndarray:
    """`voicews.audiofile.tone` with the frequency first and the amplitude in sample units."""
    return audiofile.tone(rate, seconds, freq, amplitude / audiofile.FULL_SCALE)


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
