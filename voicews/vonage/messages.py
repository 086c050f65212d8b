"""Parsers for what Vonage sends as text on the socket.

They take raw payloads and either return typed values or raise
:class:`ProtocolError` carrying the WebSocket close code the call should get.
They are pure, so property-based tests can throw anything at them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from voicews.audio.samples import parse_content_type

# Close codes we use (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013


class ProtocolError(Exception):
    """The peer broke the Vonage protocol; `code` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class FirstMessage:
    """The socket's opening text message: audio format plus the NCCO's headers."""

    rate: int
    content_type: str
    headers: dict[str, Any] = field(default_factory=dict)


def _json_object(payload: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(CLOSE_POLICY, f"{what} is not JSON") from None
    except RecursionError:  # json's C scanner stops at Python's recursion limit (1000 deep)
        raise ProtocolError(CLOSE_POLICY, f"{what} is nested too deeply") from None
    if not isinstance(data, dict):
        raise ProtocolError(CLOSE_POLICY, f"{what} is not a JSON object")
    return data


def parse_first_message(payload: bytes, is_binary: bool) -> FirstMessage:
    """Parse the first message, with or without ``"event": "websocket:connected"``."""
    if is_binary:
        raise ProtocolError(CLOSE_UNSUPPORTED, "expected a JSON text message first, got binary")
    data = _json_object(payload, "first message")
    event = data.pop("event", "websocket:connected")
    if event != "websocket:connected":
        raise ProtocolError(CLOSE_POLICY, f"first message has event {str(event)[:40]!r}")
    content_type = data.pop("content-type", None)
    if content_type is None:
        raise ProtocolError(CLOSE_POLICY, "first message has no content-type")
    rate = parse_content_type(content_type)
    if rate is None:
        raise ProtocolError(
            CLOSE_UNSUPPORTED, f"unsupported content-type {str(content_type)[:60]!r}"
        )
    return FirstMessage(rate=rate, content_type=content_type, headers=data)


def parse_event(payload: bytes) -> tuple[str, dict[str, Any]]:
    """A later text message as (kind, fields): ``websocket:dtmf`` -> ``("dtmf", {...})``.

    The fields are the JSON object without its ``event`` key; odd values are left
    for the reader to judge (``Event.digit`` is None unless it is one character).
    """
    data = _json_object(payload, "text message")
    name = data.pop("event", None)
    if not isinstance(name, str) or not name:
        raise ProtocolError(CLOSE_POLICY, "text message has no event name")
    return name.removeprefix("websocket:"), data


KNOWN_EVENTS = frozenset({"dtmf", "notify", "cleared"})
