"""Streaming voice activity for one call: WebRTC's VAD, a spectral-flatness gate, hysteresis.

Each 20 ms frame is first judged by WebRTC's Gaussian-mixture VAD (``webrtcvad-wheels``,
about 2 µs a frame).  On its own it calls a steady tone speech at every aggressiveness, and a
hiss (white noise at -30 to -20 dBFS; it learns quieter noise as background), so a frame it
calls speech must also pass a gate on the frame's spectral flatness (geometric over arithmetic
mean of the power spectrum, 200-3400 Hz):

- below ``min_flatness`` the frame is *tonal*: one or a few steady sinusoids (test tones, dial,
  ring-back and DTMF tones, hold beeps).  A clean or G.711-coded tone measures under 3e-4,
  voiced speech mostly 2e-3..0.1 (1 % of the loud speech frames of the test reading fall
  under 1e-3).  A tone buried in noise at under ~30 dB SNR passes the gate.
- above ``max_flatness`` the frame is *noise-like*: white noise measures 0.36-0.6 (its
  expected value is e^-γ = 0.56).  Fricatives (/s/, /f/) are noise-like too, so some frames
  inside words are dropped; the hysteresis below bridges them, and an utterance that begins
  with one is dated from its first vowel (up to ~100 ms late).

The flatness is only computed for frames WebRTC calls speech, so silence costs ~4 µs a frame.
Frames are 50 Hz apart in the spectrum at every rate (a 20 ms frame), so one band of bins
serves 8, 16 and 24 kHz alike.

WebRTC's VAD takes 8/16/32/48 kHz; a 24 kHz frame is decimated to 8 kHz by averaging each
three samples (a boxcar low-pass: -3.5 dB at 4 kHz, what lies above folds down attenuated).
WebRTC works at 8 kHz internally anyway, so nothing it uses is lost; the flatness gate still
sees the frame at 24 kHz.

Hysteresis: speech starts after ``min_speech_ms`` of consecutive speech frames and stops after
``min_silence_ms`` of consecutive non-speech frames.  The transitions are dated back to the
first speech frame and to the end of the last one, so ``Transition.time`` is the onset / end of
speech, while the *decision* comes ``min_speech_ms`` / ``min_silence_ms`` later (the delay a
barge-in waits).  WebRTC's own hang-over keeps calling a few frames speech after a word ends
(60-140 ms at 20 ms frames, less at higher aggressiveness), which the noise gate mostly trims
on a noisy line but not in digital silence: ends are dated up to that much late.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from voicews.audio.samples import FRAME_SECONDS, RATES, SAMPLE_DTYPE, frame_samples

BAND_HZ = (200.0, 3400.0)
"""The telephone band: where speech has its energy at every call rate (8 kHz holds only 0-4 kHz)."""

MIN_BAND_SHARE = 1e-3
"""Less of a frame's energy than this in BAND_HZ: a tone or hum outside it, not speech.
Fricatives at 16/24 kHz put most of theirs above 3400 Hz; under 0.1 % of speech frames fall
below this share."""

_BIN_HZ = 1.0 / FRAME_SECONDS  # 50 Hz between FFT bins of a 20 ms frame, at any rate
_BAND = slice(int(math.ceil(BAND_HZ[0] / _BIN_HZ)), int(BAND_HZ[1] / _BIN_HZ) + 1)
_FRAME_MS = round(FRAME_SECONDS * 1000)


@dataclass(frozen=True)
class VadParams:
    """How eagerly speech is detected; every field is a config.yaml parameter of ``vad``."""

    aggressiveness: int = 2
    """WebRTC's mode, 0 (calls more frames speech) to 3 (fewest false alarms)."""
    min_speech_ms: int = 100
    """Speech this long (consecutive frames) starts an utterance: the onset decision delay."""
    min_silence_ms: int = 500
    """Non-speech this long ends an utterance: pauses shorter than this stay inside it."""
    min_flatness: float = 0.001
    """Frames flatter than this are speech-like; below it a frame is a tone, not speech."""
    max_flatness: float = 0.3
    """Above this a frame is noise-like (white noise measures 0.36-0.6), not speech."""

    def check(self) -> None:
        """Raise ValueError with a one-line reason when a parameter is out of range."""
        if type(self.aggressiveness) is not int or not 0 <= self.aggressiveness <= 3:
            raise ValueError(f"aggressiveness must be 0, 1, 2 or 3, got {self.aggressiveness!r}")
        for name in ("min_speech_ms", "min_silence_ms"):
            value = getattr(self, name)
            if type(value) is not int or not _FRAME_MS <= value <= 10_000:
                raise ValueError(f"{name} must be a whole number of ms from 20 to 10000, "
                                 f"got {value!r}")
        for name in ("min_flatness", "max_flatness"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}")
        if self.min_flatness >= self.max_flatness:
            raise ValueError(f"min_flatness ({self.min_flatness:g}) must be below "
                             f"max_flatness ({self.max_flatness:g})")

    def frames(self, ms: int) -> int:
        """Whole 20 ms frames covering `ms` (rounded up)."""
        return -(-ms // _FRAME_MS)


@dataclass(frozen=True)
class Transition:
    """Speech began or ended, at `time` seconds from the first frame fed (not the decision)."""

    kind: Literal["speech_started", "speech_stopped"]
    time: float


def spectral_flatness(frame: np.ndarray, window: np.ndarray) -> float:
    """Geometric over arithmetic mean of the frame's power spectrum in BAND_HZ (0..1).

    A frame with almost no energy in the band (under MIN_BAND_SHARE of its total: a tone or
    hum outside it) has no speech-band spectrum to measure and gets 0, like a tone.  A floor
    far below int16 quantization noise (1/12 LSB² a sample) keeps log() finite on digital
    silence without lifting a clean tone's measure.
    """
    spectrum = np.fft.rfft(frame * window)
    power = spectrum.real * spectrum.real
    power += spectrum.imag * spectrum.imag
    power += 1e-3 * len(frame)
    band = power[_BAND]
    total = float(band.sum())
    if total < MIN_BAND_SHARE * float(power.sum()):
        return 0.0
    return math.exp(float(np.log(band).mean())) * len(band) / total


class VoiceActivity:
    """Voice activity of one call's audio, fed one 20 ms int16 frame at a time, in order.

    ``feed`` returns the transitions that frame decided (at most one); ``finish`` ends an
    utterance still open when the audio stops.  Not thread-safe: one instance per call.
    """

    def __init__(self, rate: int, params: VadParams | None = None) -> None:
        params = params if params is not None else VadParams()
        params.check()
        if rate not in RATES:
            raise ValueError(f"rate must be one of {', '.join(map(str, RATES))}, got {rate!r}")
        self.rate = rate
        self.params = params
        self.speaking = False
        self.frames_fed = 0
        self._samples = frame_samples(rate)
        import webrtcvad  # loaded by the first call that uses it

        self._vad = webrtcvad.Vad(params.aggressiveness)
        self._vad_rate = 8000 if rate == 24000 else rate
        self._window = np.hanning(self._samples)
        self._start_frames = params.frames(params.min_speech_ms)
        self._stop_frames = params.frames(params.min_silence_ms)
        self._run = 0  # consecutive frames against the current state
        self._run_start = 0  # index of the first of them

    @property
    def start_delay(self) -> float:
        """Seconds from a reported onset to the end of the frame that decides it."""
        return self._start_frames * FRAME_SECONDS

    @property
    def stop_delay(self) -> float:
        """Seconds from a reported end of speech to the end of the frame that decides it."""
        return self._stop_frames * FRAME_SECONDS

    @property
    def time(self) -> float:
        """Seconds of audio fed so far."""
        return self.frames_fed * FRAME_SECONDS

    def is_speech(self, frame: np.ndarray) -> bool:
        """One frame's verdict, before hysteresis: WebRTC says speech and the gate agrees."""
        if self._vad_rate != self.rate:
            # 24 kHz -> 8 kHz: the mean of each 3 samples (int32 sums cannot overflow).
            low = frame.reshape(-1, 3).sum(axis=1, dtype=np.int32) // 3
            data = low.astype(SAMPLE_DTYPE).tobytes()
        else:
            data = frame.tobytes()
        if not self._vad.is_speech(data, self._vad_rate):
            return False
        flatness = spectral_flatness(frame, self._window)
        return self.params.min_flatness <= flatness <= self.params.max_flatness

    def feed(self, frame: np.ndarray) -> list[Transition]:
        """Judge the next 20 ms frame (int16, exactly rate/50 samples)."""
        if (not isinstance(frame, np.ndarray) or frame.dtype != SAMPLE_DTYPE
                or frame.shape != (self._samples,)):
            got = (f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray)
                   else type(frame).__name__)
            raise ValueError(f"a frame is {self._samples} int16 samples at {self.rate} Hz, "
                             f"got {got}")
        index = self.frames_fed
        self.frames_fed += 1
        against = self.is_speech(frame) != self.speaking
        if not against:
            self._run = 0
            return []
        if self._run == 0:
            self._run_start = index
        self._run += 1
        if self._run < (self._stop_frames if self.speaking else self._start_frames):
            return []
        self.speaking = not self.speaking
        self._run = 0
        kind: Literal["speech_started", "speech_stopped"] = (
            "speech_started" if self.speaking else "speech_stopped")
        return [Transition(kind, round(self._run_start * FRAME_SECONDS, 3))]

    def finish(self) -> list[Transition]:
        """The audio ended: close an open utterance at the end of its last speech frame."""
        if not self.speaking:
            return []
        end = self._run_start if self._run else self.frames_fed
        self.speaking = False
        self._run = 0
        return [Transition("speech_stopped", round(end * FRAME_SECONDS, 3))]
