"""The call watchdog: one timer for the whole daemon that ends idle and overlong calls.

It compares frame counters once a tick, so the per-frame path pays nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from voicews.vonage.messages import CLOSE_NORMAL, CLOSE_POLICY

if TYPE_CHECKING:
    from voicews.runtime.state import Runtime

log = Logger(namespace="voicews.call.watchdog")


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
