"""What the cluster keeps in Redis, and the timings that bound it.

Redis layout (``p`` is the prefix, ``voicews:`` by default):

- ``{p}worker:{w}`` string: worker w's live calls, a JSON list of dicts each tagged
  ``"worker": w``; written every ``refresh`` seconds with a ``ttl`` expiry.
- ``{p}call:{uuid}`` string: the worker holding the call, same expiry; deleted by the
  holder's next registration once the call has ended.
- ``{p}workers`` sorted set: the workers that registered, scored with the Redis server's
  time their registration runs out (ms); only an index for ``list_calls``, pruned at each
  registration.  The keys' own expiry is the authority, so no worker's clock matters.
- channel ``{p}to:{w}``: requests to worker w and replies to w's requests, JSON.
- channel ``{p}events``: call events, JSON ``{"worker": w, "event": {...}}``.

A registration is one Lua script (atomic, Redis's clock: needs Redis >= 5).  A SIGKILLed
worker's calls vanish from ``list_calls``/``locate`` at most ``ttl`` seconds after its last
registration, so at most ``ttl`` after the kill (6 s by default).  A worker that stops
cleanly deletes its registration at once.
"""

from __future__ import annotations

from dataclasses import dataclass

# KEYS: workers, this worker's key, the live calls' keys, then the ended calls' keys.
# ARGV: worker, ttl in ms, the calls as JSON, how many live calls.
REGISTER = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[2])
local live = tonumber(ARGV[4])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ttl)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 3, live + 2 do redis.call('SET', KEYS[i], ARGV[1], 'PX', ttl) end
for i = live + 3, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return live
"""

# KEYS: workers, this worker's key, its calls' keys.  ARGV: worker.
UNREGISTER = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
for i = 3, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 1
"""


@dataclass(frozen=True)
class ClusterOptions:
    """Timings and limits; the defaults suit production, tests shorten them."""

    prefix: str = "voicews:"
    refresh: float = 2.0  # seconds between registrations (and subscriber PINGs)
    ttl: float = 6.0  # a registration's lifetime: the bound on a dead worker's ghost calls
    request_timeout: float = 5.0  # a remote action not answered by then: ClusterTimeout
    reply_timeout: float = 2.0  # a Redis command not answered by then: connection dropped
    connect_timeout: float = 2.0
    retry_initial: float = 0.5  # reconnection backoff: doubles from this...
    retry_max: float = 10.0  # ...up to this
    max_pending: int = 1000  # remote requests waiting for a reply, at most
    event_queue: int = 256  # events held for a slow subscriber before the oldest go

    def __post_init__(self) -> None:
        if not 0 < self.refresh < self.ttl:
            raise ValueError("cluster: refresh must be positive and shorter than ttl")
        if min(self.request_timeout, self.reply_timeout, self.connect_timeout,
               self.retry_initial, self.retry_max) <= 0:
            raise ValueError("cluster: timeouts and retry delays must be positive")


@dataclass(frozen=True)
class Keys:
    """The names of our keys and channels under one prefix."""

    prefix: str

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    def worker(self, worker: str) -> str:
        return f"{self.prefix}worker:{worker}"

    def call(self, uuid: str) -> str:
        return f"{self.prefix}call:{uuid}"

    def channel(self, worker: str) -> str:
        return f"{self.prefix}to:{worker}"
