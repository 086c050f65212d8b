"""The paced sender: the only way audio and commands go back to Vonage.

Vonage plays what we send at 20 ms a frame and buffers about a minute ahead.
We keep our own model of that playout clock: output may run ahead of real time
by at most ``max_lead`` seconds (so a burst from a processor is smoothed, and a
``clear`` has little to throw away); beyond that it waits in a bounded queue
and is released by one timer.  Commands (``notify``) wait in the same queue so
they reach Vonage after the audio queued before them.

At the bound (``max_queue`` frames waiting), new frames are dropped and
counted: a processor producing faster than real time cannot grow memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from voicews.audio.samples import FRAME_SECONDS


class PacedSender:
    """Sends whole frames and text commands in order, at most `max_lead` s ahead of real time."""

    def __init__(
        self,
        clock: IReactorTime,
        send_audio: Callable[[bytes], None],
        send_text: Callable[[str], None],
        max_lead: float,
        max_queue: int,
    ) -> None:
        self._clock = clock
        self._send_audio = send_audio
        self._send_text = send_text
        self._max_lead = max_lead
        self._max_queue = max_queue
        self._queue: deque[bytes | str] = deque()
        self._queued_frames = 0
        self._play_end = 0.0
        self._timer: IDelayedCall | None = None
        self.frames_sent = 0
        self.frames_dropped = 0
        self.last_frame = b""
        """The latest frame sent (read by the console's level sampler, a few times a second)."""

    @property
    def queued_frames(self) -> int:
        return self._queued_frames

    def lead(self) -> float:
        """Seconds of audio sent that Vonage has not played yet (our model of it)."""
        return max(0.0, self._play_end - self._clock.seconds())

    def audio(self, frame: bytes) -> None:
        """Send one exact frame now, or queue it if we are far enough ahead."""
        if not self._queue:
            now = self._clock.seconds()
            if self._play_end - now < self._max_lead:
                self._emit(frame, now)
                return
        if self._queued_frames >= self._max_queue:
            self.frames_dropped += 1
            return
        self._queue.append(frame)
        self._queued_frames += 1
        self._pump()

    def text(self, message: str) -> None:
        """Send a command after all audio queued before it."""
        self._queue.append(message)
        self._pump()

    def clear(self) -> None:
        """Forget queued audio and the playout model; Vonage drops its buffer on `clear`."""
        self._queue = deque(item for item in self._queue if isinstance(item, str))
        self._queued_frames = 0
        self._play_end = self._clock.seconds()
        self._pump()

    def stop(self) -> None:
        """The call is over: drop everything and cancel the timer."""
        self._queue.clear()
        self._queued_frames = 0
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _emit(self, frame: bytes, now: float) -> None:
        self._play_end = (self._play_end if self._play_end > now else now) + FRAME_SECONDS
        self.frames_sent += 1
        self.last_frame = frame
        self._send_audio(frame)

    def _pump(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        queue = self._queue
        while queue:
            item = queue[0]
            if isinstance(item, str):
                queue.popleft()
                self._send_text(item)
                continue
            wait = self._play_end - self._clock.seconds() - self._max_lead
            if wait >= 0:
                self._timer = self._clock.callLater(wait + FRAME_SECONDS / 2, self._pump)
                return
            queue.popleft()
            self._queued_frames -= 1
            self._emit(item, self._clock.seconds())
