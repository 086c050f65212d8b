"""Voice activity (voicews.engines.vad) on real speech, silence, tones and noise.

Speech is a human reading (tests/data/speech, see its README for the boundaries used), cut
into phrases with silence between them, so the true onsets and ends are known to ~20 ms.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voicews.audio.files import load_audio, tone
from voicews.audio.samples import RATES, frame_samples
from voicews.engines.vad import Transition, VadParams, VoiceActivity

SPEECH = Path(__file__).parent / "data" / "speech" / "two_cities.wav"
# (cut from, cut to, speech starts, speech ends) in the clip, seconds: each cut keeps 70-100 ms
# of the reading's own room tone around the phrase, as a real caller's audio would have.
PHRASE_A = (1.10, 4.65, 1.20, 4.55)
PHRASE_B = (4.95, 6.30, 5.02, 6.20)
TOLERANCE = 0.3  # seconds, the bound on a reported boundary

_clips: dict[int, np.ndarray] = {}


def clip(rate: int) -> np.ndarray:
    if rate not in _clips:
        _clips[rate] = load_audio(SPEECH, rate)
    return _clips[rate]


def compose(rate: int, *parts: float | tuple[float, float, float, float]):
    """Silence (a number of seconds) and phrases in order: the audio and the true boundaries."""
    pieces, truth, at = [], [], 0.0
    for part in parts:
        if isinstance(part, tuple):
            cut_from, cut_to, starts, ends = part
            pieces.append(clip(rate)[round(cut_from * rate):round(cut_to * rate)])
            truth += [at + starts - cut_from, at + ends - cut_from]
            at += cut_to - cut_from
        else:
            pieces.append(np.zeros(round(part * rate), np.int16))
            at += part
    return np.concatenate(pieces), truth


def run(samples: np.ndarray, rate: int, params: VadParams | None = None,
        ) -> list[tuple[Transition, float]]:
    """Feed 20 ms frames; each transition with the time it was decided (audio fed so far)."""
    vad = VoiceActivity(rate, params or VadParams())
    n = frame_samples(rate)
    got = []
    for i in range(len(samples) // n):
        got += [(t, vad.time) for t in vad.feed(samples[i * n:(i + 1) * n])]
    assert vad.time == pytest.approx(len(samples) // n * 0.02)
    return got + [(t, vad.time) for t in vad.finish()]


@pytest.mark.parametrize("rate", RATES)
def test_speech_boundaries_within_300_ms_and_decided_after_the_hysteresis(rate):
    audio, truth = compose(rate, 1.0, PHRASE_A, 1.2, PHRASE_B, 1.0)
    params = VadParams()
    got = run(audio, rate, params)
    kinds = [t.kind for t, _ in got]
    assert kinds == ["speech_started", "speech_stopped"] * 2, got
    for (transition, decided), true in zip(got, truth, strict=True):
        assert abs(transition.time - true) <= TOLERANCE, (transition, true)
        # Back-dated: the decision comes exactly the hysteresis after the time reported.
        delay = params.min_speech_ms if transition.kind == "speech_started" else \
            params.min_silence_ms
        assert decided - transition.time == pytest.approx(delay / 1000)
    vad = VoiceActivity(rate, params)
    assert (vad.start_delay, vad.stop_delay) == pytest.approx((0.1, 0.5))


@pytest.mark.parametrize("rate", RATES)
def test_silence_and_a_steady_tone_are_not_speech(rate):
    assert run(np.zeros(5 * rate, np.int16), rate) == []
    for hz, level in ((440, 0.3), (440, 0.01), (1000, 0.5), (3900, 0.3)):
        assert run(tone(rate, 5.0, hz, level), rate) == [], (hz, level)
    # Dual tones: DTMF "1" and the US dial tone.
    t = np.arange(5 * rate) / rate
    for f1, f2 in ((697, 1209), (350, 440)):
        dual = (8000 * (np.sin(2 * np.pi * f1 * t) + np.sin(2 * np.pi * f2 * t))).astype(np.int16)
        assert run(dual, rate) == [], (f1, f2)
    # The gate is what keeps the tone out: WebRTC's VAD alone calls it speech.
    ungated = run(tone(rate, 5.0, 440, 0.3), rate, VadParams(min_flatness=0.0))
    assert ungated and ungated[0][0] == Transition("speech_started", 0.0)


@pytest.mark.parametrize("rate", RATES)
def test_white_noise_is_not_speech(rate):
    """WebRTC's VAD learns low white noise (-50 dBFS) as background, but calls a loud hiss
    (-20 dBFS) speech at every aggressiveness; its flatness (~0.56) keeps both out."""
    for sigma in (10, 100, 1000, 3000):
        noise = np.random.default_rng(sigma).normal(0, sigma, 5 * rate).astype(np.int16)
        assert run(noise, rate) == [], sigma
    hiss = np.random.default_rng(7).normal(0, 3000, 5 * rate).astype(np.int16)
    for mode in range(4):
        ungated = run(hiss, rate, VadParams(aggressiveness=mode, max_flatness=1.0))
        assert ungated and ungated[0][0] == Transition("speech_started", 0.0), mode


def test_min_silence_ms_bridges_shorter_pauses():
    rate = 16000
    audio, truth = compose(rate, 0.5, PHRASE_A, 0.4, PHRASE_B, 1.0)
    # About 0.57 s without speech between the phrases (room tone, the gap, room tone).
    split = run(audio, rate, VadParams(min_silence_ms=300))
    assert [t.kind for t, _ in split] == ["speech_started", "speech_stopped"] * 2
    assert all(abs(t.time - true) <= TOLERANCE for (t, _), true in zip(split, truth, strict=True))
    whole = run(audio, rate, VadParams(min_silence_ms=1000))
    assert [t.kind for t, _ in whole] == ["speech_started", "speech_stopped"]
    assert abs(whole[0][0].time - truth[0]) <= TOLERANCE
    assert abs(whole[1][0].time - truth[3]) <= TOLERANCE
    assert whole[1][1] - whole[1][0].time == pytest.approx(1.0)


def test_min_speech_ms_ignores_shorter_bursts():
    rate = 8000
    # 80 ms of the phrase: starts speech with min_speech_ms=60, not with 200.
    burst = clip(rate)[round(1.60 * rate):round(1.68 * rate)]
    audio = np.concatenate([np.zeros(rate, np.int16), burst, np.zeros(rate, np.int16)])
    assert [t.kind for t, _ in run(audio, rate, VadParams(min_speech_ms=60))] == [
        "speech_started", "speech_stopped"]
    assert run(audio, rate, VadParams(min_speech_ms=200)) == []


def test_finish_closes_an_open_utterance_at_its_last_speech():
    rate = 16000
    audio, truth = compose(rate, 0.5, PHRASE_A)
    got = run(audio, rate)
    assert [t.kind for t, _ in got] == ["speech_started", "speech_stopped"]
    end, decided = got[1]
    assert abs(end.time - truth[1]) <= TOLERANCE
    assert decided == pytest.approx(len(audio) / rate, abs=0.02)  # at finish(), not later


@pytest.mark.parametrize(("params", "reason"), [
    (VadParams(aggressiveness=4), "aggressiveness must be 0, 1, 2 or 3, got 4"),
    (VadParams(aggressiveness=True), "aggressiveness must be 0, 1, 2 or 3, got True"),
    (VadParams(min_speech_ms=0), "min_speech_ms must be a whole number of ms from 20 to 10000"),
    (VadParams(min_silence_ms=20.5), "min_silence_ms must be a whole number of ms"),
    (VadParams(max_flatness=2), "max_flatness must be a number from 0 to 1, got 2"),
    (VadParams(min_flatness=0.5, max_flatness=0.3), "min_flatness (0.5) must be below"),
])
def test_bad_parameters_are_refused_with_a_reason(params, reason):
    with pytest.raises(ValueError, match="^" + reason.replace("(", r"\(").replace(")", r"\)")):
        params.check()
    with pytest.raises(ValueError):
        VoiceActivity(8000, params)


def test_bad_rate_and_frames_are_refused():
    with pytest.raises(ValueError, match="rate must be one of 8000, 16000, 24000, got 44100"):
        VoiceActivity(44100, VadParams())
    vad = VoiceActivity(16000, VadParams())
    for frame, got in ((np.zeros(160, np.int16), r"int16 \(160,\)"),
                       (np.zeros(320, np.float32), "float32"),
                       (b"\0" * 640, "bytes")):
        with pytest.raises(ValueError, match=f"is 320 int16 samples at 16000 Hz, got {got}"):
            vad.feed(frame)
    assert vad.frames_fed == 0 and not vad.speaking
