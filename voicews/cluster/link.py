"""ClusterLink: this worker's calls in Redis, other workers' calls and actions through it.

The Redis layout and the expiry bound: :mod:`voicews.cluster.layout`.

Pub/sub, not streams: a request is worth answering only while its HTTP client waits;
a stream would keep it for a worker that is gone and replay a stale hangup later.
A request published to a dead worker finds no subscriber (PUBLISH returns 0) and fails
at once instead of waiting for the timeout.  Redis down: nothing here touches a call;
local requests and local events go on, remote ones fail at once with ClusterUnavailable;
the connections come back by themselves.
Anyone who can PUBLISH on this Redis can act on calls: keep it private (ACLs, network).
"""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

import txredisapi
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from voicews.cluster.connection import (
    ClusterTimeout,
    ClusterUnavailable,
    Connection,
    parse_redis_url,
)
from voicews.cluster.events import EventFanout, Subscriber
from voicews.cluster.layout import REGISTER, UNREGISTER, ClusterOptions, Keys

log = Logger(namespace="voicews.cluster")

Reply = tuple[int, dict[str, Any]]


class ClusterLink(Service):
    """This worker's side of the cluster: registration, listing, routing, events.

    `local_calls()` returns this worker's live calls as JSON-ready dicts, each with
    "uuid"; `handle(uuid, action, body)` acts on a local call and fires with
    ``(http_status, body_dict)``.  Both run in the reactor thread.
    """

    def __init__(self, url: str, worker: str, clock: IReactorTime,
                 local_calls: Callable[[], list[dict[str, Any]]],
                 handle: Callable[[str, str, dict[str, Any]], defer.Deferred],
                 options: ClusterOptions | None = None, reactor: Any = None) -> None:
        if not worker or len(worker) > 200:
            raise ValueError("cluster: the worker name must be 1 to 200 characters")
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.address = parse_redis_url(url)
        self.worker = worker
        self.options = opts = options or ClusterOptions()
        self._clock: Any = clock  # IReactorTime (typed loosely: zope interfaces)
        self._local_calls = local_calls
        self._handle = handle
        self.keys = k = Keys(opts.prefix)
        self.events = EventFanout(opts.event_queue)
        self._cmd = self._connection(reactor, "commands", [])
        self._sub = self._connection(reactor, "subscriber",
                                     [k.channel(worker), k.events])
        self._state = "starting"  # "up" or "down" once known: one log line per change
        self._down_since = 0.0
        self._pending: dict[str, tuple[defer.Deferred, Any]] = {}
        self._registered: set[str] = set()
        self._loop: LoopingCall | None = None
        self._registering = False
        self._again = False
        self._soon: Any = None
        self.outages = 0
        self.events_not_shared = 0  # published while Redis was down: delivered here only
        self._malformed_count = 0
        self._calls_failed = False

    def _connection(self, reactor: Any, name: str, channels: list[str]) -> Connection:
        opts = self.options
        return Connection(
            name, reactor, self._clock, self.address, subscriber=bool(channels),
            channels=channels, on_message=self._on_message, on_change=self._on_change,
            connect_timeout=opts.connect_timeout, reply_timeout=opts.reply_timeout,
            retry_initial=opts.retry_initial, retry_max=opts.retry_max)

    # Service.

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()
        self._state = "starting"
        self._cmd.start()
        self._sub.start()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._clock
        self._loop.start(self.options.refresh, now=False)

    def stopService(self) -> defer.Deferred:  # noqa: N802 - Twisted's name
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        self._fail_pending(ClusterUnavailable("the cluster link stopped"))
        d = self._unregister() if self.available else defer.succeed(None)
        d.addErrback(lambda _: None)  # best effort: the ttl removes it anyway
        d.addCallback(lambda _: defer.gatherResults([self._cmd.stop(), self._sub.stop()]))
        return d.addCallback(lambda _: None)

    # State.

    @property
    def available(self) -> bool:
        """Both connections usable: listing and remote requests can work."""
        return self._cmd.ready_protocol is not None and self._sub.ready_protocol is not None

    @property
    def reason(self) -> str:
        """Why the link is not available ("" when it is)."""
        if self.available:
            return ""
        broken = self._cmd if self._cmd.ready_protocol is None else self._sub
        return f"redis at {self.address} unreachable: {broken.reason}"

    def _on_change(self, connection: Connection) -> None:
        """A connection became ready or failed: log and act only when the whole link did."""
        if self.available and self._state != "up":
            if self._state == "down":
                log.info("cluster: redis {redis} is back after {seconds:.1f} s; worker "
                         "{worker} registers its calls again", redis=str(self.address),
                         seconds=self._clock.seconds() - self._down_since, worker=self.worker,
                         cluster_state="up")
            else:
                log.info("cluster: worker {worker} joined through redis {redis}",
                         worker=self.worker, redis=str(self.address), cluster_state="up")
            self._state = "up"
            self.refresh_now()
        elif connection.ready_protocol is None and self._state != "down" and self.running:
            self._state = "down"
            self.outages += 1
            self._down_since = self._clock.seconds()
            log.warn("cluster: {reason}; cross-worker control answers 503 until it is back "
                     "(calls go on; retrying)", reason=self.reason, worker=self.worker,
                     cluster_state="down")
            self._fail_pending(ClusterUnavailable(self.reason))

    def _command(self, name: str, *args: Any) -> defer.Deferred:
        """Run one command now, or fail with ClusterUnavailable; never queue it."""
        proto = self._cmd.ready_protocol
        if proto is None or not self.available:
            return defer.fail(ClusterUnavailable(self.reason))
        try:
            d = getattr(proto, name)(*args)
        except txredisapi.ConnectionError:
            return defer.fail(ClusterUnavailable(self.reason))
        return d.addErrback(self._redis_failed)

    def _redis_failed(self, failure: Failure) -> Failure:
        if failure.check(txredisapi.TimeoutError):
            self._cmd.note(f"no reply within {self.options.reply_timeout} s")
        if failure.check(txredisapi.RedisError):
            return Failure(ClusterUnavailable(
                f"redis at {self.address}: {failure.getErrorMessage()}"))
        return failure

    # Registration.

    def refresh_now(self) -> None:
        """Register this worker's calls soon (coalesced): call it when a call starts or ends."""
        if self._soon is None or not self._soon.active():
            self._soon = self._clock.callLater(0, self._register)

    def _tick(self) -> None:
        if self.available:
            self._sub.ready_protocol.ping().addErrback(lambda _: None)  # silence → dropped
            self._register()

    def _local(self) -> list[dict[str, Any]] | None:
        """This worker's calls, or None (logged once) when local_calls() raises."""
        try:
            return list(self._local_calls())
        except Exception:
            if not self._calls_failed:
                self._calls_failed = True
                log.failure("cluster: local_calls() raised; registration skipped (logged once)")
            return None

    def _register(self) -> None:
        if not self.available:
            return
        if self._registering:
            self._again = True
            return
        local = self._local()
        if local is None:
            return
        calls = [dict(call, worker=self.worker) for call in local]
        live = [str(call["uuid"]) for call in calls]
        ended = sorted(self._registered - set(live))
        keys = [self.keys.workers, self.keys.worker(self.worker),
                *map(self.keys.call, live), *map(self.keys.call, ended)]
        args = [self.worker, int(self.options.ttl * 1000),
                json.dumps(calls, default=str), len(live)]
        self._registering = True
        self._registered |= set(live)  # if the reply is lost, delete the ended ones next time

        def done(_: Any) -> None:
            self._registered = set(live)

        def finished(_: Any) -> None:
            self._registering = False
            if self._again:
                self._again = False
                self._register()

        d = self._command("eval", REGISTER, keys, args)
        d.addCallbacks(done, lambda _: None).addBoth(finished)

    def _unregister(self) -> defer.Deferred:
        uuids = self._registered | {str(c["uuid"]) for c in self._local() or []}
        keys = [self.keys.workers, self.keys.worker(self.worker), *map(self.keys.call, uuids)]
        return self._command("eval", UNREGISTER, keys, [self.worker])

    # Listing and locating.

    @defer.inlineCallbacks
    def list_calls(self) -> Any:
        """Every worker's live calls, each dict tagged with "worker"; ours are fresh."""
        workers = yield self._command("zrange", self.keys.workers, 0, -1)
        others = [w for w in workers if w != self.worker]
        values = (yield self._command("mget", [self.keys.worker(w) for w in others])
                  ) if others else []
        calls = [dict(call, worker=self.worker) for call in self._local() or []]
        for value in values:
            if value is None:  # that worker's registration ran out
                continue
            try:
                listed = json.loads(value)
            except ValueError:
                continue
            calls.extend(c for c in listed if isinstance(c, dict) and "uuid" in c)
        return calls

    def _is_local(self, uuid: str) -> bool:
        return any(str(call.get("uuid")) == uuid for call in self._local() or [])

    def locate(self, uuid: str) -> defer.Deferred:
        """The worker holding call `uuid`, or None; ours is known without Redis."""
        if self._is_local(uuid):
            return defer.succeed(self.worker)
        return self._command("get", self.keys.call(uuid))

    # Requests.

    def request(self, uuid: str, action: str, body: dict[str, Any]) -> defer.Deferred:
        """Act on call `uuid` wherever it is; fires with (status, body) from its worker.

        Fails with ClusterUnavailable (503) or ClusterTimeout (504); an unknown call is
        ``(404, {...})``.  A local call is handled here, with or without Redis.
        """
        if self._is_local(uuid):
            return self._run_handler(uuid, action, body)
        if len(self._pending) >= self.options.max_pending:
            return defer.fail(ClusterUnavailable("too many cross-worker requests waiting"))
        return self._remote(uuid, action, body)

    @defer.inlineCallbacks
    def _remote(self, uuid: str, action: str, body: dict[str, Any]) -> Any:
        holder = yield self._command("get", self.keys.call(uuid))
        if holder is None:
            return 404, {"error": "no such call", "uuid": uuid}
        if holder == self.worker:  # registered here but no longer live: ours to answer
            return (yield self._run_handler(uuid, action, body))
        rid = uuidlib.uuid4().hex
        waiting: defer.Deferred = defer.Deferred()
        timer = self._clock.callLater(self.options.request_timeout, self._timed_out, rid, holder)
        self._pending[rid] = (waiting, timer)
        message = {"kind": "request", "id": rid, "from": self.worker, "uuid": uuid,
                   "action": action, "body": body}
        try:
            receivers = yield self._command("publish", self.keys.channel(holder),
                                            json.dumps(message))
        except Exception:
            self._forget(rid)
            raise
        if receivers == 0:
            self._forget(rid)
            raise ClusterUnavailable(f"worker {holder} holding call {uuid} is not listening")
        return (yield waiting)

    def _forget(self, rid: str) -> defer.Deferred | None:
        waiting, timer = self._pending.pop(rid, (None, None))
        if timer is not None and timer.active():
            timer.cancel()
        return waiting

    def _timed_out(self, rid: str, holder: str) -> None:
        waiting, _ = self._pending.pop(rid, (None, None))
        if waiting is not None:
            waiting.errback(ClusterTimeout(
                f"worker {holder} did not answer within {self.options.request_timeout} s"))

    def _fail_pending(self, error: Exception) -> None:
        for rid in list(self._pending):
            waiting = self._forget(rid)
            if waiting is not None:
                waiting.errback(error)

    def _run_handler(self, uuid: str, action: str, body: dict[str, Any]) -> defer.Deferred:
        """The local handler's (status, body); a crash or a malformed result is a 500."""

        def checked(result: Any) -> Reply:
            status, answer = result
            if not isinstance(status, int) or not isinstance(answer, dict):
                raise TypeError(f"handle() fired with {result!r}, not (int, dict)")
            return status, answer

        def crashed(failure: Failure) -> Reply:
            log.failure("cluster: the {action} handler failed for call {uuid}", failure,
                        action=action, uuid=uuid)
            return 500, {"error": "internal error", "uuid": uuid}

        return defer.maybeDeferred(self._handle, uuid, action, body).addCallback(
            checked).addErrback(crashed)

    # Messages from Redis.

    def _on_message(self, channel: Any, message: Any) -> None:
        try:
            data = json.loads(message)
        except (TypeError, ValueError):
            data = None
        if not isinstance(data, dict):
            return self._malformed(channel)
        if channel == self.keys.events:
            origin, event = data.get("worker"), data.get("event")
            if not isinstance(event, dict) or not isinstance(origin, str):
                return self._malformed(channel)
            if origin != self.worker:  # ours were delivered here when published
                self.events.deliver(dict(event, worker=origin))
        elif data.get("kind") == "reply":
            waiting = self._forget(str(data.get("id")))
            status, body = data.get("status"), data.get("body")
            if waiting is not None:
                if isinstance(status, int) and isinstance(body, dict):
                    waiting.callback((status, body))
                else:
                    waiting.errback(ClusterUnavailable("malformed reply from the holder"))
        elif data.get("kind") == "request":
            self._serve(data)
        else:
            self._malformed(channel)

    def _serve(self, data: dict[str, Any]) -> None:
        rid, sender, uuid, action, body = (data.get(k) for k in
                                           ("id", "from", "uuid", "action", "body"))
        if not all(isinstance(v, str) for v in (rid, sender, uuid, action)) or not isinstance(
                body, dict):
            return self._malformed(self.keys.channel(self.worker))

        def reply(result: Reply) -> None:
            message = {"kind": "reply", "id": rid, "status": result[0], "body": result[1]}
            self._command("publish", self.keys.channel(str(sender)),
                          json.dumps(message, default=str)).addErrback(lambda _: None)

        self._run_handler(str(uuid), str(action), body).addCallback(reply)

    def _malformed(self, channel: Any) -> None:
        self._malformed_count += 1
        if self._malformed_count == 1 or self._malformed_count % 1000 == 0:
            log.warn("cluster: ignored a malformed message on {channel} ({count} so far)",
                     channel=str(channel), count=self._malformed_count)

    # Events.

    def publish_event(self, event: dict[str, Any]) -> None:
        """Show `event` on every worker's subscribers (here at once, elsewhere via Redis).

        Each subscriber gets it once, as a copy tagged ``"worker"`` with its origin.
        Never raises for Redis: while it is down the event reaches this worker only.
        """
        self.events.deliver(dict(event, worker=self.worker))
        if not self.available:
            self.events_not_shared += 1
            return
        try:
            message = json.dumps({"worker": self.worker, "event": event}, default=str)
        except ValueError:  # a circular structure: not something we can share
            self.events_not_shared += 1
            return
        self._command("publish", self.keys.events, message).addErrback(lambda _: None)

    def subscribe_events(self, callback: Subscriber) -> Callable[[], None]:
        """Events of every worker from now on (see EventFanout); returns unsubscribe."""
        return self.events.subscribe(callback)
