"""Builtin processors through a real twistd: gain, file-inject (replace, mix, loop, barge-in,
notify), several calls on different pipelines at once.

Calls are played by the call simulator, except where a test needs to see exactly when a
command arrives among the frames (`wire.Call`).
"""

from __future__ import annotations

import numpy as np
import pytest

from voicews.simulator import CallResult, CallSpec, simulate_many

from audio_checks import band_level, peak_frequency, tone, write_tone
from conftest import base_config
from wire import Call


def spec(d, pipeline: str, says: np.ndarray | None = None, seconds: float = 1.0,
         rate: int = 16000, uuid: str | None = None, **fields) -> CallSpec:
    """A simulated call on `pipeline`: the caller says `says` (at the call's rate) or keeps
    quiet for `seconds`; frames go out unpaced and the call ends when the reply is in."""
    if says is not None:
        seconds = len(says) / rate
    headers = {"pipeline": pipeline, **({"uuid": uuid} if uuid else {})}
    return CallSpec(socket_uri=d.ws, content_type=f"audio/l16;rate={rate}", headers=headers,
                    play=says, play_rate=rate, seconds=seconds, fast=True, **fields)


def play(*specs: CallSpec) -> list[CallResult]:
    """Run the calls at once; each must end cleanly with a frame back for every frame sent."""
    results = simulate_many(specs)
    for result in results:
        assert result.ok, result.error
        assert result.frames_received == result.frames_sent, result.summary()
    return results


def test_gain_6db_is_x1995_and_12db_saturates_without_sign_flip(start_daemon):
    d = start_daemon(base_config(pipelines={
        "echo": ["echo"],
        "louder": ["echo", {"gain": {"db": 6}}],
        "loud12": ["echo", {"gain": {"db": 12}}],
        "quieter": ["echo", {"gain": {"db": -6}}],
    }))
    quiet = tone(300, 0.5, 16000, amplitude=4000)
    loud = tone(300, 0.5, 16000, amplitude=30000)
    louder, loud12, quieter = play(spec(d, "louder", quiet), spec(d, "loud12", loud),
                                   spec(d, "quieter", quiet))
    got = louder.received
    ratio = np.sqrt(np.mean(got.astype(float) ** 2) / np.mean(quiet.astype(float) ** 2))
    assert ratio == pytest.approx(1.995, rel=0.01)
    np.testing.assert_array_equal(got, np.rint(quiet * 10 ** (6 / 20)).astype("<i2"))

    got = loud12.received
    assert got.max() == 32767 and got.min() == -32768
    assert not np.any((loud > 0) & (got < 0)) and not np.any((loud < 0) & (got > 0))

    got = quieter.received
    np.testing.assert_array_equal(got, np.rint(quiet * 10 ** (-6 / 20)).astype("<i2"))


@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 2)])
def test_file_inject_plays_a_440hz_file_at_440hz_into_an_8khz_call(
    start_daemon, tmp_path, rate, channels
):
    path = write_tone(tmp_path / f"tone-{rate}.wav", rate, 1.5, channels=channels)
    d = start_daemon(base_config(pipelines={
        "echo": ["echo"], "prompt": [{"file-inject": {"path": path}}],
    }))
    [call] = play(spec(d, "prompt", seconds=1.0, rate=8000))  # one second of caller silence
    got = call.received
    assert abs(peak_frequency(got, 8000) - 440) <= 2
    assert band_level(got, 8000, 440) > 0.99  # a clean tone: no aliasing, no clicks
    rms = np.sqrt(np.mean(got.astype(float) ** 2))
    assert rms == pytest.approx(0.5 * 32768 / np.sqrt(2), rel=0.03)


def test_replace_goes_silent_after_the_file_and_notifies_after_its_last_frame(
    start_daemon, tmp_path
):
    write_tone(tmp_path / "short.wav", 16000, 0.1)  # exactly 5 frames at 16 kHz
    d = start_daemon(base_config(pipelines={
        "echo": ["echo"],
        "prompt": ["echo", {"file-inject": {"path": "../short.wav"}}],
    }))
    with Call(d.ws, pipeline="prompt", uuid="call-1") as call:
        caller = tone(1000, 0.4, 16000)
        got = call.exchange(caller)
        assert np.any(got[: 5 * 320] != 0)
        assert not np.any(got[5 * 320 :]), "replace: silence after the file, not the echo"
        kinds = ["frame" if isinstance(item, bytes) else item for item in call.received]
        notify = {"action": "notify", "payload": {
            "processor": "file-inject", "file": "../short.wav", "pipeline": "prompt",
            "uuid": "call-1", "event": "finished"}}
        assert kinds[:6] == ["frame"] * 5 + [notify]
        assert kinds[6:] == ["frame"] * 15
        # Vonage answers the notify once it has played the file: the pipeline hears of it.
        call.send_event({"event": "websocket:notify", "payload": notify["payload"]})
        call.exchange(np.zeros(320, "<i2"))
    d.wait_log("file-inject: ../short.wav has played to the caller uuid=call-1")


def test_mix_lets_the_caller_hear_their_echo_and_the_file(start_daemon, tmp_path):
    path = write_tone(tmp_path / "beep.wav", 16000, 0.5, freq=1000, amplitude=0.25)
    d = start_daemon(base_config(pipelines={
        "echo": ["echo"], "mixed": ["echo", {"file-inject": {"path": path, "mode": "mix"}}],
    }))
    voice = tone(440, 1.0, 16000, amplitude=8000)
    [call] = play(spec(d, "mixed", voice))
    got = call.received
    during, after = got[:8000], got[8000:]
    assert band_level(during, 16000, 440) > 0.3 and band_level(during, 16000, 1000) > 0.3
    assert band_level(during, 16000, 440) + band_level(during, 16000, 1000) > 0.99
    np.testing.assert_array_equal(after, voice[8000:])  # after the file: the echo alone
    assert sum(1 for m in call.commands if m.get("action") == "notify") == 1


def test_mix_saturates_and_level_scales_the_file(start_daemon, tmp_path):
    path = write_tone(tmp_path / "full.wav", 16000, 0.5, freq=1000, amplitude=0.9)
    d = start_daemon(base_config(pipelines={
        "echo": ["echo"],
        "mixed": ["echo", {"file-inject": {"path": path, "mode": "mix"}}],
        "soft": [{"file-inject": {"path": path, "level": -6}}],
    }))
    loud = np.full(8000, 30000, "<i2")
    mixed, soft = play(spec(d, "mixed", loud), spec(d, "soft", seconds=0.5))
    got = mixed.received
    assert got.max() == 32767 and got.min() > 0  # clipped at the top, never wrapped negative
    got = soft.received
    rms = np.sqrt(np.mean(got.astype(float) ** 2))
    assert rms == pytest.approx(0.9 * 32768 / np.sqrt(2) * 10 ** (-6 / 20), rel=0.03)


def test_loop_plays_on_without_a_notify(start_daemon, tmp_path):
    path = write_tone(tmp_path / "short.wav", 16000, 0.05, freq=400)  # 2.5 frames
    d = start_daemon(base_config(pipelines={
        "echo": ["echo"], "looped": [{"file-inject": {"path": path, "loop": True}}],
    }))
    [call] = play(spec(d, "looped", seconds=1.0))
    got = call.received
    np.testing.assert_array_equal(got, np.tile(got[:800], 20))  # the 800-sample file, again
    assert abs(peak_frequency(got, 16000) - 400) <= 2  # no gap or click at the seams
    assert call.commands == []


def test_key_press_stops_playback_and_clears_vonage_buffer(start_daemon, tmp_path):
    path = write_tone(tmp_path / "hold.wav", 16000, 0.2, freq=1000)
    d = start_daemon(base_config(pipelines={
        "echo": ["echo"],
        "hold": ["echo", {"file-inject": {
            "path": path, "mode": "mix", "loop": True, "stop_on_dtmf": True}}],
    }))
    voice = tone(440, 0.2, 16000, amplitude=4000)  # ten frames
    # Key 5 pressed after the first ten frames, key 6 after the next ten.
    [call] = play(spec(d, "hold", np.tile(voice, 3), uuid="barge",
                       dtmf=[("5", 0.2), ("6", 0.4)]))
    got = call.received
    assert band_level(got[:3200], 16000, 1000) > 0.5
    np.testing.assert_array_equal(got[3200:6400], voice)  # the file has stopped: echo alone
    assert call.commands == [{"action": "clear"}]
    d.wait_log("file-inject: " + path + " stopped by DTMF 5 uuid=barge")


def test_two_calls_on_different_pipelines_each_get_their_own(start_daemon, tmp_path):
    low = write_tone(tmp_path / "low.wav", 16000, 2.0, freq=440)
    high = write_tone(tmp_path / "high.wav", 16000, 2.0, freq=1000)
    d = start_daemon(base_config(pipelines={
        "echo": ["echo"],
        "low": [{"file-inject": {"path": low}}],
        "high": [{"file-inject": {"path": high}}],
    }))
    voice = tone(700, 1.0, 16000)
    a, b, c = play(spec(d, "low", seconds=1.0, rate=8000), spec(d, "high", seconds=1.0),
                   spec(d, "echo", voice))
    assert abs(peak_frequency(a.received, 8000) - 440) <= 2
    assert abs(peak_frequency(b.received, 16000) - 1000) <= 2
    np.testing.assert_array_equal(c.received, voice)
