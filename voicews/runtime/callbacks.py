"""Call events POSTed to the application (``events.url``), batched, signed, retried, bounded.

Events wait in ``events.connections`` lanes; a call's events always take the same
lane (by its uuid), and a lane has one POST in flight at a time, so each call's
events reach the application in order while a slow call's backlog does not
hold back every other call.  A POST carries every event its lane has waiting,
up to ``batch_size``: one event when they come slowly, a batch when they come
fast.  Failures (5xx, 408, 429, timeouts, refused or dropped connections) are
retried with exponential backoff; 4xx answers are not (the application refused
that batch).  The lanes are bounded (``max_queue`` events, ``max_queue_bytes``):
past that the oldest waiting events are dropped and counted.  A dead
application therefore costs a bounded amount of memory and nothing else: this
runs on the reactor between frames, never waits for the application, and the
calls' audio never waits for it.  One log line when trouble starts, one when
delivery works again.

The service starts and stops with the daemon; on stop it gives what is queued
``drain_timeout`` to be delivered, then ends every ``/events`` stream.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet import defer, error, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from voicews import __version__
from voicews.runtime import metrics
from voicews.runtime.events import AppEvent, BoundedQueue
from voicews.vonage.tokens import make_token

if TYPE_CHECKING:
    from voicews.config.sections import Events
    from voicews.runtime.state import Runtime

log = Logger(namespace="voicews.events")

OK, RETRY, REJECTED = "ok", "retry", "rejected"


class _Lane:
    """Events for one connection: waiting, and the batch in flight."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.queue = BoundedQueue(max_items, max_bytes)
        self.inflight: list[AppEvent] = []
        self.inflight_bytes = 0
        self.worker: defer.Deferred[None] | None = None

    def __len__(self) -> int:
        return len(self.queue) + len(self.inflight)


class EventCallbacks(Service):
    """Posts call events to ``events.url``; subscribed to ``runtime.events`` while running."""

    name = "event-callbacks"  # type: ignore[assignment]  # Service declares None

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        config = runtime.settings.raw.events
        count = config.connections
        self.lanes = [
            _Lane(config.max_queue // count, config.max_queue_bytes // count)
            for _ in range(count)
        ]
        self.stopping = False
        self._abandoned = False
        self._unsubscribe: Any = None
        self._trouble = False  # logged that posts fail; cleared by the next success
        self._dropping = False  # logged that events are dropped; cleared with _trouble
        self._failed_tries = 0
        self._dropped = 0
        metrics.EVENTS_QUEUED.set_function(self.queued)

    def queued(self) -> int:
        """Events not yet delivered, in flight included."""
        return sum(len(lane) for lane in self.lanes)

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()
        # Posted once, by the worker that holds the call: not other workers' events.
        self._unsubscribe = self.runtime.events.subscribe(self, remote=False)

    # -- taking events (on the reactor, from a call's event delivery: never waits) ---------

    def offer(self, event: AppEvent) -> None:
        if self.stopping or not self.runtime.settings.raw.events.url:
            return
        lane = self.lanes[zlib.crc32((event.uuid or "").encode()) % len(self.lanes)]
        dropped = lane.queue.push(event, len(lane.inflight), lane.inflight_bytes)
        if dropped:
            self._drop(dropped, "queue_full")
        if lane.worker is None:
            worker = lane.worker = self._run(lane)
            worker.addBoth(self._finished, lane)

    def close(self) -> None:
        """The bus closes after this service has stopped: nothing left to do."""

    def _finished(self, result: Any, lane: _Lane) -> None:
        lane.worker = None
        if isinstance(result, Failure) and not result.check(defer.CancelledError):
            log.failure("event callbacks: a lane stopped on an error", result)
        if not self._trouble and not self.queued():
            self._dropping = False  # a slow spell is over: the next one logs again

    # -- posting ----------------------------------------------------------------------------

    @defer.inlineCallbacks
    def _run(self, lane: _Lane):
        """Post the lane's events, a batch at a time, until it has none waiting."""
        while lane.queue:
            config = self.runtime.settings.raw.events
            if config.batch_delay and not self.stopping:
                yield task.deferLater(self.runtime.clock, config.batch_delay)
            lane.inflight = lane.queue.take(config.batch_size)
            lane.inflight_bytes = sum(event.size for event in lane.inflight)
            try:
                yield self._deliver(lane.inflight)
            finally:
                lane.inflight, lane.inflight_bytes = [], 0

    @defer.inlineCallbacks
    def _deliver(self, batch: list[AppEvent]):
        """POST one batch, retrying with backoff; delivered or dropped (counted) when done."""
        body = ("[" + ",".join(event.text for event in batch) + "]").encode("ascii")
        attempt = 0
        while True:
            config = self.runtime.settings.raw.events
            if not config.url:  # a reload turned callbacks off
                self._drop(len(batch), "stopped")
                return
            result, why = yield self._post(config, body)
            metrics.EVENT_POSTS.labels(result=result).inc()
            if result == OK:
                metrics.EVENTS_DELIVERED.inc(len(batch))
                self._recovered(config)
                return
            self._failing(config, why, result)
            if result == REJECTED:
                self._drop(len(batch), "rejected")
                return
            if attempt >= config.retries:
                self._drop(len(batch), "failed")
                return
            delay = min(config.max_backoff, config.backoff * 2**attempt)
            attempt += 1
            yield task.deferLater(self.runtime.clock, delay)
            if self._abandoned:
                raise defer.CancelledError()

    @defer.inlineCallbacks
    def _post(self, config: Events, body: bytes):
        """One POST: (OK | RETRY | REJECTED, why).  Cancelling it (at stop) raises."""
        headers = {
            "Content-Type": ["application/json"],
            "User-Agent": [f"voicews/{__version__}"],
        }
        secret = self.runtime.settings.raw.security.signature_secret
        if secret:
            token = make_token(secret, body, iss="voicews")
            headers["Authorization"] = [f"Bearer {token}"]
        d = defer.maybeDeferred(self.runtime.http().post, config.url, data=body,
                                headers=headers)
        d.addCallback(_read_code)
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            d.cancel()

        timer = self.runtime.clock.callLater(config.timeout, expire)
        try:
            code = yield d
        except Exception as exc:
            if self._abandoned:
                raise defer.CancelledError() from None  # stopping: not the application's fault
            if expired:
                return RETRY, f"no answer within {config.timeout:g} s"
            if isinstance(exc, error.ConnectionRefusedError):
                return RETRY, "connection refused"
            return RETRY, _describe(exc)  # DNS, TLS, a dropped connection: worth a retry
        finally:
            if timer.active():
                timer.cancel()
        if 200 <= code < 300:
            return OK, ""
        if code >= 500 or code in (408, 429):
            return RETRY, f"HTTP {code}"
        return REJECTED, f"HTTP {code}"

    # -- counting and telling -------------------------------------------------------------

    def _drop(self, count: int, reason: str) -> None:
        metrics.EVENTS_DROPPED.labels(sink="callback", reason=reason).inc(count)
        self._dropped += count
        if not self._dropping:
            self._dropping = True
            log.warn(
                "event callbacks: dropping events ({reason}); counted in "
                "voicews_events_dropped_total, logged once until delivery works again",
                reason=reason, events_dropped=reason,
            )

    def _failing(self, config: Events, why: str, result: str) -> None:
        self._failed_tries += 1
        if self._trouble:
            return
        self._trouble = True
        if result == REJECTED:
            log.warn("event callbacks to {url} refused ({why}): that batch is dropped",
                     url=config.url, why=why)
        else:
            log.warn("event callbacks to {url} failing ({why}): retrying with backoff; "
                     "events beyond the queue bound are dropped", url=config.url, why=why)

    def _recovered(self, config: Events) -> None:
        if not self._trouble and not self._dropping:
            return
        log.info(
            "event callbacks to {url} delivered again after {tries} failed tries; "
            "{dropped} events dropped meanwhile",
            url=config.url, tries=self._failed_tries, dropped=self._dropped,
        )
        self._trouble = self._dropping = False
        self._failed_tries = self._dropped = 0

    # -- stopping -------------------------------------------------------------------------

    @defer.inlineCallbacks
    def stopService(self):  # noqa: N802
        """Flush what is queued (up to ``drain_timeout``), then end every ``/events`` stream."""
        super().stopService()
        self.stopping = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        workers = [lane.worker for lane in self.lanes if lane.worker is not None]
        if workers:
            timeout = self.runtime.settings.raw.drain_timeout
            timer = self.runtime.clock.callLater(timeout, self._abandon, timeout)
            yield defer.DeferredList(workers, consumeErrors=True)
            if timer.active():
                timer.cancel()
        self.runtime.events.close()

    def _abandon(self, timeout: float) -> None:
        self._abandoned = True
        left = self.queued()
        if left:
            self._drop(left, "stopped")
            log.warn("event callbacks: {count} events not delivered within drain_timeout "
                     "({timeout:g} s)", count=left, timeout=timeout)
        for lane in self.lanes:
            lane.queue.clear()
            if lane.worker is not None:
                lane.worker.cancel()


def _read_code(response: Any) -> defer.Deferred[int]:
    """The status, once the (discarded) body has been read: the connection can be reused."""
    import treq

    return treq.collect(response, _discard).addCallback(lambda _: response.code)


def _discard(chunk: bytes) -> None:
    return None


def _describe(exc: Exception) -> str:
    reasons = getattr(exc, "reasons", None)  # ResponseFailed & co. wrap the real Failures
    if reasons:
        return "; ".join(_describe(r.value) for r in reasons)
    return f"{type(exc).__name__}: {exc}".strip(": ")
