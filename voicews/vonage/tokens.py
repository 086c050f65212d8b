"""Vonage's signed JWTs: HS256 with the account's signature secret.

Vonage signs webhooks (and, with ``authorization: {type: vonage}``, the socket
handshake) with a JWT whose ``payload_hash`` claim is the hex SHA-256 of the
request body.  Verification accepts HS256 only: ``alg: none`` and every other
algorithm are refused before the signature is even looked at.
"""

from __future__ import annotations

import hashlib
import time
import uuid

import jwt

ALGORITHM = "HS256"


class InvalidToken(Exception):
    """The token is missing, malformed, unsigned, wrongly signed, expired or for another body."""


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def make_token(secret: str, body: bytes | None = None, **claims) -> str:
    """A token as Vonage would send it (the call simulator and tests sign with this)."""
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


LEEWAY = 300
"""Seconds of clock difference between Vonage and us that `exp`, `nbf` and `iat` allow."""


def verify_token(
    token: str, secret: str, body: bytes | None = None, max_age: float | None = None
) -> dict:
    """The token's claims if it is HS256-signed with `secret` and matches `body`.

    With `max_age`, a token issued (``iat``) longer ago than that is refused too, so a
    captured request cannot be replayed later.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"malformed token: {exc}") from None
    if header.get("alg") != ALGORITHM:
        raise InvalidToken(f"algorithm {header.get('alg')!r} refused, HS256 only")
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["iat"]}, leeway=LEEWAY
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"{type(exc).__name__}: {exc}") from None
    if max_age and time.time() - claims["iat"] > max_age + LEEWAY:
        raise InvalidToken(f"token issued more than {max_age:g} s ago")
    if body and claims.get("payload_hash") != body_hash(body):
        raise InvalidToken("payload_hash does not match the body")
    return claims
