"""``GET /events``: every call event, live, as Server-Sent Events (``?uuid=`` for one call).

Behind ``security.control_token`` (``Authorization: Bearer <token>``); without
that token configured the stream is off and says so.  The token is accepted in
the header only, never in the URL: a URL ends up in proxies' access logs and
browser history, and this token can also end calls through the control API.
Browsers read the stream with ``fetch()`` (which can send the header) instead of
``EventSource`` (which cannot); docs/events.md has the dozen lines it takes.

Each event is one SSE message, ``id: <seq>`` and ``data: <the JSON record>``; a
comment every ``events.keepalive`` seconds keeps proxies from closing a quiet
stream.  Each client is a push producer on its connection: while its socket
is full, events wait in a queue of its own (``events.stream_queue`` events,
``stream_queue_bytes``), the oldest dropped and counted past that, and a client
that has not taken anything for ``events.stream_timeout`` seconds is cut off.  A
client going away unsubscribes at once.

``?levels=1`` adds the console's ``levels`` records (voicews.web.levels): a few a second
per live call, to this stream only, without an ``id:`` (they are not call events and
have no ``seq``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from klein import Klein
from twisted.internet import defer, task
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from zope.interface import implementer

from voicews.runtime import metrics
from voicews.runtime.events import AppEvent, BoundedQueue
from voicews.web import auth
from voicews.web.levels import LevelSampler

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

    from voicews.runtime.state import Runtime

log = Logger(namespace="voicews.web.events")

KEEPALIVE = b": keep-alive\n\n"


def check_control(request: IRequest, runtime: Runtime, what: str) -> None:
    """Refuse unless the control token is configured and presented as a Bearer token."""
    token = runtime.settings.raw.security.control_token
    if not token:
        raise auth.Refused(
            403, f"{what} is off: set security.control_token to enable it", f"{what}_off"
        )
    auth.check_bearer(request, token, what)


class EventStreams:
    """The ``/events`` route (mounted by voicews.web.site)."""

    app = Klein()

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.levels = LevelSampler(runtime.calls, runtime.clock)

    @app.handle_errors(auth.Refused)
    def refused(self, request: IRequest, failure: Any) -> bytes:
        return auth.refuse(request, failure.value)

    @app.route("/", methods=["GET"], strict_slashes=False)
    def stream(self, request: IRequest) -> defer.Deferred[None]:
        check_control(request, self.runtime, "events")
        if self.runtime.events.closed:
            raise auth.Refused(503, "server is shutting down", "draining")
        uuid = None
        values = request.args.get(b"uuid")
        if values:
            try:
                uuid = values[-1].decode("utf-8")
            except UnicodeDecodeError:
                raise auth.Refused(400, "uuid is not UTF-8", "bad_request") from None
        levels = request.args.get(b"levels", [b""])[-1].lower() in (b"1", b"true", b"yes")
        return _Stream(cast(Request, request), self.runtime, uuid,
                       self.levels if levels else None).done


@implementer(IPushProducer)
class _Stream:
    """One ``/events`` client: a bus subscriber and its connection's producer."""

    def __init__(self, request: Request, runtime: Runtime, uuid: str | None,
                 levels: LevelSampler | None = None) -> None:
        config = runtime.settings.raw.events
        self.request = request
        self.runtime = runtime
        self.uuid = uuid
        self.timeout = config.stream_timeout
        self.pending = BoundedQueue(config.stream_queue, config.stream_queue_bytes)
        self.paused = False
        self.finished = False
        self._stall: IDelayedCall | None = None
        self._logged_drop = False
        self.done: defer.Deferred[None] = defer.Deferred(lambda _: self._end())
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")  # nginx: pass each event on at once
        request.registerProducer(self, True)
        self._unsubscribe = runtime.events.subscribe(self)
        self._unlisten = levels.listen(self.offer) if levels is not None else None
        metrics.EVENT_STREAMS.inc()
        self._keepalive = task.LoopingCall(self._ping)
        self._keepalive.clock = runtime.clock
        self._keepalive.start(config.keepalive, now=False)
        request.write(b": voicews events" + (b" uuid=" + uuid.encode() if uuid else b"")
                      + b"\nretry: 3000\n\n")  # the headers and this go out now: subscribed

    # -- the bus side --------------------------------------------------------------------

    def offer(self, event: AppEvent) -> None:
        if self.finished or (self.uuid is not None and event.uuid != self.uuid):
            return
        if self.paused:
            dropped = self.pending.push(event)
            if dropped:
                metrics.EVENTS_DROPPED.labels(sink="stream", reason="slow_client").inc(dropped)
                if not self._logged_drop:
                    self._logged_drop = True
                    log.info("/events client {peer} is not keeping up: dropping its oldest "
                             "events", peer=_peer(self.request))
            return
        self.request.write(_message(event))

    def close(self) -> None:
        """The daemon is stopping: end the response (the client sees the stream end)."""
        self._end(finish=True)

    # -- the connection side (IPushProducer) ------------------------------------------------

    def pauseProducing(self) -> None:  # noqa: N802
        self.paused = True
        if self._stall is None and not self.finished:
            self._stall = self.runtime.clock.callLater(self.timeout, self._stalled)

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False
        if self._stall is not None:
            if self._stall.active():
                self._stall.cancel()
            self._stall = None
        while self.pending and not self.paused and not self.finished:
            self.request.write(_message(self.pending.pop()))

    def stopProducing(self) -> None:  # noqa: N802
        self._end()

    # -- ending ----------------------------------------------------------------------------

    def _ping(self) -> None:
        if not self.paused and not self.finished:
            self.request.write(KEEPALIVE)
            reset = getattr(self.request.channel, "resetTimeout", None)
            if reset is not None:
                reset()  # Twisted's idle timeout (Site.timeout) counts only what clients send

    def _stalled(self) -> None:
        self._stall = None
        log.info("/events client {peer} read nothing for {timeout:g} s: disconnected",
                 peer=_peer(self.request), timeout=self.timeout)
        transport = getattr(self.request.channel, "transport", None)  # before _end
        self._end()
        if transport is not None:
            transport.abortConnection()

    def _end(self, finish: bool = False) -> None:
        """Unsubscribe and stop timers, once; with `finish`, end the response."""
        if self.finished:
            return
        self.finished = True
        self._unsubscribe()
        if self._unlisten is not None:
            self._unlisten()
        metrics.EVENT_STREAMS.dec()
        if self._keepalive.running:
            self._keepalive.stop()
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None
        lost = self.pending.clear()
        if lost:
            metrics.EVENTS_DROPPED.labels(sink="stream", reason="closed").inc(lost)
        if self.request.channel is not None:  # None once the connection is gone
            self.request.unregisterProducer()
        if finish and not self.done.called:
            self.done.callback(None)  # Klein finishes the response


def _message(event: AppEvent) -> bytes:
    seq = event.record.get("seq")
    data = b"data: %s\n\n" % event.text.encode("ascii")
    return data if seq is None else b"id: %d\n" % seq + data


def _peer(request: IRequest) -> str:
    peer = request.getClientAddress()
    return f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
