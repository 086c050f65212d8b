"""Every metric the Security section lists is really fed, live and after calls end."""

from __future__ import annotations

from wire import Call, frame


def test_metrics_are_fed(daemon):
    call = Call(daemon.ws, pipeline="echo")
    call.echo_roundtrip(0, 40)
    # Live values at scrape time, while the call is up.
    assert daemon.metric("voicews_active_calls") == 1
    assert daemon.metric("voicews_frames_in_total") == 40
    assert daemon.metric("voicews_frames_out_total") == 40
    call.close()
    daemon.wait_metric("voicews_active_calls", 0)
    # Ended calls keep their counts.
    assert daemon.metric("voicews_frames_in_total") == 40
    call = Call(daemon.ws, pipeline="louder")
    echo_roundtrip_any(call, 24)
    call.ws.send(b"\0")
    assert call.wait_closed()[0] == 1007
    daemon.wait_metric("voicews_active_calls", 0)
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


def echo_roundtrip_any(call: Call, count: int) -> None:
    """Frames whose reply is not the same bytes (a gain step): count them back."""
    for i in range(count):
        call.ws.send(frame(i))
        assert len(call.ws.recv(timeout=10)) == 640
