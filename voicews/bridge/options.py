"""What a bridge connection is configured with, and how its failures read.

Reasons are one line each: the processor logs them and hands them to ``on_failure``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.python.failure import Failure


class BridgeError(Exception):
    """The far end could not be reached; ``reason`` is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Reconnect:
    """Try again after a failure: `tries` times, waiting initial_delay, 2x, 4x... max_delay."""

    tries: int = 3
    initial_delay: float = 0.5
    max_delay: float = 8.0
    stable_after: float = 10.0

    def __post_init__(self) -> None:
        if self.tries < 0 or self.initial_delay < 0 or self.max_delay < self.initial_delay:
            raise ValueError("reconnect needs tries >= 0 and 0 <= initial_delay <= max_delay")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 for the first)."""
        return float(min(self.initial_delay * 2 ** (retry - 1), self.max_delay))


def squash(text: object) -> str:
    """Whitespace (newlines included) folded to single spaces."""
    return " ".join(str(text).split())


def describe(failure: Failure) -> str:
    """A connection failure in one line, naming TLS verification failures as such."""
    value = failure.value
    if isinstance(value, SSL.Error):
        details = [part[2] for part in value.args[0] if len(part) > 2] if value.args else []
        return "TLS failed: " + (squash("; ".join(d for d in details if d)) or "handshake error")
    return squash(failure.getErrorMessage()) or type(value).__name__


def trust_root(ca_file: str | Path | None) -> Any:
    """The system's CAs, or every certificate in a PEM file (and nothing else)."""
    if ca_file is None:
        return ssl.platformTrust()
    text = Path(ca_file).read_text()
    marker = "-----BEGIN CERTIFICATE-----"
    blocks = [marker + block for block in text.split(marker)[1:]]
    if not blocks:
        raise ValueError(f"{ca_file} holds no PEM certificate")
    try:
        certificates = [ssl.Certificate.loadPEM(block.encode()) for block in blocks]
    except SSL.Error as exc:
        raise ValueError(f"{ca_file} holds a certificate that cannot be read: {exc}") from None
    return ssl.trustRootFromCertificates(certificates)
