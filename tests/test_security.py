"""Signed webhooks, socket handshake authorization and the /metrics token, end to end."""

from __future__ import annotations

import base64
import json
import time

import pytest
from websockets.exceptions import InvalidStatus

from voicews.vonage.tokens import make_token, query_payload

from conftest import base_config
from wire import Call, RawCall

SECRET = "test-signature-secret-0123456789abcdef"
ANSWER = json.dumps({"uuid": "u-1", "conversation_uuid": "c-1", "from": "447700900001",
                     "to": "447700900000"}).encode()


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned_token(body: bytes) -> str:
    """A JWT with ``alg: none``: no signature at all."""
    from voicews.vonage.tokens import body_hash

    claims = {"iat": int(time.time()), "jti": "x", "iss": "Vonage", "payload_hash": body_hash(body)}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


@pytest.fixture
def signed(start_daemon):
    return start_daemon(
        base_config(security={"signature_secret": "${SECRET}"}), env={"SECRET": SECRET}
    )


def post(daemon, path, body, token=None, ctype="application/json"):
    headers = {"Content-Type": ctype}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return daemon.request(path, body, headers, "POST")


def test_signed_webhook_accepted(signed):
    status, _, body = post(signed, "/webhooks/answer", ANSWER, make_token(SECRET, ANSWER))
    assert status == 200
    assert json.loads(body)[-1]["action"] == "connect"
    status, _, _ = post(signed, "/webhooks/event", b'{"uuid":"u-1","status":"completed"}',
                        make_token(SECRET, b'{"uuid":"u-1","status":"completed"}'))
    assert status == 204
    # A GET webhook's payload_hash covers its query parameters, as compact JSON.
    token = make_token(SECRET, query_payload("uuid=u-2"))
    status, _, _ = signed.request("/webhooks/answer?uuid=u-2", None,
                                  {"Authorization": f"Bearer {token}"})
    assert status == 200


@pytest.mark.parametrize(
    "case, token",
    [
        ("missing", None),
        ("wrong secret", make_token("another-secret-another-secret-0000", ANSWER)),
        ("alg none", unsigned_token(ANSWER)),
        ("expired", make_token(SECRET, ANSWER, exp=int(time.time()) - 3600)),
        ("issued an hour ago", make_token(SECRET, ANSWER, iat=int(time.time()) - 3600)),
        ("other body", make_token(SECRET, b'{"uuid": "someone else"}')),
        ("no payload_hash", make_token(SECRET)),
        ("garbage", "not.a.jwt"),
        ("HS512", None),
    ],
)
def test_bad_signatures_refused(signed, case, token):
    if case == "HS512":
        import jwt

        token = jwt.encode({"iat": int(time.time())}, SECRET + "x" * 40, algorithm="HS512")
    for path in ("/webhooks/answer", "/webhooks/event", "/webhooks/fallback"):
        status, headers, body = post(signed, path, ANSWER, token)
        assert status == 401, (case, path, status, body)
        assert "signature refused" in json.loads(body)["error"]
    log = signed.log()
    # One log line per refusal, and no work done: no answer or event was handled.
    assert log.count("refused 401") == 3
    assert "answer uuid=" not in log and "event uuid=" not in log and "fallback answer" not in log
    assert signed.metric("voicews_rejected_total", 'reason="bad_signature"') == 3


def test_health_open_metrics_token(start_daemon):
    daemon = start_daemon(base_config(security={"metrics_token": "m-token"}))
    assert daemon.get_json("/health")["status"] == "ok"
    status, _, _ = daemon.request("/metrics")
    assert status == 401
    status, _, _ = daemon.request("/metrics", headers={"Authorization": "Bearer wrong"})
    assert status == 403
    status, _, body = daemon.request("/metrics", headers={"Authorization": "Bearer m-token"})
    assert status == 200 and b"voicews_active_calls 0.0" in body


def handshake_status(daemon, headers=None) -> int:
    try:
        with Call(daemon.ws, handshake_headers=headers, pipeline="echo") as call:
            call.echo_roundtrip(0, 3)
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_socket_vonage_auth(start_daemon):
    daemon = start_daemon(
        base_config(security={"signature_secret": SECRET, "websocket_auth": "vonage"})
    )
    status, _, body = post(daemon, "/webhooks/answer", ANSWER, make_token(SECRET, ANSWER))
    assert json.loads(body)[-1]["endpoint"][0]["authorization"] == {"type": "vonage"}
    assert handshake_status(daemon) == 401
    assert handshake_status(daemon, {"Authorization": "Bearer x.y.z"}) == 403
    assert handshake_status(daemon, {"Authorization": f"Bearer {unsigned_token(b'')}"}) == 403
    wrong = make_token("another-secret-another-secret-0000")
    assert handshake_status(daemon, {"Authorization": f"Bearer {wrong}"}) == 403
    assert handshake_status(daemon, {"Authorization": f"Bearer {make_token(SECRET)}"}) == 101
    # Refused handshakes never reached a pipeline: only the accepted call started.
    assert daemon.log().count("call started") == 1
    assert daemon.metric("voicews_rejected_total", 'reason="socket_auth"') == 4
    daemon.wait_metric("voicews_active_calls", 0)


def test_socket_custom_auth(start_daemon):
    daemon = start_daemon(
        base_config(security={"websocket_auth": "custom", "websocket_token": "${TOK}",
                              "signature_secret": SECRET}),
        env={"TOK": "s3cret-value"},
    )
    assert handshake_status(daemon) == 401
    assert handshake_status(daemon, {"Authorization": "s3cret-valuX"}) == 403
    assert handshake_status(daemon, {"Authorization": "s3cret"}) == 403
    assert handshake_status(daemon, {"Authorization": "s3cret-value"}) == 101
    assert handshake_status(daemon, {"Authorization": "Bearer s3cret-value"}) == 101
    assert daemon.log().count("call started") == 2


def test_public_interface_warning(start_daemon):
    from conftest import free_port

    port = free_port()
    daemon = start_daemon(base_config(), listen=f"tcp:{port}:interface=0.0.0.0", wait=False)
    daemon.port = port
    daemon.wait_healthy()
    daemon.wait_log("with no authentication")
    assert "listening on public interface 0.0.0.0" in daemon.log()
    quiet = start_daemon(base_config())
    assert "no authentication" not in quiet.log()


def test_max_calls_503_until_a_call_ends(start_daemon):
    daemon = start_daemon(base_config(limits={"max_calls": 2}))
    first, second = Call(daemon.ws, pipeline="echo"), Call(daemon.ws, pipeline="echo")
    first.echo_roundtrip(0, 2)
    second.echo_roundtrip(0, 2)
    assert handshake_status(daemon) == 503
    assert daemon.metric("voicews_rejected_total", 'reason="max_calls"') == 1
    first.close()
    daemon.wait_metric("voicews_active_calls", 1)
    assert handshake_status(daemon) == 101
    second.close()
    daemon.wait_metric("voicews_active_calls", 0)
    assert daemon.metric_or_zero("voicews_rejected_total", 'reason="max_calls"') == 1


def test_draining_refuses_new_sockets_503(daemon):
    """After SIGTERM the port closes; a kept-alive HTTP connection asking for a socket
    while live calls drain gets 503."""
    import http.client
    import signal

    call = RawCall(daemon.ws)  # a call that will not answer the goodbye
    daemon.wait_log("call started")
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    conn.request("GET", "/health")
    assert conn.getresponse().read()
    daemon.signal(signal.SIGTERM)
    daemon.wait_log("draining 1 calls")
    conn.request("GET", "/socket", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    response = conn.getresponse()
    assert response.status == 503
    assert json.loads(response.read())["error"] == "server is shutting down"
    call.close()
    assert daemon.stop() == 0
