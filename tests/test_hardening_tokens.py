"""Tokens and authentication found wanting by attacking voicews (issue 12), on a real twistd."""

from __future__ import annotations

import json
import time

import pytest
from websockets.exceptions import InvalidStatus

from voicews.vonage.tokens import make_token, query_payload

from conftest import Daemon, base_config, free_port
from wire import Call

SECRET = "test-signature-secret-0123456789abcdef"


def start_public(start_daemon, config, env=None):
    port = free_port()
    daemon = start_daemon(config, listen=f"tcp:{port}:interface=0.0.0.0", wait=False, env=env)
    daemon.port = port
    daemon.wait_healthy()
    return daemon


@pytest.mark.parametrize(
    ("security", "doors"),
    [
        ({"signature_secret": "${SECRET}"},
         ["the socket has no authorization (security.websocket_auth)",
          "/metrics is open (security.metrics_token)"]),
        ({"signature_secret": "${SECRET}", "websocket_auth": "vonage", "metrics_token": "m",
          "max_token_age": 0},
         ["signed tokens never expire (security.max_token_age is 0)"]),
        ({"websocket_auth": "vonage", "signature_secret": "${SECRET}"},
         ["/metrics is open (security.metrics_token)"]),
    ],
)
def test_public_warning_names_every_open_door(start_daemon, security, doors):
    """Item 9: the warning on a public interface was silent as soon as any one of the
    signature secret or socket authorization was set, whatever else was open."""
    daemon = start_public(start_daemon, base_config(security=security), env={"SECRET": SECRET})
    log = daemon.wait_log("listening on public interface 0.0.0.0 with")
    line = next(line for line in log.splitlines() if "listening on public interface" in line)
    assert line.split("authentication: ", 1)[1] == "; ".join(doors)


def test_no_warning_when_nothing_is_open(start_daemon):
    daemon = start_public(start_daemon, base_config(security={
        "signature_secret": "${SECRET}", "websocket_auth": "vonage", "metrics_token": "m"}),
        env={"SECRET": SECRET})
    daemon.wait_log("voicews listening on")
    assert "public interface" not in daemon.log()


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    daemon = Daemon(tmp_path_factory.mktemp("tok"), base_config(security={
        "signature_secret": SECRET, "websocket_auth": "vonage", "max_token_age": 300})).start()
    yield daemon
    daemon.stop()


def answer_body(uuid: str) -> bytes:
    return json.dumps({"uuid": uuid, "from": "447700900001", "to": "447700900000"}).encode()


def post(daemon, path: str, body: bytes, token: str) -> int:
    status, _, _ = daemon.request(path, body, {"Content-Type": "application/json",
                                               "Authorization": f"Bearer {token}"}, "POST")
    return status


def get(daemon, query: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, _, _ = daemon.request(f"/webhooks/answer?{query}", None, headers)
    return status


def handshake(daemon, token: str) -> int:
    try:
        with Call(daemon.ws, handshake_headers={"Authorization": f"Bearer {token}"},
                  pipeline="echo") as call:
            call.echo_roundtrip(0, 2)
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_a_webhook_token_is_accepted_once(signed):
    """Item 8: one signed webhook token was accepted three times."""
    body = answer_body("replay-1")
    token = make_token(SECRET, body)
    assert post(signed, "/webhooks/answer", body, token) == 200
    assert post(signed, "/webhooks/answer", body, token) == 401
    assert post(signed, "/webhooks/event", body, token) == 401
    signed.wait_log("token already used")


def test_a_socket_token_opens_one_socket(signed):
    """Item 8: one token opened five sockets."""
    token = make_token(SECRET)
    assert handshake(signed, token) == 101
    assert handshake(signed, token) == 403
    assert handshake(signed, make_token(SECRET)) == 101
    signed.wait_metric("voicews_active_calls", 0)


@pytest.mark.parametrize(
    ("offset", "status"),
    [(-590, 401), (-310, 401), (-290, 200), (290, 401), (60, 401), (3, 200)],
)
def test_token_age_allows_only_a_few_seconds_of_clock_skew(signed, offset, status):
    """Item 8: iat -590 s and iat +290 s both passed (300 s of leeway); now 5 s of skew."""
    body = answer_body(f"age{offset}")
    token = make_token(SECRET, body, iat=int(time.time()) + offset)
    assert post(signed, "/webhooks/answer", body, token) == status


def test_payload_hash_must_cover_the_body_sent(signed):
    """Item 8: a token whose payload_hash covers another body, or an empty body, passed."""
    body = answer_body("hash-1")
    assert post(signed, "/webhooks/answer", answer_body("other"), make_token(SECRET, body)) == 401
    assert post(signed, "/webhooks/event", b"", make_token(SECRET, body)) == 401
    assert post(signed, "/webhooks/event", b"", make_token(SECRET)) == 401
    assert post(signed, "/webhooks/answer", body, make_token(SECRET)) == 401


def test_get_webhook_token_must_cover_the_query(signed):
    """Item 8: on GET the query string was not covered, so a captured token passed with
    another uuid/to.  Vonage hashes GET parameters as a compact JSON object in their order."""
    query = "uuid=get-1&to=447700900000&from=447700900001"
    token = make_token(SECRET, query_payload(query))
    assert get(signed, "uuid=get-2&to=447700900000&from=447700900001", token) == 401
    assert get(signed, "uuid=get-1&to=447700900009&from=447700900001", token) == 401
    assert get(signed, query, make_token(SECRET)) == 401  # no payload_hash at all
    assert get(signed, query, token) == 200
    assert get(signed, query, token) == 401  # and only once


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_simulated_vonage_calls_pass_the_stricter_checks(signed, method):
    """voicews-call signs as Vonage does (GET: the query's JSON), once per token."""
    from voicews.simulator import CallSpec, simulate

    result = simulate(CallSpec(answer_url=signed.base + "/webhooks/answer",
                               signature_secret=SECRET, method=method, seconds=0.2, fast=True))
    assert result.ok, result.error
    signed.wait_metric("voicews_active_calls", 0)


def test_seen_token_ids_expire_with_max_token_age_and_stay_bounded():
    from voicews.vonage.tokens import CLOCK_SKEW, InvalidToken, SeenTokens

    now = [1000.0]
    seen = SeenTokens(clock=lambda: now[0], limit=3)
    seen.accept("a", iat=1000, max_age=300)
    with pytest.raises(InvalidToken, match="already used"):
        seen.accept("a", iat=1000, max_age=300)
    now[0] = 1000 + 300 + CLOCK_SKEW + 1  # "a" is past max_token_age: forgotten
    seen.accept("b", iat=now[0], max_age=300)
    assert len(seen) == 1
    for jti in "cdef":
        seen.accept(jti, iat=now[0], max_age=None)
    assert len(seen) == 3  # the oldest went first
    seen.accept("b", iat=now[0], max_age=300)  # "b" was pushed out by the bound
