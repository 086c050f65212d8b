"""config.yaml validation: each mistake stops the daemon with one line naming file, key, problem."""

from __future__ import annotations

import subprocess

import pytest

from voicews.config.settings import ConfigError, load_settings

from conftest import TWISTD, Daemon


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("listen: [1, 2", "YAML error (line 1, column 14)"),
        ("colour: blue\n", "colour: unknown key"),
        ("drain_timeout: soon\n", "drain_timeout: expected a number, got str 'soon'"),
        ("content_type: audio/pcmu\n", "content_type: expected one of audio/l16;rate=8000"),
        ("limits: {max_calls: many}\n", "limits.max_calls: expected a whole number"),
        ("security: {websocket_auth: maybe}\n", "security.websocket_auth: expected one of none"),
        ("pipelines: {a: [nope]}\ndefault_pipeline: a\n",
         "pipelines.a[0]: unknown processor 'nope' "
         "(known processors: barge-in, bridge, echo, file-inject, gain, record, say, "
         "transcribe, vad)"),
        ("pipelines: {a: [{gain: {db: loud}}]}\ndefault_pipeline: a\n",
         "pipelines.a[0].gain.db: expected a number, got str 'loud'"),
        ("pipelines: {a: [{gain: {volume: 3}}]}\ndefault_pipeline: a\n",
         "pipelines.a[0].gain.volume: unknown key (known keys: db)"),
        ("pipelines: {a: []}\ndefault_pipeline: a\n", "pipelines.a: a pipeline needs at least"),
        ("default_pipeline: missing\n", "default_pipeline: no pipeline named 'missing'"),
        ("numbers: {'4477': nowhere}\n", "numbers.4477: no pipeline named 'nowhere'"),
        ("security: {signature_secret: '${VOICEWS_TEST_UNSET_SECRET}'}\n",
         "security.signature_secret: environment variable VOICEWS_TEST_UNSET_SECRET is not set"),
        ("plugins: [no_such_module_xyz]\n", "plugins[0]: plugin 'no_such_module_xyz' failed"),
        ("plugins: [missing.py]\n", "plugins[0]: plugin 'missing.py': no such file"),
    ],
)
def test_config_errors_name_file_key_and_problem(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_env_expansion(tmp_path, monkeypatch):
    monkeypatch.setenv("VOICEWS_TEST_GREETING", "Hello caller")
    monkeypatch.delenv("VOICEWS_TEST_NOT_SET", raising=False)
    path = write(
        tmp_path,
        "greeting: '${VOICEWS_TEST_GREETING}'\n"
        "public_url: '${VOICEWS_TEST_NOT_SET:-}'\n"
        "security: {signature_secret: '${VOICEWS_TEST_NOT_SET:-fallback}'}\n",
    )
    settings = load_settings(path)
    assert settings.raw.greeting == "Hello caller"
    assert settings.raw.public_url is None
    assert settings.raw.security.signature_secret == "fallback"


def test_empty_file_gives_defaults(tmp_path):
    settings = load_settings(write(tmp_path, ""))
    assert settings.raw.listen == "tcp:8080:interface=127.0.0.1"
    assert list(settings.pipelines) == ["echo"]
    assert settings.rate == 16000


def test_numbers_pick_pipeline(tmp_path):
    path = write(
        tmp_path,
        "pipelines: {echo: [echo], loud: [echo, {gain: {db: 6}}]}\n"
        "numbers: {'+447700900001': loud}\n",
    )
    settings = load_settings(path)
    assert settings.pipeline_for_number("447700900001") == "loud"
    assert settings.pipeline_for_number("447700900002") == "echo"
    assert settings.pipeline_for_number(None) == "echo"


def run_twistd(config_path, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TWISTD, "-n", "--pidfile=", "voicews", "-c", str(config_path), "-l", "tcp:0"],
        cwd=cwd, capture_output=True, text=True, timeout=60,
        env=Daemon(cwd, "", listen="tcp:0").env,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "cannot read config file"),
        ("pipelines: {a: [{gain: {db: loud}}]}\ndefault_pipeline: a\n",
         "pipelines.a[0].gain.db: expected a number"),
        ("listen: [1, 2", "YAML error"),
    ],
)
def test_broken_config_stops_the_daemon(tmp_path, text, expected):
    path = tmp_path / "broken.yaml"
    if text is not None:
        path.write_text(text)
    result = run_twistd(path, tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"voicews: config error: {path}: ")
    assert expected in lines[0]
