"""The bridge's connection: one Autobahn (Twisted) WebSocket client per call.

It knows nothing of the protocol spoken over it (that is twilio.py or vonage.py);
it opens the socket, carries text and binary messages both ways and reports, in
one line, why a connection could not be opened or went away:

- ``wss://`` is verified against the system's CAs (Twisted's ``platformTrust``)
  and the URL's host name, or against the CA certificates of ``ca_file`` alone;
- everything that waits has a bound: opening (``timeout``, from the first
  connection attempt to the WebSocket handshake's end), closing, the far end's
  message size, and what we have sent that the far end has not read: past
  ``max_buffer_bytes`` the connection is dropped and reported, so a far end that
  stops reading costs bounded memory;
- with ``reconnect``, a connection that fails or drops is tried again after
  ``initial_delay``, doubling up to ``max_delay``, ``tries`` times; a connection
  that stayed open ``stable_after`` seconds earns a fresh count.  A far end that
  closes with code 1000 meant it: that is not retried.

The timers run on `clock` (the reactor unless given), so tests drive the backoff
with ``twisted.internet.task.Clock``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.util import parse_url
from twisted.internet import defer, ssl
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from voicews import __version__
from voicews.bridge.options import BridgeError, Reconnect, describe, squash, trust_root
from voicews.vonage.messages import CLOSE_NORMAL

__all__ = ["BridgeClient", "BridgeError", "Reconnect"]

log = Logger(namespace="voicews.bridge")

MAX_BUFFER_BYTES = 1 << 20
"""Sent but not yet read by the far end, beyond Twisted's own 64 KiB: ~30 s of 16 kHz L16."""
MAX_MESSAGE_BYTES = 1 << 20
CLOSE_TIMEOUT = 2.0
"""How long a close waits for the far end's answer before the TCP connection is dropped."""


@implementer(IPushProducer)
class _Backlog:
    """Told by the transport when its buffer is full: counts what we queue past that."""

    def __init__(self) -> None:
        self.paused = False
        self.unsent = 0

    def pauseProducing(self) -> None:  # noqa: N802
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False
        self.unsent = 0

    def stopProducing(self) -> None:  # noqa: N802
        self.paused = True


class _Factory(WebSocketClientFactory):
    client: BridgeClient


class _Protocol(WebSocketClientProtocol):
    factory: _Factory
    close_note: str | None = None
    remote_code: int | None = None
    aborted = False
    backlog: _Backlog

    def abort(self) -> None:
        self.aborted = True
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def connectionMade(self) -> None:  # noqa: N802
        super().connectionMade()
        self.factory.client._handshaking = self

    def onOpen(self) -> None:  # noqa: N802
        self.backlog = _Backlog()
        transport: Any = self.transport
        transport.registerProducer(self.backlog, True)
        self.factory.client._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802, N803
        self.factory.client._message(self, payload if isBinary else payload.decode("utf-8"))

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> bool | None:  # noqa: N802, N803
        # Autobahn answers it; the far end then drops TCP, or we do after a while.
        self.factory.client._set_timer(CLOSE_TIMEOUT, self.abort)
        return super().onCloseFrame(code, reasonRaw)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N802, N803
        if wasClean and code is not None:
            self.remote_code = code
        if self.close_note is None:
            if wasClean and code is not None:
                self.close_note = f"far end closed the socket with code {code}" + (
                    f" ({squash(reason)})" if reason else ""
                )
            elif reason:
                self.close_note = squash(reason)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802
        super().connectionLost(reason)
        self.factory.client._lost(self, reason)


class BridgeClient:
    """One call's WebSocket to the far end, reconnecting as configured."""

    def __init__(
        self,
        reactor: Any,
        url: str,
        *,
        on_open: Callable[[int], object],
        on_message: Callable[[str | bytes], object],
        on_close: Callable[[str, bool], object],
        headers: dict[str, str] | None = None,
        ca_file: str | Path | None = None,
        timeout: float = 10.0,
        reconnect: Reconnect | None = None,
        max_buffer_bytes: int = MAX_BUFFER_BYTES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        clock: IReactorTime | None = None,
        name: str = "bridge",
    ) -> None:
        """`on_open(attempt)` runs each time a socket opens (0 for the first; send the
        protocol's opening then); `on_message(message)` gets str for text, bytes for
        binary; `on_close(reason, retrying)` runs when an open socket is lost other than
        by :meth:`close`, and once more with ``retrying=False`` if the retries all fail."""
        try:
            secure, host, port, resource, _, _ = parse_url(url)
        except Exception as exc:  # autobahn raises plain Exception for a bad URL
            raise ValueError(f"bad WebSocket URL {url!r}: {exc}") from None
        self.reactor = reactor
        # Any: mypy cannot see through zope interfaces without a plugin.
        self.clock: Any = clock if clock is not None else reactor
        self.url = url
        self.name = name
        self.on_open, self.on_message, self.on_close = on_open, on_message, on_close
        self.timeout = timeout
        self.reconnect = reconnect
        self.max_buffer_bytes = max_buffer_bytes
        self.attempt = -1
        """The number of the latest connection attempt (0 for the first)."""
        self.failures = 0
        """Failed attempts and drops since the last stable connection."""
        self.sent_bytes = 0
        self.dropped_messages = 0
        """Messages not sent because no socket was open."""
        self.close_code: int | None = None
        """The code of the far end's close frame on the last connection lost, if it sent one."""
        self.factory = _Factory(
            url, headers=headers or {}, useragent=f"voicews-bridge/{__version__}",
            reactor=reactor,
        )
        self.factory.protocol = _Protocol
        self.factory.client = self
        self.factory.noisy = False  # no "Starting factory" line per call; ours say more
        self.factory.setProtocolOptions(
            maxMessagePayloadSize=max_message_bytes,
            maxFramePayloadSize=max_message_bytes,
            # Autobahn's own timers run on txaio's global reactor; ours run on `clock`:
            # the open timeout covers TCP, TLS and the handshake, and a close that is not
            # finished after CLOSE_TIMEOUT drops the TCP connection.
            openHandshakeTimeout=0,
            closeHandshakeTimeout=0,
            serverConnectionDropTimeout=0,
        )
        self._endpoint = self._tcp_endpoint(host, port)
        self._connect_factory: Any = self.factory
        if secure:
            creator = ssl.optionsForClientTLS(host, trustRoot=trust_root(ca_file))
            # As wrapClientTLS does, but on our reactor (its write batching would use
            # the global one).
            wrapped: Any = self.factory  # an IProtocolFactory; mypy cannot see zope's
            self._connect_factory = TLSMemoryBIOFactory(creator, True, wrapped, clock=reactor)
        self._protocol: _Protocol | None = None
        self._handshaking: _Protocol | None = None
        self._opened_at = 0.0
        self._connecting: defer.Deferred[Any] | None = None
        self._timer: Any = None
        self._retry_call: Any = None
        self._started: defer.Deferred[None] | None = None
        self._closing: list[defer.Deferred[None]] = []
        self._closed = False
        self._abort_note: str | None = None

    def _tcp_endpoint(self, host: str, port: int) -> Any:
        # An address needs no name resolution (and so no thread pool).
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return HostnameEndpoint(self.reactor, host.encode("idna"), port,
                                    timeout=self.timeout)
        kind = TCP4ClientEndpoint if address.version == 4 else TCP6ClientEndpoint
        return kind(self.reactor, host, port, timeout=self.timeout)

    @property
    def connected(self) -> bool:
        return self._protocol is not None and not self._protocol.aborted

    # -- the caller's side ---------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """Connect; fires once the first socket is open, or fails with BridgeError."""
        if self._started is not None:
            raise RuntimeError("start() was already called")
        self._started = defer.Deferred()
        self._attempt()
        return self._started

    def send(self, message: str | bytes) -> bool:
        """Send one text (str) or binary (bytes) message; False when it could not be."""
        protocol = self._protocol
        if protocol is None or protocol.aborted:
            self.dropped_messages += 1
            return False
        binary = not isinstance(message, str)
        payload = message.encode("utf-8") if isinstance(message, str) else bytes(message)
        backlog = protocol.backlog
        if backlog.paused:
            backlog.unsent += len(payload)
            if backlog.unsent > self.max_buffer_bytes:
                self._abort_note = (
                    f"far end is not reading: over {self.max_buffer_bytes} bytes unsent"
                )
                protocol.close_note = self._abort_note
                protocol.abort()
                self.dropped_messages += 1
                return False
        protocol.sendMessage(payload, isBinary=binary)
        self.sent_bytes += len(payload)
        return True

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> defer.Deferred[None]:
        """Close for good (no reconnection); fires once the connection is gone."""
        self._closed = True
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        done: defer.Deferred[None] = defer.Deferred()
        if self._protocol is not None:
            self._closing.append(done)
            protocol = self._protocol
            protocol.sendClose(code, reason or None)
            self._set_timer(CLOSE_TIMEOUT, protocol.abort)
        elif self._handshaking is not None:
            self._closing.append(done)
            self._handshaking.abort()
        elif self._connecting is not None:
            self._closing.append(done)
            self._connecting.cancel()
        else:
            done.callback(None)
        if self._started is not None and not self._started.called:
            self._started.errback(BridgeError(f"{self.name} {self.url}: closed before it opened"))
        return done

    # -- connection attempts -------------------------------------------------------------

    def _set_timer(self, seconds: float, action: Callable[[], object]) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.clock.callLater(seconds, action)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _attempt(self) -> None:
        self._retry_call = None
        self.attempt += 1
        self._abort_note = None
        connecting = self._endpoint.connect(self._connect_factory)
        self._connecting = connecting
        self._set_timer(self.timeout, self._timed_out)
        connecting.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, protocol: _Protocol) -> None:
        self._connecting = None

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        self._cancel_timer()
        if failure.check(defer.CancelledError):
            reason = self._abort_note or "cancelled"
        else:
            reason = describe(failure)
        self._failed(f"could not connect to {self.url}: {reason}", opened=False)

    def _timed_out(self) -> None:
        self._timer = None
        self._abort_note = f"not open after {self.timeout:g} s"
        if self._handshaking is not None:
            # TCP is up but TLS or the WebSocket handshake is not done.
            self._handshaking.close_note = self._abort_note
            self._handshaking.abort()
        elif self._connecting is not None:
            self._connecting.cancel()

    # -- protocol callbacks --------------------------------------------------------------

    def _opened(self, protocol: _Protocol) -> None:
        self._cancel_timer()
        self._handshaking = None
        if self._closed:
            protocol.abort()
            return
        self._protocol = protocol
        self._opened_at = self.clock.seconds()
        log.info("{name} {url} open (attempt {attempt})", name=self.name, url=self.url,
                 attempt=self.attempt)
        if self._started is not None and not self._started.called:
            self._started.callback(None)
        self.on_open(self.attempt)

    def _message(self, protocol: _Protocol, message: str | bytes) -> None:
        if protocol is self._protocol:
            self.on_message(message)

    def _lost(self, protocol: _Protocol, failure: Failure) -> None:
        self._cancel_timer()
        was_open = protocol is self._protocol
        if was_open:
            self._protocol = None
        if protocol is self._handshaking:
            self._handshaking = None
        note = protocol.close_note or describe(failure)
        self.close_code = protocol.remote_code
        if self._closed:
            self._all_closed()
            return
        if was_open:
            if self.clock.seconds() - self._opened_at >= (
                self.reconnect.stable_after if self.reconnect else 0
            ):
                self.failures = 0
            self._failed(f"{self.url}: {note}", opened=True,
                         final=protocol.remote_code == CLOSE_NORMAL)
        else:
            self._failed(f"could not open {self.url}: {note}", opened=False)

    def _all_closed(self) -> None:
        closing, self._closing = self._closing, []
        for done in closing:
            done.callback(None)

    def _failed(self, reason: str, *, opened: bool, final: bool = False) -> None:
        if self._closed:
            self._all_closed()
            return
        self.failures += 1
        retry = (
            not final
            and self.reconnect is not None
            and self.failures <= self.reconnect.tries
        )
        first = self._started is not None and not self._started.called
        if retry:
            assert self.reconnect is not None
            delay = self.reconnect.delay(self.failures)
            log.info("{name} {reason}; retry {n} of {tries} in {delay:g} s", name=self.name,
                     reason=reason, n=self.failures, tries=self.reconnect.tries, delay=delay)
            self._retry_call = self.clock.callLater(delay, self._attempt)
            if opened:
                self.on_close(reason, True)
            return
        log.info("{name} {reason}", name=self.name, reason=reason)
        if first:
            assert self._started is not None
            self._started.errback(BridgeError(reason))
        elif opened or self.attempt > 0:
            self.on_close(reason, False)
