"""The limits in config.yaml, each against a real twistd, with a live echo call beside it."""

from __future__ import annotations

import contextlib
import json
import time

import pytest

from conftest import MISBEHAVE_PLUGIN, base_config
from wire import (
    Call,
    Witness,
    closed_by_server,
    frame,
    raw_handshake,
    raw_socket,
    read_close_frame,
    ws_frame,
)


@pytest.fixture
def strict(start_daemon):
    return start_daemon(base_config(limits={
        "handshake_timeout": 1, "first_message_timeout": 1, "idle_timeout": 5,
        "max_body_bytes": 4096,
    }))


def test_incomplete_requests_are_dropped(strict):
    with Witness(strict):
        silent = raw_socket(strict.port)
        half = raw_socket(strict.port)
        half.sendall(b"GET /socket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        # A slow-loris: one header byte at a time keeps Twisted's idle timer happy,
        # but not the request deadline.
        trickle = raw_socket(strict.port)
        trickle.sendall(b"GET /health HTTP/1.1\r\n")
        cut_off = False
        for _ in range(100):  # 10 s of trickling, far past the 1 s deadline
            try:
                trickle.sendall(b"X")
            except OSError:
                cut_off = True  # the server dropped us while we were still trickling
                break
            time.sleep(0.1)
        assert cut_off
        assert closed_by_server(silent) and closed_by_server(half) and closed_by_server(trickle)
        # A handshake that completes but never sends the first message: 1008.
        sock, head = raw_handshake(strict.port)
        assert head.startswith(b"HTTP/1.1 101")
        assert read_close_frame(sock) == 1008
    assert strict.metric("voicews_rejected_total", 'reason="request_timeout"') == 3
    strict.wait_metric("voicews_active_calls", 0)
    assert "no first message within 1 s" in strict.log()


def test_handshake_timeout_does_not_cut_a_call(strict):
    """The HTTP request deadline (1 s here) ends at the upgrade: a call with gaps longer
    than it, and lasting several times as long, is not touched."""
    call = Call(strict.ws, pipeline="echo")
    for i in range(4):
        call.echo_roundtrip(i, 1)
        time.sleep(1.3)
    call.echo_roundtrip(100, 10)
    call.close()
    strict.wait_metric("voicews_active_calls", 0)
    assert "closing call" not in strict.log()


def test_idle_call_is_closed(start_daemon):
    daemon = start_daemon(base_config(limits={"idle_timeout": 1}))
    with Witness(daemon):
        call = Call(daemon.ws, pipeline="echo")
        call.echo_roundtrip(0, 3)
        code, reason = call.wait_closed()
        assert code == 1008 and reason == "no audio for 1 s"
    daemon.wait_metric("voicews_active_calls", 0)
    assert daemon.metric("voicews_calls_total", 'outcome="idle",pipeline="echo"') == 1


def test_max_call_length(start_daemon):
    daemon = start_daemon(base_config(limits={"max_call_seconds": 2}))
    call = Call(daemon.ws, pipeline="echo")
    i = 0
    code = None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            call.echo_roundtrip(i, 1)
        except Exception:
            code, reason = call.wait_closed(2)
            break
        i += 1
        time.sleep(0.02)
    assert code == 1000 and reason == "maximum call length reached"
    assert i > 50  # it ran for its two seconds first
    daemon.wait_metric("voicews_active_calls", 0)
    assert daemon.metric("voicews_calls_total", 'outcome="max_length",pipeline="echo"') == 1


def test_body_limit_413_before_reading(strict):
    with Witness(strict):
        # Claims 100 MB but sends 10 bytes: answered at once, from the headers alone.
        sock = raw_socket(strict.port)
        sock.sendall(b"POST /webhooks/event HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: 100000000\r\n\r\n{\"a\": 1, ")
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 413"), head
        assert b"limit 4096" in head
        assert closed_by_server(sock)
        # Chunked, no length: counted as it arrives, refused past the limit.
        sock = raw_socket(strict.port)
        sock.sendall(b"POST /webhooks/answer HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        got = b""
        for _ in range(20):
            try:
                sock.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")
            except OSError:
                break
            time.sleep(0.01)
        sock.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            got = sock.recv(4096)
        assert got.startswith(b"HTTP/1.1 413"), got
        # Over the limit but all sent at once: still 413, and the handler never runs.
        body = json.dumps({"uuid": "too-big", "pad": "x" * 5000}).encode()
        sock = raw_socket(strict.port)
        sock.sendall(b"POST /webhooks/answer HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
        assert closed_by_server(sock)
        assert "answer uuid=too-big" not in strict.log()
        # Under the limit is fine.
        status, _, _ = strict.request("/webhooks/event", b'{"uuid":"u","status":"started"}',
                                      {"Content-Type": "application/json"}, "POST")
        assert status == 204
    assert strict.metric("voicews_rejected_total", 'reason="body_too_big"') == 3
    strict.wait_metric("voicews_active_calls", 0)


def test_8mb_frame_closed_1009_without_buffering(strict):
    with Witness(strict):
        before = strict.rss_kb()
        sock, head = raw_handshake(strict.port)
        assert head.startswith(b"HTTP/1.1 101")
        sock.sendall(ws_frame(b'{"content-type": "audio/l16;rate=16000"}', opcode=1))
        # The header claims 8 MB; only 64 KB follow.  The close comes from the header.
        sock.sendall(ws_frame(b"\0" * 65536, length=8 * 1024 * 1024)[: 14 + 65536])
        assert read_close_frame(sock) == 1009
        sock.close()
        # The same through a normal client sending all 8 MB.
        call = Call(strict.ws, pipeline="echo")
        call.echo_roundtrip(0, 2)
        with contextlib.suppress(Exception):  # the server may close before all 8 MB are sent
            call.ws.send(b"\0" * (8 * 1024 * 1024))
        code, _ = call.wait_closed()
        assert code == 1009
        grown = strict.rss_kb() - before
    assert grown < 4096, f"RSS grew {grown} kB"
    strict.wait_metric("voicews_active_calls", 0)
    # Both were the caller's fault: counted as such, not as hang-ups.
    assert strict.metric("voicews_calls_total", 'outcome="bad_message",pipeline="echo"') == 2


def test_output_bound_drops_not_grows(start_daemon):
    """A processor producing 10 s of audio per 20 ms frame: output runs at most
    max_lead ahead, max_buffer_seconds wait, the rest is dropped and counted."""
    daemon = start_daemon(base_config(
        plugins=[MISBEHAVE_PLUGIN],
        pipelines={"echo": ["echo"], "flood": [{"flood": {"seconds": 10}}]},
        limits={"max_lead_seconds": 1, "max_buffer_seconds": 2},
    ))
    with Witness(daemon):
        call = Call(daemon.ws, pipeline="flood")
        before = daemon.rss_kb()
        started = time.monotonic()
        for i in range(50):  # one second of caller audio = 500 s of output asked for
            call.ws.send(frame(i))
            time.sleep(0.02)
        received = 0
        try:
            while True:
                msg = call.ws.recv(timeout=0.5)
                assert len(msg) == 640
                received += 1
        except TimeoutError:
            pass
        elapsed = time.monotonic() - started
        grown = daemon.rss_kb() - before
        call.close()
    daemon.wait_metric("voicews_active_calls", 0)
    dropped = daemon.metric("voicews_frames_dropped_total")
    # 25,000 frames asked for; about 50 (lead) + 100 (queue) + 50 per second elapsed sent.
    assert received <= 150 + 50 * elapsed + 50, (received, elapsed)
    assert dropped >= 25_000 - received - 100
    assert grown < 8192, f"RSS grew {grown} kB"
