"""Call events for the application: one JSON record per event, and the bus that carries them.

Every event of every call (``runtime.sinks``: voicews's ``call_started`` /
``call_ended``, Vonage's ``dtmf`` / ``notify`` / ``cleared``, whatever a step
emits) is turned here, once, into an :class:`AppEvent`: a JSON-ready record and
its JSON text, so each consumer (HTTP callbacks, every ``/events`` stream) sends
the same bytes and none of them can be surprised by data a plugin put in an event.

The bus has one door in and one door out, which is where a cluster link will
attach: :meth:`EventBus.publish` (a call event of this process) and
:meth:`EventBus.deliver` (a record ready to hand out, e.g. one from another
worker, through :meth:`AppEvent.from_record`), and :meth:`EventBus.subscribe` for
consumers.  Subscribers are called synchronously and must only queue (each bounds
its own queue).  A bridge would pass this process's events on from ``publish`` and
``deliver`` other workers' events to the ``/events`` streams only: each worker posts
its own calls' events to the callback URL.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.logger import Logger

from voicews.runtime import metrics

if TYPE_CHECKING:
    from voicews.pipeline.events import Event
    from voicews.pipeline.info import CallInfo

log = Logger(namespace="voicews.events")

MAX_RECORD_BYTES = 64 * 1024
"""A record whose JSON is longer gets ``data`` ``{"truncated": true, "bytes": N}`` instead."""
MAX_DEPTH = 32
"""Nesting deeper than this (or a structure that contains itself) becomes its repr()."""
RENAMED = {"notify": "played"}
"""Kinds the application knows by another name: Vonage's ``notify`` says our audio up to a
mark has been played."""


@dataclass(frozen=True)
class AppEvent:
    """One event as the application gets it: ``record`` (JSON-ready) and ``text`` (its JSON)."""

    record: dict[str, Any]
    text: str

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AppEvent:
        """A record from elsewhere (another worker, over a cluster link), made safe again."""
        record = json_safe(record)
        return cls(record, _dumps(record))

    @property
    def uuid(self) -> str | None:
        uuid = self.record.get("uuid")
        return uuid if isinstance(uuid, str) else None

    @property
    def size(self) -> int:
        """Bytes this event holds in a queue (its JSON; ASCII, so characters are bytes)."""
        return len(self.text)


def json_safe(value: Any, depth: int = 0) -> Any:
    """`value` with everything JSON cannot carry replaced by its ``repr()``.

    Tuples and sets become lists, mapping keys strings, numpy scalars their
    Python value, NaN and infinities their repr (``"nan"``), anything else
    (bytes, objects, a structure that contains itself) ``repr(value)``.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth >= MAX_DEPTH:
        return _repr(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, deque)):
        return [json_safe(v, depth + 1) for v in value]
    item = getattr(value, "item", None)  # numpy scalars (np.int64, np.float32, np.bool_)
    if callable(item) and getattr(value, "shape", None) == ():
        try:
            plain = item()
        except Exception:
            return _repr(value)
        if isinstance(plain, (bool, int, float, str)):
            return json_safe(plain, depth + 1)
    return _repr(value)


def _repr(value: Any) -> str:
    try:
        return repr(value)[:1000]
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, allow_nan=False, separators=(",", ":"))


def make_event(info: CallInfo, event: Event, seq: int) -> AppEvent:
    """The application's record of one call event (see docs/events.md)."""
    record: dict[str, Any] = {
        "uuid": info.uuid,
        "conversation_uuid": info.conversation_uuid,
        "pipeline": info.pipeline,
        "kind": RENAMED.get(event.kind, event.kind) if event.source == "vonage" else event.kind,
        "time": round(event.time, 3),
        "source": event.source,
        "seq": seq,
        "data": dict(event.data),
    }
    try:
        text = _dumps(record)
    except (TypeError, ValueError):  # not JSON: a plugin's object, bytes, NaN, a cycle
        record["data"] = json_safe(record["data"])
        text = _dumps(record)
    if len(text) > MAX_RECORD_BYTES:
        record["data"] = {"truncated": True, "bytes": len(text)}
        text = _dumps(record)
    return AppEvent(record, text)


class Subscriber(Protocol):
    """A consumer of the bus: takes each event at once (queueing it, bounded) and never blocks."""

    def offer(self, event: AppEvent) -> None: ...

    def close(self) -> None:
        """The daemon is stopping: finish (an ``/events`` stream ends its response)."""


class EventBus:
    """Every call event of the process, to every subscriber, in the order they happened."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._local_only: set[int] = set()  # subscribers that want this process's events only
        self._failed: set[int] = set()
        self.seq = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._subscribers)

    def __iter__(self) -> Iterator[Subscriber]:
        return iter(list(self._subscribers))

    def publish(self, info: CallInfo, event: Event) -> None:
        """A call event of this process (a ``runtime.sinks`` entry): make its record, deliver it."""
        self.seq += 1
        metrics.EVENTS.inc()
        self.deliver(make_event(info, event, self.seq))

    def deliver(self, event: AppEvent, remote: bool = False) -> None:
        """Hand one record to every subscriber (a `remote` one, another worker's event, only
        to those that want them); a subscriber that raises is logged once."""
        for subscriber in list(self._subscribers):
            if remote and id(subscriber) in self._local_only:
                continue
            try:
                subscriber.offer(event)
            except Exception:
                if id(subscriber) not in self._failed:
                    self._failed.add(id(subscriber))
                    log.failure("an events subscriber raised (logged once)")

    def subscribe(self, subscriber: Subscriber, *, remote: bool = True) -> Callable[[], None]:
        """Deliver events to `subscriber` from now on; returns the call that stops it.

        With a cluster, other workers' events are delivered too, unless `remote` is False:
        what must happen once per event (an HTTP callback) happens where the call is.
        """
        self._subscribers.append(subscriber)
        if not remote:
            self._local_only.add(id(subscriber))

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)
            self._failed.discard(id(subscriber))
            self._local_only.discard(id(subscriber))

        return unsubscribe

    def close(self) -> None:
        """The daemon is stopping: every subscriber finishes."""
        self.closed = True
        for subscriber in list(self._subscribers):
            try:
                subscriber.close()
            except Exception:
                log.failure("an events subscriber failed to close")


class BoundedQueue:
    """Events waiting for one consumer, at most `max_items` and `max_bytes`.

    Past either bound the oldest waiting events make room (what happens now
    matters more to a live application than what it missed) and are counted in
    ``dropped``.  An event larger than the byte bound by itself is dropped.
    """

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.items: deque[AppEvent] = deque()
        self.bytes = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def push(self, event: AppEvent, held: int = 0, held_bytes: int = 0) -> int:
        """Queue `event`; returns how many events were dropped to make room.

        `held` and `held_bytes` count events the consumer has taken but not yet
        finished with (a POST in flight): they share the bounds.
        """
        dropped = 0
        size = event.size
        if size > self.max_bytes or held >= self.max_items or held_bytes + size > self.max_bytes:
            dropped = 1  # no room even when empty: the newcomer goes
        else:
            while self.items and (
                held + len(self.items) >= self.max_items
                or held_bytes + self.bytes + size > self.max_bytes
            ):
                self.bytes -= self.items.popleft().size
                dropped += 1
            self.items.append(event)
            self.bytes += size
        self.dropped += dropped
        return dropped

    def pop(self) -> AppEvent:
        event = self.items.popleft()
        self.bytes -= event.size
        return event

    def take(self, count: int) -> list[AppEvent]:
        return [self.pop() for _ in range(min(count, len(self.items)))]

    def clear(self) -> int:
        count = len(self.items)
        self.items.clear()
        self.bytes = 0
        return count
