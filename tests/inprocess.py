"""What the in-process engine and pipeline tests share: the signals trial's reactor takes,
waiting on that reactor, and the application that records a call's events.

Import ``give_back_signals`` into a test module that runs trial's reactor (an autouse
fixture: importing it is enough).
"""

from __future__ import annotations

import signal
import time

import pytest
from twisted.internet import defer, task


@pytest.fixture(autouse=True)
def give_back_signals():
    """trial's reactor.run() takes SIGINT/SIGTERM/SIGCHLD and leaves them taken after the
    test, so Ctrl-C would no longer stop pytest: hand them back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def wait_until(predicate, timeout: float = 20.0) -> defer.Deferred:
    """Fires when predicate() is true, checked every 20 ms of reactor time."""
    deadline = time.monotonic() + timeout

    def check() -> None:
        if predicate():
            loop.stop()
        elif time.monotonic() > deadline:
            raise AssertionError("timed out waiting")

    loop = task.LoopingCall(check)
    return loop.start(0.02)


class App:
    """What the application gets (runtime.sinks): every event, in order."""

    def __init__(self) -> None:
        self.events = []

    def __call__(self, info, event) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def of(self, kind: str) -> list[dict]:
        return [dict(e.data) for e in self.events if e.kind == kind]

    def transcripts(self, final: bool | None = None) -> list[dict]:
        return [t for t in self.of("transcript") if final is None or t["final"] is final]

    def finals(self) -> list[dict]:
        return self.transcripts(final=True)
