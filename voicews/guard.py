"""Who may talk to the daemon, and how much: authentication and limits in one place.

* Signed webhooks: with ``security.signature_secret`` every ``/webhooks/*`` request
  must carry Vonage's HS256 JWT (``payload_hash`` = SHA-256 of the body).
* Socket handshake authorization (``security.websocket_auth``): a Vonage JWT or a
  custom token, checked in the ``/socket`` route before Autobahn sees the request,
  so a refused handshake never reaches a pipeline.
* The HTTP side's bounds: a request must be fully received within
  ``limits.handshake_timeout`` (slow or half-open clients are dropped), and a
  body larger than ``limits.max_body_bytes`` is answered 413 without being buffered.
* The call watchdog: one timer for the whole daemon that ends idle calls and
  calls past ``limits.max_call_seconds``, so the per-frame path pays nothing.

Every refusal is one log line, one ``voicews_rejected_total{reason}`` increment
and an answer that says why.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import TYPE_CHECKING

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.iweb import IRequest
from twisted.web.server import Request, Site

from voicews import metrics, vonage_jwt
from voicews.messages import CLOSE_NORMAL, CLOSE_POLICY

if TYPE_CHECKING:
    from voicews.config import Settings
    from voicews.runtime import Runtime

log = Logger(namespace="voicews.guard")


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
    body = b""
    if request.content is not None:
        body = request.content.read()
        request.content.seek(0)
    try:
        token = vonage_jwt.bearer(header(request, "authorization"))
        vonage_jwt.verify_token(
            token, secret, body or None, settings.raw.security.max_token_age
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
    when the configured authorization is missing, 403 when it is wrong.
    """
    settings = runtime.settings
    if runtime.draining:
        raise Refused(503, "server is shutting down", "draining")
    max_calls = settings.raw.limits.max_calls
    if len(runtime.calls.live) >= max_calls:
        raise Refused(503, f"at the limit of {max_calls} calls", "max_calls")
    security = settings.raw.security
    if security.websocket_auth == "none":
        return
    given = header(request, "authorization")
    if not given:
        raise Refused(401, "socket handshake has no Authorization header", "socket_auth")
    if security.websocket_auth == "vonage":
        assert security.signature_secret  # config.py requires it
        try:
            vonage_jwt.verify_token(
                vonage_jwt.bearer(given), security.signature_secret, None,
                security.max_token_age,
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


# -- the HTTP side's bounds -----------------------------------------------------------


class GuardedRequest(Request):
    """A Request that refuses a body over ``limits.max_body_bytes`` before buffering it.

    With a Content-Length the check happens as soon as the headers are in; a
    chunked body is counted as it arrives.  Either way the client gets a 413 and
    the connection is closed, and the rest of the body is discarded unread.
    """

    _body_seen = 0
    _too_big = False

    def _limit(self) -> int:
        return self.channel.site.runtime.settings.raw.limits.max_body_bytes

    def gotLength(self, length):  # noqa: N802 - Twisted's name
        if length is not None and length > self._limit():
            self._refuse_body(f"body of {length} bytes, limit {self._limit()}")
            return
        super().gotLength(length)

    def handleContentChunk(self, data):  # noqa: N802
        if self._too_big:
            return
        self._body_seen += len(data)
        if self._body_seen > self._limit():
            self._refuse_body(f"body over {self._limit()} bytes")
            return
        super().handleContentChunk(data)

    def process(self):
        if self._too_big:
            return  # answered 413 already; the handler must not run on a cut body
        super().process()

    def _refuse_body(self, reason: str) -> None:
        self._too_big = True
        self.content = _Discard()
        channel = self.channel
        transport = channel.transport
        peer = transport.getPeer() if transport is not None else None
        log.warn(
            "{method} {path} from {peer} refused 413: {reason}",
            method=(getattr(channel, "_command", b"?") or b"?").decode("latin-1"),
            path=(getattr(channel, "_path", b"?") or b"?").decode("utf-8", "replace"),
            peer=f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}",
            reason=reason, rejected="body_too_big",
        )
        metrics.rejected("body_too_big")
        if transport is None:
            return
        body = json.dumps({"error": reason}).encode()
        transport.write(
            b"HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        transport.loseConnection()


class _Discard:
    """Where the rest of a refused body goes."""

    def write(self, data: bytes) -> None:
        pass

    def seek(self, *args) -> int:
        return 0

    def read(self, *args) -> bytes:
        return b""

    def close(self) -> None:
        pass


class GuardedChannel(HTTPChannel):
    """An HTTP channel that must receive each whole request within a deadline.

    Twisted's own ``timeOut`` is an idle timer, reset by every byte, so a client
    that trickles a header a byte at a time would never be dropped.  Here the
    deadline (``limits.handshake_timeout``) runs from the connection (or the
    previous response) to the end of the request; a socket upgrade cancels it
    before Autobahn takes the connection, so it never cuts a call.
    """

    _deadline = None

    def connectionMade(self):  # noqa: N802
        super().connectionMade()
        self._arm()

    def _arm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            return
        timeout = self.site.runtime.settings.raw.limits.handshake_timeout
        self._deadline = self.callLater(timeout, self._too_slow, timeout)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self, timeout: float) -> None:
        self._deadline = None
        transport = self.transport
        if transport is None:
            return
        peer = transport.getPeer()
        log.info(
            "dropped connection from {peer}: no complete request within {timeout:g} s",
            peer=f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}",
            timeout=timeout, rejected="request_timeout",
        )
        metrics.rejected("request_timeout")
        transport.abortConnection()

    def allContentReceived(self):  # noqa: N802
        self._disarm()
        super().allContentReceived()

    def requestDone(self, request):  # noqa: N802
        super().requestDone(request)
        if self.persistent and self.transport is not None and not self.transport.disconnecting:
            self._arm()  # the next request on this keep-alive connection gets the same bound

    def connectionLost(self, reason):  # noqa: N802
        self._disarm()
        super().connectionLost(reason)


class GuardedSite(Site):
    """The daemon's Site: guarded channels and requests that know the Runtime's limits."""

    protocol = GuardedChannel
    requestFactory = GuardedRequest

    def __init__(self, resource, runtime: Runtime, reactor=None) -> None:
        super().__init__(resource, requestFactory=GuardedRequest, reactor=reactor)
        self.runtime = runtime
        self.displayTracebacks = False


# -- the call watchdog --------------------------------------------------------------------


class CallWatchdog:
    """Ends calls that went quiet or ran too long, from one timer for the whole daemon.

    Each tick compares every live call's ``frames_in`` with the previous tick's;
    a call whose count has not moved for ``limits.idle_timeout`` is closed with
    1008, a call older than ``limits.max_call_seconds`` with 1000.  Resolution
    is the tick (1 s by default); nothing is added to the per-frame path.
    """

    def __init__(self, runtime: Runtime, interval: float = 1.0) -> None:
        self.runtime = runtime
        self.interval = interval
        self._seen: dict[object, tuple[int, float]] = {}
        self._loop = LoopingCall(self.tick)
        self._loop.clock = runtime.clock

    def start(self) -> None:
        self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def tick(self) -> None:
        runtime = self.runtime
        limits = runtime.settings.raw.limits
        now = runtime.clock.seconds()
        seen: dict[object, tuple[int, float]] = {}
        for call in list(runtime.calls.live):
            if call._ended:
                continue
            if now - call._opened_at >= limits.max_call_seconds:
                log.info(
                    "call reached max_call_seconds={limit:g} uuid={uuid}",
                    limit=limits.max_call_seconds, uuid=_uuid(call),
                )
                call.end(CLOSE_NORMAL, "maximum call length reached", "max_length")
                continue
            session = call.session
            if session is None:
                continue  # the first-message timer looks after calls that never start
            frames = session.frames_in
            before = self._seen.get(call)
            since = now if before is None or before[0] != frames else before[1]
            if now - since >= limits.idle_timeout:
                call.end(
                    CLOSE_POLICY, f"no audio for {limits.idle_timeout:g} s", "idle"
                )
                continue
            seen[call] = (frames, since)
        self._seen = seen


def _uuid(call) -> str | None:
    return call.session.info.uuid if call.session is not None else None


# -- start-up ---------------------------------------------------------------------------


def is_public(host: str) -> bool:
    """Whether a listening address is reachable from other machines."""
    try:
        return not ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return True  # a name or a unix path we cannot judge: assume public


def open_doors(settings: Settings) -> list[str]:
    """What anyone who can reach the port may do without credentials."""
    security = settings.raw.security
    doors = []
    if not security.signature_secret:
        doors.append("webhooks are not signed (security.signature_secret)")
    if security.websocket_auth == "none":
        doors.append("the socket has no authorization (security.websocket_auth)")
    if not security.metrics_token:
        doors.append("/metrics is open (security.metrics_token)")
    return doors


def warn_if_exposed(host: str, settings: Settings) -> None:
    """One warning at start when a public interface is served without authentication."""
    if not is_public(host):
        return
    security = settings.raw.security
    if security.signature_secret or security.websocket_auth != "none":
        return
    log.warn(
        "listening on public interface {host} with no authentication: {doors}",
        host=host, doors="; ".join(open_doors(settings)),
    )
