"""Open-file limits (issue 12 item 13), on a real twistd started with a small RLIMIT_NOFILE."""

from __future__ import annotations

import contextlib
import resource
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Daemon, base_config
from wire import raw_socket

HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]


class LimitedDaemon(Daemon):
    """A Daemon whose process starts with RLIMIT_NOFILE = (soft, hard)."""

    def __init__(self, *args, soft: int, hard: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limits = (soft, hard)

    def start(self, wait: bool = True) -> LimitedDaemon:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        limits = self.limits
        self.proc = subprocess.Popen(
            self.command(), cwd=self.workdir, env=self.env, stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limits),
        )
        if wait:
            self.wait_healthy()
        return self

    def soft_limit(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
        raise AssertionError("no open-file limit")


@pytest.fixture
def limited(tmp_path):
    started = []

    def start(config, soft, hard):
        workdir = tmp_path / f"d{len(started)}"
        workdir.mkdir()
        daemon = LimitedDaemon(workdir, config, soft=soft, hard=hard)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.stop()


@pytest.mark.skipif(HARD != resource.RLIM_INFINITY and HARD < 4096, reason="hard limit < 4096")
def test_soft_open_file_limit_is_raised_to_the_hard_one(limited):
    daemon = limited(base_config(), soft=64, hard=4096)
    daemon.wait_log("raised the open-file limit from 64 to 4096")
    assert daemon.soft_limit() == 4096
    assert "needs about" not in daemon.log()


RECORDING = base_config(
    pipelines={"echo": ["echo"], "rec": ["echo", {"record": {"path": "rec/{uuid}.wav"}}]},
    limits={"max_calls": 100, "handshake_timeout": 60},
)


def test_out_of_descriptors_answers_503_not_a_closed_connection(limited):
    """With `ulimit -n 64`, max_calls 100 and a recording pipeline, calls got a closed
    connection with no HTTP answer, and an idle-connection flood made /health reset."""
    daemon = limited(RECORDING, soft=64, hard=64)
    line = daemon.wait_log("needs about")
    assert ("limits.max_calls 100 needs about 296 open files (2 per call, 64 for HTTP, "
            "32 for the process) but the limit is 64") in line
    idle = []
    try:
        for _ in range(80):  # more idle connections than the process has descriptors
            idle.append(raw_socket(daemon.port))
        sock = raw_socket(daemon.port)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable"), answer
        assert answer.endswith(b'{"error": "out of file descriptors"}')
        sock.close()
    finally:
        for sock in idle:
            with contextlib.suppress(OSError):
                sock.close()
    daemon.wait_log("out of file descriptors: new connections get 503")
    deadline = time.monotonic() + 10
    while daemon.request("/health")[0] != 200:  # served again once the idle ones are gone
        assert time.monotonic() < deadline, "still refusing after the idle connections closed"
        time.sleep(0.05)
    assert daemon.metric("voicews_rejected_total", 'reason="out_of_files"') >= 1


def test_units_set_an_open_file_limit_that_fits_the_default_max_calls():
    from voicews.app.fdlimit import HTTP_FILES, PROCESS_FILES

    from conftest import REPO

    for unit in ("voicews.service", "voicews@.service"):
        text = (REPO / "systemd" / unit).read_text()
        limit = int(text.split("\nLimitNOFILE=", 1)[1].split()[0])
        assert limit >= PROCESS_FILES + HTTP_FILES + 2 * 1000, unit  # default max_calls, recorded
