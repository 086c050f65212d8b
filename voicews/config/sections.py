"""The small sections of config.yaml: security, limits, control, cluster and events.

Each is a frozen dataclass whose field docstrings are the reference documentation
(tools/config_reference.py reads them); :mod:`voicews.config.settings` nests them
in :class:`~voicews.config.settings.RawConfig` and type-checks them on load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Security:
    """Who may talk to us: signed webhooks and socket handshake authorization."""

    signature_secret: str | None = None
    """Vonage's signature secret (from the dashboard).  When set, every webhook must carry
    a valid signed JWT; keep it in the environment: ``${VONAGE_SIGNATURE_SECRET:-}``."""
    websocket_auth: Literal["none", "vonage", "custom"] = "none"
    """Socket handshake authorization: none, vonage (a JWT signed with
    ``signature_secret``, which is then required) or custom (``websocket_token``)."""
    websocket_token: str | None = None
    """With ``websocket_auth: custom``, the Authorization value Vonage must send (set it in
    the NCCO's websocket headers); bare or as a Bearer token."""
    metrics_token: str | None = None
    """When set, /metrics needs ``Authorization: Bearer <metrics_token>`` (401/403 otherwise)."""
    control_token: str | None = None
    """Bearer token for the application's side: the control API (/calls), the event
    stream (/events) and the console.  Unset: those are off (refused)."""
    max_token_age: float = 300.0
    """Signed tokens (webhooks, a ``vonage`` socket handshake) issued longer ago than this
    many seconds are refused, so a captured request cannot be replayed; 0 turns it off."""


@dataclass(frozen=True)
class Limits:
    """Bounds that keep one caller or stray client from hurting the others."""

    max_calls: int = 1000
    """Sockets beyond this many live calls are refused (HTTP 503)."""
    first_message_bytes: int = 4096
    """The first JSON message's maximum size, in bytes."""
    max_message_bytes: int = 8 * 960
    """Any later message's maximum size, in bytes (8 frames at 24 kHz)."""
    max_body_bytes: int = 64 * 1024
    """Webhook request bodies' maximum size, in bytes."""
    handshake_timeout: float = 5.0
    """Seconds to receive a whole HTTP request or socket handshake."""
    first_message_timeout: float = 5.0
    """Seconds from the socket handshake to the first message."""
    idle_timeout: float = 30.0
    """Close a call that sends no frame for this many seconds (1008)."""
    max_call_seconds: float = 7200.0
    """Close a call after this many seconds (1000)."""
    max_lead_seconds: float = 1.0
    """How far, in seconds, output may run ahead of real time."""
    max_buffer_seconds: float = 60.0
    """Seconds of output that may wait beyond ``max_lead_seconds``; past it frames are dropped."""
    close_timeout: float = 5.0
    """Seconds a call's steps get to finish closing (flush a transcript, write a file)."""
    worker_threads: int = 4
    """Threads for ``session.run_in_thread`` work, shared by every call."""
    max_unsent_bytes: int = 512 * 1024
    """Output a call socket may have waiting for a peer that does not read (beyond
    Twisted's own 64 KB buffer and the kernel's); past it the connection is dropped."""
    max_burst_seconds: float = 10.0
    """How far a caller's audio may run ahead of real time (a burst after a network
    hiccup); a call sustaining more is closed (1008)."""
    text_per_second: float = 10.0
    """Text messages (DTMF, notify...) a call may send per second, sustained."""
    text_burst: int = 50
    """Text messages a call may send at once before ``text_per_second`` applies."""
    stall_seconds: float = 0.25
    """A reactor turn longer than this (a processor blocking every call) is logged,
    naming the call and step that ran, and counted."""


@dataclass(frozen=True)
class Control:
    """The control API (``/calls``, behind ``security.control_token``)."""

    prompts: str | None = None
    """The folder ``POST /calls/{uuid}/play`` plays files from (relative to this file);
    no path from a request reaches the file system outside it.  Unset: /play is off."""


@dataclass(frozen=True)
class Cluster:
    """Many workers, one API: the Redis that links them (voicews.cluster).  Unset: no Redis."""

    redis: str | None = None
    """``redis://[user:password@]host[:port][/db]`` (``rediss://`` for TLS)."""
    prefix: str = "voicews:"
    """Prefix of every key and channel, so several voicews deployments can share a Redis."""
    refresh: float = 2.0
    """Seconds between a worker's registrations of its live calls."""
    ttl: float = 6.0
    """A registration's lifetime: a killed worker's calls vanish this long after it died."""
    request_timeout: float = 5.0
    """Seconds an action routed to another worker may take before answering 504."""


@dataclass(frozen=True)
class Events:
    """Call events to the application: HTTP callbacks (when ``url`` is set) and ``/events``.

    Every queue is bounded: a slow or dead application loses events (counted in
    ``voicews_events_dropped_total``), never the calls' audio or the daemon's memory.
    """

    url: str | None = None
    """Where callbacks are POSTed (http or https); unset: no callbacks."""
    batch_size: int = 50
    """Events per POST at most (the body is always a JSON array of records)."""
    batch_delay: float = 0.0
    """Seconds to wait for more events before a POST; 0 posts at once, and events that
    arrive while a POST is in flight go together in the next one."""
    timeout: float = 5.0
    """Seconds for one POST, from connecting to the end of the response."""
    retries: int = 5
    """Further tries of a batch after a 5xx, 408, 429, a timeout or a refused connection."""
    backoff: float = 0.5
    """Seconds before the first retry; doubled for each next one, up to ``max_backoff``."""
    max_backoff: float = 30.0
    """The longest wait between two tries of a batch, in seconds."""
    connections: int = 2
    """POSTs in flight at once; one call's events always take the same one, in order."""
    max_queue: int = 10000
    """Events waiting to be posted (in flight included), split evenly over connections."""
    max_queue_bytes: int = 16 * 1024 * 1024
    """The same bound in bytes of JSON."""
    stream_queue: int = 1000
    """Events an ``/events`` client that is not keeping up may have waiting."""
    stream_queue_bytes: int = 1024 * 1024
    """The same bound in bytes of JSON."""
    stream_timeout: float = 30.0
    """Seconds an ``/events`` client may leave its data unread before it is disconnected."""
    keepalive: float = 15.0
    """Seconds between ``/events`` keep-alive comments (so proxies keep the stream open)."""
