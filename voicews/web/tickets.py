"""Socket tickets: how a browser's call (the console's softphone) passes socket authorization.

With ``security.websocket_auth`` set to ``vonage`` or ``custom``, the ``/socket``
handshake needs an ``Authorization`` header, and a browser's ``WebSocket`` cannot send
one.  The console therefore asks for a ticket first (``POST /console/api/ticket``, behind
the control token) and opens ``/socket?ticket=<ticket>``.  A ticket:

- opens **one** socket handshake (each is accepted once per process), within ``TTL``
  seconds of being issued, and does nothing else: it is no use for the control API,
  ``/events`` or a webhook;
- is ``<issued>.<nonce>.<mac>``: the mac is HMAC-SHA256 keyed with the control token,
  so any worker holding the same token accepts it (no shared state), and changing the
  token voids every ticket out;
- travels in the URL on purpose (the only place a browser can put it): a URL may be
  written to an access log, and a logged ticket has been used or is about to expire.

Holding the control token already lets one switch any live call to any pipeline, so a
ticket grants nothing that token could not do.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from voicews.vonage import tokens as vonage_jwt

TTL = 30
"""Seconds a ticket is good for (it is fetched right before the socket opens)."""
SKEW = 5
"""Seconds of clock difference allowed between workers on different hosts."""

SEEN = vonage_jwt.SeenTokens(limit=10_000)
"""Nonces of the tickets this process accepted (each is accepted once)."""


class InvalidTicket(Exception):
    """A ticket that does not open the socket; the message says why."""


def _mac(key: str, issued: int, nonce: str) -> str:
    message = f"voicews-socket-ticket|{issued}|{nonce}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def issue(key: str, now: float | None = None) -> str:
    """A new ticket signed with `key` (the control token)."""
    issued = int(time.time() if now is None else now)
    nonce = secrets.token_hex(16)
    return f"{issued}.{nonce}.{_mac(key, issued, nonce)}"


def check(ticket: str, key: str | None, now: float | None = None,
          seen: vonage_jwt.SeenTokens = SEEN) -> None:
    """Accept `ticket` once, or raise InvalidTicket saying why."""
    if not key:
        raise InvalidTicket("tickets are off (no security.control_token)")
    parts = ticket.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or len(ticket) > 200:
        raise InvalidTicket("malformed ticket")
    issued, nonce, mac = int(parts[0]), parts[1], parts[2]
    if not hmac.compare_digest(mac.encode(), _mac(key, issued, nonce).encode()):
        raise InvalidTicket("bad ticket signature")
    age = (time.time() if now is None else now) - issued
    if age > TTL or age < -SKEW:
        raise InvalidTicket("ticket expired")
    try:
        seen.accept(nonce, issued, TTL)
    except vonage_jwt.InvalidToken:
        raise InvalidTicket("ticket already used") from None
