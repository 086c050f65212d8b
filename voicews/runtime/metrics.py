"""Prometheus metrics, served at /metrics in the text format by prometheus_client.

The per-frame path does no metric work of its own: frames are counted by each
call's plain integers (``frames_in``, ``frames_out``) and :class:`LiveCounter`
adds up the live calls' counts at scrape time plus the totals of calls that
have ended.  A prometheus ``Counter.inc()`` takes a lock and costs about a
microsecond; at 50 frames a second each way per call that was measurable.
Pipeline time is observed for one frame in :data:`PROCESSING_SAMPLE` only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

if TYPE_CHECKING:
    from voicews.runtime.calls import CallRecord, CallRegistry

REGISTRY = CollectorRegistry(auto_describe=True)

ACTIVE_CALLS = Gauge("voicews_active_calls", "Calls with an open socket", registry=REGISTRY)
CALLS = Counter(
    "voicews_calls",
    "Calls that ended, by pipeline and outcome",
    ["pipeline", "outcome"],
    registry=REGISTRY,
)


class LiveCounter:
    """A counter (``<name>_total``) read from live calls at scrape, plus ended calls' totals."""

    def __init__(self, name: str, documentation: str, read: Callable[[CallRecord], int]) -> None:
        self.name = name
        self.documentation = documentation
        self.read = read
        self.ended = 0
        self.calls: CallRegistry | None = None

    def describe(self) -> Iterable[CounterMetricFamily]:
        return [CounterMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterable[CounterMetricFamily]:
        live = 0
        if self.calls is not None:
            for call in self.calls:
                live += self.read(call)
        family = CounterMetricFamily(self.name, self.documentation)
        family.add_metric([], self.ended + live)
        return [family]

    def call_ended(self, count: int) -> None:
        """Add a call's count as it leaves the live set (same reactor turn, so never twice)."""
        self.ended += count


FRAMES_IN = LiveCounter(
    "voicews_frames_in", "Audio frames received from callers", lambda call: call.frames_in
)
FRAMES_OUT = LiveCounter(
    "voicews_frames_out", "Audio frames sent to callers", lambda call: call.frames_out
)
REGISTRY.register(FRAMES_IN)
REGISTRY.register(FRAMES_OUT)


def watch_calls(calls: CallRegistry) -> None:
    """Tell the scrape-time collectors where the live calls are."""
    FRAMES_IN.calls = calls
    FRAMES_OUT.calls = calls


FRAMES_DROPPED = Counter(
    "voicews_frames_dropped",
    "Output frames dropped because a call's output buffer was full",
    registry=REGISTRY,
)
REJECTED = Counter(
    "voicews_rejected", "Requests and sockets refused, by reason", ["reason"], registry=REGISTRY
)
CONTROL_ACTIONS = Counter(
    "voicews_control_actions",
    "Control API requests (/calls), by action and result",
    ["action", "result"],
    registry=REGISTRY,
)
EVENTS = Counter(
    "voicews_events", "Call events published to the application (callbacks, /events)",
    registry=REGISTRY,
)
EVENTS_DELIVERED = Counter(
    "voicews_events_delivered", "Call events the application's callback URL accepted (2xx)",
    registry=REGISTRY,
)
EVENTS_DROPPED = Counter(
    "voicews_events_dropped",
    "Call events lost: sink callback (reason queue_full, failed, rejected, stopped) or "
    "stream (reason slow_client, closed)",
    ["sink", "reason"], registry=REGISTRY,
)
EVENT_POSTS = Counter(
    "voicews_event_posts", "Callback POSTs by result (ok, retry, rejected)", ["result"],
    registry=REGISTRY,
)
EVENTS_QUEUED = Gauge(
    "voicews_events_queued", "Call events waiting for the callback URL (in flight included)",
    registry=REGISTRY,
)
EVENT_STREAMS = Gauge("voicews_event_streams", "Open /events streams", registry=REGISTRY)
PROCESSING = Histogram(
    "voicews_processing_seconds",
    "Pipeline time per inbound frame (one frame in PROCESSING_SAMPLE is timed)",
    buckets=(5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2e-2),
    registry=REGISTRY,
)
REACTOR_STALLS = Counter(
    "voicews_reactor_stalls",
    "Reactor turns longer than limits.stall_seconds (every call's audio waited)",
    registry=REGISTRY,
)
PROCESSING_SAMPLE = 16
"""Time one inbound frame in this many: 3 observations a second per call, not 50."""


def render() -> bytes:
    """The metrics page."""
    return generate_latest(REGISTRY)


def rejected(reason: str) -> None:
    REJECTED.labels(reason=reason).inc()
