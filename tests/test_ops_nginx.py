"""Two voicews processes behind nginx (deploy/nginx.conf), as a real deployment runs them.

Uses the nginx binary if it is installed (.ci/run installs the Debian package) and
skips otherwise.  nginx runs in the foreground on a loopback port with every path
it writes under tmp_path, and is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import REPO, base_config, free_port
from wire import Call, random_frames

EXAMPLE = REPO / "deploy" / "nginx.conf"


def nginx_config(tmp_path, listen_port: int, upstream_ports: list[int]) -> str:
    """deploy/nginx.conf on loopback ports, inside a main config that writes to tmp_path."""
    site = EXAMPLE.read_text()
    replacements = {
        "listen 80;": f"listen 127.0.0.1:{listen_port};",
        "server 127.0.0.1:8081;": f"server 127.0.0.1:{upstream_ports[0]};",
        "server 127.0.0.1:8082;": f"server 127.0.0.1:{upstream_ports[1]};",
    }
    for old, new in replacements.items():
        assert site.count(old) == 1, f"{old!r} not once in {EXAMPLE}"
        site = site.replace(old, new)
    temp = {name: tmp_path / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
daemon off;
worker_processes 1;
{user}
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp_path}/access.log;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
{site}
}}
"""


@pytest.fixture
def nginx(tmp_path):
    """start(listen_port, upstream_ports) runs nginx; it is stopped by its PID at the end."""
    binary = shutil.which("nginx") or shutil.which("/usr/sbin/nginx")
    if binary is None:
        pytest.skip("nginx not installed (Debian package nginx; .ci/run installs it)")
    home = tmp_path / "nginx"
    home.mkdir()
    procs: list[subprocess.Popen] = []

    def start(port: int, upstream_ports: list[int]) -> None:
        conf = home / "nginx.conf"
        conf.write_text(nginx_config(home, port, upstream_ports))
        out = open(home / "stdout.log", "wb")  # noqa: SIM115 - nginx holds it until stopped
        procs.append(subprocess.Popen(
            [binary, "-p", str(home), "-c", str(conf), "-e", str(home / "error.log")],
            stdout=out, stderr=subprocess.STDOUT,
        ))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if procs[-1].poll() is not None:
                raise AssertionError(
                    f"nginx exited {procs[-1].returncode}: {(home / 'error.log').read_text()}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    return
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        raise AssertionError("nginx did not come up: " + (home / "error.log").read_text())

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)  # graceful: the master waits for its workers
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def post_json(url: str, data: dict):
    req = urllib.request.Request(
        url, data=json.dumps(data).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_two_processes_behind_nginx_both_take_calls(start_daemon, nginx):
    balancer = free_port()
    public_url = f"http://127.0.0.1:{balancer}"
    daemons = [start_daemon(base_config(public_url=public_url)) for _ in range(2)]
    nginx(balancer, [d.port for d in daemons])

    # Vonage asks the balancer for the NCCO; public_url points the socket at the balancer.
    calls = []
    for i in range(6):
        ncco = post_json(
            f"{public_url}/webhooks/answer",
            {"uuid": f"lb-{i}", "conversation_uuid": f"conv-{i}", "to": "447700900000",
             "from": "447700900001"},
        )
        endpoint = ncco[-1]["endpoint"][0]
        assert endpoint["uri"] == f"ws://127.0.0.1:{balancer}/socket"
        # The calls overlap, as real ones do; each is bit-exact through the proxy.
        calls.append(Call(endpoint["uri"], **endpoint["headers"]))
    for i, call in enumerate(calls):
        frames = random_frames(25, start=25 * i)
        assert call.exchange_frames(frames) == frames
    for call in calls:
        call.close()

    taken = []
    for daemon in daemons:
        daemon.wait_log("call ended uuid=lb-")
        log = daemon.log()
        taken.append(sorted(i for i in range(6) if f"call started uuid=lb-{i} " in log))
    assert all(taken), f"calls per process: {taken}"
    assert sorted(taken[0] + taken[1]) == list(range(6)), taken
    # Every answer webhook went through the balancer to one of them.
    answered = [sum(f"answer uuid=lb-{i} " in d.log() for i in range(6)) for d in daemons]
    assert sum(answered) == 6, answered


def test_nginx_sets_the_forwarded_headers_and_hides_metrics(start_daemon, nginx):
    """Issue 12 item 12: voicews believes X-Forwarded-Host/Proto only from trusted_proxies,
    so the example config must set them itself (a client's own are replaced), and /metrics
    must not be reachable through the public balancer."""
    balancer = free_port()
    daemons = [start_daemon(base_config(trusted_proxies=["127.0.0.1"])) for _ in range(2)]
    nginx(balancer, [d.port for d in daemons])
    base = f"http://127.0.0.1:{balancer}"
    req = urllib.request.Request(
        f"{base}/webhooks/answer?uuid=fwd-1",
        headers={"X-Forwarded-Host": "evil.example.com", "X-Forwarded-Proto": "https"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        ncco = json.loads(resp.read())
    assert ncco[-1]["endpoint"][0]["uri"] == f"ws://127.0.0.1:{balancer}/socket"
    assert ncco[-1]["eventUrl"] == [f"http://127.0.0.1:{balancer}/webhooks/event"]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{base}/metrics", timeout=10)
    assert info.value.code == 403
    for daemon in daemons:  # still there on loopback, for Prometheus on the same host
        assert daemon.request("/metrics")[0] == 200
