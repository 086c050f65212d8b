"""One reader for every call socket: one reactor event per wake-up, not one per frame.

A call's socket is readable 50 times a second.  Twisted's reactor dispatches each
readiness through ``callWithLogger`` (two dict copies for the log context), its
generic read/write dispatch and ``Connection.doRead``: a few microseconds a frame,
about a tenth of what a whole echoed frame costs.  Here every plain-TCP call
socket, once its WebSocket is open, is paused on the reactor and registered in an
epoll set of our own; that set's file descriptor is one ``IReadDescriptor`` on the
reactor.  When any call has data, the reactor wakes us once and we read every
ready socket in a tight loop.

Only the happy path lives here.  Anything else (end of file, a reset, an error,
a connection Twisted is closing) is handed back to Twisted by resuming the
transport: epoll is level-triggered, so Twisted finds the same condition waiting
and handles it as it always does.  Nothing is read twice or lost in the hand-over.
Uses only public interfaces: ``IReactorFDSet.addReader``, ``IPushProducer``
``pauseProducing``/``resumeProducing``, ``ITCPTransport.getHandle``.

One step further, given a ``merge_poll`` (voicews.call.fastpath.merge_poll, which
knows Twisted's epoll reactor from the inside): our set becomes the reactor's wait
itself, with the reactor's own epoll descriptor inside it.  A wake-up for call
data is then one ``epoll_wait`` and a direct call here, rather than the reactor's
``epoll_wait``, its logging context and dispatch, and then ours; the reactor's own
events (the listening port, timers' wake-ups, other connections) are handed to its
usual poll when its descriptor turns up ready.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import tcp
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger(namespace="voicews.call.readloop")

# What Twisted's own tcp.Connection reads per recv.
READ_SIZE = 65536

_EPOLL = getattr(select, "epoll", None)
_WANT = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLRDHUP", 0)
# Conditions Twisted handles itself (half-close, hang-up, error): hand the socket back.
_HAND_BACK = (
    getattr(select, "EPOLLRDHUP", 0) | getattr(select, "EPOLLHUP", 0)
    | getattr(select, "EPOLLERR", 0)
)


def _nothing(_timeout: float) -> None:
    pass


MergePoll = Callable[
    [IReactorFDSet, Any, Callable[[list[tuple[int, int]]], None]],
    tuple[Callable[[], None], int, Callable[[float], None]] | None,
]
"""``merge_poll(reactor, epoll, dispatch)``: make `epoll` the reactor's wait, its events
going to `dispatch`; returns (undo, the reactor's descriptor, the reactor's own poll), or
None when this reactor cannot be merged with (the read loop then registers as a reader)."""


@dataclass(slots=True)
class _Adopted:
    sock: socket.socket
    transport: tcp.Connection
    protocol: Protocol
    receive: Callable[[bytes], None]  # protocol.dataReceived, bound once


@implementer(IReadDescriptor)
class CallReader:
    """Reads every adopted call socket from one epoll set registered on the reactor."""

    def __init__(self, reactor: IReactorFDSet, merge_poll: MergePoll | None = None) -> None:
        self._reactor = reactor
        self._merge_poll = merge_poll
        self._epoll: Any = None
        self._adopted: dict[int, _Adopted] = {}
        self._unmerge: Callable[[], None] | None = None
        self._twisted_fd = -1  # the reactor's own epoll, inside ours once merged
        self._twisted_poll: Callable[[float], None] = _nothing
        self._shutdown: Any = None  # the trigger that stands in for disconnectAll, merged

    @property
    def sockets(self) -> int:
        """How many sockets we read now."""
        return len(self._adopted)

    @staticmethod
    def available() -> bool:
        return _EPOLL is not None

    def adopt(self, protocol: Protocol, transport: tcp.Connection) -> int | None:
        """Take over reading `transport`; return its fd, or None when it stays with Twisted.

        The protocol calls :meth:`release` from ``connectionLost`` and before it aborts
        the connection itself (an abort sets no flag on the transport that we could see).
        """
        if _EPOLL is None:
            return None
        sock = transport.getHandle()
        fd = sock.fileno()
        if fd < 0 or fd in self._adopted:
            return None
        if self._epoll is None:
            self._start()
        transport.pauseProducing()
        self._epoll.register(fd, _WANT)
        self._adopted[fd] = _Adopted(sock, transport, protocol, protocol.dataReceived)
        return fd

    def _start(self) -> None:
        assert _EPOLL is not None  # adopt() checked
        self._epoll = _EPOLL()
        merge = self._merge_poll
        merged = merge(self._reactor, self._epoll, self._dispatch) if merge is not None else None
        if merged is None:
            self._reactor.addReader(self)
            return
        self._unmerge, self._twisted_fd, self._twisted_poll = merged
        # The reactor cannot see our sockets: at shutdown we end them, as disconnectAll would.
        self._shutdown = self._reactor.addSystemEventTrigger(  # type: ignore[attr-defined]
            "during", "shutdown", self._reactor_stopping)

    @property
    def merged(self) -> bool:
        """Whether our set is the reactor's wait (see the module's docstring)."""
        return self._unmerge is not None

    def release(self, fd: int, protocol: Protocol) -> None:
        """Forget `fd` (the call ended or goes back to Twisted); idempotent."""
        adopted = self._adopted.get(fd)
        if adopted is None or adopted.protocol is not protocol:
            return
        del self._adopted[fd]
        with contextlib.suppress(OSError, ValueError):  # Twisted closed it: the set forgot it
            self._epoll.unregister(fd)

    def _hand_back(self, fd: int, adopted: _Adopted) -> None:
        self.release(fd, adopted.protocol)
        adopted.transport.resumeProducing()  # a no-op once Twisted is closing it

    def close(self) -> None:
        """Give every socket back to Twisted and leave the reactor."""
        for fd, adopted in list(self._adopted.items()):
            self._hand_back(fd, adopted)
        if self._epoll is not None:
            self._leave()

    def _leave(self) -> None:
        if self._unmerge is not None:
            self._unmerge()
            self._unmerge, self._twisted_fd, self._twisted_poll = None, -1, _nothing
            if self._shutdown is not None:
                with contextlib.suppress(KeyError, ValueError):  # it ran already
                    self._reactor.removeSystemEventTrigger(self._shutdown)  # type: ignore[attr-defined]
                self._shutdown = None
        else:
            self._reactor.removeReader(self)
        self._epoll.close()
        self._epoll = None

    def _reactor_stopping(self) -> None:
        self._shutdown = None
        self.connectionLost(Failure(ConnectionLost("reactor shutting down")))

    # IReadDescriptor

    def fileno(self) -> int:
        return self._epoll.fileno() if self._epoll is not None else -1

    def logPrefix(self) -> str:  # noqa: N802 - Twisted's name
        return "voicews.call.readloop"

    def doRead(self) -> None:  # noqa: N802 - Twisted's name
        self._dispatch(self._epoll.poll(0))

    def _dispatch(self, ready: list[tuple[int, int]]) -> None:
        """Read every ready call socket; the reactor's own descriptor goes to its poll."""
        adopted_by_fd = self._adopted
        read = os.read  # on the descriptor: the socket object's recv costs more per call
        for fd, events in ready:
            adopted = adopted_by_fd.get(fd)
            if adopted is None:
                if fd == self._twisted_fd:
                    self._twisted_poll(0)
                continue
            transport = adopted.transport
            if events & _HAND_BACK or transport.disconnecting or not transport.connected:
                self._hand_back(fd, adopted)
                continue
            try:
                data = read(fd, READ_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                self._hand_back(fd, adopted)  # Twisted meets the same error and reports it
                continue
            if not data:
                self._hand_back(fd, adopted)
                continue
            try:
                adopted.receive(data)
            except Exception:
                # What the reactor does when dataReceived raises: log it and end this
                # connection with the exception as the reason; every other call goes on.
                failure = Failure()
                log.failure("dataReceived raised; dropping the connection", failure=failure)
                self.release(fd, adopted.protocol)
                transport.connectionLost(failure)
                continue
            if transport.disconnecting or not transport.connected:
                self.release(fd, adopted.protocol)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        """The reactor dropped us (it is shutting down): our sockets go down with us.

        Had they been registered on the reactor, its ``disconnectAll`` would have
        called their ``connectionLost``; it cannot see them, so we do.
        """
        adopted_now = list(self._adopted.items())
        self._adopted.clear()
        if self._epoll is not None:
            if self._unmerge is not None:
                self._leave()
            else:  # the reactor has dropped us already
                self._epoll.close()
                self._epoll = None
        for _fd, adopted in adopted_now:
            adopted.transport.connectionLost(reason)

