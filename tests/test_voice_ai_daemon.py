"""vad, barge-in and say through a real `twistd voicews`, with real speech, real espeak-ng and
voicews-call playing Vonage (it answers notify once the audio before it has played).

Every call of this module runs at once against one daemon (a call lasts as long as its audio),
then each test checks its own; events are read from the daemon's log, where a small plugin
step writes what it hears (tests/plugins/voice_probe.py).
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from test_engines_tts import speech_spans
from test_engines_vad import PHRASE_A, PHRASE_B, TOLERANCE, compose

from voicews.audio.files import tone, write_wav
from voicews.audio.samples import frame_samples
from voicews.simulator import CallSpec, simulate_many

from conftest import REPO, Daemon

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                reason="espeak-ng (Debian package espeak-ng) is not installed")

PROBE = str(REPO / "tests" / "plugins" / "voice_probe.py")
SENTENCE = "Thank you for calling. Your call is important to us, please hold the line."
PROMPT_HZ = 1000
RATES = (8000, 16000, 24000)


def call(daemon: Daemon, label: str, pipeline: str, rate: int = 16000,
         play: np.ndarray | None = None, seconds: float | None = None) -> CallSpec:
    return CallSpec(socket_uri=daemon.ws, content_type=f"audio/l16;rate={rate}",
                    headers={"pipeline": pipeline, "uuid": label}, play=play, play_rate=16000,
                    seconds=seconds, label=label)


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("voice")
    write_wav(tmp / "prompt.wav", tone(16000, 5.0, PROMPT_HZ, 0.25), 16000)
    config = {
        "plugins": [PROBE],
        "tts": {"engine": "espeak-ng", "voice": "en-us"},
        "pipelines": {
            "listen": ["echo", "vad", "event-log"],
            "barge": [{"file-inject": {"path": "prompt.wav", "interruptible": True}},
                      "vad", "barge-in", "event-log"],
            "greet": [{"say": {"text": SENTENCE}}],
            "probe": [{"say-probe": {"text": "Hello there."}}, "event-log"],
        },
        "default_pipeline": "listen",
    }
    daemon = Daemon(tmp, config).start()
    speech, truth = compose(16000, 1.0, PHRASE_A, 1.2, PHRASE_B, 1.0)
    interruption, onset = compose(16000, 0.9, PHRASE_A)
    specs = [
        call(daemon, "speech", "listen", play=speech),
        call(daemon, "silence", "listen", seconds=3.0),
        call(daemon, "tone", "listen", play=tone(16000, 3.0, 440, 0.3)),
        call(daemon, "barge", "barge", play=interruption, seconds=5.0),
        call(daemon, "probe", "probe", seconds=3.0),
        *(call(daemon, f"greet-{rate}", "greet", rate=rate, seconds=7.0) for rate in RATES),
    ]
    results = {result.label: result for result in simulate_many(specs)}
    daemon.truth = {"speech": truth, "barge": onset}
    yield daemon, results
    assert daemon.stop() == 0


def logged(daemon: Daemon, tag: str, uuid: str) -> list[dict]:
    lines = [json.loads(m) for m in re.findall(rf"{tag} (\{{.*\}})$", daemon.log(), re.M)]
    return [line for line in lines if line["uuid"] == uuid]


def events(daemon: Daemon, uuid: str, *kinds: str) -> list[dict]:
    return [e for e in logged(daemon, "EVENT", uuid) if e["kind"] in kinds]


def test_vad_events_through_a_call_mark_the_true_boundaries(voice):
    daemon, results = voice
    assert results["speech"].ok, results["speech"].errors
    got = events(daemon, "speech", "speech_started", "speech_stopped")
    assert [e["kind"] for e in got] == ["speech_started", "speech_stopped"] * 2
    assert {e["source"] for e in got} == {"vad"}
    boundaries = [got[0]["data"]["start"], got[1]["data"]["end"], got[2]["data"]["start"],
                  got[3]["data"]["end"]]
    truth = daemon.truth["speech"]
    assert max(abs(b - t) for b, t in zip(boundaries, truth, strict=True)) <= TOLERANCE
    for started in got[::2]:  # decided min_speech_ms after the onset, on the call's clock
        assert 0.05 <= started["time"] - started["data"]["start"] <= 0.4
    for label in ("silence", "tone"):
        assert results[label].ok and results[label].frames_received > 100
        assert events(daemon, label, "speech_started", "speech_stopped") == []


def test_speaking_over_a_prompt_clears_it_and_reports_about_a_second_heard(voice):
    daemon, results = voice
    result = results["barge"]
    assert result.ok, result.errors
    assert result.commands[0] == {"action": "clear"}
    assert {"event": "websocket:cleared"} in result.events_sent
    (barge,) = events(daemon, "barge", "barge_in")
    (onset,) = events(daemon, "barge", "speech_started")
    data = barge["data"]
    assert abs(data["start"] - daemon.truth["barge"][0]) <= TOLERANCE
    assert (data["step"], data["label"], data["length"], data["by"]) == (
        "file-inject", "prompt.wav", 5.0, "speech_started")
    assert 0.95 <= data["heard"] <= 1.3, data
    # The caller heard the prompt up to the barge-in, then silence: its audio stopped.
    frames = result.received.reshape(-1, frame_samples(16000)).astype(np.float64)
    loud = np.flatnonzero(np.sqrt((frames ** 2).mean(axis=1)) > 1000)
    assert loud[0] <= 2 and np.all(np.diff(loud) == 1)  # from the start, without a gap
    assert abs((loud[-1] + 1) * 0.02 - data["heard"]) <= 0.1
    assert len(frames) >= 200  # the call went on, silent, to its end


@pytest.mark.parametrize("rate", RATES)
def test_say_speaks_audibly_at_every_rate_for_a_plausible_time(voice, rate):
    _, results = voice
    result = results[f"greet-{rate}"]
    assert result.ok, result.errors
    audio = result.received
    expected = len(SENTENCE.split()) * 60 / 175  # eSpeak's default 175 words a minute
    seconds = len(audio) / rate
    assert 0.7 * expected <= seconds <= 1.5 * expected, (seconds, expected)
    spans = speech_spans(audio, rate)
    assert spans and spans[0] == ("speech_started", pytest.approx(0.0, abs=0.3))
    assert spans[-1][0] == "speech_stopped" and spans[-1][1] >= 0.7 * expected
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    assert rms > 1000  # about -30 dBFS and up: audible
    assert result.commands == [{"action": "notify", "payload": {"say": 1}}]


def test_the_say_deferred_fires_once_vonage_has_played_it(voice):
    daemon, results = voice
    result = results["probe"]
    assert result.ok, result.errors
    assert result.events_sent == [{"event": "websocket:notify", "payload": {"say": 1}}]
    (said,) = logged(daemon, "SAID", "probe")
    assert said["outcome"] == "played" and said["heard"] == said["length"]
    assert result.frames_received * 0.02 == pytest.approx(said["length"], abs=0.02)
    # Fired on Vonage's answer, which comes once the audio has played: not before its end.
    assert said["time"] >= said["length"]
    (notify,) = events(daemon, "probe", "notify")
    assert notify["time"] == pytest.approx(said["time"], abs=0.002)
