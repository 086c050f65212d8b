"""Events Vonage sends on the socket after the first message, as processors see them."""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """One text event from Vonage: ``kind`` is the part after ``websocket:``.

    ``dtmf`` carries ``digit`` and ``duration`` (ms); ``notify`` carries the
    ``payload`` we sent with a notify command; ``cleared`` carries nothing.
    ``raw`` is the whole JSON object, for events a processor knows better than us.
    """

    kind: str
    digit: str | None = None
    duration: int | None = None
    payload: Any = None
    raw: dict[str, Any] = field(default_factory=dict)
