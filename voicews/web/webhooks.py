"""Vonage's webhooks: answer (the NCCO that connects the call to our socket), event, fallback.

Handlers are small: parse the request (400 with a reason when it is malformed,
never a 500), do one thing, answer JSON.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from klein import Klein
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from voicews.runtime.state import Runtime
from voicews.web import auth
from voicews.web.ncco import answer_ncco, fallback_ncco
from voicews.web.origin import request_origin

log = Logger(namespace="voicews.web.webhooks")


class BadRequest(auth.Refused):
    """The request cannot be understood; answered 400 (or `code`) with the reason."""

    def __init__(self, reason: str, code: int = 400) -> None:
        super().__init__(code, reason, "bad_request")


def request_fields(request: IRequest) -> dict[str, Any]:
    """The webhook's fields: the query string, then a JSON or form body on top."""
    fields: dict[str, Any] = {}
    try:
        for key, values in request.args.items():
            fields[key.decode("utf-8")] = values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("query string is not UTF-8") from None
    if request.method != b"POST":
        return fields
    body = request.content.read() if request.content is not None else b""
    if not body.strip():
        return fields
    ctype = (auth.header(request, "content-type") or "").split(";")[0].strip().lower()
    if ctype == "application/json" or (not ctype and body.lstrip()[:1] in (b"{", b"[")):
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        except RecursionError:  # json's C scanner stops at Python's recursion limit
            raise BadRequest("JSON body is nested too deeply") from None
        if not isinstance(data, dict):
            raise BadRequest("JSON body must be an object")
        fields.update(data)
    elif ctype == "application/x-www-form-urlencoded":
        try:
            fields.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            raise BadRequest("form body is not UTF-8") from None
    else:
        raise BadRequest(f"unsupported content type {ctype or 'none'!r}", 415)
    return fields


FIELD_LIMITS = {"uuid": 64, "conversation_uuid": 64, "from": 128, "to": 128, "status": 32}
"""Characters allowed in each webhook field we log or put in an NCCO.  Vonage's uuids are
36 characters (conversation uuids 40), numbers at most 15 digits, SIP or app endpoints a
few dozen characters, statuses one word: a longer value is not from Vonage."""

FALLBACK_REASON_LIMIT = 256
"""The fallback webhook's `reason` is logged cut to this many characters."""


def bounded_fields(fields: dict[str, Any], keys: tuple[str, ...]) -> dict[str, str]:
    """`keys` of `fields` as strings; 400 for an object or list, or a value over its bound."""
    out = {}
    for key in keys:
        value = fields.get(key)
        if isinstance(value, (dict, list)):
            raise BadRequest(f"field {key!r} must be a string")
        if value is None or value == "":
            continue
        text = str(value)
        if len(text) > FIELD_LIMITS[key]:
            raise BadRequest(f"field {key!r} is longer than {FIELD_LIMITS[key]} characters")
        out[key] = text
    return out


def call_fields(fields: dict[str, Any]) -> dict[str, str]:
    """The call identifiers as strings; an object or list where Vonage sends text is a 400."""
    return bounded_fields(fields, ("uuid", "conversation_uuid", "from", "to"))


def _cut(value: Any, limit: int) -> str | None:
    """A field of a request we answer whatever it holds (the fallback): cut for the log."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str)[: limit + 1]
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def json_response(request: IRequest, data: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader("content-type", "application/json")
    return json.dumps(data).encode("utf-8")


class Webhooks:
    """Vonage's webhooks under ``/webhooks/``; state lives in the Runtime, so reloads take
    effect at once."""

    app = Klein()

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @app.handle_errors(auth.Refused)
    def refused(self, request: IRequest, failure) -> bytes:
        return auth.refuse(request, failure.value)

    @app.route("/answer", methods=["GET", "POST"])
    def answer(self, request: IRequest) -> bytes:
        auth.check_webhook_signature(request, self.runtime.settings)
        call = call_fields(request_fields(request))
        settings = self.runtime.settings
        host, secure = (None, False) if settings.raw.public_url else request_origin(
            request, settings
        )
        ncco, pipeline = answer_ncco(settings, call, host, secure)
        uuid = call.get("uuid")
        log.info(
            "answer uuid={uuid} from={caller} to={to} pipeline={pipeline}",
            uuid=uuid, caller=call.get("from"), to=call.get("to"), pipeline=pipeline,
        )
        return json_response(request, ncco)

    @app.route("/event", methods=["GET", "POST"])
    def event(self, request: IRequest) -> bytes:
        auth.check_webhook_signature(request, self.runtime.settings)
        data = bounded_fields(request_fields(request), ("uuid", "conversation_uuid", "status"))
        uuid, status = data.get("uuid"), data.get("status")
        log.info(
            "event uuid={uuid} status={status}", uuid=uuid, status=status,
            conversation_uuid=data.get("conversation_uuid"),
        )
        request.setResponseCode(204)
        return b""

    @app.route("/fallback", methods=["GET", "POST"])
    def fallback(self, request: IRequest) -> bytes:
        auth.check_webhook_signature(request, self.runtime.settings)
        try:
            data = request_fields(request)
        except BadRequest:
            data = {}
        log.warn(
            "fallback answer for uuid={uuid}: reason={reason}",
            uuid=_cut(data.get("uuid"), FIELD_LIMITS["uuid"]),
            reason=_cut(data.get("reason"), FALLBACK_REASON_LIMIT),
        )
        return json_response(request, fallback_ncco())
