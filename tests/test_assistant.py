"""The example voice bot (plugins/assistant.py) and the shipped `assistant` pipeline.

Through a real twistd with the real engines: PocketSphinx hears the caller, espeak-ng speaks
the bot, and voicews-call plays Vonage.  The caller is real speech: phrases cut from the
test reading (tests/data/speech/two_cities.wav, a LibriVox volunteer).  It says no "billing"
and no "goodbye", and synthetic speech would test the recognizer poorly, so the bot is
configured with the reading's own words for its route ("wisdom") and its goodbye
("despair"): the same code paths as billing / goodbye, on words a person really said.

What the caller hears is compared sample for sample with espeak-ng's own rendering of each
text (the engine is deterministic), so "the answer was spoken" and "the farewell was
spoken in full" are exact.  The bot's decisions that need no audio (an interrupted
farewell, a deaf recognizer, empty finals) are checked in-process on a task.Clock.

Without espeak-ng the shipped config still starts: its `assistant` pipeline is left out
with a warning, calls to it are refused, and /say answers 503 naming the package.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_control import api
from test_playback import ScriptedTts

from voicews.audio.files import load_audio
from voicews.config.settings import ConfigError, load_settings
from voicews.simulator import simulate_socket
from voicews.testing import call_with

from audio_checks import spoken
from conftest import REPO, Daemon
from wire import Call, closed_with

_spec = importlib.util.spec_from_file_location("assistant", REPO / "plugins" / "assistant.py")
assistant = sys.modules["assistant"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(assistant)
Assistant, AssistantParams = assistant.Assistant, assistant.AssistantParams

RATE = 16000
N = RATE // 50
TOKEN = "bot-token"
SPEECH = load_audio(Path(__file__).parent / "data" / "speech" / "two_cities.wav", RATE)
GREETING = AssistantParams().greeting
ANSWER = ("Wisdom. You have reached the department of wisdom. Please hold the line while I "
          "find someone wise enough to help you.")
FAREWELL = AssistantParams().farewell
MISSING = "espeak-ng not found: install the Debian package espeak-ng"


def phrase(start: float, end: float) -> np.ndarray:
    """A stretch of the reading (bounds a little outside the VAD's phrase boundaries)."""
    return SPEECH[int(start * RATE):int(end * RATE)]


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


def padded(samples: np.ndarray) -> int:
    """Its length in whole frames (the last frame of a playback is filled with silence)."""
    return -(-len(samples) // N) * N


def level(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


# -- a call to the bot, real speech ------------------------------------------------------------


@pytest.fixture(scope="module")
def bot_call(tmp_path_factory):
    """One call: silence while the bot greets, "it was the age of wisdom" (routed), then
    "it was the best of times..." spoken over the bot's answer (barge-in), then "...the
    winter of despair" (goodbye).  The bot hangs up; the caller's audio would go on."""
    pytest.importorskip("pocketsphinx")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng (Debian package espeak-ng) is not installed")
    tmp = tmp_path_factory.mktemp("bot")
    config = {
        "plugins": [str(REPO / "plugins" / "assistant.py")],
        "pipelines": {"assistant": ["vad", "barge-in", "transcribe", {"assistant": {
            "routes": {"wisdom": ANSWER}, "goodbye": ["despair"]}}]},
        "default_pipeline": "assistant",
        "transcribe": {"options": {"workers": 1}},
        "security": {"control_token": TOKEN},
    }
    daemon = Daemon(tmp, config).start()
    daemon.wait_log("pocketsphinx worker", timeout=20)
    caller = np.concatenate([
        silence(4.0), phrase(4.9, 6.45),  # "it was the age of wisdom", 4.0-5.55 s
        silence(2.45), phrase(1.05, 4.75),  # "it was the best of times ...", 8.0-11.7 s
        silence(2.5), phrase(17.4, 20.75),  # "... the winter of despair", 14.2-17.55 s
        silence(6.0)])
    result = simulate_socket(daemon.ws, headers={"uuid": "bot-call"}, play=caller,
                             play_rate=RATE, events=True, control_token=TOKEN)
    daemon.wait_log("call ended uuid=bot-call")
    yield daemon, result
    assert daemon.stop() == 0


def of(result, kind: str) -> list[dict]:
    return [e for e in result.events if e["kind"] == kind]


def test_the_bot_greets_hears_a_turn_and_answers_it(bot_call):
    daemon, result = bot_call
    heard = result.received
    greeting = spoken(GREETING)
    # The greeting, whole (the caller is silent for 4 s), then the routed answer.
    assert np.array_equal(heard[:len(greeting)], greeting)
    assert not heard[len(greeting):padded(greeting)].any()
    answer = spoken(ANSWER)
    start = padded(greeting)
    assert np.array_equal(heard[start:start + RATE], answer[:RATE])  # its first second, exact
    assert level(answer[:RATE]) > 1000  # audible speech
    # The turn: a final transcript with the route's word, while the call ran, after the VAD
    # said the caller stopped, and before the answer was playing (the barge-in below).
    finals = [e for e in of(result, "transcript") if e["data"]["final"]]
    first = finals[0]
    assert "wisdom" in first["data"]["text"].split(), finals
    assert 4.0 < first["data"]["start"] < first["data"]["end"] < 5.6
    stopped = of(result, "speech_stopped")[0]
    assert stopped["time"] <= first["time"] < stopped["time"] + 2.0
    arrived = result.events_received_at[result.events.index(first)]
    assert arrived < result.duration - 10  # the app had it during the call
    (routed,) = of(result, "routed")  # the bot's own event, for the application
    assert routed["source"] == "assistant" and routed["data"] == {
        "route": "wisdom", "text": first["data"]["text"]}
    assert first["seq"] < routed["seq"]


def test_the_caller_speaking_over_the_answer_cuts_it_short(bot_call):
    _, result = bot_call
    first = [e for e in of(result, "transcript") if e["data"]["final"]][0]
    barge = of(result, "barge_in")[0]
    assert (barge["data"]["step"], barge["data"]["label"], barge["data"]["by"]) == (
        "assistant", ANSWER, "speech_started")
    assert barge["time"] > first["time"]
    # The caller heard the answer from the transcript to their own onset (8.0 s), no more.
    assert 0.5 < barge["data"]["heard"] < barge["data"]["length"] - 3
    assert barge["time"] - first["time"] == pytest.approx(barge["data"]["heard"], abs=0.6)
    assert {"action": "clear"} in result.commands
    # What came back of the answer stops where it was cut (what Vonage had buffered, at
    # most the sender's lead, went too): the next thing heard is another text.
    answer = spoken(ANSWER)
    start = padded(spoken(GREETING))
    n = min(len(answer), len(result.received) - start)
    differ = np.flatnonzero(result.received[start:start + n] != answer[:n])
    cut = int(differ[0]) if len(differ) else n
    heard = round(barge["data"]["heard"] * RATE)
    assert heard - N <= cut <= heard + RATE // 4, (cut, heard)
    assert cut < len(answer) - 2 * RATE


def test_goodbye_says_the_farewell_whole_then_hangs_up_1000(bot_call):
    daemon, result = bot_call
    finals = [e["data"]["text"] for e in of(result, "transcript") if e["data"]["final"]]
    assert "despair" in finals[-1].split()
    assert (result.close_code, result.closed_by, result.close_reason) == (
        1000, "server", "the caller said goodbye")
    assert result.ok, result.summary()
    assert result.duration < len(result.sent) / RATE - 2  # before the caller's audio ran out
    farewell = spoken(FAREWELL)
    tail = result.received[-padded(farewell):]
    assert np.array_equal(tail[:len(farewell)], farewell)  # heard to its last sample
    kinds = [e["kind"] for e in result.events]
    assert kinds[-2:] == ["played", "call_ended"]  # Vonage played it, then the bot hung up
    assert result.events[-1]["data"] == {"outcome": "hangup_step"}
    assert "hangs up, the farewell played: the caller said goodbye" in daemon.log()
    assert "Traceback" not in daemon.log()


# -- the bot's decisions, in-process ------------------------------------------------------------


def bot(**params):
    tts = ScriptedTts()
    events: list = []
    call = call_with([Assistant], [AssistantParams(**params)], rate=RATE, tts=tts,
                     publish=lambda info, event: events.append(event))
    call.events = events
    return call, tts


def final(call, text: str, is_final: bool = True) -> None:
    call.pipeline.session.emit("transcript", text=text, final=is_final, start=0.0, end=1.0)


def asked(tts) -> list[str]:
    return [text for text, *_ in tts.asked]


def test_the_bot_routes_repeats_and_ignores_partials_and_noise():
    call, tts = bot()
    assert asked(tts) == [GREETING]
    final(call, "billing", is_final=False)  # a partial: the caller has not finished
    final(call, "")  # noise
    assert asked(tts) == [GREETING]
    final(call, "i have a question about billing")
    final(call, "technical support please")
    final(call, "the weather is nice")
    assert asked(tts)[1:] == [
        AssistantParams().routes["billing"], AssistantParams().routes["support"],
        "I heard: the weather is nice. Please say one of: billing, sales, support."]
    assert [e.data for e in call.events if e.kind == "routed"] == [
        {"route": "billing", "text": "i have a question about billing"},
        {"route": "support", "text": "technical support please"}]
    assert not call.wire.hangups


def test_an_interrupted_farewell_still_hangs_up_and_later_turns_are_ignored():
    call, tts = bot()
    final(call, "ok goodbye")
    final(call, "sales")  # said while the farewell plays: the bot is leaving
    assert asked(tts) == [GREETING, FAREWELL]
    tts.speak(1, 3000, 50)  # one second of farewell
    call.frames(10)
    assert not call.wire.hangups
    call.pipeline.session.clear()  # the caller spoke over it (what a barge-in step does)
    assert call.wire.hangups == [(1000, "the caller said goodbye", "hangup_step")]
    call.frames(60)
    assert not call.audio().any()  # the farewell, cut before it began, never plays


def test_a_deaf_call_is_told_so_and_ended():
    call, tts = bot()
    call.pipeline.session.emit("transcriber_error", engine="pocketsphinx", reason="busy",
                               message="all 1 workers are full")
    apology = "Sorry, I cannot listen right now. Please call again later."
    assert asked(tts) == [GREETING, apology]
    tts.speak(0, 2000, 5)
    tts.speak(1, 3000, 5)
    call.frames(12)
    assert not call.wire.hangups
    notifies = [t["payload"] for t in call.texts() if t.get("action") == "notify"]
    assert notifies == [{"say": 1}, {"say": 2}]
    call.pipeline.receive_event("notify", {"payload": {"say": 2}})  # Vonage played both
    assert call.wire.hangups == [(1000, "no speech recognizer for this call", "hangup_step")]


# -- without espeak-ng --------------------------------------------------------------------------


@pytest.fixture
def no_espeak(tmp_path, monkeypatch):
    """A PATH with python but no espeak-ng on it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return str(bin_dir)


def shipped_copy(tmp_path: Path, **changes) -> Path:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config.update(changes)
    config["plugins"] = [str(REPO / p) for p in config["plugins"]]
    config["control"] = {"prompts": str(REPO / "prompts")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_without_espeak_the_assistant_pipeline_is_left_out_not_the_daemon(tmp_path, no_espeak):
    settings = load_settings(REPO / "config.yaml")
    assert settings.disabled == {"assistant": f"pipelines.assistant[3].assistant: {MISSING}"}
    assert "assistant" not in settings.pipelines and "echo" in settings.pipelines
    assert settings.transcriber is None  # no recognizer started for a pipeline left out
    # Where the daemon itself sends calls, the pipeline must run: a config error.
    for changes in ({"default_pipeline": "assistant"},
                    {"numbers": {"447700900000": "assistant"}}):
        with pytest.raises(ConfigError, match=rf"pipelines\.assistant\[3\]\.assistant: "
                                              rf"{MISSING}"):
            load_settings(shipped_copy(tmp_path, **changes))
    # A tts: section says "this daemon speaks": it must be able to.
    with pytest.raises(ConfigError, match=rf"tts: {MISSING}"):
        load_settings(shipped_copy(tmp_path, tts={"voice": "en-us"}))
    # A config mistake is still one, engine or not.
    bad = {"assistant": [{"assistant": {"routes": "billing"}}], "echo": ["echo"]}
    with pytest.raises(ConfigError, match=r"pipelines\.assistant\[0\]\.assistant\.routes"):
        load_settings(shipped_copy(tmp_path, pipelines=bad))


def test_the_shipped_config_starts_without_espeak_and_says_why_assistant_is_off(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    daemon = Daemon(tmp_path, "", env={"PATH": str(bin_dir), "VOICEWS_CONTROL_TOKEN": TOKEN})
    daemon.workdir, daemon.config_path = REPO, Path("config.yaml")
    daemon.start()
    try:
        log = daemon.wait_log("pipeline assistant is off")
        assert f"pipeline assistant is off, calls to it are refused: " \
               f"pipelines.assistant[3].assistant: {MISSING}" in log
        assert "with pipelines echo, hold, keypad, louder, mine" in log
        with Call(daemon.ws, pipeline="echo", uuid="still-echoes") as call:
            voice = (np.arange(5 * N) % 200 * 50).astype(np.int16)
            np.testing.assert_array_equal(call.exchange(voice), voice)
            status, answer = api(daemon, "POST", "/calls/still-echoes/say", {"text": "Hi."},
                                 token=TOKEN)
            assert (status, answer["error"]) == (
                503, f"text to speech is unavailable: {MISSING}")
        code, reason = closed_with(daemon.ws, '{"content-type": "audio/l16;rate=16000", '
                                              '"pipeline": "assistant"}')
        assert (code, reason) == (1008, "pipeline 'assistant' is off on this server")
        assert "pipeline assistant is off, call from" in daemon.log()
        check = subprocess.run([str(Path(sys.executable).with_name("voicews")), "check",
                                "config.yaml"], cwd=REPO, capture_output=True, text=True,
                               env={**daemon.env, "PATH": str(bin_dir)})
        assert check.returncode == 0, check.stderr
        assert f"  assistant: OFF, pipelines.assistant[3].assistant: {MISSING}" in check.stdout
    finally:
        assert daemon.stop() == 0
