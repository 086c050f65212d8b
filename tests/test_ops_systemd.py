"""The systemd units, and the daemon on a socket handed over the way systemd hands it.

`systemd-socket-activate` (from the systemd package) opens the port and passes it
as fd 3 with LISTEN_FDS/LISTEN_PID, exactly as a .socket unit does.  The shared
socket test passes one listening socket to two daemons, as voicews.socket does
for every voicews@N.service that names it in Sockets=.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_record import wait_wav

from audio_checks import band_level, tone
from conftest import REPO, TWISTD, Daemon, base_config
from wire import Call, echo_call

UNITS = REPO / "systemd"
SYSTEMD_LISTEN = "systemd:domain=INET:index=0"
INSTALLED_TWISTD = "/opt/voicews/bin/twistd"


def needs(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed (Debian package systemd; .ci/run installs it)")
    return path


def test_units_pass_systemd_analyze_verify(tmp_path):
    analyze = needs("systemd-analyze")
    # verify checks that ExecStart exists: point it at this checkout's twistd.
    for unit in ("voicews.service", "voicews.socket", "voicews@.service"):
        text = (UNITS / unit).read_text()
        assert INSTALLED_TWISTD in text or unit == "voicews.socket"
        (tmp_path / unit).write_text(text.replace(INSTALLED_TWISTD, TWISTD))
    for unit in ("voicews.service", "voicews.socket", "voicews@1.service", "voicews@7.service"):
        result = subprocess.run(
            [analyze, "verify", str(tmp_path / unit)], capture_output=True, text=True,
            timeout=60,
        )
        output = result.stdout + result.stderr
        # Lines about other units come from the host's own setup, not from ours.
        ours = [line for line in output.splitlines() if "voicews" in line]
        assert result.returncode == 0 and not ours, output


def test_units_run_what_the_docs_say():
    service = (UNITS / "voicews.service").read_text()
    worker = (UNITS / "voicews@.service").read_text()
    socket_unit = (UNITS / "voicews.socket").read_text()
    assert "ExecStart=/opt/voicews/bin/twistd -n --pidfile= voicews -c /etc/voicews/config.yaml\n" \
        in service
    assert f"-c /etc/voicews/config.yaml --listen {SYSTEMD_LISTEN}\n" in worker
    assert "Sockets=voicews.socket" in worker and "Service=voicews@1.service" in socket_unit
    for text in (service, worker):
        for line in ("ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
                     "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                     "PrivateTmp=yes", "User=voicews", "StateDirectory=voicews"):
            assert line + "\n" in text


class ActivatedDaemon(Daemon):
    """twistd started by systemd-socket-activate, which owns the port."""

    def command(self) -> list[str]:
        # systemd-socket-activate passes only PATH, HOME, USER and TERM on, plus -E ones.
        return [
            # --fdname sets LISTEN_FDNAMES, which a .socket unit always sets and Twisted needs.
            needs("systemd-socket-activate"), "-l", f"127.0.0.1:{self.port}", "--fdname=voicews",
            "-E", f"PYTHONPATH={self.env['PYTHONPATH']}",
            *super().command(),
        ]


def test_socket_activated_daemon_serves_calls(tmp_path):
    needs("systemd-socket-activate")
    daemon = ActivatedDaemon(tmp_path, base_config(), listen=SYSTEMD_LISTEN)
    try:
        # systemd-socket-activate starts twistd on the first connection: /health.
        daemon.start()
        daemon.wait_log(f"voicews listening on 127.0.0.1:{daemon.port}")
        sent, got = echo_call(daemon.ws, pipeline="echo", uuid="activated-1")
        assert got == sent
        daemon.wait_log("call ended uuid=activated-1 pipeline=echo outcome=hangup")
    finally:
        code = daemon.stop()
    assert code == 0


# Puts the inherited socket at fd 3 and sets LISTEN_PID to its own PID, then becomes twistd:
# what systemd does for each service that names the socket unit.
HAND_OVER = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_FDNAMES="voicews.socket", LISTEN_PID=str(os.getpid()))
os.execv(sys.argv[2], sys.argv[2:])
"""


class SharedSocketDaemon(Daemon):
    """A worker given an already listening socket, like voicews@N.service."""

    def __init__(self, workdir: Path, config: dict, listener: socket.socket) -> None:
        super().__init__(workdir, config, listen=SYSTEMD_LISTEN)
        self.listener = listener
        self.port = listener.getsockname()[1]

    def start(self, wait: bool = True) -> Daemon:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        fd = self.listener.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HAND_OVER, str(fd), *self.command()], cwd=self.workdir,
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT, pass_fds=(fd,),
        )
        return self


def test_two_workers_share_one_socket_and_a_drain_leaves_it_open(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    workers = []
    try:
        for name in ("w1", "w2"):
            (tmp_path / name).mkdir()
            workers.append(SharedSocketDaemon(tmp_path / name, base_config(), listener).start())
        port = listener.getsockname()[1]
        for worker in workers:
            worker.wait_log(f"voicews listening on 127.0.0.1:{port}")
        for i in range(4):
            sent, got = echo_call(workers[0].ws, count=10, start=10 * i, uuid=f"shared-{i}")
            assert got == sent

        # Worker 1 drains and exits; the port stays open and worker 2 takes the calls.
        workers[0].signal(signal.SIGTERM)
        assert workers[0].proc.wait(20) == 0
        for i in range(4, 7):
            sent, got = echo_call(workers[1].ws, count=10, start=10 * i, uuid=f"shared-{i}")
            assert got == sent
            workers[1].wait_log(f"call started uuid=shared-{i} ")
    finally:
        codes = [worker.stop() for worker in workers]
        listener.close()
    assert codes == [0, 0]


def test_systemd_listen_without_a_socket_is_one_clear_error(tmp_path):
    daemon = Daemon(tmp_path, base_config(), listen=SYSTEMD_LISTEN).start(wait=False)
    assert daemon.proc.wait(20) == 2
    log = daemon.log()
    assert "voicews: --listen: cannot listen on 'systemd:domain=INET:index=0': no such " \
        "socket was handed over" in log
    assert "Traceback" not in log


def test_the_install_layout_of_the_docs_serves_every_pipeline(tmp_path):
    """The service install of the docs: `voicews init /etc/voicews` writes config.yaml,
    prompts/ and plugins/ into the config folder, the daemon runs from the state folder with
    the units' VOICEWS_RECORDINGS: the prompt plays, the example plugins load and a
    recording lands in the state folder."""
    service = (UNITS / "voicews.service").read_text()
    state_dir = re.search(r"^WorkingDirectory=(.+)$", service, re.M).group(1)
    recordings = re.search(r"^Environment=VOICEWS_RECORDINGS=(.+)$", service, re.M).group(1)
    assert recordings.startswith(state_dir + "/")  # writable under ProtectSystem=strict
    etc, state = tmp_path / "etc-voicews", tmp_path / "var-lib-voicews"
    state.mkdir()
    subprocess.run([sys.executable, "-m", "voicews.app.cli", "init", str(etc)], check=True,
                   capture_output=True, cwd=tmp_path, env=Daemon(tmp_path, "").env)
    assert sorted(p.name for p in etc.iterdir()) == ["config.yaml", "plugins", "prompts"]
    assert not any(p.is_symlink() for p in etc.rglob("*"))
    daemon = Daemon(tmp_path, "", env={
        "VOICEWS_RECORDINGS": str(state / recordings[len(state_dir) + 1 :]),
    })
    daemon.workdir, daemon.config_path = state, etc / "config.yaml"
    daemon.start()
    try:
        voice = tone(440, 1.0, 16000, amplitude=3000)
        with Call(daemon.ws, pipeline="welcome") as call:
            got = call.exchange(voice)
        assert band_level(got[:8000], 16000, 1318.5) > 0.05  # the chime from prompts/
        with Call(daemon.ws, pipeline="robot") as call:  # plugins/bitcrush.py
            crushed = call.exchange(voice)
        assert not np.array_equal(crushed, voice) and band_level(crushed, 16000, 440) > 0.2
        with Call(daemon.ws, pipeline="recorded", uuid="installed-1") as call:
            call.exchange(voice[:3200])
        daemon.wait_log("recording finished uuid=installed-1 ")
        [found] = (state / "recordings").glob("*installed-1.wav")
        wait_wav(found, 3200)
    finally:
        assert daemon.stop() == 0
