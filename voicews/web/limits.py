"""The HTTP side's bounds: a whole request within a deadline, bodies within a size,
answers that the client does not read within a size.

A request must be fully received within ``limits.handshake_timeout`` (slow or
half-open clients are dropped), a body larger than ``limits.max_body_bytes``
is answered 413 without being buffered, and a connection that pipelines
requests without reading the answers stops being read, then is dropped once
:data:`MAX_UNSENT` more bytes of answers wait for it.  Every refusal is one log
line and one ``voicews_rejected_total{reason}`` increment.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from voicews.runtime import metrics
from voicews.web import fdreserve
from voicews.web.origin import valid_host

if TYPE_CHECKING:
    from voicews.runtime.state import Runtime

log = Logger(namespace="voicews.web.limits")

MAX_UNSENT = 256 * 1024
"""Bytes of answers a connection may have waiting, past the transport's own 64 KiB buffer,
before it is dropped.  Our answers are at most a few KiB, so only a client that sends
requests and never reads the answers gets here."""


class GuardedRequest(Request):
    """A Request that refuses a body over ``limits.max_body_bytes`` before buffering it.

    With a Content-Length the check happens as soon as the headers are in; a
    chunked body is counted as it arrives.  Either way the client gets a 413 and
    the connection is closed, and the rest of the body is discarded unread.
    """

    _body_seen = 0
    channel: GuardedChannel
    content: Any
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
        host = self.getHeader(b"host")
        if host is not None and not valid_host(host.decode("latin-1")):
            # Before routing: werkzeug's own check of a bad Host would be a 500.
            self._refuse_bad_host()
            return
        super().process()

    def _refuse_bad_host(self) -> None:
        reason = "Host is not a valid host[:port]"
        log.warn(
            "{method} {path} from {peer} refused 400: {reason}",
            method=self.method.decode("latin-1"), path=self.path.decode("utf-8", "replace"),
            peer=_peer(self.channel.transport), reason=reason, rejected="bad_request",
        )
        metrics.rejected("bad_request")
        body = json.dumps({"error": reason}).encode()
        self.setResponseCode(400)
        self.setHeader(b"content-type", b"application/json")
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()

    def requestReceived(self, command, path, version):  # noqa: N802
        if self._too_big:
            return  # answered 413 already; the rest of the body went nowhere
        super().requestReceived(command, path, version)

    def _refuse_body(self, reason: str) -> None:
        self._too_big = True
        self.content = _Discard()
        channel = self.channel
        transport = channel.transport
        log.warn(
            "{method} {path} from {peer} refused 413: {reason}",
            method=(getattr(channel, "_command", b"?") or b"?").decode("latin-1"),
            path=(getattr(channel, "_path", b"?") or b"?").decode("utf-8", "replace"),
            peer=_peer(transport),
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


def _peer(transport) -> str:
    peer = transport.getPeer() if transport is not None else None
    return f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"


class _Discard:
    """Where the rest of a refused body goes: an empty file that forgets what is written."""

    def write(self, data: bytes) -> None:
        pass

    def seek(self, *args) -> int:
        return 0

    def tell(self) -> int:
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

    _deadline: IDelayedCall | None = None
    site: GuardedSite
    transport: Any  # a TCP transport (abortConnection)
    _unsent = 0
    _dropped = False

    def connectionMade(self):  # noqa: N802
        super().connectionMade()
        self._arm()
        site = self.site
        if not site.fd_reserve_checked:
            # The port that accepted us (tcp.Server.server, under TLS one layer down): from
            # now on an EMFILE there answers 503.  VoicewsService may install it at listen.
            site.fd_reserve_checked = True
            transport, port = self.transport, None
            for _ in range(3):
                port = getattr(transport, "server", None)
                if port is not None:
                    break
                transport = getattr(transport, "transport", None)
            if port is not None and not fdreserve.install(port, site.reactor):
                log.info("out-of-descriptor answers (503) are off for this kind of port")

    # -- answers the client does not read ------------------------------------------------
    #
    # The transport calls pauseProducing once its buffer passes 64 KiB.  Twisted's HTTPChannel
    # then stops reading the socket only when no request is being handled, and every request
    # of a pipelined flood is handled as it is parsed, so the socket was read (and answered
    # into memory) without end.  Here reading stops whatever the state, and answers written
    # while paused are counted: past MAX_UNSENT the connection is dropped.

    def pauseProducing(self):  # noqa: N802
        super().pauseProducing()
        if self.transport is not None and self._handlingRequest:  # None: upgraded to a socket
            self._networkProducer.pauseProducing()

    def resumeProducing(self):  # noqa: N802
        self._unsent = 0
        super().resumeProducing()

    def writeHeaders(self, version, code, reason, headers):  # noqa: N802
        size = len(version) + len(reason) + 8
        for name, values in headers.getAllRawHeaders():
            size += sum(len(name) + len(value) + 4 for value in values)
        self._count_unsent(size)
        super().writeHeaders(version, code, reason, headers)

    def write(self, data):
        self._count_unsent(len(data))
        super().write(data)

    def writeSequence(self, iovec):  # noqa: N802
        self._count_unsent(sum(map(len, iovec)))
        super().writeSequence(iovec)

    def _count_unsent(self, size: int) -> None:
        if not self._waitingForTransport or self._dropped:
            return
        self._unsent += size
        if self._unsent <= MAX_UNSENT or self.transport is None:
            return
        self._dropped = True
        peer = self.transport.getPeer()
        log.warn(
            "dropped connection from {peer}: not reading its responses "
            "({unsent} bytes waiting past the socket buffer)",
            peer=f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}",
            unsent=self._unsent, rejected="unread_responses",
        )
        metrics.rejected("unread_responses")
        self.transport.abortConnection()

    def lineReceived(self, line):  # noqa: N802
        if self._dropped:
            return True  # stops LineReceiver's loop over requests already read
        return super().lineReceived(line)

    def rawDataReceived(self, data):  # noqa: N802
        if not self._dropped:
            super().rawDataReceived(data)

    def _arm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            return
        timeout = self.site.runtime.settings.raw.limits.handshake_timeout
        self._deadline = self.callLater(timeout, self._too_slow, timeout)  # type: ignore[call-arg]

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

    protocol = GuardedChannel  # type: ignore[assignment]  # Twisted types it as a factory
    requestFactory = GuardedRequest
    fd_reserve_checked = False

    def __init__(self, resource, runtime: Runtime, reactor=None) -> None:
        super().__init__(resource, requestFactory=GuardedRequest, reactor=reactor)
        self.runtime = runtime
        self.displayTracebacks = False
