"""Out of file descriptors: answer 503 instead of closing the connection unanswered.

When ``accept()`` fails with EMFILE, Twisted's TCP port (``tcp._accept``) frees a
descriptor it keeps in reserve, accepts every pending connection and closes each at
once, so the clients see their connection closed with no answer.  :func:`install` puts a
thin wrapper around the listening socket: after an EMFILE it marks the connections
accepted in that recovery, and closing one first sends ``503 Service Unavailable``
(``Retry-After: 1``, ``Connection: close``).  Normal accepts go through untouched.

Self-checked: a port without a listening ``socket`` that accepts (a unix socket or a
port type we do not know) is left alone, and install says so by returning False.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from voicews.runtime import metrics

log = Logger(namespace="voicews.web.fdreserve")

_BODY = b'{"error": "out of file descriptors"}'
ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
)
DRAIN = 65536
"""Bytes of the refused request read off before closing, so the close is a FIN, not an RST
that could make the client drop our answer unread."""


class _Refused:
    """A connection accepted only to be refused: Twisted closes it at once."""

    def __init__(self, client: socket.socket) -> None:
        self._client = client

    def close(self) -> None:
        client = self._client
        try:
            client.setblocking(False)
            with contextlib.suppress(OSError):
                client.recv(DRAIN)
            client.send(ANSWER)
            client.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            client.close()
        metrics.rejected("out_of_files")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class _Listener:
    """The port's listening socket, unchanged but for what is accepted after an EMFILE."""

    def __init__(self, listener: socket.socket, clock: IReactorTime) -> None:
        self._listener = listener
        self._clock = clock
        self._recovering = False
        self._told = False

    def accept(self) -> tuple[Any, Any]:
        try:
            client, address = self._listener.accept()
        except OSError as exc:
            if exc.errno == errno.EMFILE and not self._recovering:
                # Twisted now frees its reserve and accepts the pending connections to close
                # them: those get the 503.  Always over by the next reactor turn.
                self._recovering = True
                self._clock.callLater(0, self._recovered)
                if not self._told:
                    self._told = True
                    log.warn("out of file descriptors: new connections get 503 until some "
                             "close (see limits.max_calls and LimitNOFILE)",
                             rejected="out_of_files")
            raise
        if self._recovering:
            return _Refused(client), address
        return client, address

    def _recovered(self) -> None:
        self._recovering = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._listener, name)


def install(port: Any, clock: IReactorTime) -> bool:
    """Wrap `port`'s listening socket (a twisted.internet.tcp.Port); False if it has none."""
    listener = getattr(port, "socket", None)
    if isinstance(listener, _Listener):
        return True
    if not isinstance(listener, socket.socket) or listener.family not in (
        socket.AF_INET, socket.AF_INET6
    ):
        return False
    port.socket = _Listener(listener, clock)
    return True
