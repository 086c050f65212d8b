"""Custom processor plugins through a real twistd: loaded from config and run; mistakes stop
the daemon at start with one line naming the plugin; a processor that raises ends only its
own call."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from audio_checks import band_level, peak_frequency, tone
from conftest import INVERT_PLUGIN, REPO, base_config
from wire import Call

INVERT = Path(INVERT_PLUGIN).read_text()
"""tests/plugins/invert.py: ``invert`` negates the audio it passes."""

BOOM = '''
from voicews import Processor, hookimpl

class Boom(Processor):
    name = "boom"

    def __init__(self, session, params):
        super().__init__(session, params)
        self.frames = 0

    def process(self, inbound, outbound):
        self.frames += 1
        if self.frames == 5:
            raise RuntimeError("boom on frame 5")
        return outbound

@hookimpl
def register_processors(register):
    register(Boom)
'''


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_a_plugin_listed_in_config_is_loaded_and_runs(start_daemon, tmp_path):
    plugin = write(tmp_path / "invert.py", INVERT)
    d = start_daemon(base_config(
        plugins=[plugin, str(REPO / "plugins" / "bitcrush.py")],
        pipelines={"echo": ["echo"], "inverted": ["echo", "invert"],
                   "robot": ["echo", {"bitcrush": {"bits": 4}}]},
    ))
    voice = tone(440, 0.2, 16000)
    with Call(d.ws, pipeline="inverted") as call:
        np.testing.assert_array_equal(call.exchange(voice), -voice)
    with Call(d.ws, pipeline="robot") as call:
        got = call.exchange(voice)
    np.testing.assert_array_equal(got, voice & np.int16(-4096))  # the low 12 bits cleared


def test_the_keypad_example_plays_the_key_tone_and_notifies(start_daemon):
    d = start_daemon(base_config(
        plugins=[str(REPO / "plugins" / "keypad.py")],
        pipelines={"echo": ["echo"], "keypad": ["echo", {"keypad-tones": {"seconds": 0.2}}]},
    ))
    with Call(d.ws, pipeline="keypad", uuid="k") as call:
        call.exchange(np.zeros(320 * 3, "<i2"))
        call.dtmf("5")
        got = call.exchange(np.zeros(320 * 15, "<i2"))
        tone_part = got[: int(0.2 * 16000)]
        assert band_level(tone_part, 16000, 770) + band_level(tone_part, 16000, 1336) > 0.95
        assert not np.any(got[int(0.2 * 16000) :])
        note = [m for m in call.texts() if m.get("action") == "notify"]
        assert note == [{"action": "notify", "payload": {"processor": "keypad-tones",
                                                         "digit": "5"}}]
        call.send_event({"event": "websocket:notify", "payload": note[0]["payload"]})
        call.exchange(np.zeros(320, "<i2"))
    d.wait_log("caller heard key 5 uuid=k")


def test_a_raising_processor_closes_only_its_own_call(start_daemon, tmp_path):
    plugin = write(tmp_path / "boom.py", BOOM)
    d = start_daemon(base_config(
        plugins=[plugin], pipelines={"echo": ["echo"], "fragile": ["echo", "boom"]},
    ))
    voice = tone(440, 1.0, 16000)
    with Call(d.ws, pipeline="fragile", uuid="bad") as bad, \
            Call(d.ws, pipeline="echo", uuid="good") as good:
        np.testing.assert_array_equal(bad.exchange(voice[: 4 * 320]), voice[: 4 * 320])
        np.testing.assert_array_equal(good.exchange(voice[:3200]), voice[:3200])
        bad.send_audio(voice[4 * 320 : 5 * 320])
        assert bad.wait_closed()[0] == 1011
        np.testing.assert_array_equal(good.exchange(voice[3200:]), voice[3200:])
    log = d.wait_log("call ended uuid=bad")
    assert log.count("RuntimeError: boom on frame 5") == 1
    assert log.count("Traceback (most recent call last)") == 1
    assert log.count("step boom of pipeline fragile raised during frame uuid=bad") == 1
    assert "[voicews.pipeline#error] step boom of pipeline fragile raised" in log
    assert "closing call uuid=bad" not in log  # no second line for the same failure
    assert "code=1011" in log.split("call ended uuid=bad", 1)[1].splitlines()[0]
    assert d.get_json("/health")["status"] == "ok"


DUPLICATE = '''
from voicews import Processor, hookimpl

class MyEcho(Processor):
    name = "echo"

@hookimpl
def register_processors(register):
    register(MyEcho)
'''

TWICE = '''
from voicews import Processor, hookimpl

class A(Processor):
    name = "same"

class B(Processor):
    name = "same"

@hookimpl
def register_processors(register):
    register(A)
    register(B)
'''

BAD_SIGNATURE = '''
from voicews import hookimpl

@hookimpl
def register_processors(register, extra):
    pass
'''

UNKNOWN_HOOK = '''
from voicews import hookimpl

@hookimpl
def register_processor(register):
    pass
'''

NOT_A_PROCESSOR = '''
from voicews import hookimpl

@hookimpl
def register_processors(register):
    register(object)
'''


@pytest.mark.parametrize(
    "source, problem",
    [
        ("import voicews_no_such_module\n",
         "failed to import: ModuleNotFoundError: No module named 'voicews_no_such_module'"),
        ("def broken(:\n", "failed to import: SyntaxError"),
        ("raise RuntimeError('plugin is unhappy')\n",
         "failed to import: RuntimeError: plugin is unhappy"),
        (DUPLICATE,
         "processor name 'echo' is already defined by builtin plugin 'voicews.processors.echo'"),
        (TWICE, "processor name 'same' defined twice"),
        (BAD_SIGNATURE, "Argument(s) {'extra'} are declared in the hookimpl but can not be found"),
        (UNKNOWN_HOOK, "unknown hook 'register_processor'"),
        (NOT_A_PROCESSOR, "registered <class 'object'>, which is not a Processor"),
    ],
    ids=["import", "syntax", "raises", "duplicate", "twice", "signature", "unknown-hook",
         "not-a-processor"],
)
def test_plugin_mistakes_stop_the_daemon_with_one_line_naming_the_plugin(
    start_daemon, tmp_path, source, problem
):
    plugin = write(tmp_path / "myplugin.py", source)
    d = start_daemon(base_config(plugins=[plugin]), wait=False)
    assert d.proc.wait(30) == 2
    lines = [line for line in d.log().splitlines() if line.strip()]
    assert len(lines) == 1, d.log()
    assert lines[0].startswith("voicews: config error: ")
    assert "myplugin.py" in lines[0] and problem in lines[0], lines[0]


def test_a_missing_plugin_module_is_a_config_error(start_daemon):
    d = start_daemon(base_config(plugins=["voicews_missing_plugin"]), wait=False)
    assert d.proc.wait(30) == 2
    assert d.log().strip().endswith(
        "plugins[0]: plugin 'voicews_missing_plugin' failed to import: ModuleNotFoundError: "
        "No module named 'voicews_missing_plugin'"
    )


def test_the_file_inject_prompt_shipped_with_the_repo_plays(start_daemon):
    d = start_daemon(base_config(pipelines={
        "echo": ["echo"],
        "chime": [{"file-inject": {"path": str(REPO / "prompts" / "chime.wav")}}],
    }))
    with Call(d.ws, rate=8000, pipeline="chime") as call:
        got = call.exchange(np.zeros(8000, "<i2"))
    assert abs(peak_frequency(got[:1600], 8000) - 1318.5) < 10


def fake_distribution(site, module_source):
    """An installed package that declares a `voicews` entry point, as pip would leave it."""
    info = site / "voicews_ep_demo-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: voicews-ep-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[voicews]\ndemo = voicews_ep_demo\n")
    write(site / "voicews_ep_demo.py", module_source)
    return {"PYTHONPATH": f"{REPO}:{site}"}


def test_an_installed_package_registers_through_the_entry_point_group(start_daemon, tmp_path):
    env = fake_distribution(tmp_path / "site", INVERT)
    d = start_daemon(base_config(pipelines={"echo": ["echo"], "inv": ["echo", "invert"]}),
                     env=env)
    voice = tone(440, 0.1, 16000)
    with Call(d.ws, pipeline="inv") as call:
        np.testing.assert_array_equal(call.exchange(voice), -voice)


def test_a_broken_entry_point_plugin_is_named_in_the_config_error(start_daemon, tmp_path):
    env = fake_distribution(tmp_path / "site", "import voicews_no_such_dependency\n")
    d = start_daemon(base_config(), env=env, wait=False)
    assert d.proc.wait(30) == 2
    lines = [line for line in d.log().splitlines() if line.strip()]
    assert lines == [
        "voicews: config error: entry-point plugin 'demo' (voicews_ep_demo) failed to import: "
        "ModuleNotFoundError: No module named 'voicews_no_such_dependency'"
    ]


FAILS_AT_START = '''
from voicews import Processor, hookimpl

class FailsAtStart(Processor):
    name = "fails-at-start"

    def __init__(self, session, params):
        raise ValueError("cannot start")

@hookimpl
def register_processors(register):
    register(FailsAtStart)
'''


def test_a_processor_failing_at_call_start_closes_the_steps_already_made(start_daemon, tmp_path):
    plugin = write(tmp_path / "fails.py", FAILS_AT_START)
    d = start_daemon(base_config(plugins=[plugin], pipelines={
        "echo": ["echo"],
        "broken": [{"record": {"path": str(tmp_path / "{uuid}.wav")}}, "fails-at-start"],
    }))
    with Call(d.ws, pipeline="broken", uuid="early") as call:
        assert call.wait_closed()[0] == 1011
    log = d.wait_log("recording finished uuid=early")
    assert log.count("ValueError: cannot start") == 1
    assert "step fails-at-start of pipeline broken raised during start uuid=early" in log
