"""What the daemon knows about calls: live sockets and calls answered but not yet ended.

The answer webhook opens a call's book, the event webhook's ``completed`` or
``disconnected`` closes it; the socket registers its session while it is open.
Books expire after a day so a call whose final event never came cannot leak.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voicews.call.protocol import CallProtocol

BOOK_TTL = 24 * 3600.0
MAX_BOOKS = 100_000


@dataclass
class CallBook:
    """A call the answer webhook saw."""

    uuid: str
    conversation_uuid: str | None
    to: str | None
    from_: str | None
    pipeline: str
    opened: float = field(default_factory=time.monotonic)
    status: str = "answered"


class CallRegistry:
    """Live sockets (for counts, drain and reload) and open call books."""

    def __init__(self) -> None:
        self.live: set[CallProtocol] = set()
        self.books: OrderedDict[str, CallBook] = OrderedDict()

    def open_book(self, book: CallBook) -> None:
        self._expire()
        self.books[book.uuid] = book
        self.books.move_to_end(book.uuid)
        while len(self.books) > MAX_BOOKS:
            self.books.popitem(last=False)

    def update_book(self, uuid: str, status: str) -> CallBook | None:
        """Record an event's status; close the book on ``completed``/``disconnected``."""
        book = self.books.get(uuid)
        if book is not None:
            book.status = status
            if status in ("completed", "disconnected"):
                del self.books[uuid]
        return book

    def _expire(self) -> None:
        limit = time.monotonic() - BOOK_TTL
        while self.books:
            oldest = next(iter(self.books.values()))
            if oldest.opened >= limit:
                break
            self.books.popitem(last=False)
