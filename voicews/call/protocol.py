"""The Vonage audio socket: one CallProtocol per call.  This is where a frame enters.

It speaks the wire protocol (first JSON message, 20 ms binary frames, text
events): the first message picks the call's pipeline, every frame and event then
goes to that :class:`~voicews.pipeline.pipeline.Pipeline`, which answers through
this protocol (the pipeline's ``CallLink``).  It never knows which processors
run.  Every way a call can go wrong ends here in one close frame with a
meaningful code and one log line; the call's record leaves the registry only
once its steps have finished closing.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.util import encode_truncate
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger, LogLevel

from voicews.call.fastpath import FastPathProtocol, merge_poll
from voicews.call.readloop import CallReader
from voicews.pipeline.events import Event
from voicews.pipeline.info import CallInfo
from voicews.pipeline.pipeline import Pipeline
from voicews.runtime import metrics
from voicews.runtime.calls import CallRecord
from voicews.runtime.state import Runtime
from voicews.vonage.messages import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_DATA,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    KNOWN_EVENTS,
    ProtocolError,
    parse_event,
    parse_first_message,
)

log = Logger(namespace="voicews.call")

UNKNOWN_EVENTS_LOGGED = 3
"""Unknown events logged per call; the rest are ignored silently (a flood must not fill logs)."""
ANSWERS = frozenset({"notify", "cleared"})
"""Events with which Vonage answers our commands: they do not count against the text limit."""
MAX_AWAITED = 10_000
SHOWN_CHARS = 200
"""Client data in a log line is cut to this many characters."""


def _shown(value: object) -> str:
    """A client's value for a log line: its repr, cut so a flood cannot fill the log."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} chars)"


class CallProtocol(FastPathProtocol):
    """One Vonage call's socket."""

    factory: CallFactory
    pipeline: Pipeline | None = None
    record: CallRecord | None = None
    outcome: str = "hangup"
    _first_timer: IDelayedCall | None = None
    _peer = "?"
    _ended = False
    _close_reason = ""
    _read_fd: int | None = None
    _backed_up = False  # Twisted paused us: the peer is not taking our output
    _unsent = 0  # bytes written since then
    _text_tokens = 0.0
    _text_checked = 0.0
    _unknown_logged = 0
    _awaited = 0  # Vonage's answers owed to our own clear/notify commands

    def onConnect(self, request):  # noqa: N802 - autobahn's name
        self._peer = request.peer
        return None

    def onOpen(self):  # noqa: N802
        factory = self.factory
        if self.fast_open(factory.fast_path):
            self._read_fd = factory.reader.adopt(self, self.transport)
        runtime = factory.runtime
        # Learn when our output backs up (the peer does not read): the HTTP channel that
        # handed the connection over was the transport's producer until now.
        transport = self.transport
        transport.unregisterProducer()
        transport.registerProducer(self, True)
        limits = runtime.settings.raw.limits
        self._text_tokens = float(limits.text_burst)
        self._text_checked = runtime.clock.seconds()
        self.record = CallRecord(
            peer=self._peer, opened=runtime.clock.seconds(), end=self.end,
            abort=lambda: self.dropConnection(abort=True), worker=runtime.worker,
        )
        runtime.calls.add(self.record)
        metrics.ACTIVE_CALLS.inc()
        timeout = limits.first_message_timeout
        self._first_timer = runtime.clock.callLater(timeout, self._no_first_message, timeout)

    def _no_first_message(self, timeout: float) -> None:
        self._first_timer = None
        self.end(CLOSE_POLICY, f"no first message within {timeout:g} s", "rejected")

    def onMessage(self, payload: bytes, isBinary: bool):  # noqa: N802, N803
        if self._ended:
            return
        pipeline = self.pipeline
        if pipeline is not None and isBinary:
            if len(payload) != self._frame_bytes:
                self.end(
                    CLOSE_INVALID_DATA,
                    f"frame of {len(payload)} bytes, expected {self._frame_bytes}",
                    "bad_frame",
                )
            elif (pipeline.frames_in + 1) % metrics.PROCESSING_SAMPLE:
                pipeline.receive_frame(payload)
            else:  # time one frame in PROCESSING_SAMPLE: no per-frame metric cost
                started = perf_counter()
                pipeline.receive_frame(payload)
                metrics.PROCESSING.observe(perf_counter() - started)
                if not self._ended:  # the frames in between skip this method
                    self.deliver_directly(pipeline.receive_frame, metrics.PROCESSING_SAMPLE - 1)
            return
        try:
            if pipeline is None:
                self._start(payload, isBinary)
            elif isBinary is False:
                self._event(pipeline, payload)
        except ProtocolError as exc:
            self.end(exc.code, exc.reason, "rejected" if pipeline is None else "bad_message")

    def _start(self, payload: bytes, is_binary: bool) -> None:
        if self._first_timer is not None and self._first_timer.active():
            self._first_timer.cancel()
        self._first_timer = None
        runtime = self.factory.runtime
        settings = runtime.settings
        if len(payload) > settings.raw.limits.first_message_bytes:
            raise ProtocolError(
                CLOSE_TOO_BIG,
                f"first message of {len(payload)} bytes, limit "
                f"{settings.raw.limits.first_message_bytes}",
            )
        first = parse_first_message(payload, is_binary)
        name = first.headers.get(settings.raw.pipeline_header, settings.raw.default_pipeline)
        spec = settings.pipelines.get(name) if isinstance(name, str) else None
        if spec is None and name in settings.disabled:
            log.warn("pipeline {pipeline} is off, call from {peer} refused: {why}",
                     pipeline=name, peer=self._peer, why=settings.disabled[name])
            raise ProtocolError(CLOSE_POLICY, f"pipeline {name[:60]!r} is off on this server")
        if spec is None:
            known = ", ".join(sorted(settings.pipelines))
            log.warn(
                "unknown pipeline {pipeline!r} from {peer}; known pipelines: {known}",
                pipeline=name, peer=self._peer, known=known,
            )
            raise ProtocolError(CLOSE_POLICY, f"unknown pipeline {str(name)[:60]!r}")
        info = CallInfo(
            rate=first.rate, content_type=first.content_type, pipeline=spec.name,
            headers=first.headers,
        )
        self.fast_frames(info.frame_bytes)
        try:
            pipeline = Pipeline(spec, info, runtime.call_services, self)
        except Exception:  # logged by the pipeline, with the step's name and traceback
            self.end(CLOSE_INTERNAL_ERROR, f"processor error in pipeline {info.pipeline}", "error")
            return
        self.pipeline = pipeline
        assert self.record is not None
        self.record.pipeline = pipeline
        log.info(
            "call started uuid={uuid} pipeline={pipeline} rate={rate} peer={peer}",
            uuid=info.uuid, pipeline=info.pipeline, rate=info.rate, peer=self._peer,
            conversation_uuid=info.conversation_uuid, event="call_started",
        )
        pipeline.start()

    def _event(self, pipeline: Pipeline, payload: bytes) -> None:
        kind, data = parse_event(payload)
        if kind in ANSWERS and self._awaited:
            self._awaited -= 1  # Vonage answering a command of ours: not the caller's doing
        elif not self._text_allowed():
            raise ProtocolError(CLOSE_POLICY, "too many text messages")
        uuid = pipeline.info.uuid
        if kind not in KNOWN_EVENTS:
            self._unknown_logged += 1
            if self._unknown_logged <= UNKNOWN_EVENTS_LOGGED:
                more = " (further unknown events of this call are not logged)" if (
                    self._unknown_logged == UNKNOWN_EVENTS_LOGGED) else ""
                log.info("ignored unknown event {kind!r} uuid={uuid}{more}", kind=kind[:40],
                         uuid=uuid, more=more)
            return
        # A key press is the caller's; notify and cleared answer our own commands (a bot
        # marking every chunk makes 50 a second), so they are debug lines.
        log.emit(
            LogLevel.info if kind == "dtmf" else LogLevel.debug,
            "event {kind} uuid={uuid} digit={digit} payload={payload}",
            kind=kind, uuid=uuid, digit=Event(kind, data).digit,
            payload=_shown(data.get("payload")),
        )
        pipeline.receive_event(kind, data)

    def _text_allowed(self) -> bool:
        """A token bucket: ``text_burst`` messages at once, ``text_per_second`` sustained."""
        limits = self.factory.runtime.settings.raw.limits
        now = self.factory.runtime.clock.seconds()
        self._text_tokens = min(
            float(limits.text_burst),
            self._text_tokens + (now - self._text_checked) * limits.text_per_second,
        )
        self._text_checked = now
        if self._text_tokens < 1:
            return False
        self._text_tokens -= 1
        return True

    # -- a peer that does not read ------------------------------------------------------

    def pauseProducing(self) -> None:  # noqa: N802 - IPushProducer: Twisted's buffer is full
        self._backed_up = True

    def resumeProducing(self) -> None:  # noqa: N802 - the peer took it all
        self._backed_up = False
        self._unsent = 0

    def stopProducing(self) -> None:  # noqa: N802
        pass

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:  # noqa: N802
        """autobahn's every write (frames, pongs, close): bounded while the peer does not read."""
        if self._backed_up and self._too_much_unsent(len(data)):
            return
        super().sendData(data, sync, chopsize)

    def write_rest(self, data: bytes) -> None:
        if self._backed_up and self._too_much_unsent(len(data)):
            return
        super().write_rest(data)

    def _too_much_unsent(self, size: int) -> bool:
        self._unsent += size
        limit = self.factory.runtime.settings.raw.limits.max_unsent_bytes
        if self._unsent <= limit:
            return False
        if self.outcome != "unread":  # once: everything after this is dropped unsaid
            info = self.pipeline.info if self.pipeline is not None else None
            log.warn(
                "dropping call uuid={uuid} peer={peer}: more than {limit} bytes of output wait "
                "for a peer that does not read", uuid=info.uuid if info else None,
                peer=self._peer, limit=limit, outcome="unread",
            )
            metrics.rejected("unread_output")
            self._finish("unread", "peer does not read")
            self.dropConnection(abort=True)  # a close frame would only wait behind the rest
        return True

    # -- the pipeline's CallLink ----------------------------------------------------------

    def send_text(self, message: str) -> None:
        # Every command we send (clear, notify) is answered by one event (cleared, notify).
        self._awaited = min(self._awaited + 1, MAX_AWAITED)
        self.sendMessage(message.encode("utf-8"), isBinary=False)

    def hangup(self, code: int, reason: str, outcome: str) -> None:
        self.end(code, reason, outcome)

    # -- the end ------------------------------------------------------------------------

    def end(self, code: int, reason: str, outcome: str) -> None:
        """Close the call with `code` (even codes autobahn keeps for itself) and log why."""
        if self._ended:
            return
        # A processor error was logged with its traceback already: one line per failure.
        if outcome not in ("drained", "error") and code != CLOSE_NORMAL:
            info = self.pipeline.info if self.pipeline else None
            log.warn(
                "closing call uuid={uuid} peer={peer} code={code}: {reason}",
                uuid=info.uuid if info else None, peer=self._peer, code=code, reason=reason,
                outcome=outcome,
            )
        self._finish(outcome, reason)
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=encode_truncate(reason, 123))

    def _finish(self, outcome: str, reason: str) -> None:
        """We end the call: no frame is taken from now on, and its steps stop."""
        self.outcome = outcome
        self._close_reason = reason
        self._ended = True
        self.deliver_directly(None, 0)  # frames from now on meet _ended
        if self.record is not None:
            self.record.ending = True
        if self.pipeline is not None:
            self.pipeline.close(outcome)  # steps stop now; the call ends when they are done

    def dropConnection(self, abort: bool = False) -> None:  # noqa: N802 - autobahn's name
        self._stop_reading()  # Twisted reads nothing more from a connection it is closing
        super().dropConnection(abort)

    def connectionLost(self, reason):  # noqa: N802 - Twisted's name
        self._stop_reading()
        super().connectionLost(reason)

    def _stop_reading(self) -> None:
        if self._read_fd is not None:
            self.factory.reader.release(self._read_fd, self)
            self._read_fd = None

    def onClose(self, wasClean, code, reason):  # noqa: N802, N803
        if self._first_timer is not None and self._first_timer.active():
            self._first_timer.cancel()
        self._first_timer = None
        record = self.record
        if record is None:
            return  # never opened: the handshake failed
        self.record = None
        failed, why = self.failed_by_autobahn
        if failed and not self._ended:
            # autobahn failed the connection itself for a protocol error (an oversized or
            # unmasked frame, bad UTF-8) and logged why: the caller's fault, not a hang-up.
            self.outcome = "bad_message" if self.pipeline is not None else "rejected"
            self._close_reason = why
        self._ended = True
        self.deliver_directly(None, 0)  # frames from now on meet _ended
        pipeline = self.pipeline
        if pipeline is None:
            self._forget(record, "")
            return
        closing = pipeline.close(self.outcome)
        closing.addBoth(lambda _: self._ended_call(record, pipeline, code, reason))

    def _forget(self, record: CallRecord, pipeline: str) -> None:
        runtime = self.factory.runtime
        runtime.calls.remove(record)
        metrics.ACTIVE_CALLS.dec()
        metrics.CALLS.labels(pipeline=pipeline, outcome=self.outcome).inc()

    def _ended_call(self, record: CallRecord, pipeline: Pipeline, code, reason) -> None:
        info = pipeline.info
        duration = self.factory.runtime.clock.seconds() - record.opened
        frames_out = pipeline.sender.frames_sent
        metrics.FRAMES_IN.call_ended(pipeline.frames_in)
        metrics.FRAMES_OUT.call_ended(frames_out)
        metrics.FRAMES_DROPPED.inc(pipeline.sender.frames_dropped)
        self._forget(record, info.pipeline)
        log.info(
            "call ended uuid={uuid} pipeline={pipeline} outcome={outcome} "
            "duration={duration:.2f}s frames_in={frames_in} frames_out={frames_out} "
            "code={code}",
            uuid=info.uuid, pipeline=info.pipeline, outcome=self.outcome, duration=duration,
            frames_in=pipeline.frames_in, frames_out=frames_out,
            frames_dropped=pipeline.sender.frames_dropped, code=code, event="call_ended",
            reason=self._close_reason or reason or "",
        )


class CallFactory(WebSocketServerFactory):
    """Builds CallProtocols that share the daemon's Runtime."""

    protocol: Any = CallProtocol

    def __init__(
        self, runtime: Runtime, fast_path: bool = True, url: str = "ws://localhost/socket"
    ) -> None:
        super().__init__(url)
        self.runtime = runtime
        self.fast_path = fast_path
        self.reader = CallReader(  # with the fast path, our epoll set is the reactor's wait
            runtime.clock, merge_poll if fast_path else None)  # type: ignore[arg-type]
        limits = runtime.settings.raw.limits
        self.setProtocolOptions(
            maxMessagePayloadSize=limits.max_message_bytes,
            maxFramePayloadSize=limits.max_message_bytes,
            failByDrop=False,
            openHandshakeTimeout=limits.handshake_timeout,
            closeHandshakeTimeout=2,
            applyMask=True,
        )
