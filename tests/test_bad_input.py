"""Bad input of every kind: each gets its close code or 4xx, and the daemon keeps serving.

One daemon serves the whole module.  Every test runs a witness echo call that
must stay bit-exact while the bad input happens, and ends with
``voicews_active_calls`` back at 0.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time

import pytest

from conftest import MISBEHAVE_PLUGIN, Daemon, base_config
from wire import (
    Call,
    Witness,
    closed_with,
    first_message,
    frame,
    raw_handshake,
    raw_socket,
    reset,
    ws_frame,
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    config = base_config(
        plugins=[MISBEHAVE_PLUGIN],
        pipelines={
            "echo": ["echo"],
            "raiser": [{"raiser": {"frame": 3}}],
            "sleeper": [{"sleeper": {"frame": 3, "seconds": 1.0}}],
            "shortener": [{"shortener": {"samples": 100}}],
        },
        limits={"handshake_timeout": 1, "first_message_timeout": 1},
    )
    d = Daemon(tmp_path_factory.mktemp("bad"), config).start()
    yield d
    assert d.stop() == 0


@pytest.fixture
def witness(daemon):
    with Witness(daemon) as w:
        yield w
    daemon.wait_metric("voicews_active_calls", 0)


@pytest.mark.parametrize(
    "message, binary, code, reason",
    [
        ("this is not json", False, 1008, "first message is not JSON"),
        ("[1, 2, 3]", False, 1008, "first message is not a JSON object"),
        ('{"event": "websocket:connected"}', False, 1008, "first message has no content-type"),
        (first_message(44100), False, 1003, "unsupported content-type"),
        ('{"content-type": 16000}', False, 1003, "unsupported content-type"),
        (first_message(16000, pipeline="nope"), False, 1008, "unknown pipeline"),
        (first_message(16000), True, 1003, "expected a JSON text message first"),
        (json.dumps({"content-type": "audio/l16;rate=16000", "pad": "x" * 5000}), False, 1009,
         "first message of"),
        ('{"event": "websocket:dtmf", "digit": "1"}', False, 1008, "first message has event"),
    ],
)
def test_bad_first_messages(daemon, witness, message, binary, code, reason):
    got_code, got_reason = closed_with(daemon.ws, message.encode() if binary else message)
    assert got_code == code
    assert got_reason.startswith(reason), got_reason


def test_wrong_sized_frames(daemon, witness):
    for size in (1, 320, 639, 641, 960, 7680):
        call = Call(daemon.ws, pipeline="echo")
        call.echo_roundtrip(0, 2)
        call.ws.send(b"\1" * size)
        code, reason = call.wait_closed()
        assert code == 1007 and reason == f"frame of {size} bytes, expected 640"
    # 8 kHz and 24 kHz calls expect their own frame sizes.
    for rate in (8000, 24000):  # 320- and 960-byte frames
        call = Call(daemon.ws, rate, pipeline="echo")
        call.echo_roundtrip(0, 3)
        call.close()


def test_text_that_is_not_json(daemon, witness):
    call = Call(daemon.ws, pipeline="echo")
    call.echo_roundtrip(0, 2)
    call.ws.send("hello?")
    assert call.wait_closed() == (1008, "text message is not JSON")
    call = Call(daemon.ws, pipeline="echo")
    call.ws.send('{"no": "event"}')
    assert call.wait_closed() == (1008, "text message has no event name")


def test_unknown_events_and_odd_dtmf_are_ignored(daemon, witness):
    call = Call(daemon.ws, pipeline="echo")
    odd = [
        {"event": "websocket:whatever", "x": [1, 2]},
        {"event": "something-else"},
        {"event": "websocket:dtmf", "digit": "12", "duration": "long"},
        {"event": "websocket:dtmf", "digit": 5, "duration": True},
        {"event": "websocket:dtmf", "digit": None},
        {"event": "websocket:dtmf"},
        {"event": "websocket:dtmf", "digit": "\u00e9", "duration": -1},
        {"event": "websocket:notify", "payload": {"deep": [[[[[]]]]]}},
        {"event": "websocket:cleared", "extra": "x" * 1000},
    ]
    for i, message in enumerate(odd):
        call.send_event(message)
        call.echo_roundtrip(i * 10, 3)  # the call carries on, bit-exact
    call.close()
    assert "ignored unknown event 'whatever'" in daemon.log()


def test_8mb_frame(daemon, witness):
    call = Call(daemon.ws, pipeline="echo")
    call.echo_roundtrip(0, 2)
    with contextlib.suppress(Exception):  # the server may close before all 8 MB are sent
        call.ws.send(b"\0" * (8 * 1024 * 1024))
    assert call.wait_closed()[0] == 1009


def test_flood_of_resets(daemon, witness):
    """Fifty calls torn down with TCP RST at every stage of their life."""
    for i in range(50):
        sock, head = raw_handshake(daemon.port)
        assert head.startswith(b"HTTP/1.1 101")
        stage = i % 5
        if stage >= 1:
            sock.sendall(ws_frame(first_message().encode(), opcode=1))
        if stage >= 2:
            for n in range(stage * 3):
                sock.sendall(ws_frame(frame(n)))
        if stage == 4:
            sock.sendall(ws_frame(b"\0" * 100000)[:5000])  # half a frame
        reset(sock)
    # Half-handshakes reset too.
    for _ in range(10):
        sock = raw_socket(daemon.port)
        sock.sendall(b"GET /socket HTTP/1.1\r\nHost: x\r\n")
        reset(sock)
    daemon.wait_metric("voicews_active_calls", 1)  # only the witness


def test_half_open_connections(daemon, witness):
    """Raw TCP that sends half a handshake and stalls is dropped at handshake_timeout."""
    socks = []
    for i in range(20):
        sock = raw_socket(daemon.port)
        sock.sendall(b"GET /socket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"[: 10 + i])
        socks.append(sock)
    for sock in socks:
        sock.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(100) == b""


@pytest.mark.parametrize(
    "path, body, ctype, status",
    [
        ("/webhooks/answer", b'{"uuid": "x",', "application/json", 400),
        ("/webhooks/event", b'{"uuid": "x",', "application/json", 400),
        ("/webhooks/answer", b"[1, 2]", "application/json", 400),
        ("/webhooks/event", b"\xff\xfe{}", "application/json", 400),
        ("/webhooks/answer", b"<xml/>", "text/xml", 415),
        ("/webhooks/event", b"uuid=x", "text/plain", 415),
        ("/webhooks/answer", b"uuid=%FF%FE", "application/x-www-form-urlencoded", 400),
        ("/webhooks/answer", b"x" * 70000, "application/json", 413),
    ],
)
def test_bad_webhooks(daemon, witness, path, body, ctype, status):
    got, _, answer = daemon.request(path, body, {"Content-Type": ctype}, "POST")
    assert got == status
    assert json.loads(answer)["error"]


def test_processor_that_raises(daemon, witness):
    call = Call(daemon.ws, pipeline="raiser")
    call.echo_roundtrip(0, 2)
    call.ws.send(frame(2))
    assert call.wait_closed() == (1011, "processor error in pipeline raiser, step raiser")
    assert "RuntimeError: raiser: deliberate failure" in daemon.log()


def test_processor_that_blocks(daemon):
    """time.sleep in a processor stalls the whole reactor: every call waits.

    Measured here, not asserted: the witness call's round trip during the block.
    """
    w = Witness(daemon)
    gaps: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        i = 10**5
        while not stop.is_set():
            t = time.monotonic()
            w.call.echo_roundtrip(i, 1)
            gaps.append(time.monotonic() - t)
            i += 1
            time.sleep(0.01)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    time.sleep(0.3)
    call = Call(daemon.ws, pipeline="sleeper")
    call.echo_roundtrip(0, 5)  # frame 3 sleeps 1 s
    time.sleep(0.3)
    stop.set()
    thread.join(10)
    call.close()
    w.frames = len(gaps)
    w._stop.set()
    w.call.echo_roundtrip(0, 5)
    w.call.close()
    print(f"\nwitness round trip: median {sorted(gaps)[len(gaps) // 2] * 1000:.1f} ms, "
          f"worst {max(gaps) * 1000:.0f} ms while a processor slept 1000 ms")
    daemon.wait_metric("voicews_active_calls", 0)


def test_processor_wrong_sized_output(daemon, witness):
    """100 samples out per 320-sample frame: the framer still sends exact 640-byte frames."""
    call = Call(daemon.ws, pipeline="shortener")
    sent = b""
    received = b""
    for i in range(32):
        f = frame(i)
        call.ws.send(f)
        sent += f[:200]
    deadline = time.monotonic() + 10
    while len(received) < 10 * 640 and time.monotonic() < deadline:
        msg = call.ws.recv(timeout=10)
        assert len(msg) == 640
        received += msg
    assert received == sent[: len(received)] and len(received) == 10 * 640
    call.close()


def test_metrics_after_bad_input(daemon):
    """After all of the above (this module runs in order), nothing is left open."""
    daemon.wait_metric("voicews_active_calls", 0)
    health = daemon.get_json("/health")
    assert health["active_calls"] == 0
    # And the daemon still serves a fresh call, bit-exact.
    call = Call(daemon.ws, pipeline="echo")
    call.echo_roundtrip(0, 20)
    call.close()
    daemon.wait_metric("voicews_active_calls", 0)
