"""Call sockets under abuse (issue 12 items 2, 3, 5, 6, 14, 15): every flood is bounded,
every failure is loud, and a witness call beside them stays bit-exact."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from conftest import MISBEHAVE_PLUGIN, TWISTD, Daemon, base_config
from wire import Call, Witness, first_message, frame, raw_handshake, ws_frame


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    config = base_config(
        plugins=[MISBEHAVE_PLUGIN],
        pipelines={"echo": ["echo"], "flood": [{"flood": {"seconds": 10}}],
                   "sleeper": [{"sleeper": {"frame": 3, "seconds": 1.0}}]},
        limits={"max_unsent_bytes": 65536, "max_burst_seconds": 2, "text_per_second": 5,
                "text_burst": 20, "stall_seconds": 0.25, "idle_timeout": 5},
    )
    daemon = Daemon(tmp_path_factory.mktemp("strict"), config).start()
    yield daemon
    assert daemon.stop() == 0


def open_unread(daemon: Daemon, rate: int = 16000, pipeline: str = "echo") -> socket.socket:
    """A call whose client never reads (and has a small receive buffer)."""
    sock, head = raw_handshake(daemon.port, rcvbuf=4096)
    assert head.startswith(b"HTTP/1.1 101")
    sock.sendall(ws_frame(first_message(rate, pipeline=pipeline).encode(), opcode=1))
    return sock


def send_until_dropped(sock: socket.socket, data: bytes, pace: float, limit: float) -> float:
    """Send `data` every `pace` seconds until the daemon drops us; the seconds it took."""
    started = time.monotonic()
    sock.settimeout(2)
    while time.monotonic() - started < limit:
        try:
            sock.sendall(data)
        except OSError:
            return time.monotonic() - started
        if pace:
            time.sleep(pace)
    raise AssertionError(f"not dropped within {limit} s")


def test_a_ping_flood_from_a_client_that_never_reads_is_dropped(strict):
    with Witness(strict):
        before = strict.rss_kb()
        rejected = strict.metric_or_zero("voicews_rejected_total", 'reason="unread_output"')
        socks = [open_unread(strict) for _ in range(2)]
        ping = ws_frame(b"p" * 125, opcode=9)
        for sock in socks:
            send_until_dropped(sock, ping * 64, 0, 30)
        strict.wait_metric("voicews_rejected_total", rejected + 2, 'reason="unread_output"')
        assert strict.rss_kb() - before < 20_000  # was +285 MB in 15 s
    log = strict.log()
    assert log.count("bytes of output wait for a peer that does not read") >= 2


def test_an_audio_call_that_never_reads_is_dropped(strict):
    """Paced output (up to max_lead ahead, 120 s in these tests) nobody reads: bounded."""
    with Witness(strict):
        before = strict.rss_kb()
        sock = open_unread(strict, pipeline="flood")
        send_until_dropped(sock, ws_frame(frame(0)), 0.02, 30)
        strict.wait_log("outcome=unread")
        assert strict.rss_kb() - before < 20_000


def test_frames_sustained_faster_than_real_time_close_the_call(strict):
    with Witness(strict):
        call = Call(strict.ws, pipeline="echo")
        call.echo_roundtrip(0, 100)  # a 2 s burst is allowed...
        code = None
        for i in range(100, 2000):  # ...line rate for longer is not
            try:
                call.ws.send(frame(i))
            except Exception:
                break
        code, reason = call.wait_closed()
    assert (code, reason) == (1008, "audio faster than real time")
    strict.wait_metric("voicews_calls_total", 1, 'outcome="too_fast",pipeline="echo"')


def test_a_text_event_flood_is_closed_and_does_not_fill_the_log(strict):
    with Witness(strict):
        before = len(strict.log())
        call = Call(strict.ws, pipeline="echo", uuid="texty")
        flood = {"event": "websocket:dtmf", "digit": "1", "payload": "x" * 7500}
        sent = 0
        for _ in range(500):
            try:
                call.send_event(flood)
                sent += 1
            except Exception:
                break
        code, reason = call.wait_closed()
    assert (code, reason) == (1008, "too many text messages")
    grown = len(strict.log()) - before
    assert grown < 30 * 1024, f"log grew {grown} bytes for {sent} messages"
    assert "payload='" + "x" * 190 in strict.log()  # shown, cut short
    assert "x" * 300 not in strict.log()


def test_unknown_events_are_logged_a_few_times_per_call(strict):
    call = Call(strict.ws, pipeline="echo", uuid="odd")
    for _ in range(10):
        call.send_event({"event": "websocket:karaoke"})
    call.echo_roundtrip(0, 2)
    call.close()
    log = strict.wait_log("call ended uuid=odd")
    assert log.count("ignored unknown event 'karaoke' uuid=odd") == 3


def test_a_blocking_processor_is_named_and_counted(strict):
    call = Call(strict.ws, pipeline="sleeper", uuid="sleepy")
    call.echo_roundtrip(0, 5)
    call.close()
    log = strict.wait_log("reactor stalled")
    line = next(x for x in log.splitlines() if "reactor stalled" in x)
    assert "in step sleeper of pipeline sleeper uuid=sleepy" in line
    assert "misbehave.py" in line  # where: the file and line that blocked
    seconds = float(line.split("reactor stalled ")[1].split(" s")[0])
    assert 0.9 <= seconds <= 2.0
    assert strict.metric("voicews_reactor_stalls_total") >= 1


def test_port_already_in_use_exits_non_zero_with_one_line(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    (tmp_path / "config.yaml").write_text(json.dumps(base_config()))
    try:
        done = subprocess.run(
            [TWISTD, "-n", "--pidfile=", "voicews", "-c", str(tmp_path / "config.yaml"),
             "--listen", f"tcp:{port}:interface=127.0.0.1"],
            capture_output=True, text=True, timeout=30, cwd=tmp_path,
        )
    finally:
        taken.close()
    assert done.returncode == 1  # not 0: systemd's Restart=on-failure retries
    out = done.stdout + done.stderr  # twistd logs what reaches stderr once it has started
    lines = [x for x in out.splitlines() if "voicews: cannot listen on" in x]
    assert len(lines) == 1 and "Address already in use" in lines[0], out
