"""The live calls: one plain record per open call socket, owned by the registry.

The watchdog, the metrics, the drain and the control API read these records;
none of them reach into the socket.  A record knows how to end its call
(``end``/``abort``, given by the socket) and, once the first message chose a
pipeline, the call's running :class:`~voicews.pipeline.pipeline.Pipeline`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from twisted.internet import defer

if TYPE_CHECKING:
    from voicews.pipeline.info import CallInfo
    from voicews.pipeline.pipeline import Pipeline


@dataclass(eq=False)
class CallRecord:
    """One live call socket."""

    peer: str
    opened: float
    """Clock seconds when the socket opened."""
    end: Callable[[int, str, str], None]
    """End the call: ``end(code, reason, outcome)``; the socket closes with `code`."""
    abort: Callable[[], None]
    """Drop the connection without a goodbye (a peer that ignores ours)."""
    pipeline: Pipeline | None = None
    """The call's running pipeline, once its first message chose one."""
    ending: bool = False
    """``end`` was called; the record leaves the registry when the call has closed."""
    worker: str = field(default="")

    @property
    def info(self) -> CallInfo | None:
        return self.pipeline.info if self.pipeline is not None else None

    @property
    def uuid(self) -> str | None:
        return self.pipeline.info.uuid if self.pipeline is not None else None

    @property
    def frames_in(self) -> int:
        return self.pipeline.frames_in if self.pipeline is not None else 0

    @property
    def frames_out(self) -> int:
        return self.pipeline.sender.frames_sent if self.pipeline is not None else 0

    def drain(self) -> None:
        """The daemon is stopping: say goodbye (1001)."""
        self.end(1001, "server shutting down", "drained")


class CallRegistry:
    """The live calls of this process."""

    def __init__(self) -> None:
        self._live: dict[int, CallRecord] = {}
        self._empty: list[defer.Deferred[None]] = []

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[CallRecord]:
        return iter(list(self._live.values()))

    def add(self, record: CallRecord) -> None:
        self._live[id(record)] = record

    def remove(self, record: CallRecord) -> None:
        """Forget a call (it has closed and finished); wakes ``when_empty`` waiters."""
        self._live.pop(id(record), None)
        if not self._live and self._empty:
            waiting, self._empty = self._empty, []
            for d in waiting:
                d.callback(None)

    def find(self, uuid: str) -> CallRecord | None:
        """The live call with this Vonage uuid, if any."""
        for record in self._live.values():
            if record.uuid == uuid:
                return record
        return None

    def when_empty(self) -> defer.Deferred[None]:
        """A Deferred that fires once no call is live (at once if none is)."""
        if not self._live:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._empty.append(d)
        return d
