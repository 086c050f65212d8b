"""HTTP floods and malformed requests from issue 12, each against a real twistd on loopback."""

from __future__ import annotations

import contextlib
import json
import socket

import pytest

from conftest import Daemon, base_config
from wire import closed_by_server, raw_socket


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One daemon for the tests here that leave it as they found it (keeps the file fast)."""
    daemon = Daemon(tmp_path_factory.mktemp("http"),
                    base_config(limits={"max_body_bytes": 20000})).start()
    yield daemon
    daemon.stop()


def flood_unread(port: int, request: bytes, most: int) -> tuple[int, bool]:
    """Pipeline `request` over one connection, never reading, until the server stops reading
    (a send blocks for 2 s), closes, or `most` bytes went; (bytes sent, whether it closed)."""
    sock = raw_socket(port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sock.settimeout(2)
    batch = request * max(1, 65536 // len(request))
    sent, closed = 0, False
    try:
        while sent < most:
            sent += sock.send(batch)
    except TimeoutError:
        pass
    except OSError:
        closed = True
    if not closed:
        closed = closed_by_server(sock, timeout=3)
    with contextlib.suppress(OSError):
        sock.close()
    return sent, closed


@pytest.mark.parametrize("path", ["/health", "/metrics"])
def test_pipelined_requests_never_read_are_bounded(shared, path):
    """Item 1: a client that pipelines requests and never reads the answers grew the daemon
    by 77 MB in 15 s (166 MB on /metrics).  Now the daemon stops reading such a connection
    and drops it once its unsent answers pass the bound."""
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    before = shared.rss_kb()
    lines_before = shared.log().count(f'"GET {path} HTTP/1.1"')
    sent, closed = flood_unread(shared.port, request, most=6 * 2**20)
    grown = shared.rss_kb() - before
    answered = shared.log().count(f'"GET {path} HTTP/1.1"') - lines_before
    assert sent < 3 * 2**20, f"the daemon read {sent} bytes of requests it could not answer"
    assert grown < 20_000, f"RSS grew {grown} kB"
    assert answered < 20_000, f"{answered} access-log lines"
    assert closed
    shared.wait_log("not reading its responses")
    assert shared.get_json("/health")["status"] == "ok"


def test_chunked_body_over_limit_with_final_chunk_in_one_read(shared):
    """Item 11: the refused body's final chunk in the same read reached Twisted's
    requestReceived, which called tell() on the discarded body: an unhandled AttributeError
    in the log and no answer at all."""
    before = shared.metric_or_zero("voicews_rejected_total", 'reason="body_too_big"')
    sock = raw_socket(shared.port)
    chunk = b"x" * 25000
    sock.sendall(b"POST /webhooks/answer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
                 % (len(chunk), chunk))
    head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert closed_by_server(sock)
    assert shared.metric("voicews_rejected_total", 'reason="body_too_big"') == before + 1
    assert "AttributeError" not in shared.log()
    assert "Unhandled" not in shared.log()


DEEP = "[" * 3000


@pytest.mark.parametrize("path", ["/webhooks/answer", "/webhooks/event", "/webhooks/fallback"])
def test_deeply_nested_json_webhook_is_400(shared, path):
    """Item 10: `"[" * 3000` as a webhook body was a 500 with a traceback; README promises 400."""
    status, _, body = shared.request(path, DEEP.encode(),
                                     {"Content-Type": "application/json"}, "POST")
    if path == "/webhooks/fallback":
        assert status == 200  # the fallback answers its safe NCCO whatever it was sent
    else:
        assert status == 400
        assert b"nested" in body
    assert "RecursionError" not in shared.log()
    assert "Traceback" not in shared.log()


FORGED = "u1\n2026-01-01T00:00:00+0000 [x#critical] forged\r\x00\x1b[2J"


def test_control_characters_in_webhook_fields_are_escaped_in_text_logs(shared):
    """Item 7: uuid/from/to/status with \\n, \\r or NUL were written raw into the text log,
    so journald split them into forged entries."""
    body = json.dumps({"uuid": FORGED, "from": "a\rb", "to": "c\x00d",
                       "conversation_uuid": "c\n"}).encode()
    status, _, _ = shared.request("/webhooks/answer", body,
                                  {"Content-Type": "application/json"}, "POST")
    assert status == 200
    status, _, _ = shared.request("/webhooks/event", json.dumps(
        {"uuid": "u2", "status": "answered\nforged-status"}).encode(),
        {"Content-Type": "application/json"}, "POST")
    assert status == 204
    log = shared.wait_log("forged-status")
    raw = shared.log_path.read_bytes()
    assert b"\r" not in raw and b"\x00" not in raw and b"\x1b" not in raw
    for line in log.splitlines():  # every line is an entry of ours or a traceback's tail
        assert line.startswith(("\t", "20")), repr(line)
        assert not line.lstrip("\t").startswith(("2026-01-01", "forged")), repr(line)
    assert r"uuid=u1\n2026-01-01T00:00:00+0000 [x#critical] forged\r\x00\x1b[2J" in log
    assert r"status=answered\nforged-status" in log


@pytest.mark.parametrize(
    ("path", "fields", "status"),
    [
        ("/webhooks/answer", {"uuid": "u" * 16000}, 400),
        ("/webhooks/answer", {"uuid": "u-ok", "from": "4" * 16000}, 400),
        ("/webhooks/answer", {"uuid": "u-ok", "to": "4" * 16000}, 400),
        ("/webhooks/answer", {"uuid": "u-ok", "conversation_uuid": "c" * 16000}, 400),
        ("/webhooks/event", {"uuid": "u" * 16000, "status": "answered"}, 400),
        ("/webhooks/event", {"uuid": "u-ok", "status": "s" * 16000}, 400),
        ("/webhooks/event", {"uuid": "u-ok", "status": [[["s" * 1000]] * 10]}, 400),
        ("/webhooks/fallback", {"uuid": "u" * 9000, "reason": "r" * 9000}, 200),
    ],
)
def test_webhook_fields_are_bounded(shared, path, fields, status):
    """Item 4: ~16 KB uuid/from/to fields wrote 46 KB of log per request (and went into the
    NCCO).  Each field we log or answer with has a bound well above what Vonage sends."""
    before = shared.log_path.stat().st_size
    got, _, body = shared.request(path, json.dumps(fields).encode(),
                                  {"Content-Type": "application/json"}, "POST")
    assert got == status, body
    assert len(body) < 1024
    if status == 400:
        assert b"longer than" in body or b"must be a string" in body
    shared.wait_log(f"POST {path}")  # the access line: our own line was written before it
    assert shared.log_path.stat().st_size - before < 1500


def answer_uri(daemon, headers: dict) -> tuple[int, str | None]:
    status, _, body = daemon.request("/webhooks/answer?uuid=h-1", None, headers)
    if status != 200:
        return status, None
    ncco = json.loads(body)
    return status, ncco[-1]["endpoint"][0]["uri"]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # Forwarded headers from a peer that is not a trusted proxy are ignored.
        ({"X-Forwarded-Host": "evil.example.com/steal?x="}, "ws://127.0.0.1:{port}/socket"),
        ({"X-Forwarded-Host": "evil.example.com", "X-Forwarded-Proto": "https"},
         "ws://127.0.0.1:{port}/socket"),
        ({"Host": "voice.example.com:8443"}, "ws://voice.example.com:8443/socket"),
        ({"Host": "[::1]:8080"}, "ws://[::1]:8080/socket"),
        # A Host that is not host[:port] is a 400, never an NCCO.
        ({"Host": "evil.example.com/steal?x="}, 400),
        ({"Host": "user@evil.example.com"}, 400),
        ({"Host": "evil.example.com:80:80"}, 400),
        ({"Host": "evil.example.com#x"}, 400),
        ({"Host": "a" * 300}, 400),
    ],
)
def test_host_header_validated_and_forwarded_headers_untrusted(shared, headers, expected):
    """Item 12: Host / X-Forwarded-Host went into the NCCO unvalidated, from anyone."""
    status, uri = answer_uri(shared, headers)
    if expected == 400:
        assert status == 400
    else:
        assert (status, uri) == (200, expected.format(port=shared.port))


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory):
    daemon = Daemon(tmp_path_factory.mktemp("proxy"),
                    base_config(trusted_proxies=["10.0.0.0/8", "127.0.0.1"])).start()
    yield daemon
    daemon.stop()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Forwarded-Host": "voice.example.com", "X-Forwarded-Proto": "https"},
         "wss://voice.example.com/socket"),
        ({"X-Forwarded-Host": "voice.example.com:8443, other.example.com"},
         "ws://voice.example.com:8443/socket"),
        ({"X-Forwarded-Host": "evil.example.com/steal?x="}, 400),
    ],
)
def test_forwarded_headers_from_a_trusted_proxy(behind_proxy, headers, expected):
    status, uri = answer_uri(behind_proxy, headers)
    if expected == 400:
        assert status == 400
    else:
        assert (status, uri) == (200, expected)


def test_a_bad_host_is_400_on_every_route(shared):
    """werkzeug refused a 300-character Host itself, as a 500 with a traceback."""
    for path in ("/health", "/metrics", "/webhooks/event", "/nowhere"):
        status, _, body = shared.request(path, None, {"Host": "a" * 300})
        assert (status, json.loads(body)) == (400, {"error": "Host is not a valid host[:port]"})
    assert "BadHost" not in shared.log()
