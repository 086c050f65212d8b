"""The Vonage audio socket: one CallProtocol per call.

It speaks the wire protocol (first JSON message, 20 ms binary frames, text
events) and hands everything to the call's Session; it never knows which
processors run.  Every way a call can go wrong ends here in one close frame
with a meaningful code and one log line.
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.util import encode_truncate
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from voicews import metrics
from voicews.messages import (
    CLOSE_GOING_AWAY,
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
from voicews.runtime import Runtime
from voicews.sender import PacedSender
from voicews.session import CallInfo, Session

log = Logger(namespace="voicews.call")


class CallProtocol(WebSocketServerProtocol):
    """One Vonage call's socket."""

    factory: CallFactory
    session: Session | None = None
    outcome: str = "hangup"
    _first_timer = None
    _frame_bytes = 0
    _opened_at = 0.0
    _peer = "?"
    _ended = False
    _close_reason = ""

    def onConnect(self, request):  # noqa: N802 - autobahn's name
        self._peer = request.peer
        return None

    def onOpen(self):  # noqa: N802
        runtime = self.factory.runtime
        self._opened_at = runtime.clock.seconds()
        runtime.calls.live.add(self)
        metrics.ACTIVE_CALLS.inc()
        timeout = runtime.settings.raw.limits.first_message_timeout
        self._first_timer = runtime.clock.callLater(timeout, self._no_first_message, timeout)

    def _no_first_message(self, timeout: float) -> None:
        self._first_timer = None
        self.end(CLOSE_POLICY, f"no first message within {timeout:g} s", "rejected")

    def onMessage(self, payload: bytes, isBinary: bool):  # noqa: N802, N803
        if self._ended:
            return
        session = self.session
        if session is not None and isBinary:
            if len(payload) != self._frame_bytes:
                self.end(
                    CLOSE_INVALID_DATA,
                    f"frame of {len(payload)} bytes, expected {self._frame_bytes}",
                    "bad_frame",
                )
                return
            try:
                session.receive_frame(payload)
            except Exception:
                self._processor_failed("frame")
            return
        try:
            if session is None:
                self._start(payload, isBinary)
            elif isBinary is False:
                self._event(payload)
        except ProtocolError as exc:
            self.end(exc.code, exc.reason, "rejected" if session is None else "bad_message")

    def _start(self, payload: bytes, is_binary: bool) -> None:
        if self._first_timer is not None and self._first_timer.active():
            self._first_timer.cancel()
        self._first_timer = None
        settings = self.factory.runtime.settings
        if len(payload) > settings.raw.limits.first_message_bytes:
            raise ProtocolError(
                CLOSE_TOO_BIG,
                f"first message of {len(payload)} bytes, limit "
                f"{settings.raw.limits.first_message_bytes}",
            )
        first = parse_first_message(payload, is_binary)
        name = first.headers.get(settings.raw.pipeline_header, settings.raw.default_pipeline)
        spec = settings.pipelines.get(name) if isinstance(name, str) else None
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
        limits = settings.raw.limits
        sender = PacedSender(
            clock=self.factory.runtime.clock,
            send_audio=self._send_audio,
            send_text=self._send_text,
            max_lead=limits.max_lead_seconds,
            max_queue=max(1, int(limits.max_buffer_seconds * 50)),
        )
        self._frame_bytes = info.frame_bytes
        try:
            self.session = Session(info, spec, sender)
        except Exception:
            self._processor_failed("start", info)
            return
        log.info(
            "call started uuid={uuid} pipeline={pipeline} rate={rate} peer={peer}",
            uuid=info.uuid, pipeline=info.pipeline, rate=info.rate, peer=self._peer,
            conversation_uuid=info.conversation_uuid, event="call_started",
        )

    def _event(self, payload: bytes) -> None:
        event = parse_event(payload)
        session = self.session
        assert session is not None
        if event.kind not in KNOWN_EVENTS:
            log.info(
                "ignored unknown event {kind!r} uuid={uuid}", kind=event.kind,
                uuid=session.info.uuid,
            )
            return
        log.info(
            "event {kind} uuid={uuid} digit={digit} payload={payload!r}",
            kind=event.kind, uuid=session.info.uuid, digit=event.digit, payload=event.payload,
        )
        try:
            session.receive_event(event)
        except Exception:
            self._processor_failed(f"{event.kind} event")

    def _processor_failed(self, during: str, info: CallInfo | None = None) -> None:
        info = info or (self.session.info if self.session else None)
        uuid = info.uuid if info else None
        pipeline = info.pipeline if info else None
        log.failure(
            "processor raised during {during} in pipeline {pipeline} uuid={uuid}",
            failure=Failure(), during=during, pipeline=pipeline, uuid=uuid,
            level=LogLevel.error,  # one call failed, not the daemon
        )
        self.end(CLOSE_INTERNAL_ERROR, f"processor error in pipeline {pipeline}", "error")

    def _send_audio(self, frame: bytes) -> None:
        self.sendMessage(frame, isBinary=True)
        metrics.FRAMES_OUT.inc()

    def _send_text(self, message: str) -> None:
        self.sendMessage(message.encode("utf-8"), isBinary=False)

    def end(self, code: int, reason: str, outcome: str) -> None:
        """Close the call with `code` (even codes autobahn keeps for itself) and log why."""
        # A processor error was logged with its traceback already: one line per failure.
        if outcome not in ("drained", "error") and code != CLOSE_NORMAL:
            info = self.session.info if self.session else None
            log.warn(
                "closing call uuid={uuid} peer={peer} code={code}: {reason}",
                uuid=info.uuid if info else None, peer=self._peer, code=code, reason=reason,
                outcome=outcome,
            )
        self.outcome = outcome
        self._close_reason = reason
        self._ended = True
        self._finish_session()
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=encode_truncate(reason, 123))

    def drain(self) -> None:
        """The daemon is stopping: say goodbye (1001)."""
        self.end(CLOSE_GOING_AWAY, "server shutting down", "drained")

    def _finish_session(self) -> None:
        session = self.session
        if session is None or session.closed:
            return
        for exc in session.close():
            log.error(
                "processor close() raised {error!r} uuid={uuid}", error=exc, uuid=session.info.uuid
            )

    def onClose(self, wasClean, code, reason):  # noqa: N802, N803
        runtime = self.factory.runtime
        if self._first_timer is not None and self._first_timer.active():
            self._first_timer.cancel()
        self._first_timer = None
        if self not in runtime.calls.live:
            return  # never opened: the handshake failed
        runtime.calls.live.discard(self)
        metrics.ACTIVE_CALLS.dec()
        self._finish_session()
        session = self.session
        if session is None:
            metrics.CALLS.labels(pipeline="", outcome=self.outcome).inc()
            return
        info = session.info
        duration = runtime.clock.seconds() - self._opened_at
        metrics.CALLS.labels(pipeline=info.pipeline, outcome=self.outcome).inc()
        metrics.FRAMES_IN.call_ended(session.frames_in)
        metrics.FRAMES_DROPPED.inc(session.sender.frames_dropped)
        log.info(
            "call ended uuid={uuid} pipeline={pipeline} outcome={outcome} "
            "duration={duration:.2f}s frames_in={frames_in} frames_out={frames_out} "
            "code={code}",
            uuid=info.uuid, pipeline=info.pipeline, outcome=self.outcome, duration=duration,
            frames_in=session.frames_in, frames_out=session.frames_out,
            frames_dropped=session.sender.frames_dropped, code=code, event="call_ended",
            reason=self._close_reason or reason or "",
        )


class CallFactory(WebSocketServerFactory):
    """Builds CallProtocols that share the daemon's Runtime."""

    protocol = CallProtocol

    def __init__(self, runtime: Runtime, url: str = "ws://localhost/socket") -> None:
        super().__init__(url)
        self.runtime = runtime
        limits = runtime.settings.raw.limits
        self.setProtocolOptions(
            maxMessagePayloadSize=limits.max_message_bytes,
            maxFramePayloadSize=limits.max_message_bytes,
            failByDrop=False,
            openHandshakeTimeout=limits.handshake_timeout,
            closeHandshakeTimeout=2,
            applyMask=True,
        )

