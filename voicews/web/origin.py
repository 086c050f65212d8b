"""Where the caller reached us: the host and scheme the answer NCCO points Vonage back to.

Without ``public_url`` the NCCO's socket and event URLs are built from the request.  The
``Host`` header is used only if it is a plain ``host[:port]`` (no path, query, fragment or
user info), else the webhook is a 400: a client cannot make the NCCO send Vonage anywhere
else.  ``X-Forwarded-Host`` and ``X-Forwarded-Proto`` are believed only from a peer in
``trusted_proxies`` (IP addresses or networks); from anyone else they are ignored.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import TYPE_CHECKING

from twisted.web.iweb import IRequest

from voicews.web.auth import Refused, header

if TYPE_CHECKING:
    from voicews.config.settings import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_HOST = 260
"""A DNS name is at most 253 characters; with ":65535" a Host is at most 259."""

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(
    rf"(?:(?:{_LABEL}\.)*{_LABEL}\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?"
)


def valid_host(value: str) -> bool:
    """Whether `value` is ``name[:port]``, ``a.b.c.d[:port]`` or ``[v6][:port]``, nothing more."""
    if len(value) > MAX_HOST or not _HOST.fullmatch(value):
        return False
    if value.startswith("["):
        address, _, port = value[1:].partition("]")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return False
        port = port[1:]
    else:
        port = value.rpartition(":")[2] if ":" in value else ""
    return not port or 0 < int(port) < 65536


@functools.lru_cache(maxsize=8)
def networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    """config's ``trusted_proxies`` parsed (settings.py has checked each already)."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def from_trusted_proxy(request: IRequest, settings: Settings) -> bool:
    trusted = networks(tuple(settings.raw.trusted_proxies))
    if not trusted:
        return False
    peer = getattr(request.getClientAddress(), "host", None)
    try:
        address = ipaddress.ip_address(str(peer).split("%")[0])
    except ValueError:
        return False  # a unix socket or a name: not an address we were told to trust
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


def _first(value: str | None) -> str | None:
    """The first (client-side) entry of a comma-separated forwarded header."""
    if value is None:
        return None
    return value.split(",")[0].strip() or None


def request_origin(request: IRequest, settings: Settings) -> tuple[str | None, bool]:
    """The (host, secure) the caller used; Refused(400) for a Host that is not host[:port]."""
    secure = request.isSecure()
    host = header(request, "host")
    if from_trusted_proxy(request, settings):
        host = _first(header(request, "x-forwarded-host")) or host
        proto = (_first(header(request, "x-forwarded-proto")) or "").lower()
        secure = secure or proto in ("https", "wss")
    if host is not None and not valid_host(host):
        raise Refused(400, "Host is not a valid host[:port]", "bad_request")
    return host, secure
