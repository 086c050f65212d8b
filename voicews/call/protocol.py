"""The Vonage audio socket: one CallProtocol per call.

It speaks the wire protocol (first JSON message, 20 ms binary frames, text
events) and hands everything to the call's Session; it never knows which
processors run.  Every way a call can go wrong ends here in one close frame
with a meaningful code and one log line.
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.util import encode_truncate
from twisted.internet import tcp
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from voicews.call.readloop import CallReader
from voicews.pipeline.sender import PacedSender
from voicews.pipeline.session import CallInfo, Session
from voicews.runtime import metrics
from voicews.runtime.state import Runtime
from voicews.vonage.messages import (
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

log = Logger(namespace="voicews.call")

_BINARY_FIN = 0x82  # FIN + opcode 2: a whole, unfragmented binary message
_MASKED_LEN16 = 0x80 | 126  # masked, 16-bit extended length: every L16 frame (320-960 bytes)
_STATE_OPEN = WebSocketServerProtocol.STATE_OPEN


def _frame_header(opcode_byte: int, length: int) -> bytes:
    """An unmasked server frame header for a payload of `length` bytes."""
    if length < 126:
        return bytes((opcode_byte, length))
    if length < 65536:
        return bytes((opcode_byte, 126)) + length.to_bytes(2, "big")
    return bytes((opcode_byte, 127)) + length.to_bytes(8, "big")


try:  # websockets (already ours for the simulator) ships this in C: ~10x numpy's speed per frame
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - a platform without its compiled wheel
    from websockets.utils import apply_mask as _apply_mask  # its pure-Python twin


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
    _fast = False
    _audio_header = b""
    _in_frame_wire = -1  # wire size of one masked audio frame, once the fast path may take it
    _in_frame_prefix = b""
    _socket = None
    _read_fd: int | None = None

    def onConnect(self, request):  # noqa: N802 - autobahn's name
        self._peer = request.peer
        return None

    def onOpen(self):  # noqa: N802
        # The fast path below handles only what autobahn would do with no extension, no
        # frame logging and default masking rules; anything else keeps autobahn's own path.
        self._fast = (
            self._perMessageCompress is None
            and not self.logOctets
            and not self.logFrames
            and not self.trackTimings
            and self.applyMask
            and not self.autoPingInterval  # else every frame must restart autobahn's ping timer
        )
        transport = self.transport
        if (
            self._fast and isinstance(transport, tcp.Connection) and not transport.TLS
            and hasattr(transport, "dataBuffer") and hasattr(transport, "_tempDataBuffer")
        ):
            # Direct sends need Twisted's write buffers to look as they do today; where a
            # future Twisted differs, _send_audio keeps to transport.write.
            self._socket = transport.socket
            self._read_fd = self.factory.reader.adopt(self, transport)
        runtime = self.factory.runtime
        self._opened_at = runtime.clock.seconds()
        runtime.calls.live.add(self)
        metrics.ACTIVE_CALLS.inc()
        timeout = runtime.settings.raw.limits.first_message_timeout
        self._first_timer = runtime.clock.callLater(timeout, self._no_first_message, timeout)

    def _no_first_message(self, timeout: float) -> None:
        self._first_timer = None
        self.end(CLOSE_POLICY, f"no first message within {timeout:g} s", "rejected")

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        """Deliver whole masked binary frames straight to onMessage; the rest to autobahn.

        A call is 50 small binary messages a second, each in one frame, and autobahn's
        general path (frame/message begin-data-end callbacks, a masker object, an
        observer Future and debug-log arguments per message) costs several times the
        work itself.  Here each complete, final, masked binary frame within the size
        limits is unmasked (websockets' C ``apply_mask``) and handed to ``onMessage``;
        the usual read, exactly one audio frame, is recognised by its length and
        4-byte prefix alone.  (autobahn's ``trafficStats`` octet counters are not kept
        for these frames; voicews' own frame counters are.)  Anything else (text,
        control frames, fragments, unmasked or oversized frames, a state other than
        open) is left in ``self.data`` for autobahn's ``consumeData``, so pings, the
        close handshake, fragmentation and every protocol error behave exactly as
        autobahn makes them behave.  tests/test_protocol_wire.py checks that.
        """
        if (
            len(data) == self._in_frame_wire
            and data.startswith(self._in_frame_prefix)
            and not self.data
            and self.state == _STATE_OPEN
            and self.current_frame is None
            and not self.inside_message
        ):
            # The usual read: exactly one whole masked audio frame (header 4, mask 4).
            self.onMessage(_apply_mask(data[8:], data[4:8]), True)
            return
        if not self._fast or self.state != _STATE_OPEN or self.current_frame is not None:
            self._dataReceived(data)
            return
        buf = self.data + data if self.data else data
        n = len(buf)
        pos = 0
        handoff = False
        limit = self.maxFramePayloadSize
        message_limit = self.maxMessagePayloadSize
        while n - pos >= 2:
            b1 = buf[pos + 1]
            if buf[pos] != _BINARY_FIN or b1 < 0x80 or self.inside_message:
                handoff = True
                break
            length = b1 & 0x7F
            if length < 126:
                start = pos + 6
            elif length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                if length < 126:
                    handoff = True  # not minimally encoded: autobahn fails the connection
                    break
                start = pos + 8
            else:
                handoff = True
                break
            if (0 < limit < length) or (0 < message_limit < length):
                handoff = True
                break
            end = start + length
            if end > n:
                break  # the rest of this frame is still on its way
            payload = _apply_mask(buf[start:end], buf[start - 4 : start]) if length else b""
            pos = end
            self.onMessage(payload, True)
            if self.state != _STATE_OPEN:
                handoff = True
                break
        self.data = buf[pos:] if pos < n else b""
        if handoff and self.data:
            self.consumeData()

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
        size = self._frame_bytes = info.frame_bytes
        self._audio_header = _frame_header(_BINARY_FIN, size)
        if self._fast and size <= min(self.maxFramePayloadSize or size,
                                      self.maxMessagePayloadSize or size):
            self._in_frame_wire = 8 + size
            self._in_frame_prefix = bytes((_BINARY_FIN, _MASKED_LEN16, size >> 8, size & 0xFF))
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
        # Every frame is exactly one L16 frame (the framer sees to it), so its header is
        # fixed per call: one write instead of autobahn's sendMessage/sendFrame/sendData.
        if not (self._fast and self.state == _STATE_OPEN and len(frame) == self._frame_bytes):
            self.sendMessage(frame, isBinary=True)
            return
        data = self._audio_header + frame
        transport = self.transport
        sock = self._socket
        # Twisted's write() buffers and registers the socket for writability, then sends on
        # the next reactor turn and unregisters it: two epoll_ctl calls and a wake-up per
        # frame.  When nothing is buffered, sending now is what that turn would do (asyncio
        # does the same); whatever the kernel does not take goes through write() as usual.
        if (
            sock is not None
            and not transport.dataBuffer
            and not transport._tempDataBuffer
            and transport.connected
            and not transport.disconnecting
        ):
            try:
                sent = sock.send(data)
            except OSError:
                sent = 0  # EAGAIN, or an error write() will meet and report as usual
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)

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
        runtime = self.factory.runtime
        if self._first_timer is not None and self._first_timer.active():
            self._first_timer.cancel()
        self._first_timer = None
        if self not in runtime.calls.live:
            return  # never opened: the handshake failed
        runtime.calls.live.discard(self)
        metrics.ACTIVE_CALLS.dec()
        if self.failedByMe and not self._ended:
            # autobahn failed the connection itself for a protocol error (an oversized or
            # unmasked frame, bad UTF-8) and logged why: the caller's fault, not a hang-up.
            self.outcome = "bad_message" if self.session is not None else "rejected"
            self._close_reason = self.localCloseReason or ""
        self._finish_session()
        session = self.session
        pipeline = session.info.pipeline if session is not None else ""
        metrics.CALLS.labels(pipeline=pipeline, outcome=self.outcome).inc()
        if session is None:
            return
        info = session.info
        duration = runtime.clock.seconds() - self._opened_at
        metrics.FRAMES_IN.call_ended(session.frames_in)
        metrics.FRAMES_OUT.call_ended(session.frames_out)
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
        self.reader = CallReader(runtime.clock)
        limits = runtime.settings.raw.limits
        self.setProtocolOptions(
            maxMessagePayloadSize=limits.max_message_bytes,
            maxFramePayloadSize=limits.max_message_bytes,
            failByDrop=False,
            openHandshakeTimeout=limits.handshake_timeout,
            closeHandshakeTimeout=2,
            applyMask=True,
        )

