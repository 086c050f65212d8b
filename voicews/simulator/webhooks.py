"""The HTTP half of a simulated call: the answer webhook, the NCCO, the event webhooks."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from voicews import __version__
from voicews.simulator.spec import CallResult, CallSpec, SimulationError, WebhookPost
from voicews.vonage.tokens import make_token, query_payload

log = logging.getLogger("voicews.simulator")


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_DEFAULT = urllib.request.build_opener()


def _http(method: str, url: str, body: bytes | None, headers: dict[str, str],
          timeout: float) -> tuple[int, bytes]:
    """One blocking request (run in a thread); HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    opener = _DIRECT if is_loopback(url) else _DEFAULT
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _signed(headers: dict[str, str], secret: str | None, body: bytes | None) -> dict[str, str]:
    if secret:
        headers = {**headers, "Authorization": f"Bearer {make_token(secret, body)}"}
    return headers


async def request_ncco(spec: CallSpec, call: dict[str, str]) -> list[Any]:
    """Ask the answer URL for the NCCO as Vonage does: GET query or POST JSON."""
    headers = {"User-Agent": f"voicews-call/{__version__}", "Accept": "application/json"}
    url, body = spec.answer_url, None
    if spec.method.upper() == "POST":
        body = json.dumps(call).encode()
        headers["Content-Type"] = "application/json"
        headers = _signed(headers, spec.signature_secret, body)
    else:
        sep = "&" if urllib.parse.urlsplit(url).query else "?"
        url = f"{url}{sep}{urllib.parse.urlencode(call)}"
        # Vonage signs a GET webhook's query parameters, as one compact JSON object.
        query = query_payload(urllib.parse.urlsplit(url).query)
        headers = _signed(headers, spec.signature_secret, query)
    try:
        status, reply = await asyncio.to_thread(
            _http, spec.method.upper(), url, body, headers, spec.timeout
        )
    except (OSError, urllib.error.URLError) as exc:
        raise SimulationError(f"answer URL {spec.answer_url} unreachable: {exc}") from None
    if status != 200:
        text = reply[:200].decode("utf-8", "replace")
        raise SimulationError(f"answer URL returned HTTP {status}: {text}")
    try:
        ncco = json.loads(reply)
    except ValueError:
        raise SimulationError("answer URL did not return JSON") from None
    if not isinstance(ncco, list):
        raise SimulationError("NCCO is not a JSON array")
    return ncco


async def post_event(spec: CallSpec, url: str, data: dict[str, Any],
                     result: CallResult) -> None:
    """POST one event webhook (signed when a secret is set); a failure is a call error."""
    body = json.dumps(data).encode()
    headers = _signed(
        {"Content-Type": "application/json", "User-Agent": f"voicews-call/{__version__}"},
        spec.signature_secret, body,
    )
    post = WebhookPost(status=data["status"], url=url, http_status=None)
    try:
        status, reply = await asyncio.to_thread(
            _http, "POST", url, body, headers, spec.timeout
        )
        post.http_status = status
        if not 200 <= status < 300:
            post.error = f"HTTP {status}: {reply[:120].decode('utf-8', 'replace')}"
    except (OSError, urllib.error.URLError) as exc:
        post.error = str(exc)
    result.webhooks.append(post)
    if post.error:
        result.errors.append(f"event webhook {post.status} to {url}: {post.error}")


# -- NCCO ----------------------------------------------------------------------------------


@dataclass
class Endpoint:
    """The websocket endpoint of an NCCO's connect action."""

    uri: str
    content_type: str
    headers: dict[str, Any]
    authorization: dict[str, Any] | str | None
    event_url: str | None


def read_ncco(ncco: list[Any], result: CallResult) -> Endpoint:
    """Walk the NCCO as Vonage would up to its ``connect``; collect the talk texts."""
    for action in ncco:
        if not isinstance(action, dict):
            raise SimulationError(f"NCCO action is not an object: {action!r}"[:200])
        kind = action.get("action")
        if kind == "talk":
            text = str(action.get("text", ""))
            result.talk.append(text)
            log.info("%s: talk: %s", result.label, text)
        elif kind == "connect":
            endpoints = action.get("endpoint")
            if not isinstance(endpoints, list) or not endpoints:
                raise SimulationError("NCCO connect has no endpoint list")
            endpoint = endpoints[0]
            if not isinstance(endpoint, dict) or endpoint.get("type") != "websocket":
                raise SimulationError(f"NCCO connects to {endpoint!r}, not a websocket"[:200])
            headers = endpoint.get("headers") or {}
            if not isinstance(headers, dict):
                raise SimulationError("NCCO websocket headers is not an object")
            if len(json.dumps(headers).encode()) > 512:
                raise SimulationError("NCCO websocket headers exceed Vonage's 512 bytes")
            event_urls = action.get("eventUrl") or []
            if isinstance(event_urls, str):
                event_urls = [event_urls]
            return Endpoint(
                uri=str(endpoint.get("uri", "")),
                content_type=str(endpoint.get("content-type", "")),
                headers=headers,
                authorization=endpoint.get("authorization"),
                event_url=str(event_urls[0]) if event_urls else None,
            )
        else:
            log.info("%s: NCCO action %r not simulated, skipped", result.label, kind)
    raise SimulationError("NCCO has no connect to a websocket")


def rewrite_host(url: str, host: str | None, http: bool = False) -> str:
    """`url` with its host replaced by `host` (``h:port`` or ``scheme://h:port``).

    Socket and webhook URLs share the scheme family: a ``ws://`` host turns an
    ``https://`` event URL into ``http://``.
    """
    if not host:
        return url
    parts = urllib.parse.urlsplit(url)
    if "://" in host:
        new = urllib.parse.urlsplit(host)
        scheme, netloc = new.scheme, new.netloc
    else:
        scheme, netloc = parts.scheme, host
    if http:
        scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    else:
        scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    return urllib.parse.urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))


def handshake_authorization(auth: dict[str, Any] | str | None, secret: str | None) -> str | None:
    """The Authorization header Vonage would send on the socket handshake."""
    if auth is None or isinstance(auth, str):
        return auth
    if not isinstance(auth, dict):
        raise SimulationError(f"endpoint authorization is not an object: {auth!r}"[:200])
    kind = auth.get("type")
    if kind == "vonage":
        if not secret:
            raise SimulationError(
                "the NCCO asks for a Vonage-signed socket: give --signature-secret"
            )
        return f"Bearer {make_token(secret)}"
    if kind == "custom":
        return str(auth.get("value", ""))
    raise SimulationError(f"unknown endpoint authorization type {kind!r}")
