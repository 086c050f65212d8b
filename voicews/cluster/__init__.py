"""Many workers, one API: the link between voicews workers through one Redis.

Only with ``cluster: {redis: redis://host:6379/0}``; without it nothing here is imported
and voicews runs as one process with no Redis.  Each worker (systemd socket activation
shares one listening socket among N processes; nginx spreads over hosts) holds some live
calls; a control request lands on any of them.  A :class:`ClusterLink` (a Twisted service)
gives every worker:

- ``list_calls()``: every worker's live calls, each tagged with its "worker";
- ``locate(uuid)`` and ``request(uuid, action, body)``: an action on a call held
  elsewhere runs on the holder's ``handle`` and answers with its result;
- ``publish_event``/``subscribe_events``: call events from any worker, on any worker.

Redis down: calls are never touched; remote operations fail at once with
:class:`ClusterUnavailable` (answer 503), a holder that does not answer in time with
:class:`ClusterTimeout` (504); both carry ``status`` and ``reason``.  Reconnection is
automatic with backoff, and an outage is two log lines: down, then back.

The client is txredisapi, Twisted-native, on the daemon's own epoll reactor; why, with
figures, in :mod:`voicews.cluster.connection`.  The Redis layout and the expiry bound are
in :mod:`voicews.cluster.layout`.  Import this after the reactor is installed (twistd does
that before it loads the service): txredisapi imports the global reactor.
"""

from voicews.cluster.connection import (
    ClusterError,
    ClusterTimeout,
    ClusterUnavailable,
    RedisAddress,
    parse_redis_url,
)
from voicews.cluster.events import EventFanout
from voicews.cluster.link import ClusterLink, ClusterOptions

__all__ = [
    "ClusterError",
    "ClusterLink",
    "ClusterOptions",
    "ClusterTimeout",
    "ClusterUnavailable",
    "EventFanout",
    "RedisAddress",
    "parse_redis_url",
]
