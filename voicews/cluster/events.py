"""Call events to in-process subscribers, each with a bounded queue of its own.

A subscriber is a callable taking one event dict.  A quick one returns None and gets
every event as it comes.  A slow one (an ``/events`` client whose socket is full)
returns a Deferred that fires when it can take the next event; until then its events
wait in a queue of at most ``limit``, and past that the oldest are dropped (a live
stream wants what happens now) and counted: a slow subscriber costs at most ``limit``
events of memory and never holds back the others or the caller.  One log line when a
subscriber starts dropping, none while it goes on; the next episode logs again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger(namespace="voicews.cluster")

Event = dict[str, Any]
Subscriber = Callable[[Event], "Deferred[Any] | None"]


class _Queue:
    """One subscriber: its callable, its pending events and whether it is busy."""

    def __init__(self, callback: Subscriber, limit: int) -> None:
        self.callback = callback
        self.pending: deque[Event] = deque(maxlen=limit)
        self.limit = limit
        self.waiting = False  # the callback's last Deferred has not fired yet
        self.pumping = False  # re-entrancy guard: a callback may publish an event itself
        self.active = True
        self.dropped = 0
        self._dropping = False
        self._failed = False

    def offer(self, event: Event) -> None:
        if not self.active:
            return
        if len(self.pending) == self.limit:  # deque(maxlen) drops the oldest on append
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warn("cluster: an events subscriber is too slow, dropping its oldest "
                         "events (it keeps the last {limit})", limit=self.limit)
        self.pending.append(event)
        self._pump()

    def _pump(self) -> None:
        if self.pumping:
            return
        self.pumping = True
        try:
            while self.pending and not self.waiting and self.active:
                event = self.pending.popleft()
                try:
                    result = self.callback(event)
                except Exception:
                    self._log_failure(Failure())
                    continue
                if isinstance(result, Deferred):
                    self.waiting = True
                    result.addBoth(self._resumed)  # may fire at once: waiting is False again
            if not self.pending:
                self._dropping = False
        finally:
            self.pumping = False

    def _resumed(self, result: Any) -> None:
        self.waiting = False
        if isinstance(result, Failure):
            self._log_failure(result)
        self._pump()

    def _log_failure(self, failure: Failure) -> None:
        if not self._failed:  # once per subscriber: a broken one must not flood the log
            self._failed = True
            log.failure("cluster: an events subscriber raised (logged once)", failure)


class EventFanout:
    """Delivers each event to every subscriber once, in order, each through its own queue."""

    def __init__(self, limit: int = 256) -> None:
        if limit < 1:
            raise ValueError("the events queue limit must be at least 1")
        self.limit = limit
        self._queues: list[_Queue] = []

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    @property
    def dropped(self) -> int:
        """Events dropped so far for subscribers that are still subscribed."""
        return sum(q.dropped for q in self._queues)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Deliver events to `callback` from now on; returns the call that stops it."""
        queue = _Queue(callback, self.limit)
        self._queues.append(queue)

        def unsubscribe() -> None:
            queue.active = False
            queue.pending.clear()
            if queue in self._queues:
                self._queues.remove(queue)

        return unsubscribe

    def deliver(self, event: Event) -> None:
        for queue in list(self._queues):
            queue.offer(event)
