"""What a pipeline does with its steps beside frames: start them, close them, give them
events, and end the call when one fails.

:class:`StepHost` is the base of :class:`voicews.pipeline.pipeline.Pipeline`: the
frame path and the mix bus live there, the steps' life here.  Every processor
exception is caught here or there, logged once with the step's name and traceback,
and ends this call alone (1011).  Events are delivered in order: one emitted while
another is being delivered waits for it, so every step sees them in the same order.
"""

from __future__ import annotations

import sys
from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from voicews.pipeline.closing import close_steps
from voicews.pipeline.events import Event
from voicews.pipeline.processor import Processor

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from voicews.pipeline.info import CallInfo
    from voicews.pipeline.services import CallLink, CallServices

log = Logger(namespace="voicews.pipeline")

CLOSE_INTERNAL_ERROR = 1011


class StepHost:
    """The steps of one call and the events between them (the base of Pipeline)."""

    info: CallInfo
    services: CallServices
    clock: IReactorTime
    link: CallLink
    processors: list[Processor]
    closed: bool
    failed: bool
    started_at: float

    def __init__(self) -> None:
        self._events: deque[tuple[Event, int]] = deque()
        self._delivering = False

    def _start_steps(self) -> bool:
        for processor in self.processors:
            try:
                result = processor.start()
            except Exception:
                self._step_failed(processor, "start")
                return False
            if isinstance(result, defer.Deferred):
                result.addErrback(self._start_failed, processor)
        return True

    def _start_failed(self, failure: Failure, processor: Processor) -> None:
        if not self.closed:
            self._step_failed(processor, "start", failure)

    def _close_steps(self, processors: list[Processor], pipeline: str) -> defer.Deferred[None]:
        def late(steps: list[str]) -> None:
            log.warn(
                "steps {steps} of pipeline {pipeline} still closing after {timeout:g} s; "
                "abandoned uuid={uuid}", steps=", ".join(steps), pipeline=pipeline,
                timeout=self.services.close_timeout, uuid=self.info.uuid,
            )

        def failed(name: str, failure: Failure) -> None:
            self._log_step_error(f"step {name}", "close", failure)

        return close_steps(processors, self.clock, self.services.close_timeout, failed, late)

    def call_time(self) -> float:
        return self.clock.seconds() - self.started_at

    # -- events ------------------------------------------------------------------------

    def emit(self, position: int, source: str, kind: str, data: dict[str, Any]) -> None:
        """An event from a step (not delivered back to it) or from the app (position 0)."""
        self._emit(Event(kind, data, source, self.call_time()), skip=position - 1)

    def publish(self, info: CallInfo, event: Event) -> None:
        """One event to the application (``runtime.sinks``), never raising."""
        try:
            self.services.publish(info, event)
        except Exception:
            log.failure("publishing a call event failed uuid={uuid}", uuid=info.uuid)

    def _emit(self, event: Event, skip: int) -> None:
        """Deliver in order: events emitted while delivering wait for the one in hand."""
        self._events.append((event, skip))
        if self._delivering:
            return
        self._delivering = True
        try:
            while self._events:
                event, skip = self._events.popleft()
                self.publish(self.info, event)
                if self.closed:
                    continue  # a closed call's steps hear nothing more (call_ended: the app)
                for index, processor in enumerate(self.processors):
                    if index == skip or self.failed:
                        continue
                    try:
                        processor.on_event(event)
                    except Exception:
                        self._step_failed(processor, f"{event.kind} event")
        finally:
            self._delivering = False

    # -- failures ------------------------------------------------------------------------

    def _log_step_error(self, what: str, during: str, failure: Failure) -> None:
        log.failure(
            "{what} of pipeline {pipeline} raised during {during} uuid={uuid}",
            failure=failure, what=what, pipeline=self.info.pipeline, during=during,
            uuid=self.info.uuid, level=LogLevel.error,  # one call failed, not the daemon
        )

    def _step_failed(
        self, processor: Processor | None, during: str, failure: Failure | None = None
    ) -> None:
        """A processor raised: log it once with its traceback and end this call (1011)."""
        if self.failed:
            return
        self.failed = True
        step = processor.name if processor is not None else "a plugin hook"
        what = f"step {processor.name}" if processor is not None else "a plugin"
        self._log_step_error(what, during, failure or Failure())
        self.link.hangup(
            CLOSE_INTERNAL_ERROR, f"processor error in pipeline {self.info.pipeline}, step {step}",
            "error",
        )


def step_that_raised() -> Processor | None:
    """The processor whose code raised the exception being handled, from its traceback."""
    tb = sys.exc_info()[2]
    found = None
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if isinstance(candidate, Processor):
            found = candidate
        tb = tb.tb_next
    return found
