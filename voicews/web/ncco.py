"""The answer NCCO: an optional greeting, then ``connect`` to our socket.

Vonage allows at most 512 bytes of ``headers``; the pipeline key always goes
in, the call identifiers follow, shortened or left out when they would not fit.
"""

from __future__ import annotations

import json
from typing import Any

from voicews.config.settings import Settings

HEADERS_LIMIT = 512
HEADER_VALUE_LIMIT = 128


def socket_uri(settings: Settings, host: str | None, secure: bool) -> str:
    """``<public_url>/socket`` in ws(s) form, or the same built from the request's Host."""
    if settings.raw.public_url:
        base = settings.raw.public_url.rstrip("/")
        scheme, rest = base.split("://", 1)
        scheme = {"https": "wss", "http": "ws"}.get(scheme, scheme)
        return f"{scheme}://{rest}/socket"
    return f"{'wss' if secure else 'ws'}://{host or 'localhost'}/socket"


def event_url(settings: Settings, host: str | None, secure: bool) -> str:
    if settings.raw.public_url:
        base = settings.raw.public_url.rstrip("/")
        base = base.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
        return f"{base}/webhooks/event"
    return f"{'https' if secure else 'http'}://{host or 'localhost'}/webhooks/event"


def socket_headers(pipeline_header: str, pipeline: str, call: dict[str, Any]) -> dict[str, str]:
    """The endpoint headers: pipeline first, then uuid, conversation_uuid, from, to."""
    headers = {pipeline_header: pipeline}
    for key in ("uuid", "conversation_uuid", "from", "to"):
        value = call.get(key)
        if value is None or value == "":
            continue
        candidate = {**headers, key: str(value)[:HEADER_VALUE_LIMIT]}
        if len(json.dumps(candidate).encode()) <= HEADERS_LIMIT:
            headers = candidate
    return headers


def answer_ncco(
    settings: Settings, call: dict[str, Any], host: str | None, secure: bool
) -> tuple[list[dict[str, Any]], str]:
    """The NCCO for a call and the name of the pipeline it asks for."""
    raw = settings.raw
    pipeline = settings.pipeline_for_number(call.get("to"))
    endpoint: dict[str, Any] = {
        "type": "websocket",
        "uri": socket_uri(settings, host, secure),
        "content-type": raw.content_type,
        "headers": socket_headers(raw.pipeline_header, pipeline, call),
    }
    auth = raw.security.websocket_auth
    if auth == "vonage":
        endpoint["authorization"] = {"type": "vonage"}
    elif auth == "custom":
        endpoint["authorization"] = {"type": "custom", "value": raw.security.websocket_token}
    ncco: list[dict[str, Any]] = []
    if raw.greeting:
        ncco.append({"action": "talk", "text": raw.greeting})
    connect: dict[str, Any] = {
        "action": "connect",
        "eventUrl": [event_url(settings, host, secure)],
        "endpoint": [endpoint],
    }
    ncco.append(connect)
    return ncco, pipeline


def fallback_ncco() -> list[dict[str, Any]]:
    """What a caller hears when the answer URL failed: an apology, then hang-up."""
    return [
        {
            "action": "talk",
            "text": "Sorry, we cannot take your call right now. Please try again later.",
        }
    ]
