"""Prometheus metrics, served at /metrics in the text format by prometheus_client.

Label children are bound once per call (see :class:`CallMetrics`) so the
per-frame path does no label lookups.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

ACTIVE_CALLS = Gauge("voicews_active_calls", "Calls with an open socket", registry=REGISTRY)
CALLS = Counter(
    "voicews_calls",
    "Calls that ended, by pipeline and outcome",
    ["pipeline", "outcome"],
    registry=REGISTRY,
)
FRAMES_IN = Counter("voicews_frames_in", "Audio frames received from callers", registry=REGISTRY)
FRAMES_OUT = Counter("voicews_frames_out", "Audio frames sent to callers", registry=REGISTRY)
FRAMES_DROPPED = Counter(
    "voicews_frames_dropped",
    "Output frames dropped because a call's output buffer was full",
    registry=REGISTRY,
)
REJECTED = Counter(
    "voicews_rejected", "Requests and sockets refused, by reason", ["reason"], registry=REGISTRY
)
PROCESSING = Histogram(
    "voicews_processing_seconds",
    "Pipeline time per inbound frame",
    buckets=(5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2e-2),
    registry=REGISTRY,
)
WEBHOOKS = Counter(
    "voicews_webhooks", "Webhook requests, by route and status", ["route", "status"],
    registry=REGISTRY,
)


def render() -> bytes:
    """The metrics page."""
    return generate_latest(REGISTRY)


def rejected(reason: str) -> None:
    REJECTED.labels(reason=reason).inc()
