"""Shared fixtures: a real `twistd voicews` process on a loopback port.

`Daemon` writes a config.yaml into a temporary folder, starts the installed
`twistd` on a free 127.0.0.1 port, waits for /health and stops the process it
started (by its PID) at the end.  Its log is kept for assertions.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

TWISTD = str(Path(sys.executable).with_name("twistd"))
REPO = Path(__file__).resolve().parent.parent
MISBEHAVE_PLUGIN = str(REPO / "tests" / "plugins" / "misbehave.py")
"""Processors that raise, block, shrink or flood their output, for the bad-input tests."""
INVERT_PLUGIN = str(REPO / "tests" / "plugins" / "invert.py")
"""A plugin's ``invert`` step (negates the audio), for the plugin-loading tests."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """One twistd voicews process under test."""

    def __init__(self, workdir: Path, config: dict | str, env: dict | None = None,
                 args: list[str] | None = None, listen: str | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.config_path = workdir / "config.yaml"
        if isinstance(config, dict):
            self.config_path.write_text(yaml.safe_dump(config))
        else:
            self.config_path.write_text(config)
        self.log_path = workdir / f"twistd-{self.port}.log"
        # The source tree first, so a developer's edits run without a reinstall; CI installs
        # the package non-editably, and test_packaging checks the installed plugin alone.
        pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        self.env = {**os.environ, "PYTHONPATH": pythonpath, **(env or {})}
        # `listen` may hold "{port}", replaced by the free port this daemon got.
        self.listen = (listen or "tcp:{port}:interface=127.0.0.1").format(port=self.port)
        self.tls = self.listen.startswith("ssl:")
        self.args = args or []
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}/socket"

    def command(self) -> list[str]:
        return [TWISTD, "-n", "--pidfile=", "voicews", "-c", str(self.config_path),
                "--listen", self.listen, *self.args]

    def start(self, wait: bool = True) -> Daemon:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.command(), cwd=self.workdir, env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"twistd exited {self.proc.returncode}:\n{self.log()}")
            try:
                return self.get_json("/health")
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        raise AssertionError(f"twistd did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in log:\n{self.log()}")

    def request(self, path: str, data: bytes | None = None, headers: dict | None = None,
                method: str | None = None) -> tuple[int, dict, bytes]:
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {},
                                     method=method)
        context = ssl._create_unverified_context() if self.tls else None  # our self-signed cert
        try:
            with urllib.request.urlopen(req, timeout=10, context=context) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def get_json(self, path: str):
        status, _, body = self.request(path)
        assert status == 200, (status, body)
        return json.loads(body)

    def metric(self, name: str, labels: str = "") -> float:
        """A sample from /metrics, e.g. metric("voicews_active_calls")."""
        _, _, body = self.request("/metrics")
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in body.decode().splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        raise AssertionError(f"{wanted} not in /metrics")

    def metric_or_zero(self, name: str, labels: str = "") -> float:
        """`metric`, with 0 for a labelled sample that has not been created yet."""
        try:
            return self.metric(name, labels)
        except AssertionError:
            return 0.0

    def wait_metric(self, name: str, value: float, labels: str = "",
                    timeout: float = 10.0) -> float:
        """Wait until a /metrics sample equals `value` (calls end asynchronously); return it."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.metric(name, labels)
            if got == value or time.monotonic() > deadline:
                assert got == value, f"{name}{{{labels}}} = {got}, expected {value}"
                return got
            time.sleep(0.05)

    def rss_kb(self) -> int:
        """The daemon's resident memory now, from /proc (Linux)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def wait_for(predicate, what: str = "condition", timeout: float = 10.0, every: float = 0.05):
    """Call `predicate` every `every` seconds until it returns something true; return that.

    For what a test watches from outside a daemon (its API, a bot, a browser page);
    fails the test, naming `what`, after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def base_config(**overrides) -> dict:
    """A small config for tests: echo and louder pipelines, output never held back."""
    config = {
        "pipelines": {"echo": ["echo"], "louder": ["echo", {"gain": {"db": 6}}]},
        "default_pipeline": "echo",
        "limits": {"max_lead_seconds": 120},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


@pytest.fixture
def start_daemon(tmp_path):
    """Call with a config (dict or YAML text); returns a started Daemon, stopped at teardown."""
    started: list[Daemon] = []

    def start(config: dict | str | None = None, wait: bool = True, **kwargs) -> Daemon:
        workdir = tmp_path / f"d{len(started)}"
        workdir.mkdir()
        daemon = Daemon(workdir, base_config() if config is None else config, **kwargs)
        started.append(daemon)
        return daemon.start(wait=wait)

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def daemon(start_daemon) -> Daemon:
    return start_daemon()
