"""What a simulated call is asked to do (CallSpec) and what happened (CallResult)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets

from voicews.audio.samples import SAMPLE_DTYPE

DTMF_DIGITS = frozenset("0123456789*#")
DEFAULT_CONTENT_TYPE = "audio/l16;rate=16000"
SECONDS_WITHOUT_FILE = 3.0
"""How long a call without ``--play`` lasts when ``--seconds`` is not given."""
TAIL_SECONDS = 1.0
"""Silence streamed after the file, so the end of the reply has time to come back."""
ARRIVAL_GAP = 0.05
"""Seconds without a message after which a burst from the daemon counts as over."""
PROXY_KWARG = int(websockets.version.version.split(".")[0]) >= 15


class SimulationError(Exception):
    """The call could not go on: the answer URL, NCCO or socket did something Vonage rejects."""


@dataclass
class CallSpec:
    """One call to simulate.  Only `answer_url` (or `socket_uri`) is needed."""

    answer_url: str = ""
    play: np.ndarray | None = None
    """int16 mono samples the caller "says"; resampled to the call's rate."""
    play_rate: int = 16000
    seconds: float | None = None
    """Call length; default: the audio's length plus one second (3 s without audio)."""
    dtmf: list[tuple[str, float]] = field(default_factory=list)
    """Key presses as (digit, seconds into the call)."""
    fast: bool = False
    """Send frames without pacing, then wait (bounded) for the reply."""
    method: str = "GET"
    signature_secret: str | None = None
    """Signs the answer request, event webhooks and a ``vonage`` socket handshake."""
    event_url: str | None = None
    """Where event webhooks go; default: the NCCO connect action's eventUrl."""
    ws_host: str | None = None
    """Replaces the host of the NCCO's socket uri (and eventUrl): ``host:port`` or
    ``ws://host:port`` to change the scheme as well."""
    to: str = "447700900000"
    from_: str = "447700900001"
    answer_fields: dict[str, Any] = field(default_factory=dict)
    """Extra fields for the answer request (e.g. ``custom_data``, ``SipHeader_X-...``)."""
    socket_uri: str | None = None
    """Skip the answer webhook and open this socket with the fields below."""
    content_type: str = DEFAULT_CONTENT_TYPE
    headers: dict[str, Any] = field(default_factory=dict)
    authorization: dict[str, Any] | str | None = None
    """As in an NCCO endpoint (``{"type": "vonage"}`` / ``{"type": "custom", "value": ..}``)
    or the Authorization header value itself."""
    dtmf_duration: int = 260
    quiet_seconds: float = 0.5
    """After the last frame, stop waiting once nothing arrived for this long."""
    settle_timeout: float | None = None
    """Longest wait for the reply after the last frame; default: the call's length + 5 s."""
    timeout: float = 10.0
    """HTTP and handshake timeout."""
    label: str = "call"
    events: bool = False
    """Subscribe to the daemon's ``/events`` for this call (from before its socket opens until
    its ``call_ended``): ``CallResult.events``.  A socket URL without a ``uuid`` header gets
    one (the result's uuid), so the stream can be filtered to this call."""
    events_url: str | None = None
    """Where ``/events`` is; default: beside the call's socket (ws://host/socket ->
    http://host/events)."""
    control_token: str | None = None
    """The daemon's ``security.control_token``, sent as a Bearer token to ``/events``."""
    events_wait: float = 10.0
    """After the call, how long to wait for its ``call_ended`` event."""
    on_event: Callable[[CallResult, dict[str, Any]], None] | None = None
    """Called with each of the call's event records as it arrives (the CLI prints them)."""


@dataclass
class WebhookPost:
    """One event webhook the simulator posted and what came back."""

    status: str
    url: str
    http_status: int | None
    error: str | None = None


@dataclass
class CallResult:
    """What happened on one simulated call."""

    label: str
    uuid: str = ""
    conversation_uuid: str = ""
    ncco: list[Any] | None = None
    talk: list[str] = field(default_factory=list)
    uri: str | None = None
    content_type: str | None = None
    rate: int | None = None
    frames_sent: int = 0
    frames_received: int = 0
    sent: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=SAMPLE_DTYPE))
    """Every sample sent, at the call's rate (the resampled file, then silence)."""
    received: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=SAMPLE_DTYPE))
    """Every correctly sized frame received, in order."""
    wrong_sized: list[int] = field(default_factory=list)
    """Byte sizes of received binary messages that were not one frame."""
    commands: list[Any] = field(default_factory=list)
    """Text messages received (``clear``/``notify`` commands), parsed JSON."""
    events_sent: list[dict[str, Any]] = field(default_factory=list)
    """Text events sent on the socket after the first message (dtmf, cleared, notify)."""
    webhooks: list[WebhookPost] = field(default_factory=list)
    frames_cleared: int = 0
    """Received frames a ``clear`` dropped before they "played"."""
    close_code: int | None = None
    close_reason: str = ""
    closed_by: str | None = None
    """``simulator`` (the call ended) or ``server``."""
    echo_lag_samples: int | None = None
    echo_latency_ms: float | None = None
    duration: float = 0.0
    errors: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    """With ``CallSpec.events``: the call's event records from ``/events``, in order."""
    events_received_at: list[float] = field(default_factory=list)
    """When each of ``events`` arrived, in seconds since the call started (its first request)."""

    @property
    def ok(self) -> bool:
        """Completed cleanly: socket opened and closed normally, every frame the right size."""
        return not self.errors

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) if self.errors else None

    def summary(self) -> str:
        """One line for people: counts, echo latency when known, and what went wrong."""
        parts = [
            f"{self.label}: {'ok' if self.ok else 'FAILED'}",
            f"rate {self.rate or '-'}",
            f"frames sent {self.frames_sent} received {self.frames_received}",
            f"wrong-sized {len(self.wrong_sized)}",
        ]
        if self.echo_latency_ms is not None:
            parts.append(
                f"echo latency {self.echo_latency_ms:.1f} ms (lag {self.echo_lag_samples} samples)"
            )
        if self.commands:
            parts.append(f"commands {len(self.commands)}")
        if self.close_code is not None:
            parts.append(f"close {self.close_code} by {self.closed_by}")
        line = ", ".join(parts)
        return f"{line}: {self.error}" if self.errors else line


# -- HTTP (webhooks) -----------------------------------------------------------------------
