"""Reactor stalls: a processor that blocks (``time.sleep``, a slow model on the reactor
thread) delays every call's audio.  Find it, name it, count it.

A heartbeat on the reactor notes the time every few milliseconds; a small thread
looks at it.  When the heartbeat is older than ``limits.stall_seconds``, the
thread takes one sample of the reactor thread's stack (``sys._current_frames``,
which CPython documents for exactly this) and keeps which call and which step
was running.  When the reactor comes back, one line says how long it stalled
and where, and ``voicews_reactor_stalls_total`` counts it.  Nothing is added to
the frame path.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from types import FrameType

from twisted.application import service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from voicews.pipeline.pipeline import Pipeline
from voicews.pipeline.processor import Processor
from voicews.runtime import metrics

log = Logger(namespace="voicews.stalls")


@dataclass(frozen=True)
class Stall:
    """Where the reactor thread was when a stall was noticed."""

    since: float
    step: str | None
    pipeline: str | None
    uuid: str | None
    code: str


def where(frame: FrameType | None) -> tuple[str | None, str | None, str | None, str]:
    """(step, pipeline, uuid, innermost file:line) of a reactor-thread stack."""
    step = pipeline = uuid = None
    innermost = "?"
    if frame is not None:
        innermost = f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
    while frame is not None:
        owner = frame.f_locals.get("self")
        if step is None and isinstance(owner, Processor):
            step = owner.name
        if isinstance(owner, Pipeline):
            pipeline, uuid = owner.info.pipeline, owner.info.uuid
            break
        frame = frame.f_back
    return step, pipeline, uuid, innermost


class StallWatch(service.Service):
    """Notices reactor turns longer than `threshold` seconds and says who ran."""

    def __init__(self, reactor, threshold: float) -> None:
        self.reactor = reactor
        self.threshold = threshold
        self._beat = time.monotonic()
        self._stall: Stall | None = None
        self._reactor_thread = 0
        self._running = threading.Event()
        self._heartbeat = LoopingCall(self._tick)
        self._heartbeat.clock = reactor
        self._thread: threading.Thread | None = None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._reactor_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._heartbeat.start(self.threshold / 5, now=True)
        self._running.set()
        self._thread = threading.Thread(target=self._watch, name="voicews-stalls", daemon=True)
        self._thread.start()

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        self._running.clear()
        if self._heartbeat.running:
            self._heartbeat.stop()

    def _tick(self) -> None:
        now = self._beat = time.monotonic()  # first: the watcher must not take this turn
        stall, self._stall = self._stall, None
        if stall is not None:
            metrics.REACTOR_STALLS.inc()
            log.warn(
                "reactor stalled {seconds:.2f} s (every call waited) in step {step} of "
                "pipeline {pipeline} uuid={uuid} at {code}", seconds=now - stall.since,
                step=stall.step or "-", pipeline=stall.pipeline or "-", uuid=stall.uuid,
                code=stall.code, stall=True,
            )

    def _watch(self) -> None:
        while self._running.is_set():
            time.sleep(self.threshold / 4)
            beat = self._beat
            if self._stall is None and time.monotonic() - beat > self.threshold:
                frame = sys._current_frames().get(self._reactor_thread)
                self._stall = Stall(beat, *where(frame))
                del frame
