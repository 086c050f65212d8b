"""Events: how steps, Vonage, voicews and the app tell each other what happened on a call.

One type for all of them, so a processor reacts to a caller's key press, a VAD's
``speech_started`` and a recognizer's ``transcript`` the same way, in ``on_event``,
and the same events reach the application (HTTP callbacks, ``/events``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

VONAGE = "vonage"
"""``Event.source`` of what Vonage sent on the socket (``dtmf``, ``notify``, ``cleared``)."""
APP = "app"
"""``Event.source`` of what the application or a plugin hook emitted through the call."""
CALL = "call"
"""``Event.source`` of voicews's own events (``call_started``, ``call_ended``)."""


@dataclass(frozen=True)
class Event:
    """Something that happened on a call.

    ``kind`` names it: Vonage's ``dtmf`` (data: ``digit``, ``duration`` in ms),
    ``notify`` (``payload``: what we sent with a notify command) and ``cleared``;
    voicews's ``call_started`` / ``call_ended`` (``outcome``); and whatever a step
    emits with ``session.emit(kind, **data)`` (``data`` is exactly those keyword
    arguments).  ``source`` says who: ``"vonage"``, ``"app"``, ``"call"`` or the
    emitting step's processor name.  ``time`` is seconds since the call started
    (its first message), on the call's clock.
    """

    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)
    source: str = VONAGE
    time: float = 0.0

    @property
    def digit(self) -> str | None:
        """A DTMF event's key: one of 0-9 * # (A-D), or None."""
        digit = self.data.get("digit")
        return digit if isinstance(digit, str) and len(digit) == 1 else None

    @property
    def duration(self) -> int | None:
        """A DTMF event's key-press length in ms, or None."""
        duration = self.data.get("duration")
        return duration if isinstance(duration, int) and not isinstance(duration, bool) else None

    @property
    def payload(self) -> Any:
        """A notify event's payload (what our notify command carried), or None."""
        return self.data.get("payload")

    @property
    def raw(self) -> dict[str, Any]:
        """A Vonage event as Vonage sent it (``{"event": "websocket:<kind>", ...}``)."""
        return {"event": f"websocket:{self.kind}", **self.data}
