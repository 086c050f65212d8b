"""The `voicews` command against this checkout: check, processors, init, call, --help.

(test_packaging runs the same commands from a wheel in a fresh venv; these are the details.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from voicews import __version__
from voicews.app.cli import main
from voicews.app.tap import choose_config
from voicews.config.describe import describe, type_name
from voicews.config.sections import Limits
from voicews.examples import CONFIG
from voicews.processors.file_inject import FileInjectParams

from conftest import MISBEHAVE_PLUGIN, REPO

EXAMPLES = REPO / "voicews" / "examples"


def voicews(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the command in-process; (exit status, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's --help, --version and usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(autouse=True)
def recordings(monkeypatch, tmp_path):
    """The embedded default sets VOICEWS_RECORDINGS when unset; keep this process's env."""
    monkeypatch.setenv("VOICEWS_RECORDINGS", str(tmp_path / "recordings"))


def test_help_for_the_command_and_each_subcommand(capsys):
    code, out, _ = voicews(capsys, "--help")
    assert code == 0
    for command in ("check", "processors", "init", "call"):
        assert command in out
    for command, phrase in (("check", "exactly as twistd voicews would"),
                            ("processors", "entry-point group"),
                            ("init", "--plugin NAME"),
                            ("call", "Play the Vonage side of a call")):
        code, out, _ = voicews(capsys, command, "--help")
        assert code == 0 and phrase in " ".join(out.split()), (command, out)
    assert voicews(capsys, "call", "--help")[1].startswith("usage: voicews call ")


def test_version(capsys):
    assert voicews(capsys, "--version")[:2] == (0, f"voicews {__version__}\n")
    assert voicews(capsys, "call", "--version")[:2] == (0, f"voicews call {__version__}\n")


def test_no_command_is_a_usage_error(capsys):
    code, _, err = voicews(capsys)
    assert code == 2 and "required: COMMAND" in err


def test_the_command_starts_without_the_daemon_s_libraries():
    """--version and --help import only what `import voicews` does (fast start)."""
    code = (
        "import sys\n"
        "from voicews.app import cli\n"
        "heavy = ('twisted.internet.reactor', 'twisted.web', 'klein', 'autobahn', 'yaml',"
        " 'prometheus_client', 'websockets', 'soundfile', 'soxr', 'treq')\n"
        "cli.build_parser().format_help()\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert out.strip() == "[]"


# -- which config -----------------------------------------------------------------------


def test_the_config_is_c_then_the_working_directory_s_then_the_embedded_one(tmp_path):
    assert choose_config("other.yaml", tmp_path).path == Path("other.yaml")
    embedded = choose_config(None, tmp_path)
    assert embedded.embedded and embedded.path == CONFIG == EXAMPLES / "config.yaml"
    assert embedded.why == f"the embedded default: no -c and no config.yaml in {tmp_path}"
    (tmp_path / "config.yaml").write_text("{}")
    local = choose_config(None, tmp_path)
    assert local.path == Path("config.yaml") and not local.embedded


# -- check ------------------------------------------------------------------------------


def test_check_summarises_the_shipped_config(capsys):
    code, out, err = voicews(capsys, "check", str(REPO / "config.yaml"))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"config: {CONFIG} (-c)"
    assert "listen: tcp:8080:interface=127.0.0.1 (loopback only: 127.0.0.1)" in lines
    assert "  louder: echo -> gain {db: 6}" in lines
    assert "  mine: echo -> my-processor {level: 0}" in lines
    assert f"plugin: file {EXAMPLES / 'plugins' / 'bitcrush.py'}" in lines
    assert "  open: webhooks are not signed (security.signature_secret)" in lines
    assert not any("WARNING" in line for line in lines)  # loopback only
    assert lines[-1] == f"ok: {REPO / 'config.yaml'} is valid"


def test_check_warns_as_the_daemon_would_on_a_public_interface(capsys, tmp_path):
    path = write(tmp_path / "public.yaml", {"listen": "tcp:8080",
                                            "numbers": {"447700900000": "echo"}})
    code, out, _ = voicews(capsys, "check", str(path))
    assert code == 0
    assert "listen: tcp:8080 (PUBLIC: 0.0.0.0)" in out
    assert "  echo: echo  (numbers: 447700900000)" in out
    assert "  WARNING: listening on public interface 0.0.0.0 with no authentication" in out
    assert "security: 3 open without credentials" in out


def test_check_with_every_door_locked(capsys, tmp_path):
    path = write(tmp_path / "locked.yaml", {
        "listen": "tcp:8443:interface=0.0.0.0",
        "security": {"signature_secret": "s" * 32, "websocket_auth": "vonage",
                     "metrics_token": "m"},
    })
    code, out, _ = voicews(capsys, "check", str(path))
    assert code == 0
    assert "security: every door needs credentials" in out and "WARNING" not in out


@pytest.mark.parametrize(("config", "expected"), [
    ({"pipelines": {"echo": ["echo", "reverb"]}},
     "pipelines.echo[1]: unknown processor 'reverb' (known processors: barge-in, bridge, "
     "echo, file-inject, gain, record, say, transcribe, vad)"),
    ({"listen": "tcp:notaport"}, "voicews: cannot listen on 'tcp:notaport': ValueError"),
    ({"plugins": ["nowhere.py"]}, "plugins[0]: plugin 'nowhere.py': no such file"),
])
def test_check_refuses_with_exit_2_and_one_line(capsys, tmp_path, config, expected):
    path = write(tmp_path / "bad.yaml", config)
    code, out, err = voicews(capsys, "check", str(path))
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and expected in err, err


def test_check_of_a_file_that_does_not_exist(capsys, tmp_path):
    code, _, err = voicews(capsys, "check", str(tmp_path / "missing.yaml"))
    assert code == 2
    assert err == f"voicews: config error: {tmp_path / 'missing.yaml'}: cannot read config " \
        "file: No such file or directory\n"


# -- processors -------------------------------------------------------------------------


def test_processors_lists_builtins_with_their_parameters(capsys):
    code, out, _ = voicews(capsys, "processors", "--json")
    assert code == 0
    listed = {p["name"]: p for p in json.loads(out)}
    assert list(listed) == ["echo", "gain", "file-inject", "record", "bridge", "transcribe",
                            "vad", "barge-in", "say"]
    assert listed["echo"]["params"] == [] and listed["echo"]["origin"] == "builtin"
    assert listed["gain"]["plugin"] == "voicews.processors.gain"
    path, mode = listed["file-inject"]["params"][:2]
    assert path == {"name": "path", "type": "str", "default": None, "required": True,
                    "doc": "The audio file; a relative path is relative to config.yaml's "
                           "folder."}
    assert mode["type"] == "replace | mix" and mode["default"] == "replace"
    assert listed["file-inject"]["summary"].startswith("file-inject: play an audio file")


def test_processors_with_a_config_adds_its_file_plugins(capsys):
    code, out, _ = voicews(capsys, "processors", "--config", str(REPO / "config.yaml"))
    assert code == 0
    assert f"bitcrush  [file {EXAMPLES / 'plugins' / 'bitcrush.py'}]" in out
    assert "    bits: int  (default 6)\n" \
        "        How many of the 16 bits to keep (1-16); fewer is crunchier.\n" in out
    assert "my-processor  [file " in out and "echo  [builtin (voicews.processors.echo)]" in out
    assert "    (no parameters)" in out


def test_processors_with_a_broken_config_is_a_config_error(capsys, tmp_path):
    path = write(tmp_path / "c.yaml", {"plugins": [MISBEHAVE_PLUGIN, MISBEHAVE_PLUGIN + "x"]})
    code, _, err = voicews(capsys, "processors", "--config", str(path))
    assert code == 2 and "plugins[1]" in err and "no such file" in err


def test_describe_reads_field_docstrings_from_the_source():
    fields = {f.name: f for f in describe(Limits)}
    assert fields["close_timeout"].doc.startswith("Seconds a call's steps get to finish closing")
    assert fields["max_calls"].type == "int" and fields["max_calls"].default == "1000"
    assert type_name(typing.get_type_hints(FileInjectParams)["mode"]) == "replace | mix"
    assert type_name(str | None) == "str | null"
    assert type_name(dict[str, list[typing.Any]]) == "mapping[str, list[any]]"
    (path,) = [f for f in describe(FileInjectParams) if f.name == "path"]
    assert path.default is None and path.type == "str"


# -- init -------------------------------------------------------------------------------


def test_init_copies_the_embedded_starter(capsys, tmp_path):
    code, out, _ = voicews(capsys, "init", str(tmp_path / "demo"))
    assert code == 0
    written = sorted(p.relative_to(tmp_path / "demo").as_posix()
                     for p in (tmp_path / "demo").rglob("*") if p.is_file())
    assert written == ["config.yaml", "plugins/assistant.py", "plugins/bitcrush.py",
                       "plugins/http_tts.py",
                       "plugins/keypad.py", "plugins/keypad_transcriber.py",
                       "plugins/my_processor.py", "plugins/utterances.py", "prompts/chime.wav"]
    for name in written:
        assert (tmp_path / "demo" / name).read_bytes() == (EXAMPLES / name).read_bytes()
    assert f"next: cd {tmp_path / 'demo'} && twistd -n voicews" in out


def test_init_overwrites_nothing_unless_forced(capsys, tmp_path):
    (tmp_path / "config.yaml").write_text("mine: true\n")
    code, _, err = voicews(capsys, "init", str(tmp_path))
    assert code == 1 and f"{tmp_path / 'config.yaml'} already exists" in err
    assert not (tmp_path / "plugins").exists()  # nothing written
    assert voicews(capsys, "init", str(tmp_path), "--force")[0] == 0
    assert (tmp_path / "config.yaml").read_bytes() == CONFIG.read_bytes()


def test_init_plugin_names_everything_after_the_processor(capsys, tmp_path):
    code, out, _ = voicews(capsys, "init", "--plugin", "noise-gate", str(tmp_path / "pkg"))
    assert code == 0
    source = (tmp_path / "pkg" / "src" / "voicews_noise_gate" / "__init__.py").read_text()
    assert 'name = "noise-gate"' in source and "class NoiseGate(Processor)" in source
    assert "class NoiseGateParams" in source
    assert not any(old in source for old in ("my-processor", "MyP", "my_processor"))
    pyproject = (tmp_path / "pkg" / "pyproject.toml").read_text()
    assert 'name = "voicews-noise-gate"' in pyproject
    assert '[project.entry-points.voicews]\nnoise-gate = "voicews_noise_gate"' in pyproject
    assert (tmp_path / "pkg" / "tests" / "test_noise_gate.py").is_file()
    code, _, err = voicews(capsys, "init", "--plugin", "Noise_Gate")
    assert code == 1 and "is not a plugin name" in err


# -- the daemon's choice ----------------------------------------------------------------


def test_c_wins_over_the_working_directory_s_config_and_the_first_line_says_so(tmp_path):
    from conftest import Daemon

    (tmp_path / "chosen.yaml").write_text(yaml.safe_dump(
        {"pipelines": {"chosen": ["echo"]}, "default_pipeline": "chosen"}))
    daemon = Daemon(tmp_path, {"pipelines": {"decoy": ["echo"]}, "default_pipeline": "decoy"})
    daemon.config_path = Path("chosen.yaml")  # relative to the working directory, as typed
    daemon.start()
    try:
        first = daemon.log().splitlines()[0]
        assert first.endswith(f"[voicews.tap#info] voicews {__version__} using config "
                              f"{tmp_path / 'chosen.yaml'} (-c)")
        daemon.wait_log("with pipelines chosen\n")
    finally:
        assert daemon.stop() == 0
