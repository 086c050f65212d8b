"""The HTTP side of a real daemon: answer NCCO, events, fallback, health, bad bodies."""

from __future__ import annotations

import json

import voicews

from conftest import base_config


def answer(daemon, query: str = "", headers: dict | None = None):
    status, _, body = daemon.request(f"/webhooks/answer{query}", headers=headers)
    assert status == 200, body
    return json.loads(body)


def test_answer_ncco_connects_to_socket_with_call_headers(daemon):
    ncco = answer(daemon, "?to=447700900000&from=447700900001&uuid=U-1&conversation_uuid=C-1")
    assert [action["action"] for action in ncco] == ["connect"]
    (endpoint,) = ncco[0]["endpoint"]
    assert endpoint["type"] == "websocket"
    assert endpoint["uri"] == f"ws://127.0.0.1:{daemon.port}/socket"
    assert endpoint["content-type"] == "audio/l16;rate=16000"
    assert endpoint["headers"] == {
        "pipeline": "echo", "uuid": "U-1", "conversation_uuid": "C-1",
        "from": "447700900001", "to": "447700900000",
    }
    assert ncco[0]["eventUrl"] == [f"http://127.0.0.1:{daemon.port}/webhooks/event"]


def test_answer_post_json_and_tls_proxy(start_daemon):
    # X-Forwarded-Proto counts only from a trusted proxy (here: the test, on loopback).
    daemon = start_daemon(base_config(trusted_proxies=["127.0.0.1"]))
    body = json.dumps({"to": "4470", "from": "4471", "uuid": "U-2"}).encode()
    status, _, raw = daemon.request(
        "/webhooks/answer", data=body,
        headers={"Content-Type": "application/json", "X-Forwarded-Proto": "https",
                 "Host": "abc.ngrok.app"},
    )
    assert status == 200
    endpoint = json.loads(raw)[0]["endpoint"][0]
    assert endpoint["uri"] == "wss://abc.ngrok.app/socket"
    assert endpoint["headers"]["uuid"] == "U-2"


def test_greeting_public_url_numbers_and_header_key(start_daemon):
    daemon = start_daemon(base_config(
        greeting="Connecting you now", public_url="https://voice.example.com/",
        content_type="audio/l16;rate=8000", pipeline_header="route",
        numbers={"+447700900009": "louder"},
    ))
    ncco = answer(daemon, "?to=447700900009&uuid=U-3")
    assert ncco[0] == {"action": "talk", "text": "Connecting you now"}
    endpoint = ncco[1]["endpoint"][0]
    assert endpoint["uri"] == "wss://voice.example.com/socket"
    assert endpoint["content-type"] == "audio/l16;rate=8000"
    assert endpoint["headers"]["route"] == "louder"
    assert ncco[1]["eventUrl"] == ["https://voice.example.com/webhooks/event"]
    other = answer(daemon, "?to=447700900001")
    assert other[1]["endpoint"][0]["headers"]["route"] == "echo"


def test_headers_stay_under_vonage_limit(daemon):
    # The longest fields the answer webhook takes (longer ones are a 400).
    ncco = answer(daemon, f"?to={'4' * 128}&from={'4' * 128}&uuid={'u' * 64}"
                          f"&conversation_uuid={'c' * 64}")
    headers = ncco[0]["endpoint"][0]["headers"]
    assert headers["pipeline"] == "echo"
    assert len(json.dumps(headers).encode()) <= 512


def test_event_is_204_and_logged(daemon):
    answer(daemon, "?uuid=U-9&to=1")
    body = json.dumps({"uuid": "U-9", "status": "completed", "duration": "12"}).encode()
    status, _, raw = daemon.request(
        "/webhooks/event", data=body, headers={"Content-Type": "application/json"}
    )
    assert (status, raw) == (204, b"")
    daemon.wait_log("event uuid=U-9 status=completed")
    status, _, _ = daemon.request("/webhooks/event?uuid=U-10&status=ringing")
    assert status == 204


def test_fallback_answers_a_safe_ncco(daemon):
    status, _, raw = daemon.request(
        "/webhooks/fallback", data=b'{"reason": "timeout", "uuid": "U-5"}',
        headers={"Content-Type": "application/json"},
    )
    assert status == 200
    ncco = json.loads(raw)
    assert ncco[0]["action"] == "talk"
    daemon.wait_log("fallback answer for uuid=U-5: reason=timeout")


def test_health(daemon):
    health = daemon.get_json("/health")
    assert health["version"] == voicews.__version__
    assert health["active_calls"] == 0
    assert health["status"] == "ok"


def test_malformed_bodies_are_400_with_a_reason_never_500(daemon):
    cases = [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"[1, 2]", "application/json", 400, "must be an object"),
        (b"\xff\xfe", "application/json", 400, "not valid JSON"),
        (b"<xml/>", "text/xml", 415, "unsupported content type"),
    ]
    for path in ("/webhooks/answer", "/webhooks/event"):
        for body, ctype, code, reason in cases:
            status, _, raw = daemon.request(path, data=body, headers={"Content-Type": ctype})
            assert status == code, (path, body, raw)
            assert reason in json.loads(raw)["error"]
    status, _, raw = daemon.request(
        "/webhooks/answer", data=b'{"to": {"number": 1}}',
        headers={"Content-Type": "application/json"},
    )
    assert (status, json.loads(raw)["error"]) == (400, "field 'to' must be a string")
    status, _, raw = daemon.request(
        "/webhooks/answer", data=b'{"to": 447700900000, "uuid": 7}',
        headers={"Content-Type": "application/json"},
    )
    assert status == 200
    assert json.loads(raw)[0]["endpoint"][0]["headers"]["to"] == "447700900000"
    assert "Traceback" not in daemon.log()
    assert daemon.get_json("/health")["status"] == "ok"


def test_unknown_route_is_404(daemon):
    status, _, _ = daemon.request("/nope")
    assert status == 404
