"""The fast frame path, and every private autobahn and Twisted internal voicews relies on.

A call is 50 small binary messages a second each way.  autobahn's general path
(frame/message begin-data-end callbacks, a masker object, an observer Future and
debug-log arguments per message) and Twisted's buffered ``write`` (two
``epoll_ctl`` calls and a reactor turn per frame) cost several times the work
itself.  :class:`FastPathProtocol` reads whole masked binary frames and sends
whole audio frames itself, and leaves everything else to autobahn, so pings, the
close handshake, fragmentation and every protocol error behave exactly as
autobahn makes them behave (tests/test_protocol_wire.py runs both paths).

What it touches that is not public API, and so lives only here:

* autobahn ``WebSocketProtocol``: ``data`` (unparsed input), ``state``,
  ``current_frame``, ``inside_message``, ``_dataReceived``, ``consumeData``,
  ``_perMessageCompress``, ``failedByMe``, ``localCloseReason``;
* Twisted ``tcp.Connection``: ``dataBuffer`` and ``_tempDataBuffer`` (whether
  ``write`` has anything buffered) and ``socket``;
* Twisted ``EPollReactor``: ``_poller`` and ``doIteration`` (:func:`merge_poll`: the
  call read loop's epoll set becomes the reactor's wait).

:func:`self_check` looks for all of them at start-up on the installed versions
(pinned below their next major versions in pyproject.toml).  When one is
missing, or config says ``fast_path: false``, the daemon logs it once and every
call takes autobahn's and Twisted's public path, frame for frame the same.
"""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import abstract, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure

try:  # websockets (already ours for the simulator) ships this in C: ~10x numpy's speed per frame
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a platform without its compiled wheel
    from websockets.utils import apply_mask  # its pure-Python twin

_write = os.write  # on the socket's descriptor: socket.send's argument parsing costs more
BINARY_FIN = 0x82  # FIN + opcode 2: a whole, unfragmented binary message
_MASKED_LEN16 = 0x80 | 126  # masked, 16-bit extended length: every L16 frame (320-960 bytes)
_STATE_OPEN = WebSocketServerProtocol.STATE_OPEN

_AUTOBAHN_ATTRIBUTES = (
    "data", "state", "current_frame", "inside_message", "_perMessageCompress", "failedByMe",
    "localCloseReason", "logOctets", "logFrames", "trackTimings", "applyMask",
    "autoPingInterval", "maxFramePayloadSize", "maxMessagePayloadSize",
)
_AUTOBAHN_METHODS = ("_dataReceived", "consumeData")
_TWISTED_ATTRIBUTES = ("dataBuffer", "_tempDataBuffer")


def merge_poll(
    reactor: Any, epoll: Any, dispatch: Callable[[list[tuple[int, int]]], None]
) -> tuple[Callable[[], None], int, Callable[[float], None]] | None:
    """Make `epoll` (the call read loop's set) the reactor's wait; None if this reactor can't.

    The reactor's own epoll descriptor goes into `epoll`, and the reactor's
    ``doIteration`` (what ``mainLoop`` calls to wait) is replaced on this instance
    by one ``epoll_wait`` on `epoll` whose events go to `dispatch`; the read loop
    runs the reactor's own poll, without waiting, when its descriptor is ready.
    A wake-up for call data then costs one system call and no logging context,
    where the nested sets cost two and Twisted's dispatch.  Returns (undo, the
    reactor's descriptor, the reactor's own poll).
    """
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:  # pragma: no cover - not Linux
        return None
    poller = getattr(reactor, "_poller", None)
    own_poll = getattr(type(reactor), "doIteration", None)
    if (
        not isinstance(reactor, EPollReactor) or poller is None or own_poll is None
        or "doIteration" in vars(reactor)  # someone else's already
    ):
        return None
    twisted_fd = poller.fileno()
    epoll.register(twisted_fd, select.EPOLLIN)
    wait = epoll.poll

    def iterate(timeout: float | None) -> None:
        try:
            ready = wait(-1 if timeout is None else timeout)
        except InterruptedError:  # pragma: no cover - Python retries; as Twisted's doPoll
            return
        dispatch(ready)

    def twisted_poll(timeout: float) -> None:
        own_poll(reactor, timeout)

    def undo() -> None:
        vars(reactor).pop("doIteration", None)
        with contextlib.suppress(OSError, ValueError):  # closed with the reactor
            epoll.unregister(twisted_fd)

    reactor.doIteration = iterate  # type: ignore[method-assign]  # this instance's wait
    return undo, twisted_fd, twisted_poll


def frame_header(opcode_byte: int, length: int) -> bytes:
    """An unmasked server frame header for a payload of `length` bytes."""
    if length < 126:
        return bytes((opcode_byte, length))
    if length < 65536:
        return bytes((opcode_byte, 126)) + length.to_bytes(2, "big")
    return bytes((opcode_byte, 127)) + length.to_bytes(8, "big")


def self_check() -> str | None:
    """Why the fast path cannot run on the installed autobahn and Twisted, or None.

    Opens a real autobahn server protocol on an in-memory transport (the opening
    handshake included) and looks for every internal the fast path uses.
    """
    factory = WebSocketServerFactory("ws://localhost/socket")
    factory.protocol = FastPathProtocol
    protocol: Any = factory.buildProtocol(None)
    transport = _CheckTransport()
    try:
        protocol.makeConnection(transport)
        protocol.dataReceived(
            b"GET /socket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
    except Exception as exc:  # an autobahn we do not know
        return f"autobahn's handshake failed in the self-check: {exc!r}"
    if getattr(protocol, "state", None) != _STATE_OPEN:
        return "autobahn did not open the self-check connection"
    missing = [name for name in _AUTOBAHN_ATTRIBUTES if not hasattr(protocol, name)]
    missing += [name for name in _AUTOBAHN_METHODS if not callable(getattr(protocol, name, None))]
    descriptor = abstract.FileDescriptor(reactor=Clock())  # type: ignore[arg-type]
    missing += [f"twisted {n}" for n in _TWISTED_ATTRIBUTES if not hasattr(descriptor, n)]
    transport.loseConnection()
    protocol.connectionLost(Failure(ConnectionDone()))
    if missing:
        return "internals missing: " + ", ".join(missing)
    return None


class _CheckTransport:
    """The little of a TCP transport the self-check's handshake needs, kept in memory.

    (Twisted's StringTransport would do, but importing twisted.internet.testing brings
    in trial, unittest and doctest: over a megabyte of every daemon's memory.)
    """

    disconnecting = False

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def writeSequence(self, seq: list[bytes]) -> None:  # noqa: N802 - Twisted's name
        for data in seq:
            self.write(data)

    def getPeer(self) -> IPv4Address:  # noqa: N802
        return IPv4Address("TCP", "127.0.0.1", 40000)

    def getHost(self) -> IPv4Address:  # noqa: N802
        return IPv4Address("TCP", "127.0.0.1", 8080)

    def setTcpNoDelay(self, enabled: bool) -> None:  # noqa: N802
        pass

    def registerProducer(self, producer: object, streaming: bool) -> None:  # noqa: N802
        pass

    def unregisterProducer(self) -> None:  # noqa: N802
        pass

    def loseConnection(self) -> None:  # noqa: N802
        self.disconnecting = True

    def abortConnection(self) -> None:  # noqa: N802
        self.disconnecting = True


class FastPathProtocol(WebSocketServerProtocol):
    """autobahn's server protocol, with whole binary frames read and sent directly."""

    _fast = False
    _fd = -1  # the socket's descriptor, written directly (os.write) when nothing waits
    _frame_bytes = 0
    _audio_header = b""
    _in_frame_wire = -1  # wire size of one masked audio frame, once the fast path may take it
    _in_frame_prefix = b""
    _direct: Any = None  # where audio frames go, skipping onMessage (see deliver_directly)
    _direct_left = 0  # frames to deliver directly before the next goes through onMessage
    # autobahn sets these per connection (setProtocolOptions); declared for the type checker.
    logOctets: bool  # noqa: N815 - autobahn's names
    logFrames: bool  # noqa: N815
    applyMask: bool  # noqa: N815
    autoPingInterval: float  # noqa: N815
    maxFramePayloadSize: int  # noqa: N815
    maxMessagePayloadSize: int  # noqa: N815

    def fast_open(self, allowed: bool) -> bool:
        """At onOpen: may this connection take the fast path?  True when it reads plain TCP.

        Only what autobahn would do with no extension, no frame logging, default
        masking and no auto-ping (else every frame must restart its ping timer).
        """
        self._fast = allowed and (
            self._perMessageCompress is None
            and not self.logOctets
            and not self.logFrames
            and not self.trackTimings
            and self.applyMask
            and not self.autoPingInterval
        )
        transport = self.transport
        if (
            self._fast and isinstance(transport, tcp.Connection) and not transport.TLS
            and hasattr(transport, "dataBuffer") and hasattr(transport, "_tempDataBuffer")
        ):
            self._fd = transport.socket.fileno()
            return True
        return False

    def fast_frames(self, size: int) -> None:
        """From the first message on, audio frames are `size` bytes each way."""
        self._frame_bytes = size
        self._audio_header = frame_header(BINARY_FIN, size)
        if self._fast and size <= min(self.maxFramePayloadSize or size,
                                      self.maxMessagePayloadSize or size):
            self._in_frame_wire = 8 + size
            self._in_frame_prefix = bytes((BINARY_FIN, _MASKED_LEN16, size >> 8, size & 0xFF))

    def deliver_directly(self, receive: Any, frames: int) -> None:
        """Hand the next `frames` audio frames read whole to `receive(payload)`, not onMessage.

        The usual read is one frame; this spares it the general ``onMessage``.  After
        `frames` of them, one goes through ``onMessage`` again (which may call this anew);
        ``receive=None`` stops it at once (the call is ending).
        """
        self._direct = receive
        self._direct_left = frames if receive is not None else 0

    @property
    def failed_by_autobahn(self) -> tuple[bool, str]:
        """Whether autobahn failed the connection itself (a protocol error), and why."""
        return bool(self.failedByMe), self.localCloseReason or ""

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        """Deliver whole masked binary frames straight to onMessage; the rest to autobahn.

        The usual read, exactly one audio frame, is recognised by its length and
        4-byte prefix alone; other complete, final, masked binary frames within the
        size limits are parsed here; anything else (text, control frames, fragments,
        unmasked or oversized frames, a state other than open) is left in
        ``self.data`` for autobahn's ``consumeData``.  (autobahn's ``trafficStats``
        octet counters are not kept for these frames; voicews's own counters are.)
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
            if self._direct_left:
                self._direct_left -= 1
                self._direct(apply_mask(data[8:], data[4:8]))
            else:
                self.onMessage(apply_mask(data[8:], data[4:8]), True)
            return
        if not self._fast or self.state != _STATE_OPEN or self.current_frame is not None:
            super().dataReceived(data)  # autobahn's own path
            return
        buf = self.data + data if self.data else data
        n = len(buf)
        pos = 0
        handoff = False
        limit = self.maxFramePayloadSize
        message_limit = self.maxMessagePayloadSize
        while n - pos >= 2:
            b1 = buf[pos + 1]
            if buf[pos] != BINARY_FIN or b1 < 0x80 or self.inside_message:
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
            payload = apply_mask(buf[start:end], buf[start - 4 : start]) if length else b""
            pos = end
            self.onMessage(payload, True)
            if self.state != _STATE_OPEN:
                handoff = True
                break
        self.data = buf[pos:] if pos < n else b""
        if handoff and self.data:
            self.consumeData()

    def send_audio(self, frame: bytes) -> None:
        """Send one audio frame: header and payload in one write, now when nothing waits.

        Twisted's ``write`` buffers and registers the socket for writability, then
        sends on the next reactor turn and unregisters it.  When nothing is buffered,
        sending now is what that turn would do (asyncio does the same); whatever
        the kernel does not take goes through ``write`` as usual.
        """
        if not (self._fast and self.state == _STATE_OPEN and len(frame) == self._frame_bytes):
            self.sendMessage(frame, isBinary=True)
            return
        data = self._audio_header + frame
        transport: Any = self.transport
        fd = self._fd
        if (
            fd >= 0
            and not transport.dataBuffer
            and not transport._tempDataBuffer
            and transport.connected
            and not transport.disconnecting
        ):
            try:
                sent = _write(fd, data)
            except OSError:
                sent = 0  # EAGAIN, or an error write() will meet and report as usual
            if sent == len(data):
                return
            data = data[sent:]
        self.write_rest(data)

    def write_rest(self, data: bytes) -> None:
        """What the kernel did not take goes through Twisted's buffered write."""
        transport = self.transport
        assert transport is not None  # connected: a frame is being sent
        transport.write(data)
