"""Vonage's signed JWTs: HS256 with the account's signature secret.

Vonage signs webhooks (and, with ``authorization: {type: vonage}``, the socket
handshake) with a JWT whose ``payload_hash`` claim is the hex SHA-256 of the
request body, or for a GET of its query parameters as a compact JSON object.
Verification accepts HS256 only: ``alg: none`` and every other algorithm are
refused before the signature is even looked at.  Each token's ``jti`` is
accepted once, and ``iat`` may be off by CLOCK_SKEW seconds at most.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import parse_qsl

ALGORITHM = "HS256"


class InvalidToken(Exception):
    """The token is missing, malformed, unsigned, wrongly signed, expired or for another body."""


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def query_payload(query: str | bytes) -> bytes:
    """What Vonage hashes for a GET webhook: its query parameters as one compact JSON object,
    in their order (a repeated name keeps its first place and its last value)."""
    if isinstance(query, bytes):
        query = query.decode("utf-8")
    fields = dict(parse_qsl(query, keep_blank_values=True))
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def make_token(secret: str, body: bytes | None = None, **claims) -> str:
    """A token as Vonage would send it (the call simulator and tests sign with this)."""
    import jwt  # here, not at import: a daemon that signs nothing never loads PyJWT

    payload = {"iat": int(time.time()), "jti": str(uuid.uuid4()), "iss": "Vonage", **claims}
    if body:
        payload["payload_hash"] = body_hash(body)
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def bearer(authorization: str | None) -> str:
    """The token in an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        raise InvalidToken("no Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("Authorization is not a Bearer token")
    return token.strip()


CLOCK_SKEW = 5
"""Seconds of clock difference between Vonage and us allowed for ``iat``, ``exp`` and ``nbf``."""

MAX_SEEN = 100_000
"""Token ids (``jti``) remembered at most; past it the oldest is forgotten first.  Only
correctly signed tokens are remembered, so only Vonage's own traffic fills it: about 330
tokens a second for the default five minutes of max_token_age."""


class SeenTokens:
    """The ``jti`` of every token accepted lately, so that each is accepted only once.

    An id is kept until the token itself would be refused as too old (its ``iat`` plus
    ``max_age`` plus the clock skew); with no age limit, until MAX_SEEN newer ones push it out.
    Ids are kept in arrival order with their expiry, so forgetting is from the front.
    """

    def __init__(self, clock: Callable[[], float] = time.time, limit: int = MAX_SEEN) -> None:
        self._clock = clock
        self._limit = limit
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expiry)

    def accept(self, jti: str, iat: float, max_age: float | None) -> None:
        """Remember `jti`; InvalidToken if it was accepted before and is remembered still."""
        now = self._clock()
        self._forget(now)
        if jti in self._expiry:
            raise InvalidToken("token already used (jti seen before)")
        expiry = iat + max_age + CLOCK_SKEW if max_age else float("inf")
        self._expiry[jti] = max(expiry, now)
        while len(self._expiry) > self._limit:
            self._expiry.popitem(last=False)

    def _forget(self, now: float) -> None:
        # Expiries are nearly in arrival order (iat is close to now); an id behind one that
        # expires later is forgotten a little late, never early.
        expiry = self._expiry
        while expiry:
            jti, when = next(iter(expiry.items()))
            if when >= now:
                return
            del expiry[jti]


def verify_token(
    token: str,
    secret: str,
    body: bytes | None = None,
    max_age: float | None = None,
    *,
    signed: bytes | None = None,
    seen: SeenTokens | None = None,
) -> dict:
    """The token's claims if it is HS256-signed with `secret` and fits the request.

    * `max_age`: a token issued (``iat``) longer ago than that, or later than now (give or
      take CLOCK_SKEW), is refused, so a captured request cannot be replayed later.
    * `body`: when given and not empty, ``payload_hash`` must be its SHA-256.
    * `signed`: what the token must cover, even if empty (a webhook's body, or for a GET
      webhook :func:`query_payload`): ``payload_hash`` must be present and match it.
    * `seen`: the token must carry a ``jti`` not accepted before; it is remembered.
    """
    import jwt  # on first use, as in make_token

    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"malformed token: {exc}") from None
    if header.get("alg") != ALGORITHM:
        raise InvalidToken(f"algorithm {header.get('alg')!r} refused, HS256 only")
    required = ["iat", "jti"] if seen is not None else ["iat"]
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": required},
            leeway=CLOCK_SKEW,
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"{type(exc).__name__}: {exc}") from None
    iat = claims["iat"]
    if not isinstance(iat, (int, float)) or isinstance(iat, bool):
        raise InvalidToken("iat is not a number")
    now = time.time()
    if iat > now + CLOCK_SKEW:
        raise InvalidToken(f"token issued {iat - now:.0f} s in the future")
    if max_age and now - iat > max_age + CLOCK_SKEW:
        raise InvalidToken(f"token issued more than {max_age:g} s ago")
    if signed is not None:
        if "payload_hash" not in claims:
            raise InvalidToken("token has no payload_hash")
        if claims["payload_hash"] != body_hash(signed):
            raise InvalidToken("payload_hash does not match the request")
    elif body and claims.get("payload_hash") != body_hash(body):
        raise InvalidToken("payload_hash does not match the body")
    if seen is not None:
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > 128:
            raise InvalidToken("jti is not a short string")
        seen.accept(jti, iat, max_age)
    return claims
