"""The transcribe step's config: the engine is made only when a pipeline transcribes, config
mistakes name their key, and a reload keeps the engine unless its section changed (then the
old one is retired once its calls end).  The step's calls: test_transcribe.py."""

from __future__ import annotations

import pytest
from twisted.internet import task

from voicews.config import plugins
from voicews.config.settings import ConfigError, load_settings
from voicews.processors.transcribe import Prepared
from voicews.runtime import transcription
from voicews.runtime.calls import CallRecord
from voicews.runtime.state import Runtime

from conftest import REPO


def load(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_settings(path)


KEYPAD = f"plugins: [{REPO / 'plugins' / 'keypad_transcriber.py'}]\n"


def test_the_engine_is_made_only_when_a_pipeline_transcribes(tmp_path):
    settings = load(tmp_path, "pipelines: {echo: [echo]}\ntranscribe: {options: {workers: 3}}\n")
    assert settings.transcriber is None
    settings = load(tmp_path, "pipelines: {echo: [echo], t: [echo, transcribe]}\n")
    assert settings.transcriber.name == "pocketsphinx"
    assert settings.transcriber.engine.options.workers == 0  # the default: one per core
    settings = load(tmp_path, KEYPAD + "transcribe: {engine: keypad, options: {pause: 0.5}}\n"
                    "pipelines: {echo: [transcribe: {grammar: [one two, star]}]}\n")
    assert settings.transcriber.engine.options.pause == 0.5
    step = settings.pipelines["echo"].steps[0]
    assert step.params == Prepared(grammar=["one two", "star"], vad=False)


@pytest.mark.parametrize("text, expected", [
    ("transcribe: {engine: whisper}\n",
     "transcribe.engine: unknown engine 'whisper' (known engines: pocketsphinx)"),
    ("transcribe: {options: {workers: -1}}\n",
     "transcribe.options: pocketsphinx: workers out of range: -1"),
    ("transcribe: {options: {wokers: 2}}\n", "transcribe.options.wokers: unknown key"),
    ("pipelines: {echo: [transcribe: {grammar: [press zzqx]}]}\n",
     "pipelines.echo[0].transcribe: words not in pocketsphinx's dictionary: zzqx"),
    ("pipelines: {echo: [transcribe: {grammar: [a], keywords: [b]}]}\n",
     "pipelines.echo[0].transcribe: give a grammar or keywords, not both"),
    ("pipelines: {echo: [transcribe: {endpointing: sometimes}]}\n",
     "pipelines.echo[0].transcribe.endpointing: expected one of auto | engine | vad"),
    (KEYPAD + "transcribe: {engine: keypad}\npipelines: {echo: [transcribe: {keywords: [one]}]}\n",
     "pipelines.echo[0].transcribe: keypad: keywords are not supported, use a grammar"),
    (KEYPAD + "transcribe: {engine: keypad, options: {pause: 99}}\n",
     "transcribe.options: keypad: pause must be between 0.1 and 10 s, got 99"),
])
def test_config_errors_name_the_key(tmp_path, text, expected):
    if "pipelines" not in text:
        text += "pipelines: {echo: [echo]}\n"
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert expected in str(info.value)


def test_an_engine_that_is_not_one_is_refused_naming_the_plugin(tmp_path):
    plugin = tmp_path / "bad_engine.py"
    plugin.write_text("from voicews import hookimpl\n\nclass NotAnEngine:\n    name = 'x'\n\n"
                      "@hookimpl\ndef register_transcribers(register):\n"
                      "    register(NotAnEngine)\n")
    with pytest.raises(ConfigError, match="plugin '.*bad_engine.py' registered .*NotAnEngine.* "
                                          "as a speech recognizer: it needs check"):
        load(tmp_path, f"plugins: [{plugin}]\npipelines: {{echo: [echo]}}\n")


def test_a_reload_keeps_the_engine_unless_its_section_changed_then_retires_it_after_its_calls(
        tmp_path):
    clock = task.Clock()

    def settings(options: str, pipelines: str = "t: [transcribe]"):
        path = tmp_path / "config.yaml"
        path.write_text(KEYPAD + f"transcribe: {{engine: keypad, options: {{{options}}}}}\n"
                        f"pipelines: {{{pipelines}}}\ndefault_pipeline: t\n")
        pm = plugins.make_plugin_manager()
        return load_settings(path, pm), pm

    runtime = Runtime(*settings("pause: 1.0"), clock=clock)
    runtime.transcription.startService()
    first = runtime.call_services.transcriber
    assert first.ready and first.transcriber.running
    runtime.use(*settings("pause: 1.0"))
    assert runtime.call_services.transcriber is first
    live = CallRecord("peer", 0.0, end=lambda *a: None, abort=lambda: None)
    runtime.calls.add(live)
    runtime.use(*settings("pause: 0.5"))  # changed: new calls get a new engine
    second = runtime.call_services.transcriber
    assert second is not first and second.ready and second.transcriber.options.pause == 0.5
    clock.advance(5)
    assert first.running  # the call live at the reload may still use it
    runtime.calls.remove(live)
    clock.advance(transcription.RETIRE_CHECK_SECONDS)
    assert not first.running and not first.transcriber.running and second.running
    runtime.use(*settings("", pipelines="t: [echo]"))  # nothing transcribes any more
    assert runtime.call_services.transcriber is None
    clock.advance(transcription.RETIRE_CHECK_SECONDS)
    assert not second.running and not clock.getDelayedCalls()
    runtime.transcription.stopService()
