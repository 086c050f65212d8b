"""Who may talk to the daemon: signed webhooks, socket authorization, tokens for our pages.

* Signed webhooks: with ``security.signature_secret`` every ``/webhooks/*`` request
  must carry Vonage's HS256 JWT (``payload_hash`` = SHA-256 of the body, or of the
  query parameters as compact JSON for a GET), each token accepted once.
* Socket handshake authorization (``security.websocket_auth``): a Vonage JWT or a
  custom token, checked in the ``/socket`` route before Autobahn sees the request,
  so a refused handshake never reaches a pipeline.  A browser, which cannot send that
  header, presents a one-use ticket instead (``/socket?ticket=``, voicews.web.tickets).
* The start-up warning when a public interface is served without authentication.

Every refusal is one log line, one ``voicews_rejected_total{reason}`` increment
and an answer that says why.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import TYPE_CHECKING

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from voicews.runtime import metrics
from voicews.vonage import tokens as vonage_jwt
from voicews.web import tickets

if TYPE_CHECKING:
    from voicews.config.settings import Settings
    from voicews.runtime.state import Runtime

log = Logger(namespace="voicews.web.auth")

SEEN = vonage_jwt.SeenTokens()
"""The ids of the Vonage tokens this process accepted lately (webhooks and socket
handshakes): each is accepted once.  Per process: workers sharing a port do not share it."""


class Refused(Exception):
    """A request we will not serve: HTTP `code`, a reason for the client and the log,
    and the ``voicews_rejected_total`` reason label."""

    def __init__(self, code: int, reason: str, metric: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.metric = metric


def header(request: IRequest, name: str) -> str | None:
    """A request header as text (Twisted may hand back bytes), or None."""
    value = request.getHeader(name)
    return value if value is None or isinstance(value, str) else value.decode("latin-1")


def check_webhook_signature(request: IRequest, settings: Settings) -> None:
    """Raise Refused(401) unless the webhook carries a valid Vonage JWT for its body.

    Does nothing when no signature secret is configured.  The body is read and
    rewound, so the handler reads it again as usual.
    """
    secret = settings.raw.security.signature_secret
    if not secret:
        return
    if request.method == b"POST":
        signed = b""
        if request.content is not None:
            signed = request.content.read()
            request.content.seek(0)
    else:  # Vonage hashes a GET webhook's query parameters, so they cannot be swapped
        signed = vonage_jwt.query_payload(request.uri.partition(b"?")[2].decode("utf-8", "replace"))
    try:
        token = vonage_jwt.bearer(header(request, "authorization"))
        vonage_jwt.verify_token(
            token, secret, max_age=settings.raw.security.max_token_age, signed=signed,
            seen=SEEN,
        )
    except vonage_jwt.InvalidToken as exc:
        raise Refused(401, f"webhook signature refused: {exc}", "bad_signature") from None


def check_bearer(request: IRequest, token: str | None, what: str) -> None:
    """Raise Refused(401/403) unless ``Authorization: Bearer <token>`` matches (when set)."""
    if not token:
        return
    given = header(request, "authorization")
    if not given:
        raise Refused(401, f"{what} needs Authorization: Bearer <token>", f"{what}_auth")
    try:
        presented = vonage_jwt.bearer(given)
    except vonage_jwt.InvalidToken as exc:
        raise Refused(403, f"{what}: {exc}", f"{what}_auth") from None
    if not hmac.compare_digest(presented.encode(), token.encode()):
        raise Refused(403, f"{what}: wrong token", f"{what}_auth")


def check_socket_handshake(request: IRequest, runtime: Runtime) -> None:
    """Decide, before Autobahn takes the connection, whether this socket may open.

    503 while draining or at ``limits.max_calls`` (Vonage may retry later), 401
    when the configured authorization is missing, 403 when it is wrong.  Instead of the
    header, a ticket from the console (``?ticket=``, voicews.web.tickets) opens it once.
    """
    settings = runtime.settings
    if runtime.draining:
        raise Refused(503, "server is shutting down", "draining")
    max_calls = settings.raw.limits.max_calls
    if len(runtime.calls) >= max_calls:
        raise Refused(503, f"at the limit of {max_calls} calls", "max_calls")
    security = settings.raw.security
    if security.websocket_auth == "none":
        return
    ticket = (request.args or {}).get(b"ticket")
    if ticket:
        try:
            tickets.check(ticket[-1].decode("ascii", "replace"), security.control_token)
        except tickets.InvalidTicket as exc:
            raise Refused(403, f"socket ticket refused: {exc}", "socket_auth") from None
        return
    given = header(request, "authorization")
    if not given:
        raise Refused(401, "socket handshake has no Authorization header", "socket_auth")
    if security.websocket_auth == "vonage":
        assert security.signature_secret  # config.py requires it
        try:
            vonage_jwt.verify_token(
                vonage_jwt.bearer(given), security.signature_secret,
                max_age=security.max_token_age, seen=SEEN,
            )
        except vonage_jwt.InvalidToken as exc:
            raise Refused(403, f"socket authorization refused: {exc}", "socket_auth") from None
        return
    # custom: Vonage sends the configured value verbatim; accept it bare or as a Bearer token.
    expected = (security.websocket_token or "").encode()
    value = given.strip()
    if value.lower().startswith("bearer "):
        bare = value[7:].strip().encode()
        if hmac.compare_digest(bare, expected):
            return
    if not hmac.compare_digest(value.encode(), expected):
        raise Refused(403, "socket authorization refused: wrong token", "socket_auth")


def refuse(request: IRequest, exc: Refused) -> bytes:
    """Log one line, count it, and answer JSON ``{"error": reason}`` with the code."""
    log.warn(
        "{method} {path} from {peer} refused {code}: {reason}",
        method=request.method.decode("latin-1"),
        path=request.path.decode("utf-8", "replace"),
        peer=_peer(request), code=exc.code, reason=exc.reason, rejected=exc.metric,
    )
    metrics.rejected(exc.metric)
    request.setResponseCode(exc.code)
    request.setHeader("content-type", "application/json")
    if exc.code == 401:
        request.setHeader("www-authenticate", "Bearer")
    return json.dumps({"error": exc.reason}).encode()


def _peer(request: IRequest) -> str:
    peer = request.getClientAddress()
    return f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"


# -- start-up ---------------------------------------------------------------------------


def is_public(host: str) -> bool:
    """Whether a listening address is reachable from other machines."""
    try:
        return not ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return True  # a name or a unix path we cannot judge: assume public


def open_doors(settings: Settings) -> list[str]:
    """What anyone who can reach the port may do without credentials, each with its key.

    (``websocket_auth: custom`` without a signature secret would hand the socket token to
    anyone in the NCCO of an unsigned answer webhook: settings.py refuses that config.)
    """
    security = settings.raw.security
    doors = []
    if not security.signature_secret:
        doors.append("webhooks are not signed (security.signature_secret)")
    if security.websocket_auth == "none":
        doors.append("the socket has no authorization (security.websocket_auth)")
    if not security.metrics_token:
        doors.append("/metrics is open (security.metrics_token)")
    if security.signature_secret and not security.max_token_age:
        doors.append("signed tokens never expire (security.max_token_age is 0)")
    return doors


def warn_if_exposed(host: str, settings: Settings) -> None:
    """One warning at start when a public interface is served with any door open."""
    if not is_public(host) or not open_doors(settings):
        return
    log.warn(
        "listening on public interface {host} with no authentication: {doors}",
        host=host, doors="; ".join(open_doors(settings)),
    )
