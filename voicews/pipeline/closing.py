"""Closing steps: every ``close()`` called, their Deferreds awaited, within a bound.

Used when a call ends and when a switch takes a call's steps out (``Pipeline.switch``).
A step whose ``close()`` raises or fails is reported (``failed``) and does not hold up the
others; one still busy after ``timeout`` is abandoned and named in ``late``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from voicews.pipeline.processor import Processor


def close_steps(
    processors: Sequence[Processor], clock: IReactorTime, timeout: float,
    failed: Callable[[str, Failure], None], late: Callable[[list[str]], None],
) -> defer.Deferred[None]:
    """Close `processors`; fires (never fails) once all have closed or `timeout` has passed.

    ``failed(name, failure)`` for each step whose close raised or failed;
    ``late(names)`` once, for the steps still closing at the timeout.
    """
    waits: list[tuple[str, defer.Deferred[Any]]] = []
    for processor in processors:
        try:
            result = processor.close()
        except Exception:
            failed(processor.name, Failure())
            continue
        if isinstance(result, defer.Deferred):
            waits.append((processor.name, result))
    if not waits:
        return defer.succeed(None)
    pending = {name for name, _ in waits}

    def finished(result: Any, name: str) -> None:
        pending.discard(name)
        if isinstance(result, Failure):
            failed(name, result)

    for name, d in waits:
        d.addBoth(finished, name)
    everything = defer.DeferredList([d for _, d in waits], consumeErrors=True)
    everything.addTimeout(timeout, clock)

    def too_late(failure: Failure) -> None:
        failure.trap(defer.TimeoutError)
        late(sorted(pending))

    return everything.addCallbacks(lambda _: None, too_late)
