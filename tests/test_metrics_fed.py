"""Every metric the Security section lists is really fed, live and after calls end."""

from __future__ import annotations

from sec_helpers import echo_roundtrip, expect_close, frame, open_call, wait_metric


def test_metrics_are_fed(daemon):
    ws = open_call(daemon, "echo")
    echo_roundtrip(ws, 0, 40)
    # Live values at scrape time, while the call is up.
    assert daemon.metric("voicews_active_calls") == 1
    assert daemon.metric("voicews_frames_in_total") == 40
    assert daemon.metric("voicews_frames_out_total") == 40
    ws.close()
    wait_metric(daemon, "voicews_active_calls", 0)
    # Ended calls keep their counts.
    assert daemon.metric("voicews_frames_in_total") == 40
    ws = open_call(daemon, "louder")
    echo_roundtrip_any(ws, 24)
    ws.send(b"\0")
    assert expect_close(ws)[0] == 1007
    wait_metric(daemon, "voicews_active_calls", 0)
    assert daemon.metric("voicews_frames_in_total") == 64
    assert daemon.metric("voicews_frames_out_total") == 64
    assert daemon.metric("voicews_calls_total", 'outcome="hangup",pipeline="echo"') == 1
    assert daemon.metric("voicews_calls_total", 'outcome="bad_frame",pipeline="louder"') == 1
    # One frame in 16 is timed: 40 // 16 + 24 // 16 = 3 observations.
    assert daemon.metric("voicews_processing_seconds_count") == 3
    assert daemon.metric("voicews_processing_seconds_sum") > 0
    status, _, _ = daemon.request("/webhooks/answer", b"{", {"Content-Type": "application/json"},
                                  "POST")
    assert status == 400
    assert daemon.metric("voicews_rejected_total", 'reason="bad_request"') == 1


def echo_roundtrip_any(ws, count: int) -> None:
    """Frames whose reply is not the same bytes (a gain step): count them back."""
    for i in range(count):
        ws.send(frame(i))
        assert len(ws.recv(timeout=10)) == 640
