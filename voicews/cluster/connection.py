"""Two connections to one Redis, kept open with backoff, with one log line per outage.

Why txredisapi (measured with bench/redis_clients.py, loopback, this 2-core machine): a
control request and its reply through Redis pub/sub took 205 µs (p50) and ~100 µs of CPU
in each worker with txredisapi on the epoll reactor, against 270 µs and ~125-165 µs with
redis-py's asyncio client bridged through ``Deferred.fromFuture`` on Twisted's asyncio
reactor.  Speed is not the deciding point, though: redis-py's asyncio client needs the
asyncio reactor, i.e. every user's ``twistd --reactor=asyncio`` (twistd installs the
reactor before our plugin runs) and a second event-loop model for the whole daemon just
for an optional cluster feature; that reactor also cost voicews 4-11 % more CPU per
echoed frame at 200 calls (12.4/15.1 vs 12.0/13.6 µs).  txredisapi is pure Python on
Twisted's own protocols and Deferreds and runs on whatever reactor is installed.
Through ClusterLink as built, a remote request (GET, PUBLISH, the holder's handler,
PUBLISH back) takes 241 µs p50, 340-420 µs p99, ~210 µs CPU for both workers together.

We use txredisapi's protocols (RESP parsing, commands, pub/sub, reply timeouts), not its
connection pools: a pool queues commands while it is disconnected, where we must fail at
once (``ClusterUnavailable``), and its reconnecting (``ClientService``) logs a line per
retry.  So the connecting is here: one attempt at a time, exponential backoff with jitter,
reset only once a connection has proved itself (PING answered, or SUBSCRIBE confirmed),
so a server that accepts and drops cannot make us spin.

Failure detection: a refused or dropped connection is seen at once; a silent one (a
black-holed host) when a command's reply is late: every command has ``reply_timeout``, and
the owner PINGs the subscriber connection each refresh, so silence is noticed within
``refresh + reply_timeout`` seconds.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import txredisapi
from twisted.internet import defer, protocol
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger(namespace="voicews.cluster")


class ClusterError(Exception):
    """A cross-worker operation could not be done; ``status`` is the HTTP answer for it."""

    status = 503

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ClusterUnavailable(ClusterError):
    """Redis (or the worker holding the call) cannot be reached now: answer 503."""


class ClusterTimeout(ClusterError):
    """The worker holding the call did not answer in time: answer 504."""

    status = 504


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis is, from ``redis://[user:password@]host[:port][/db]`` (``rediss://``: TLS)."""

    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def __str__(self) -> str:  # for logs: never the password
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"


def parse_redis_url(url: str) -> RedisAddress:
    """The address in `url`, or ValueError saying what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a redis:// URL: {exc}") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"{url!r}: the scheme must be redis:// or rediss://")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"{url!r}: the path must be a database number, like /0")
    return RedisAddress(
        host=parts.hostname, port=port or 6379, db=int(path or 0),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=parts.scheme == "rediss")


def make_endpoint(reactor: Any, address: RedisAddress,
                  timeout: float) -> IStreamClientEndpoint:
    """A client endpoint: no resolver thread for an IP address, TLS for ``rediss://``."""
    endpoint: Any  # an IStreamClientEndpoint (mypy does not see zope interfaces)
    try:
        ip = ipaddress.ip_address(address.host)
    except ValueError:
        endpoint = HostnameEndpoint(reactor, address.host, address.port, timeout=timeout)
    else:
        kind = TCP6ClientEndpoint if ip.version == 6 else TCP4ClientEndpoint
        endpoint = kind(reactor, address.host, address.port, timeout=timeout)
    if address.tls:
        endpoint = wrapClientTLS(optionsForClientTLS(address.host), endpoint)
    return endpoint


class _CommandProtocol(txredisapi.RedisProtocol):
    """Commands; ready once AUTH/SELECT (txredisapi's) and one PING have been answered."""

    def connectionMade(self) -> Any:  # noqa: N802 - Twisted's name
        self.whenConnected().addCallback(lambda _: self.ping()).addCallbacks(
            lambda _: self.factory.owner.ready(self),
            lambda failure: self.factory.owner.refused(self, failure.getErrorMessage()))
        return super().connectionMade()

    def connectionLost(self, why: Failure) -> None:  # noqa: N802 - Twisted's name
        super().connectionLost(why)
        self.factory.owner.lost(self, why.getErrorMessage())


class _SubscriberProtocol(txredisapi.SubscriberProtocol):
    """Subscribed to the owner's channels; ready once Redis confirmed the subscription."""

    def connectionMade(self) -> Any:  # noqa: N802 - Twisted's name
        owner = self.factory.owner
        self.whenConnected().addCallback(lambda _: self.subscribe(owner.channels)).addCallbacks(
            lambda _: owner.ready(self),
            lambda failure: owner.refused(self, failure.getErrorMessage()))
        return super().connectionMade()

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:  # noqa: N802
        self.factory.owner.on_message(channel, message)

    def connectionLost(self, why: Failure) -> None:  # noqa: N802 - Twisted's name
        super().connectionLost(why)
        self.factory.owner.lost(self, why.getErrorMessage())


class _Factory(protocol.Factory):
    """Builds txredisapi protocols; also the ``factory`` they call back on AUTH failure."""

    noisy = False
    isLazy = False  # noqa: N815 - txredisapi reads it: don't log to the legacy log

    def __init__(self, protocol_class: type, owner: Connection, address: RedisAddress,
                 db: int | None, reply_timeout: float) -> None:
        self._protocol_class = protocol_class
        self.owner = owner
        self._kwargs = dict(charset="utf-8", replyTimeout=reply_timeout,
                            password=address.password, username=address.username,
                            dbid=db, convertNumbers=False)

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 - Twisted's name
        proto = self._protocol_class(**self._kwargs)
        proto.factory = self
        return proto

    def stopTrying(self) -> None:  # noqa: N802 - txredisapi calls it when AUTH/SELECT fail
        pass  # we keep retrying (with backoff): the password may be fixed on the server

    def connectionError(self, why: str) -> None:  # noqa: N802 - txredisapi's name
        self.owner.note(why)


class Connection:
    """One connection to Redis, reopened with backoff whenever it is lost or refused.

    ``on_change(connection)`` runs whenever it becomes ready or stops being ready; the
    current protocol is ``ready_protocol`` (None while not usable), the last problem
    ``reason``.
    """

    def __init__(self, name: str, reactor: IReactorTCP | Any, clock: IReactorTime,
                 address: RedisAddress, *, subscriber: bool, channels: list[str],
                 on_message: Callable[[str, Any], None],
                 on_change: Callable[[Connection], None],
                 connect_timeout: float, reply_timeout: float,
                 retry_initial: float, retry_max: float) -> None:
        self.name = name
        self.channels = channels
        self.on_message = on_message
        self._on_change = on_change
        self._clock: Any = clock
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._endpoint: Any = make_endpoint(reactor, address, connect_timeout)
        db = None if subscriber or address.db == 0 else address.db
        self._factory = _Factory(_SubscriberProtocol if subscriber else _CommandProtocol,
                                 self, address, db, reply_timeout)
        self.ready_protocol: Any = None
        self.reason = "not connected yet"
        self._protocol: Any = None
        self._attempt: defer.Deferred | None = None
        self._retry: Any = None
        self._failures = 0
        self._running = False
        self._closed: defer.Deferred | None = None
        self._noted = ""

    def start(self) -> None:
        self._running = True
        self._connect()

    def stop(self) -> defer.Deferred:
        """Stop reconnecting and close the connection; fires once it is closed."""
        self._running = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._attempt is not None:
            self._attempt.cancel()
        if self._protocol is None:
            return defer.succeed(None)
        self._closed = defer.Deferred()
        self._protocol.transport.loseConnection()
        return self._closed

    def _connect(self) -> None:
        self._retry = None
        self._attempt = self._endpoint.connect(self._factory)
        self._attempt.addCallbacks(self._connected, self._failed)

    def _connected(self, proto: Any) -> None:
        self._attempt = None
        self._protocol = proto

    def _failed(self, failure: Failure) -> None:
        self._attempt = None
        if not self._running:
            return  # our own cancel
        self._down(failure.getErrorMessage())

    def _down(self, reason: str) -> None:
        self.reason = reason
        self.ready_protocol = None
        self._on_change(self)
        self._failures += 1
        delay = min(self._retry_max, self._retry_initial * 2 ** (self._failures - 1))
        self._retry = self._clock.callLater(delay * random.uniform(0.8, 1.2), self._connect)

    # Called by the protocols.

    def ready(self, proto: Any) -> None:
        if proto is not self._protocol or not self._running:
            return
        self._failures = 0
        self.reason = ""
        self.ready_protocol = proto
        self._on_change(self)

    def refused(self, proto: Any, reason: str) -> None:
        """Redis answered the handshake with an error (NOAUTH, ...): drop and retry."""
        self.note(reason)
        if proto.transport is not None:
            proto.transport.loseConnection()

    def note(self, reason: str) -> None:
        """Remember why the connection is about to be dropped, for the outage line."""
        self._noted = reason

    def lost(self, proto: Any, reason: str) -> None:
        if proto is not self._protocol:
            return
        self._protocol = None
        if self._closed is not None:
            closed, self._closed = self._closed, None
            closed.callback(None)
        if self._running:
            self._down(self._noted or reason)
            self._noted = ""
