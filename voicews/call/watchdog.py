"""The call watchdog: one timer for the whole daemon that ends idle and overlong calls.

It compares frame counters once a tick, so the per-frame path pays nothing.  The
service runs :meth:`CallWatchdog.tick` from a Twisted ``TimerService``; tests call
it with a ``task.Clock``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from voicews.audio.samples import FRAME_SECONDS
from voicews.runtime.calls import CallRecord
from voicews.vonage.messages import CLOSE_NORMAL, CLOSE_POLICY

if TYPE_CHECKING:
    from voicews.runtime.state import Runtime

log = Logger(namespace="voicews.call.watchdog")

INTERVAL = 1.0
"""Seconds between ticks: the resolution of idle_timeout and max_call_seconds."""


class CallWatchdog:
    """Ends calls that went quiet or ran too long.

    Each tick compares every live call's ``frames_in`` with the previous tick's;
    a call whose count has not moved for ``limits.idle_timeout`` is closed with
    1008, a call older than ``limits.max_call_seconds`` with 1000.  A call whose
    audio runs more than ``limits.max_burst_seconds`` ahead of real time (a client
    streaming at line rate costs hundreds of calls' CPU) is closed with 1008.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._seen: dict[CallRecord, tuple[int, float]] = {}

    def tick(self) -> None:
        runtime = self.runtime
        limits = runtime.settings.raw.limits
        now = runtime.clock.seconds()
        seen: dict[CallRecord, tuple[int, float]] = {}
        for call in runtime.calls:
            if call.ending:
                continue
            if now - call.opened >= limits.max_call_seconds:
                log.info(
                    "call reached max_call_seconds={limit:g} uuid={uuid}",
                    limit=limits.max_call_seconds, uuid=call.uuid,
                )
                call.end(CLOSE_NORMAL, "maximum call length reached", "max_length")
                continue
            if call.pipeline is None:
                continue  # the first-message timer looks after calls that never start
            frames = call.frames_in
            ahead = frames * FRAME_SECONDS - (now - call.pipeline.started_at)
            if ahead > limits.max_burst_seconds:
                log.info(
                    "call's audio runs {ahead:.1f} s ahead of real time uuid={uuid}",
                    ahead=ahead, uuid=call.uuid,
                )
                call.end(CLOSE_POLICY, "audio faster than real time", "too_fast")
                continue
            before = self._seen.get(call)
            since = now if before is None or before[0] != frames else before[1]
            if now - since >= limits.idle_timeout:
                call.end(CLOSE_POLICY, f"no audio for {limits.idle_timeout:g} s", "idle")
                continue
            seen[call] = (frames, since)
        self._seen = seen
