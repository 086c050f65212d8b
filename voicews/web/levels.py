"""Live input and output levels of this worker's calls, for the console's meters.

``GET /events?levels=1`` adds a ``levels`` record per live call a few times a
second (``INTERVAL``) to that stream, and only to it: levels are not call events,
so they never reach the event bus, HTTP callbacks, other streams or a pipeline.

Nothing is computed per frame.  The pipeline keeps a reference to the latest caller
frame and the paced sender one to the latest frame it sent; while at least one
stream asks for levels, one timer reads them and measures each (RMS of one 20 ms
frame, in dBFS: a full-scale sine is -3).  A side that moved no frame since the
last reading has level ``null`` (a pipeline that sends nothing back, or a caller
who stopped sending).  With no stream asking, there is no timer at all.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from twisted.internet import task
from twisted.logger import Logger

from voicews.audio.samples import SAMPLE_DTYPE
from voicews.runtime.events import AppEvent

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from voicews.pipeline.pipeline import Pipeline
    from voicews.runtime.calls import CallRegistry

log = Logger(namespace="voicews.web.levels")

INTERVAL = 0.2
"""Seconds between two readings (5 a second): enough for a meter, a small cost per call."""
FLOOR_DB = -96.0
"""The level of digital silence (16-bit samples go no quieter)."""
FULL_SCALE = float(np.iinfo(SAMPLE_DTYPE).max + 1)

Listener = Callable[[AppEvent], None]


def level_db(frame: bytes) -> float | None:
    """RMS level of one L16 frame in dBFS (to 0.1 dB, at least FLOOR_DB); None for no frame."""
    return levels_db([frame])[0]


def levels_db(frames: list[bytes]) -> list[float | None]:
    """:func:`level_db` of each frame, all in one numpy pass (a reading of many calls)."""
    sizes = np.fromiter((len(frame) // 2 for frame in frames), np.int64, len(frames))
    present = sizes > 0
    if not present.any():
        return [None] * len(frames)
    samples = np.frombuffer(b"".join(frames), SAMPLE_DTYPE).astype(np.float64)
    ends = np.cumsum(sizes)
    power = np.add.reduceat(samples * samples, (ends - sizes)[present]) / sizes[present]
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(power) - 20.0 * math.log10(FULL_SCALE)
    measured = iter(np.round(np.maximum(db, FLOOR_DB), 1).tolist())
    return [next(measured) if here else None for here in present.tolist()]


class LevelSampler:
    """Reads every live call's levels while someone listens; one timer for all of them."""

    def __init__(self, calls: CallRegistry, clock: IReactorTime,
                 interval: float = INTERVAL) -> None:
        self.calls = calls
        self.clock = clock
        self.interval = interval
        self._listeners: list[Listener] = []
        self._loop: task.LoopingCall | None = None
        self._last: dict[int, _Seen] = {}  # id(pipeline) -> what the last reading saw

    @property
    def running(self) -> bool:
        return self._loop is not None

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Give `listener` a ``levels`` record per call each reading; returns the way out."""
        self._listeners.append(listener)
        if self._loop is None:
            self._loop = task.LoopingCall(self.sample)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=False)

        def unlisten() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
            if not self._listeners and self._loop is not None:
                if self._loop.running:
                    self._loop.stop()
                self._loop = None
                self._last = {}

        return unlisten

    def sample(self) -> None:
        """One reading: a record per live call to every listener."""
        last, self._last = self._last, {}
        live: list[tuple[Pipeline, _Seen]] = []
        frames: list[bytes] = []
        for record in self.calls:
            pipeline = record.pipeline
            if pipeline is None or pipeline.closed:
                continue
            before = last.get(id(pipeline))
            seen = _Seen(pipeline, before)
            self._last[id(pipeline)] = seen
            live.append((pipeline, seen))
            moved_in = before is None or seen.frames_in != before.frames_in
            moved_out = before is None or seen.frames_out != before.frames_out
            frames.append(pipeline.last_frame_in if moved_in else b"")
            frames.append(pipeline.sender.last_frame if moved_out else b"")
        levels = levels_db(frames)
        for index, (pipeline, seen) in enumerate(live):
            event = seen.event(pipeline, levels[2 * index], levels[2 * index + 1])
            for listener in list(self._listeners):
                try:
                    listener(event)
                except Exception:
                    log.failure("a levels listener raised")
                    self._listeners.remove(listener)


class _Seen:
    """One call at one reading: its frame counts, and the JSON start of its records (made
    again only when the call's description changes, e.g. a pipeline switch)."""

    __slots__ = ("frames_in", "frames_out", "info", "head")
    head: str

    def __init__(self, pipeline: Pipeline, before: _Seen | None) -> None:
        self.frames_in = pipeline.frames_in
        self.frames_out = pipeline.sender.frames_sent
        info = self.info = pipeline.info
        if before is not None and before.info is info:
            self.head = before.head
        else:
            self.head = (f'{{"uuid":{json.dumps(info.uuid)},"conversation_uuid":'
                         f'{json.dumps(info.conversation_uuid)},"pipeline":'
                         f'{json.dumps(info.pipeline)},"kind":"levels",')

    def event(self, pipeline: Pipeline, level_in: float | None,
              level_out: float | None) -> AppEvent:
        info, time = self.info, round(pipeline.call_time(), 3)
        data = {"in": level_in, "out": level_out, "frames_in": self.frames_in,
                "frames_out": self.frames_out}
        record: dict[str, Any] = {
            "uuid": info.uuid, "conversation_uuid": info.conversation_uuid,
            "pipeline": info.pipeline, "kind": "levels", "time": time, "source": "console",
            "data": data,
        }
        text = (f'{self.head}"time":{time!r},"source":"console","data":{{"in":{_number(level_in)},'
                f'"out":{_number(level_out)},"frames_in":{self.frames_in},'
                f'"frames_out":{self.frames_out}}}}}')
        return AppEvent(record, text)


def _number(value: float | None) -> str:
    return "null" if value is None else repr(value)
