"""The voice-AI steps in-process on task.Clock: vad on real speech, barge-in over played audio,
file-inject on the bus, and the tts/vad config checks.  Through twistd: test_voice_ai_daemon.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_engines_vad import PHRASE_A, PHRASE_B, TOLERANCE, compose
from test_playback import ScriptedTts

from voicews import Event, PrepareContext
from voicews.audio.files import tone, write_wav
from voicews.audio.samples import frame_samples
from voicews.config import plugins
from voicews.config.settings import ConfigError, load_settings
from voicews.engines.vad import VadParams
from voicews.processors.barge_in import BargeIn, BargeInParams
from voicews.processors.echo import Echo
from voicews.processors.file_inject import FileInject, FileInjectParams
from voicews.processors.vad import Vad
from voicews.runtime.state import Runtime
from voicews.testing import call_with, start

RATE = 16000
N = frame_samples(RATE)
REPO = Path(__file__).resolve().parent.parent


def run(call, audio: np.ndarray) -> None:
    call.frames(len(audio) // N, audio)


def published(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.kind == kind]


# -- vad ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_vad_events_mark_the_true_boundaries_of_real_speech(rate):
    audio, truth = compose(rate, 1.0, PHRASE_A, 1.2, PHRASE_B, 1.0)
    events: list[Event] = []
    call = call_with([Echo, Vad], [None, VadParams()], rate=rate,
                     publish=lambda info, event: events.append(event))
    call.frames(len(audio) // frame_samples(rate), audio)
    speech = [e for e in events if e.kind.startswith("speech_")]
    assert [e.kind for e in speech] == ["speech_started", "speech_stopped"] * 2
    assert all(e.source == "vad" for e in speech)
    boundaries = [speech[0].data["start"], speech[1].data["end"],
                  speech[2].data["start"], speech[3].data["end"]]
    assert max(abs(got - true) for got, true in zip(boundaries, truth, strict=True)) <= TOLERANCE
    assert speech[1].data["start"] == speech[0].data["start"]  # stopped says which utterance
    # Decided after the hysteresis: 5 frames (min_speech_ms) after the first speech frame,
    # here where each frame is handled at the start of its 20 ms.
    assert speech[0].time - speech[0].data["start"] == pytest.approx(0.08)
    np.testing.assert_array_equal(call.audio(), audio[: len(call.audio())])  # untouched


def test_vad_says_nothing_on_silence_or_a_tone_and_closes_an_open_utterance_at_the_end():
    events: list[Event] = []
    call = call_with([Vad], [VadParams()], rate=RATE,
                     publish=lambda info, event: events.append(event))
    run(call, np.zeros(2 * RATE, np.int16))
    run(call, tone(RATE, 3.0, 440, 0.3))
    assert [e.kind for e in events] == ["call_started"]
    speech, _ = compose(RATE, PHRASE_A)
    run(call, speech[: RATE * 2])  # hung up mid-sentence
    call.pipeline.close("hangup")
    kinds = [e.kind for e in events]
    assert kinds == ["call_started", "speech_started", "speech_stopped", "call_ended"]
    stopped = events[2]
    assert stopped.data["end"] == pytest.approx(7.0, abs=0.05)  # the last frame fed


def test_vad_parameters_are_checked_at_load(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"pipelines": {"v": [{"vad": {"aggressiveness": 7}}]},
                                      "default_pipeline": "v"}))
    with pytest.raises(ConfigError, match=r"pipelines\.v\[0\]\.vad: aggressiveness must be "
                                          r"0, 1, 2 or 3, got 7"):
        load_settings(config)
    config.write_text(yaml.safe_dump({"pipelines": {"v": [{"vad": {"min_speech_ms": "x"}}]},
                                      "default_pipeline": "v"}))
    with pytest.raises(ConfigError, match=r"vad\.min_speech_ms: expected a whole number"):
        load_settings(config)


# -- barge-in ----------------------------------------------------------------------------------


class Prompt(Echo):
    """The echo, and a 5-second prompt played from the call's start."""

    name = "prompt"

    def start(self):
        self.playback = self.session.play(tone(RATE, 5.0, 1000, 0.2), label="five seconds")


def test_speech_over_a_prompt_clears_it_and_says_how_much_was_heard():
    caller, truth = compose(RATE, 0.9, PHRASE_A)  # speaks 1 s into the prompt
    events: list[Event] = []
    call = call_with([Prompt, Vad, BargeIn], [None, VadParams(), frozenset({"speech_started"})],
                     rate=RATE, publish=lambda info, event: events.append(event))
    run(call, caller)
    (barge,) = published(events, "barge_in")
    (onset,) = published(events, "speech_started")
    assert abs(onset.data["start"] - truth[0]) <= TOLERANCE
    assert barge.source == "barge-in" and barge.time == onset.time  # in the deciding frame
    assert barge.data["start"] == onset.data["start"] and barge.data["by"] == "speech_started"
    assert (barge.data["step"], barge.data["label"], barge.data["length"]) == (
        "prompt", "five seconds", 5.0)
    # Heard: everything sent up to the decision (the sender keeps no lead on a Clock).
    assert barge.data["heard"] == pytest.approx(barge.time, abs=0.021)
    assert 1.0 <= barge.data["heard"] <= 1.2
    assert call.texts() == [{"action": "clear"}]
    # The frame in progress went out before the clear (Vonage drops it); then the echo alone.
    clear_at = next(i for i, (_, item) in enumerate(call.wire.items) if isinstance(item, str))
    assert clear_at == round(barge.time / 0.02) + 1
    after = call.audio()[clear_at * N:]
    np.testing.assert_array_equal(after, caller[clear_at * N: clear_at * N + len(after)])


def test_no_barge_in_when_nothing_plays_and_other_triggers_on_request():
    caller, _ = compose(RATE, 0.5, PHRASE_B)
    events: list[Event] = []
    call = call_with([Echo, Vad, BargeIn], [None, VadParams(), frozenset({"speech_started"})],
                     rate=RATE, publish=lambda info, event: events.append(event))
    run(call, caller)
    assert published(events, "speech_started") and not published(events, "barge_in")
    assert call.texts() == []
    keyed = call_with([Prompt, BargeIn], [None, frozenset({"dtmf"})], rate=RATE,
                      publish=lambda info, event: events.append(event))
    keyed.frames(10)
    keyed.pipeline.receive_event("dtmf", {"digit": "1", "duration": 100})
    barge = published(events, "barge_in")[-1]
    assert barge.data["by"] == "dtmf" and barge.data["start"] is None
    assert barge.data["heard"] == pytest.approx(0.2)
    assert BargeIn.prepare(BargeInParams(), None) == {"speech_started"}
    with pytest.raises(ValueError, match="events"):
        BargeIn.prepare(BargeInParams(events=[]), None)


# -- file-inject on the bus --------------------------------------------------------------------


def inject(tmp_path, seconds: float, rate: int = RATE, **params) -> object:
    path = tmp_path / f"prompt-{seconds}.wav"
    write_wav(path, tone(rate, seconds, 660, 0.25), rate)
    return FileInject.prepare(FileInjectParams(path=str(path), **params),
                              PrepareContext(config_dir=tmp_path, key="k"))


@pytest.mark.parametrize("mode", ["replace", "mix"])
@pytest.mark.parametrize(("seconds", "loop"), [(0.51, False), (2.37, False), (1.3, True)])
def test_interruptible_file_inject_sounds_exactly_like_the_default(tmp_path, mode, seconds,
                                                                   loop):
    caller = np.random.default_rng(3).integers(-3000, 3000, 4 * RATE).astype(np.int16)
    calls = []
    for interruptible in (False, True):
        params = inject(tmp_path, seconds, mode=mode, loop=loop, interruptible=interruptible)
        call = call_with([Echo, FileInject], [None, params], rate=RATE)
        run(call, caller)
        calls.append(call)
    default, on_bus = calls
    np.testing.assert_array_equal(on_bus.audio(), default.audio())
    kinds = [[type(item).__name__ for _, item in call.wire.items] for call in calls]
    assert kinds[0] == kinds[1]  # the notify after the same frame
    assert on_bus.texts() == default.texts() == ([] if loop else [on_bus.texts()[0]])


def test_a_barge_in_stops_an_interruptible_file_even_a_looping_one(tmp_path):
    events: list[Event] = []
    params = inject(tmp_path, 1.3, mode="mix", loop=True, interruptible=True)
    call = call_with([Echo, FileInject, BargeIn], [None, params, frozenset({"dtmf"})],
                     rate=RATE, publish=lambda info, event: events.append(event))
    call.frames(150)  # 3 s: into its third round
    call.pipeline.receive_event("dtmf", {"digit": "5", "duration": 100})
    caller = np.random.default_rng(4).integers(-3000, 3000, 2 * RATE).astype(np.int16)
    run(call, caller)
    (barge,) = published(events, "barge_in")
    assert barge.data["label"].endswith("prompt-1.3.wav") and barge.data["step"] == "file-inject"
    assert barge.data["heard"] == pytest.approx(3.0, abs=0.021)
    np.testing.assert_array_equal(call.audio()[150 * N:], caller)  # the echo alone
    assert call.texts() == [{"action": "clear"}]


def test_stop_on_dtmf_still_stops_an_interruptible_file(tmp_path):
    params = inject(tmp_path, 2.0, interruptible=True, stop_on_dtmf=True)
    call = call_with([FileInject], [params], rate=RATE)
    call.frames(20)
    call.pipeline.receive_event("dtmf", {"digit": "#", "duration": 100})
    call.frames(20)
    audio = call.audio()
    assert np.abs(audio[: 20 * N]).max() > 5000 and not audio[20 * N:].any()
    clear, notify = call.texts()  # its notify, released by the clear: answered at once
    assert clear == {"action": "clear"} and notify["payload"]["event"] == "finished"


# -- text-to-speech config ---------------------------------------------------------------------


def write(tmp_path, **config) -> object:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"pipelines": {"echo": ["echo"]}, **config}))
    return path


def test_tts_config_names_the_engine_and_checks_it_only_when_used(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"tts\.engine: unknown engine 'polly' "
                                          r"\(known engines: espeak-ng\)"):
        load_settings(write(tmp_path, tts={"engine": "polly"}))
    with pytest.raises(ConfigError, match=r"tts\.options: max_processes must be"):
        load_settings(write(tmp_path, tts={"options": {"max_processes": 0}}))
    with pytest.raises(ConfigError, match=r"tts\.options\.speed: unknown key"):
        load_settings(write(tmp_path, tts={"options": {"speed": 100}}))
    say = {"greet": [{"say": {"text": "hello", "voice": "xx-nosuch"}}]}
    with pytest.raises(ConfigError, match=r"pipelines\.greet\[0\]\.say: espeak-ng has no voice"):
        load_settings(write(tmp_path, pipelines=say))
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng here
    missing = "install the Debian package espeak-ng"
    with pytest.raises(ConfigError, match=rf"config\.yaml: tts: espeak-ng not found: {missing}"):
        load_settings(write(tmp_path, tts={"voice": "en-us"}))
    greet = {"greet": [{"say": {"text": "hi"}}], "echo": ["echo"]}
    with pytest.raises(ConfigError, match=rf"pipelines\.greet\[0\]\.say: .*{missing}"):
        load_settings(write(tmp_path, pipelines=greet, default_pipeline="greet"))
    # Not where the daemon sends calls: left out, the daemon starts (tests/test_assistant.py).
    settings = load_settings(write(tmp_path, pipelines=greet))
    assert list(settings.pipelines) == ["echo"] and "espeak-ng" in settings.disabled["greet"]
    assert load_settings(write(tmp_path)).tts.name == "espeak-ng"  # unused: not checked


def test_a_plugin_engine_registers_like_a_processor(tmp_path):
    plugin = tmp_path / "twice.py"
    plugin.write_text(
        "import voicews\n"
        "class Again:\n"
        "    name = 'espeak-ng'\n"
        "    def check(self, voice=None, **options): pass\n"
        "    def synthesize(self, text, rate, voice=None, **options): pass\n"
        "@voicews.hookimpl\n"
        "def register_tts(register):\n"
        "    register(Again)\n")
    with pytest.raises(ConfigError, match=r"plugins: plugin file .*twice.py: text-to-speech "
                                          r"engine name 'espeak-ng' is already defined by "
                                          r"builtin plugin 'voicews.processors.espeak'"):
        load_settings(write(tmp_path, plugins=[str(plugin)]))


def test_the_runtime_owns_one_engine_kept_across_reloads_closed_at_stop(tmp_path):
    from twisted.internet.task import Clock

    pm = plugins.make_plugin_manager()
    settings = load_settings(write(tmp_path, tts={"voice": "en-us"}), pm)
    runtime = Runtime(settings, pm, Clock())
    engine = runtime.tts.engine
    assert runtime.call_services.tts is runtime.tts
    runtime.use(load_settings(write(tmp_path, tts={"voice": "en-us"}), pm), pm)
    assert runtime.tts.engine is engine  # same config: same engine, same cache
    runtime.use(load_settings(write(tmp_path, tts={"voice": "en-gb"}), pm), pm)
    assert runtime.tts.engine is not engine and runtime.call_services.tts is runtime.tts
    assert engine._closed  # no call was using the old one
    runtime.stop()
    assert runtime.tts._engine is None


# -- the docs' example -------------------------------------------------------------------------

DOC = REPO / "docs" / "voice-ai.md"


def doc_files() -> dict[str, str]:
    """The code blocks of docs/voice-ai.md that carry a file name (title="...")."""
    text = DOC.read_text(encoding="utf-8")
    return dict(re.findall(r'```\w+ title="([^"]+)"\n(.*?)```', text, re.S))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_the_docs_example_talks_listens_and_is_interrupted(tmp_path):
    files = doc_files()
    assert set(files) == {"config.yaml", "plugins/answer.py"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    settings = load_settings(tmp_path / "config.yaml")
    tts = ScriptedTts()
    events: list[Event] = []
    call = start(settings.pipelines["talk"], rate=RATE, tts=tts,
                 publish=lambda info, event: events.append(event))
    assert tts.asked[0][0] == "Hello. Say something, or interrupt me."
    tts.speak(0, 1000, 150)  # a 3-second greeting
    caller, truth = compose(RATE, 0.8, PHRASE_B, 1.5)
    run(call, caller)
    (barge,) = published(events, "barge_in")
    assert barge.data["label"] == tts.asked[0][0] and 0.8 < barge.data["heard"] < 1.2
    (stopped,) = published(events, "speech_stopped")
    assert tts.asked[1][0] == "You spoke for 1 seconds."  # PHRASE_B: 1.18 s
    assert stopped.data["end"] - stopped.data["start"] == pytest.approx(1.2, abs=0.3)
