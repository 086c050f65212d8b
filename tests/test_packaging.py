"""The wheel runs anywhere: built once, installed (not editable) into one fresh venv, and used
from empty folders exactly as a user would, with no source tree on the path.

One wheel build and one venv for the whole module (the venv's install is most of its time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from voicews.audio.files import read_wav, write_wav

from conftest import REPO, Daemon


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(dist), str(REPO)],
        check=True, capture_output=True, cwd=dist,
    )
    (built,) = dist.glob("voicews-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed the way a user installs it."""
    path = tmp_path_factory.mktemp("venv")
    venv.create(path, with_pip=True)
    subprocess.run([path / "bin" / "pip", "install", "-q", str(wheel)],
                   check=True, capture_output=True, cwd=path)
    return path


@pytest.fixture
def empty(tmp_path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def user_env(fresh: Path, home: Path) -> dict[str, str]:
    """A user's shell: the venv's bin on PATH, no PYTHONPATH (so no source tree)."""
    return {"PATH": f"{fresh / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def run(fresh: Path, cwd: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, cwd=cwd,
                          env=user_env(fresh, cwd), timeout=120)


class InstalledDaemon(Daemon):
    """`twistd -n voicews` from the fresh venv in `cwd`, with no -c: the config it picks is
    the one the folder has, or the embedded default."""

    def __init__(self, fresh: Path, cwd: Path, logs: Path) -> None:
        logs.mkdir(exist_ok=True)
        super().__init__(logs, "")  # (writes an unused logs/config.yaml)
        self.fresh, self.workdir = fresh, cwd
        self.env = user_env(fresh, cwd)

    def command(self) -> list[str]:
        return [str(self.fresh / "bin" / "twistd"), "-n", "--pidfile=", "voicews",
                "--listen", self.listen]


def noise_wav(path: Path, seconds: float = 1.0) -> np.ndarray:
    samples = np.random.default_rng(7).integers(-8000, 8000, int(16000 * seconds), np.int16)
    write_wav(path, samples, 16000)
    return samples


def call(fresh: Path, cwd: Path, url: str, *options: str) -> np.ndarray:
    """One `voicews-call` from the venv: play 1 s of noise, return what came back."""
    played = noise_wav(cwd / "played.wav")
    result = run(fresh, cwd, str(fresh / "bin" / "voicews-call"), url, "--play", "played.wav",
                 "--record", "heard.wav", "--seconds", "1", "--fast", *options)
    assert result.returncode == 0, result.stdout + result.stderr
    heard, rate = read_wav(cwd / "heard.wav")
    assert rate == 16000
    assert np.array_equal(heard, played), "the echo comes back bit-exact"
    return heard


def test_wheel_carries_the_twistd_plugin_the_commands_and_the_examples(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/voicews_plugin.py" in names
    assert "twisted/plugins/__init__.py" not in names
    assert "twisted/__init__.py" not in names
    for shipped in ("config.yaml", "prompts/chime.wav", "plugins/bitcrush.py",
                    "plugins/keypad.py", "plugins/my_processor.py",
                    "plugin-package/pyproject.toml.tmpl"):
        assert f"voicews/examples/{shipped}" in names
    # The transcription worker: a folder the daemon runs as `python -P <folder>`.
    for module in ("__init__", "__main__", "wire", "models", "stream", "worker"):
        assert f"voicews/engines/sphinxworker/{module}.py" in names
    console = REPO / "voicews" / "web" / "console"  # the web console's page, every file
    for page_file in console.iterdir():
        assert f"voicews/web/console/{page_file.name}" in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "voicews = voicews.app.cli:main" in scripts
    assert "voicews-call = voicews.simulator.cli:main" in scripts


def test_twistd_finds_the_plugin(fresh, empty):
    listing = run(fresh, empty, str(fresh / "bin" / "twistd"), "--help")
    assert "voicews" in listing.stdout, listing.stdout + listing.stderr
    options = run(fresh, empty, str(fresh / "bin" / "twistd"), "voicews", "--help")
    assert "--config=" in options.stdout and "--listen=" in options.stdout


def test_in_an_empty_folder_twistd_serves_the_embedded_default(fresh, empty, tmp_path):
    checked = run(fresh, empty, "voicews", "check")
    assert checked.returncode == 0, checked.stderr
    assert "listen: tcp:8080:interface=127.0.0.1 (loopback only: 127.0.0.1)" in checked.stdout
    daemon = InstalledDaemon(fresh, empty, tmp_path / "logs").start()
    try:
        first = daemon.log().splitlines()[0]
        assert "using config " in first and "/site-packages/voicews/examples/config.yaml" in first
        assert f"(the embedded default: no -c and no config.yaml in {empty})" in first
        call(fresh, empty, daemon.base + "/webhooks/answer")  # the default pipeline: echo
        daemon.wait_log("call ended uuid=")
    finally:
        assert daemon.stop() == 0
    assert sorted(p.name for p in empty.iterdir()) == ["heard.wav", "played.wav"]


def test_init_makes_a_folder_the_daemon_serves_with_the_skeleton_plugin(fresh, empty, tmp_path):
    made = run(fresh, empty, "voicews", "init", "demo")
    assert made.returncode == 0, made.stderr
    demo = empty / "demo"
    config = yaml.safe_load((demo / "config.yaml").read_text())
    assert "plugins/my_processor.py" in config["plugins"]
    assert {"my-processor": {"level": 0}} in config["pipelines"]["mine"]
    daemon = InstalledDaemon(fresh, demo, tmp_path / "logs").start()
    try:
        assert "(config.yaml in the working directory)" in daemon.log().splitlines()[0]
        call(fresh, demo, daemon.ws, "--header", "pipeline=mine")
        log = daemon.wait_log("my-processor: call ended uuid=")
        assert "my-processor: call started uuid=" in log
        assert "after 50 frames" in log
    finally:
        assert daemon.stop() == 0
    again = run(fresh, empty, "voicews", "init", "demo")
    assert again.returncode == 1 and "already exist" in again.stderr


def test_check_names_the_file_and_key_of_a_broken_config(fresh, empty):
    (empty / "config.yaml").write_text("limits:\n  max_calls: lots\n")
    result = run(fresh, empty, "voicews", "check")
    assert result.returncode == 2
    assert result.stderr == ("voicews: config error: config.yaml: limits.max_calls: expected a "
                             "whole number, got str 'lots'\n")
    missing = run(fresh, empty, "voicews", "check", "nowhere.yaml")
    assert missing.returncode == 2 and "nowhere.yaml: cannot read config file" in missing.stderr


def test_processors_lists_the_builtins_and_an_installed_plugin_package(fresh, empty):
    made = run(fresh, empty, "voicews", "init", "--plugin", "quieter")
    assert made.returncode == 0, made.stderr
    package = empty / "voicews-quieter"
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=package,
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    # The generated tests pass (run here, against this checkout's voicews).
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=package,
        capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(package / "src"), str(REPO)])},
    )
    assert tests.returncode == 0 and "4 passed" in tests.stdout, tests.stdout + tests.stderr

    before = json.loads(run(fresh, empty, "voicews", "processors", "--json").stdout)
    assert [p["name"] for p in before] == ["echo", "gain", "file-inject", "record", "bridge",
                                           "transcribe", "vad", "barge-in", "say"]
    assert {p["origin"] for p in before} == {"builtin"}
    installed = run(fresh, empty, str(fresh / "bin" / "pip"), "install", "-q", "-e", str(package))
    assert installed.returncode == 0, installed.stderr
    listed = json.loads(run(fresh, empty, "voicews", "processors", "--json").stdout)
    (quieter,) = [p for p in listed if p["name"] == "quieter"]
    assert quieter["origin"] == ("entry point quieter = voicews_quieter "
                                 "(package voicews-quieter 0.1.0)")
    assert quieter["params"] == [{
        "name": "level", "type": "float", "default": "0", "required": False,
        "doc": "Level change in dB applied to what earlier steps produced; 0 passes it "
               "unchanged.",
    }]
    # ... and a config may use it with no `plugins:` entry.
    (empty / "config.yaml").write_text("pipelines:\n  echo: [echo, {quieter: {level: -6}}]\n")
    checked = run(fresh, empty, "voicews", "check")
    assert checked.returncode == 0, checked.stderr
    assert "  echo: echo -> quieter {level: -6}" in checked.stdout
