"""The config.yaml shipped in the repository runs as shipped, from the repository root, and
every pipeline in it serves a call.

It is the package's embedded default (voicews/examples/config.yaml); the root's config.yaml,
prompts/ and plugins/ are links to it and its folders, so the README's quick start
`twistd -n voicews -c config.yaml` from a clone runs the very same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from test_assistant import GREETING
from test_record import wait_wav

from voicews.simulator import simulate_socket

from audio_checks import band_level, needs_espeak, spoken, tone
from conftest import REPO, Daemon
from wire import Call

SHIPPED = yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shipped")
    daemon = Daemon(tmp, "", env={"VOICEWS_RECORDINGS": str(tmp / "recordings")})
    # `twistd -n voicews -c config.yaml` in the repository root, as the README says.
    daemon.workdir, daemon.config_path = REPO, Path("config.yaml")
    daemon.start()
    daemon.recordings = tmp / "recordings"
    yield daemon
    assert daemon.stop() == 0


def test_the_root_files_are_links_to_the_one_copy_in_the_package():
    examples = REPO / "voicews" / "examples"
    for name in ("config.yaml", "prompts", "plugins"):
        assert (REPO / name).is_symlink(), name
        assert (REPO / name).resolve() == examples / name


def test_shipped_config_lists_the_example_plugins():
    assert SHIPPED["plugins"] == [
        "plugins/bitcrush.py", "plugins/keypad.py", "plugins/my_processor.py",
        "plugins/assistant.py",
    ]
    steps = [step for steps in SHIPPED["pipelines"].values() for step in steps]
    names = {step if isinstance(step, str) else next(iter(step)) for step in steps}
    assert {"echo", "gain", "file-inject", "record", "bitcrush", "keypad-tones",
            "my-processor", "vad", "barge-in", "transcribe", "assistant"} <= names


@pytest.mark.parametrize("pipeline", sorted(set(SHIPPED["pipelines"]) - {"assistant"}))
def test_every_shipped_pipeline_serves_a_call(shipped, pipeline):
    voice = tone(440, 1.0, 16000, amplitude=3000)
    with Call(shipped.ws, pipeline=pipeline, uuid=f"shipped-{pipeline}") as call:
        got = call.exchange(voice)
        if pipeline == "keypad":
            call.dtmf("1")
            keyed = call.exchange(voice[:3200])
            assert band_level(keyed, 16000, 697) > 0.1 and band_level(keyed, 16000, 1209) > 0.1
        if pipeline == "hold":
            call.dtmf("9")
            assert call.wait_text() == {"action": "clear"}
            np.testing.assert_array_equal(call.exchange(voice[:3200]), voice[:3200])
    assert len(got) == len(voice)
    assert band_level(got, 16000, 440) > 0.2, "the caller hears themself in every pipeline"
    if pipeline in ("welcome", "hold"):
        assert band_level(got[:8000], 16000, 1318.5) > 0.05  # and the chime
    if pipeline in ("echo", "mine"):
        np.testing.assert_array_equal(got, voice)
    if pipeline == "mine":
        shipped.wait_log("my-processor: call ended uuid=shipped-mine after 50 frames")
    if pipeline == "welcome":
        assert [m["action"] for m in call.texts()] == ["notify"]
    if pipeline == "recorded":
        shipped.wait_log("recording finished uuid=shipped-recorded")
        (path,) = shipped.recordings.glob("*-shipped-recorded.wav")
        _, data = wait_wav(path, len(voice))
        np.testing.assert_array_equal(data[:, 0], voice)
        np.testing.assert_array_equal(data[:, 1], got)
        assert sf.info(str(path)).channels == 2


@needs_espeak
def test_the_shipped_assistant_greets_the_caller_and_does_not_echo(shipped):
    """The voice bot (tests/test_assistant.py has its conversation): a steady tone is no
    speech, so the caller hears the greeting alone, then Vonage is asked to say it played."""
    result = simulate_socket(shipped.ws, headers={"pipeline": "assistant",
                                                  "uuid": "shipped-assistant"},
                             play=tone(440, 4.5, 16000, amplitude=3000))
    assert result.ok, result.summary()
    assert result.commands == [{"action": "notify", "payload": {"say": 1}}]
    greeting = spoken(GREETING)  # "Hello! Do you need billing, sales or support?"
    assert 2.0 < len(greeting) / 16000 < 4.0
    assert np.array_equal(result.received[:len(greeting)], greeting)  # it, and no tone
    assert not result.received[len(greeting):].any()
    shipped.wait_log("call ended uuid=shipped-assistant")
    assert "transcriber_error" not in shipped.log() and "could not say" not in shipped.log()
