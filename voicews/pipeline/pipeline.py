"""One call's running pipeline: its steps, the mix bus, events, and the way back to the caller.

The call socket hands it every inbound frame (:meth:`Pipeline.receive_frame`)
and every Vonage event (:meth:`Pipeline.receive_event`), and closes it when the
call ends (:meth:`Pipeline.close`, a Deferred).  In between, data flows one way:
steps → the bus → the framer (exact 20 ms frames) → the paced sender → the link.

A frame with nothing played costs one loop over the steps: the bus is looked at
only while some lane holds audio, and the book of playbacks (what is playing, how
much the caller heard: voicews.pipeline.playback) only when audio is played, a
notify goes out or comes back, or a barge-in asks.  Starting and closing steps, events
between them and a step's failure (which ends this call alone, 1011) are the base
class's: voicews.pipeline.stephost.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from voicews.audio.samples import FRAME_SECONDS, SAMPLE_DTYPE
from voicews.pipeline.bus import Lane, as_samples
from voicews.pipeline.events import APP, CALL, VONAGE, Event
from voicews.pipeline.framer import Framer
from voicews.pipeline.playback import Mark, Playback, Playbacks
from voicews.pipeline.processor import Processor
from voicews.pipeline.retired import Retired, SwitchFailed, SwitchRefused
from voicews.pipeline.sender import PacedSender
from voicews.pipeline.session import Session
from voicews.pipeline.speech import Speech
from voicews.pipeline.stephost import StepHost, step_that_raised

if TYPE_CHECKING:
    from voicews.pipeline.info import CallInfo
    from voicews.pipeline.services import CallLink, CallServices
    from voicews.pipeline.steps import PipelineSpec

log = Logger(namespace="voicews.pipeline")

__all__ = ["Pipeline", "SwitchFailed", "SwitchRefused"]


class Pipeline(StepHost):
    """The processors of one call, run in order on every inbound frame."""

    def __init__(
        self, spec: PipelineSpec, info: CallInfo, services: CallServices, link: CallLink
    ) -> None:
        super().__init__()
        self.spec = spec
        self.info = info
        self.services = services
        self.clock = services.clock
        self.link = link
        self.sender = PacedSender(
            clock=services.clock, send_audio=link.send_audio, send_text=link.send_text,
            max_lead=services.max_lead_seconds,
            max_queue=max(1, int(services.max_buffer_seconds / FRAME_SECONDS)),
        )
        self.framer = Framer(info.frame_samples)
        self.started_at = services.clock.seconds()
        self.frames_in = 0
        self.last_frame_in = b""
        """The latest caller frame as received (the console's level sampler reads it a few
        times a second: keeping it is one reference per frame, nothing computed)."""
        self.closed = False
        self.failed = False
        self.outcome: str | None = None
        self._lanes: list[Lane | None] = [None] * (len(spec.steps) + 1)
        self._active = 0  # lanes holding audio: 0 keeps the frame path a plain loop
        self._due: list[Mark | _Clear] = []  # to send after the frame in progress
        self.playbacks = Playbacks(self._ear, self._push)
        self.speech = Speech(self)
        self._processing = False
        self._work = defer.DeferredLock()
        self._closing: defer.Deferred[None] | None = None
        self._started = False
        self._retiring: defer.Deferred[None] | None = None  # old steps of a switch, closing
        self.session = Session(self, 0, APP)
        """The call's own session: the head of the bus; hooks and the app use it."""
        self.processors: list[Processor] = []
        try:
            for position, step in enumerate(spec.steps, start=1):
                session = Session(self, position, step.name)
                self.processors.append(step.processor(session, step.params))
        except Exception:
            failure = Failure()
            self._log_step_error(f"step {step.name}", "start", failure)
            self.close("error")  # e.g. a recording already opened: finish it
            failure.raiseException()

    # -- life -------------------------------------------------------------------------

    def start(self) -> None:
        """Start every step (``start()`` may return a Deferred), then the call_started hook."""
        self._started = True
        if not self._start_steps():
            return
        try:
            self.services.call_started(self.session)
        except Exception:
            self._step_failed(None, "the call_started hook")
            return
        self._emit(Event("call_started", {}, CALL, 0.0), skip=-1)

    def close(self, outcome: str) -> defer.Deferred[None]:
        """End the call's processing: close every step, wait (bounded) for their Deferreds.

        Fires once every step's ``close()`` (and those of steps a switch took out
        that are still closing) has finished or ``close_timeout`` has passed (a step
        still busy is logged by name and abandoned), after the ``call_ended`` hook
        ran.  Idempotent: later calls get the same Deferred.
        """
        if self._closing is not None:
            return self._closing
        self.closed = True
        self.outcome = outcome
        self.playbacks.end_all("ended")  # while the playout model still says what was heard
        self.sender.stop()
        waits = [self._close_steps(self.processors, self.info.pipeline)]
        if self._retiring is not None:
            waits.append(self._retiring)
        self._closing = defer.gatherResults(waits).addCallback(self._ended, outcome)
        return self._closing

    def _ended(self, _: Any, outcome: str) -> None:
        if not self._started:
            return
        try:
            self.services.call_ended(self.session, outcome)
        except Exception:
            self._log_step_error("a plugin", "the call_ended hook", Failure())
        self._emit(Event("call_ended", {"outcome": outcome}, CALL, self.call_time()), skip=-1)

    def switch(self, spec: PipelineSpec) -> defer.Deferred[None]:
        """Run `spec`'s steps in place of the current ones, from the next frame on.

        Always between two frames (everything runs on the reactor): the new steps
        are built and started, the old ones leave the frame path (their sessions
        now see a closed call: :mod:`voicews.pipeline.retired`) and are closed,
        their close Deferreds honoured up to ``close_timeout``.  The paced sender,
        framer, frame counters, the call's own session and what it is playing stay,
        so the caller hears no gap and no repeated frame.  Audio the old steps had
        queued is dropped (their notify marks are still sent).  The steps and the
        app get ``pipeline_switched`` {from, to}.  Fires once the old steps have
        closed.  Raises SwitchRefused when the call is ending or an earlier
        switch's steps are still closing, SwitchFailed (logged; the call goes on
        unchanged) when a new step cannot be built.
        """
        if self.closed or self.failed:
            raise SwitchRefused("the call is ending")
        if self._retiring is not None:
            raise SwitchRefused("the previous pipeline's steps are still closing")
        if self._processing:
            raise SwitchRefused("a pipeline cannot switch from inside a frame")
        old_info, old_steps, old_lanes = self.info, self.processors, self._lanes
        old_sessions = [step.session for step in old_steps]
        for session in old_sessions:
            session._move(Retired(self, old_info, self.publish))
        self.info = replace(old_info, pipeline=spec.name)
        self._lanes = [old_lanes[0]] + [None] * len(spec.steps)
        self.processors, sessions = [], []
        try:
            for position, step in enumerate(spec.steps, start=1):
                sessions.append(Session(self, position, step.name))
                self.processors.append(step.processor(sessions[-1], step.params))
        except Exception:
            failure = Failure()
            self._log_step_error(f"step {step.name}", "start", failure)
            for session in sessions:
                session._move(Retired(self, self.info, self.publish))
            self._close_steps(self.processors, spec.name)
            self.info, self.processors, self._lanes = old_info, old_steps, old_lanes
            for session in old_sessions:
                session._move(self)
            raise SwitchFailed(f"step {step.name} of pipeline {spec.name} failed to start: "
                               f"{failure.getErrorMessage()}") from None
        self.spec = spec
        self._active = 1 if old_lanes[0] else 0
        self.playbacks.end_steps("ended")  # the old steps' plays and says: ended for them
        for lane in old_lanes[1:]:
            released: list[Mark] = []
            if lane is not None:
                lane.clear(released)
            for mark in released:
                self._send_mark(mark)
        retiring = self._retiring = self._close_steps(old_steps, old_info.pipeline)
        retiring.addCallback(lambda _: setattr(self, "_retiring", None))
        done: defer.Deferred[None] = defer.Deferred()
        retiring.addCallback(lambda _: done.callback(None))
        log.info("call switched pipeline {previous} -> {pipeline} uuid={uuid}",
                 previous=old_info.pipeline, pipeline=spec.name, uuid=self.info.uuid)
        if self._start_steps():
            self._emit(Event("pipeline_switched", {"from": old_info.pipeline, "to": spec.name},
                             CALL, self.call_time()), skip=-1)
        return done

    # -- frames -------------------------------------------------------------------------

    def receive_frame(self, payload: bytes) -> None:
        """Run one inbound frame (exactly one frame of bytes) through the steps."""
        self.frames_in += 1
        self.last_frame_in = payload
        inbound = np.frombuffer(payload, SAMPLE_DTYPE)
        self._processing = True
        try:
            if self._active:
                outbound = self._through_bus(inbound)
            else:
                outbound = None
                for processor in self.processors:
                    outbound = processor.process(inbound, outbound)
        except Exception:
            self._processing = False
            self._step_failed(step_that_raised(), "frame")
            return
        self._processing = False
        if outbound is not None:
            if outbound is inbound and not self.framer.pending:
                self.sender.audio(payload)  # untouched echo: no copy
            else:
                frame = self.framer.whole(outbound)
                if frame is not None:
                    self.sender.audio(frame)
                else:
                    for frame in self.framer.push(outbound):
                        self.sender.audio(frame)
        if self._due:
            due, self._due = self._due, []
            for item in due:
                if isinstance(item, _Clear):
                    self._send_clear(item.released)
                else:
                    self._send_notify(item)

    def _through_bus(self, inbound: np.ndarray) -> np.ndarray | None:
        lanes = self._lanes
        outbound = None
        lane = lanes[0]
        if lane:
            outbound = self._take(lane, None)
        for position, processor in enumerate(self.processors, start=1):
            outbound = processor.process(inbound, outbound)
            lane = lanes[position]
            if lane:
                outbound = self._take(lane, outbound)
        return outbound

    def _take(self, lane: Lane, outbound: np.ndarray | None) -> np.ndarray | None:
        outbound = lane.take(outbound, self._due, self._base)
        if not lane:
            self._active -= 1
        return outbound

    def _base(self) -> int:
        """Where the frame being made will sit in the stream of samples sent to the caller."""
        sender = self.sender
        return ((sender.frames_sent + sender.queued_frames) * self.info.frame_samples
                + self.framer.pending)

    # -- what sessions do ----------------------------------------------------------------

    def play(self, position: int, samples: Any, replace: bool = False,
             label: str | None = None) -> Playback:
        playback = self.playbacks.new(position, self.step_name(position), label,
                                      self.info.rate, replace)
        self._push(playback, samples)
        return playback

    def _push(self, playback: Playback, samples: Any) -> None:
        """Queue `samples` on the playback's lane (a closed call ends it instead)."""
        if self.closed:
            self.playbacks.finish(playback, "ended")
            return
        position = playback.position
        lane = self._lanes[position]
        if lane is None:
            limit = int(self.services.max_buffer_seconds * self.info.rate)
            lane = self._lanes[position] = Lane(self.info.frame_samples, limit)
        was_playing = bool(lane)
        dropped = lane.dropped
        lane.push(as_samples(samples), playback)
        self.playbacks.pushed(playback)
        if lane.dropped != dropped:
            frames = -(-(lane.dropped - dropped) // self.info.frame_samples)
            self.sender.frames_dropped += frames
        if lane and not was_playing:
            self._active += 1

    def notify(self, position: int, payload: Any) -> None:
        if self.closed:
            return
        mark = self.playbacks.mark(position, payload)
        lane = self._lanes[position]
        if lane:
            lane.mark(mark)
        elif self._processing:
            self._due.append(mark)  # after the frame this step is helping to make
        else:
            self._send_notify(mark)

    def _send_notify(self, mark: Mark) -> None:
        for frame in self.framer.flush():
            self.sender.audio(frame)
        self._send_mark(mark)

    def _send_mark(self, mark: Mark) -> None:
        text = json.dumps({"action": "notify", "payload": mark.payload})
        self.sender.text(text)
        self.playbacks.sent(mark, text)

    def clear(self) -> list[Playback]:
        """Barge-in: drop every lane's audio and our queue, and tell Vonage to drop its buffer.

        Returns the playbacks cut short (what the caller heard of each is frozen first).
        Asked while a frame is being made (a step reacting to another's event), the
        ``clear`` goes after that frame: it already holds played audio, and Vonage drops it.
        """
        if self.closed:
            return []
        cut = self.playbacks.end_all("interrupted")
        released: list[Mark] = []
        for lane in self._lanes:
            if lane is not None:
                lane.clear(released)
        self._active = 0
        if self._processing:
            self._due.append(_Clear(released))
        else:
            self._send_clear(released)
        return cut

    def _send_clear(self, released: list[Mark]) -> None:
        self.framer.reset()
        self.sender.clear()
        self.sender.text(json.dumps({"action": "clear"}))
        for mark in released:
            self._send_mark(mark)  # Vonage answers them at once

    def playing(self) -> list[Playback]:
        return self.playbacks.playing()

    def say(self, position: int, text: str, voice: str | None,
            options: dict[str, Any]) -> defer.Deferred[Playback]:
        return self.speech.say(position, text, voice, options)

    def _ear(self) -> float:
        """Samples of the output stream the caller has heard by now (the playout model)."""
        sender = self.sender
        return (sender.frames_sent - sender.lead() / FRAME_SECONDS) * self.info.frame_samples

    def step_name(self, position: int) -> str:
        return self.spec.steps[position - 1].name if position else APP

    def queued_seconds(self, position: int) -> float:
        """Audio this position played that has not left yet, plus what Vonage has not played."""
        lane = self._lanes[position]
        waiting = lane.queued if lane is not None else 0
        return (
            waiting / self.info.rate
            + self.sender.queued_frames * FRAME_SECONDS
            + self.sender.lead()
        )

    def run_in_thread(self, fn: Any, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        """Run off the reactor, one at a time for this call: results come back in call order."""
        return self._work.run(self.services.run_in_thread, fn, *args, **kwargs)

    def hangup(self, code: int, reason: str, outcome: str) -> None:
        if not self.closed:
            self.link.hangup(code, reason, outcome)

    @property
    def frames_out(self) -> int:
        return self.sender.frames_sent

    def http(self) -> Any:
        return self.services.http()

    def transcriber(self) -> Any:
        return self.services.transcriber

    # -- events ------------------------------------------------------------------------

    def receive_event(self, kind: str, data: dict[str, Any]) -> None:
        """One of Vonage's events (dtmf, notify, cleared): every step and the app see it."""
        if kind == "notify" and not self.closed:
            self.playbacks.answered(data.get("payload"))  # say's Deferreds fire first
        self._emit(Event(kind, data, VONAGE, self.call_time()), skip=-1)

class _Clear:
    """A clear asked during a frame, sent after it, with the notifies it released."""

    __slots__ = ("released",)

    def __init__(self, released: list[Mark]) -> None:
        self.released = released
