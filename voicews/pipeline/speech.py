"""``session.say``: text to speech, played on the mix bus at the calling step, in order.

The daemon's engine (``CallServices.tts``: eSpeak NG or a plugin's, see voicews.engines.tts)
synthesizes off the reactor at the call's rate and caches repeated texts.  Texts said from
one step are played in the order they were said, even when a later one is ready first (a
cached greeting behind a long sentence).  Each is followed by a notify, so the Deferred
fires once Vonage has played it; see :meth:`voicews.pipeline.session.Session.say` for what
it fires with when a clear (barge-in) or the call's end cuts it short.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from twisted.internet import defer
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from voicews.pipeline.info import CallInfo
    from voicews.pipeline.playback import Playback, Playbacks
    from voicews.pipeline.services import CallServices


class _Call(Protocol):
    """What saying needs of the call's pipeline (voicews.pipeline.pipeline)."""

    info: CallInfo
    services: CallServices
    playbacks: Playbacks
    closed: bool

    def step_name(self, position: int) -> str: ...
    def _push(self, playback: Playback, samples: Any) -> None: ...
    def notify(self, position: int, payload: Any) -> None: ...


class _Said:
    """One text on its way: its playback, its synthesis, and what came of it."""

    __slots__ = ("failure", "playback", "samples", "synthesis")

    def __init__(self, playback: Playback) -> None:
        self.playback = playback
        self.synthesis: defer.Deferred[Any] | None = None
        self.samples: np.ndarray | None = None
        self.failure: Failure | None = None


class Speech:
    """The texts one call is saying, per step, in the order they were said."""

    def __init__(self, pipeline: _Call) -> None:
        self._pipeline = pipeline
        self._queues: dict[int, deque[_Said]] = {}
        self._said = 0

    def say(self, position: int, text: str, voice: str | None,
            options: dict[str, Any]) -> defer.Deferred[Playback]:
        pipeline = self._pipeline
        playbacks = pipeline.playbacks
        playback = playbacks.new(position, pipeline.step_name(position), text,
                                 pipeline.info.rate, pending=True)
        done: defer.Deferred[Playback] = defer.Deferred()
        playback._waiter = done
        if pipeline.closed:
            playbacks.finish(playback, "ended")
            return done
        item = _Said(playback)
        self._queues.setdefault(position, deque()).append(item)
        done.addBoth(self._settled, item)
        tts = pipeline.services.tts
        if tts is None:
            synthesis: defer.Deferred[Any] = defer.fail(
                RuntimeError("no text-to-speech engine in this context"))
        else:
            synthesis = defer.maybeDeferred(tts.synthesize, text, pipeline.info.rate, voice,
                                            **options)
        item.synthesis = synthesis
        synthesis.addCallbacks(self._ready, self._failed, callbackArgs=(item,),
                               errbackArgs=(item,))
        return done

    def _ready(self, samples: Any, item: _Said) -> None:
        item.samples = np.asarray(samples)
        self._release(item.playback.position)

    def _failed(self, failure: Failure, item: _Said) -> None:
        item.failure = failure
        self._release(item.playback.position)

    def _settled(self, result: Any, item: _Said) -> Any:
        """The say ended (played, cut short or failed): stop a synthesis nobody needs."""
        synthesis = item.synthesis
        if synthesis is not None and not synthesis.called:
            synthesis.cancel()
        return result

    def _release(self, position: int) -> None:
        """Play, in order, every text at the head of the step's queue that is ready."""
        queue = self._queues[position]
        pipeline = self._pipeline
        while queue:
            item = queue[0]
            playback = item.playback
            if playback._outcome is not None:  # cleared or the call ended meanwhile
                queue.popleft()
                continue
            if item.failure is not None:
                queue.popleft()
                done = playback._waiter
                playback._waiter = None
                pipeline.playbacks.finish(playback, "ended")
                if done is not None:
                    done.errback(item.failure)
                continue
            if item.samples is None:
                return
            queue.popleft()
            pipeline._push(playback, item.samples)
            if playback.samples == 0:  # nothing to say (empty text)
                pipeline.playbacks.finish(playback, "played")
                continue
            self._said += 1
            pipeline.notify(position, {"say": self._said})
