"""The ``bridge`` step's parameters in config.yaml, checked when the config loads.

Every mistake is refused at load, naming the key (``url: ...``, ``headers.Host:
...``), so a typo never waits for the first call to show: a URL that is not
``ws://`` or ``wss://``, a header the WebSocket handshake sets itself or one that
would split the request, a CA file that holds no certificate, impossible
reconnection delays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from voicews import PrepareContext
from voicews.audio.samples import FRAME_SECONDS
from voicews.bridge.client import Reconnect
from voicews.bridge.options import trust_root

HANDSHAKE_HEADERS = frozenset({
    "host", "upgrade", "connection", "user-agent", "pragma", "cache-control", "origin",
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
    "sec-websocket-protocol", "sec-websocket-accept", "content-length", "transfer-encoding",
})
"""Headers the WebSocket handshake writes itself: a second copy would break it."""
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
"""An HTTP header name (RFC 9110 token)."""


@dataclass(frozen=True)
class ReconnectParams:
    tries: int = 3
    """Attempts after a failure (at start or mid-call) before ``on_failure`` applies."""
    initial_delay: float = 0.5
    """Seconds before the first retry; each next one waits twice as long..."""
    max_delay: float = 8.0
    """...up to this."""
    stable_after: float = 10.0
    """A connection that stayed up this long earns a fresh count of tries."""


@dataclass(frozen=True)
class BridgeParams:
    url: str
    """The bot: ``ws://`` or ``wss://`` (verified against the system CAs, or `ca_file`)."""
    protocol: Literal["vonage", "twilio"]
    """What the bot speaks: Vonage's Voice WebSocket, or Twilio Media Streams."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra HTTP headers on the WebSocket handshake (e.g. ``Authorization``)."""
    parameters: dict[str, Any] = field(default_factory=dict)
    """Added to the call's headers in what the bot gets first: Twilio's
    ``start.customParameters``, or the top level of Vonage's first message."""
    ca_file: str | None = None
    """PEM file of the CA(s) to trust for ``wss://`` instead of the system's."""
    on_failure: Literal["hangup", "continue"] = "hangup"
    """When the bot cannot be reached or goes away (after any retries): end the call,
    or go on without it (the step then passes its input through)."""
    reconnect: ReconnectParams = field(default_factory=lambda: ReconnectParams(tries=0))
    """Retry with exponential backoff (``reconnect: {}`` for 3 tries); none when absent."""
    connect_timeout: float = 10.0
    """Seconds from the TCP connect to the end of the WebSocket handshake."""
    max_lead_seconds: float = 30.0
    """How far ahead of the caller's ear the bot's audio may be queued; beyond, dropped."""
    buffer_seconds: float = 1.0
    """The caller's latest audio kept while the bot is not connected, sent once it is."""


@dataclass(frozen=True)
class Prepared:
    """What every call of the pipeline shares: checked, resolved parameters."""

    url: str
    protocol: str
    headers: dict[str, str]
    parameters: dict[str, Any]
    ca_file: Path | None
    on_failure: str
    reconnect: Reconnect | None
    connect_timeout: float
    max_lead_seconds: float
    buffer_frames: int


def check_url(url: str) -> str:
    """The URL if it is a usable ws:// or wss:// URL; ValueError naming the problem."""
    if url != url.strip() or any(c.isspace() for c in url):
        raise ValueError(f"url: must not contain spaces, got {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url: {exc}, got {url!r}") from None
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"url: expected ws:// or wss://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"url: no host in {url!r}")
    if parts.fragment or url.endswith("#"):
        raise ValueError(f"url: a WebSocket URL has no #fragment, got {url!r}")
    if port == 0:
        raise ValueError(f"url: port 0 in {url!r}")
    return url


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    seen: set[str] = set()
    for name, value in headers.items():
        if not _TOKEN.match(name):
            raise ValueError(f"headers.{name}: not a valid HTTP header name")
        if name.lower() in HANDSHAKE_HEADERS:
            raise ValueError(f"headers.{name}: set by the WebSocket handshake itself")
        if name.lower() in seen:
            raise ValueError(f"headers.{name}: given twice (header names ignore case)")
        seen.add(name.lower())
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"headers.{name}: the value holds a line break")
    return dict(headers)


def prepare(params: BridgeParams, context: PrepareContext) -> Prepared:
    """Check everything once, at config load; ValueError messages start with the key."""
    url = check_url(params.url)
    ca_file = None
    if params.ca_file is not None:
        if not url.startswith("wss:"):
            raise ValueError("ca_file: only used with a wss:// url")
        ca_file = context.resolve(params.ca_file)
        try:
            trust_root(ca_file)
        except OSError as exc:
            raise ValueError(f"ca_file: cannot read {ca_file}: {exc.strerror}") from None
        except ValueError as exc:
            raise ValueError(f"ca_file: {exc}") from None
    reconnect = None
    r = params.reconnect
    if r.tries:
        for name in ("tries", "initial_delay", "stable_after"):
            if getattr(r, name) < 0:
                raise ValueError(f"reconnect.{name}: must be 0 or more")
        if r.max_delay < r.initial_delay:
            raise ValueError(f"reconnect.max_delay: must be at least initial_delay "
                             f"({r.initial_delay:g})")
        reconnect = Reconnect(r.tries, r.initial_delay, r.max_delay, r.stable_after)
    for name in ("connect_timeout", "max_lead_seconds"):
        if getattr(params, name) <= 0:
            raise ValueError(f"{name}: must be greater than 0")
    if not 0 <= params.buffer_seconds <= 60:
        raise ValueError("buffer_seconds: must be between 0 and 60")
    return Prepared(
        url=url, protocol=params.protocol, headers=check_headers(params.headers),
        parameters=dict(params.parameters), ca_file=ca_file, on_failure=params.on_failure,
        reconnect=reconnect, connect_timeout=params.connect_timeout,
        max_lead_seconds=params.max_lead_seconds,
        buffer_frames=round(params.buffer_seconds / FRAME_SECONDS),
    )
