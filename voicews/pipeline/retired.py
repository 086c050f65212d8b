"""What a switched-out step's session acts on once its call has moved to another pipeline.

``Pipeline.switch`` (a call moved to another pipeline mid-call) takes the old steps off
the frame path and closes them.  Their sessions then point here instead of at the
running pipeline, so a step that plays, notifies or hangs up while it finishes closing
(a late Deferred, a final transcript) cannot reach the steps that replaced it, or the
caller: for it the call is ``closed``, as if it had ended.  It still reads the call as it
was (``info`` with its old pipeline name), the clock, the frame counters and the HTTP
client, runs ordered work, and what it emits still reaches the application (never
another step), exactly as a step closing at the end of a call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from voicews.pipeline.events import Event
from voicews.pipeline.playback import Playback, Playbacks

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorTime

    from voicews.pipeline.info import CallInfo
    from voicews.pipeline.session import Call


class SwitchRefused(Exception):
    """The call cannot switch pipelines now (it is ending, or still closing a switch)."""


class SwitchFailed(Exception):
    """A step of the new pipeline raised while it was built; the call goes on unchanged."""


class Retired:
    """A session's call after a switch: read-only, and silent towards the caller."""

    closed = True

    def __init__(self, call: Call, info: CallInfo,
                 publish: Callable[[CallInfo, Event], None]) -> None:
        self._call = call
        self._publish = publish
        self.info = info
        self.clock: IReactorTime = call.clock

    @property
    def frames_in(self) -> int:
        return self._call.frames_in

    @property
    def frames_out(self) -> int:
        return self._call.frames_out

    def http(self) -> Any:
        return self._call.http()

    def transcriber(self) -> Any:
        return self._call.transcriber()

    def call_time(self) -> float:
        return self._call.call_time()

    def queued_seconds(self, position: int) -> float:
        return 0.0

    def play(self, position: int, samples: Any, replace: bool = False,
             label: str | None = None) -> Playback:
        return self._ended(position, label)

    def say(self, position: int, text: str, voice: str | None,
            options: dict[str, Any]) -> Deferred[Playback]:
        return defer.succeed(self._ended(position, text))

    def _ended(self, position: int, label: str | None) -> Playback:
        """What a closed call plays: nothing, ended at once."""
        book = Playbacks(lambda: 0.0, lambda playback, samples: None)
        playback = book.new(position, "retired", label, self.info.rate)
        book.finish(playback, "ended")
        return playback

    def playing(self) -> list[Playback]:
        return []

    def notify(self, position: int, payload: Any) -> None:
        return None

    def clear(self) -> list[Playback]:
        return []

    def hangup(self, code: int, reason: str, outcome: str) -> None:
        return None

    def emit(self, position: int, source: str, kind: str, data: dict[str, Any]) -> None:
        """To the application only, as a step closing at the end of a call."""
        self._publish(self.info, Event(kind, data, source, self.call_time()))

    def run_in_thread(self, fn: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        return self._call.run_in_thread(fn, *args, **kwargs)
