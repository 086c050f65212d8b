"""A bounded soak: a few hundred calls with resets and garbage mixed in.

Ends with zero active calls, nothing in the log but the expected refusals, and
the daemon's RSS within a few MB of where it was after a warm-up round.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import base_config
from wire import (
    Call,
    closed_with,
    first_message,
    frame,
    raw_handshake,
    raw_socket,
    reset,
    ws_frame,
)

RSS_SLACK_KB = 4096


def one_call(daemon, i: int) -> str:
    kind = i % 10
    if kind <= 4:
        call = Call(daemon.ws, (8000, 16000, 24000)[i % 3],
                    pipeline="echo" if kind % 2 else "louder")
        if kind % 2:
            call.echo_roundtrip(i * 100, 25)
        else:
            nbytes = call.frame * 2
            for n in range(25):
                call.ws.send(frame(n, nbytes))
                assert len(call.ws.recv(timeout=10)) == nbytes
        call.close()
        return "ok"
    if kind == 5:  # reset mid-call
        sock, _ = raw_handshake(daemon.port)
        sock.sendall(ws_frame(first_message().encode(), opcode=1))
        for n in range(10):
            sock.sendall(ws_frame(frame(n)))
        reset(sock)
        return "reset"
    if kind == 6:  # garbage first message
        assert closed_with(daemon.ws, b"\x00\xffgarbage" * 10)[0] == 1003
        return "garbage"
    if kind == 7:  # wrong-sized frame
        call = Call(daemon.ws, pipeline="echo")
        call.echo_roundtrip(0, 3)
        call.ws.send(b"\1" * 641)
        assert call.wait_closed()[0] == 1007
        return "bad_frame"
    if kind == 8:  # half a handshake, then reset
        sock = raw_socket(daemon.port)
        sock.sendall(b"GET /socket HTTP/1.1\r\nHost: x\r\n")
        reset(sock)
        return "half"
    # webhooks: one good, one malformed
    body = json.dumps({"uuid": f"u{i}", "to": "1", "from": "2"}).encode()
    status, _, _ = daemon.request("/webhooks/answer", body, {"Content-Type": "application/json"},
                                  "POST")
    assert status == 200
    status, _, _ = daemon.request("/webhooks/event", b"{nope", {"Content-Type":
                                                                "application/json"}, "POST")
    assert status == 400
    return "webhook"


def run_round(daemon, start: int, count: int) -> list[str]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda i: one_call(daemon, i), range(start, start + count)))


def test_soak(start_daemon):
    daemon = start_daemon(base_config(limits={"handshake_timeout": 2,
                                              "first_message_timeout": 2}))
    run_round(daemon, 0, 100)  # warm-up: imports, allocator pools, metric label children
    daemon.wait_metric("voicews_active_calls", 0)
    time.sleep(0.5)
    baseline = daemon.rss_kb()
    started = time.monotonic()
    results = run_round(daemon, 100, 300)
    elapsed = time.monotonic() - started
    daemon.wait_metric("voicews_active_calls", 0)
    time.sleep(0.5)
    final = daemon.rss_kb()
    print(f"\nsoak: 300 calls in {elapsed:.1f} s, RSS {baseline} kB -> {final} kB "
          f"({final - baseline:+d} kB)")
    assert results.count("ok") == 150
    assert final - baseline < RSS_SLACK_KB, (baseline, final)
    log = daemon.log()
    assert "Traceback" not in log and "Unhandled" not in log
    for line in log.splitlines():
        if "#warn]" in line or "#error]" in line or "#critical]" in line:
            assert any(expected in line for expected in (
                "code=1003: expected a JSON text message first",
                "code=1007: frame of 641 bytes",
                "refused 400: body is not valid JSON",
            )), line
    assert daemon.stop() == 0
