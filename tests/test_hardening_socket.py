"""The call socket against input found by attacking voicews (issue 12), on a real twistd."""

from __future__ import annotations

import pytest

from conftest import Daemon, base_config
from wire import Call, closed_with

DEEP = "[" * 3000


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("sock"), base_config()).start()
    yield d
    assert d.stop() == 0


def test_deeply_nested_first_message_is_closed_with_a_reason(daemon):
    """Item 10: the first message `"[" * 3000` dropped the connection (1006) with a critical
    traceback.  Now: a close frame with a code and a reason, counted as rejected."""
    before = daemon.metric_or_zero("voicews_calls_total", 'outcome="rejected",pipeline=""')
    code, reason = closed_with(daemon.ws, DEEP)
    assert code in (1007, 1008)
    assert reason == "first message is nested too deeply"
    daemon.wait_metric("voicews_active_calls", 0)
    assert "Traceback" not in daemon.log() and "RecursionError" not in daemon.log()
    after = daemon.metric_or_zero("voicews_calls_total", 'outcome="rejected",pipeline=""')
    assert after == before + 1


def test_deeply_nested_later_message_is_closed_with_a_reason(daemon):
    with Call(daemon.ws, pipeline="echo") as call:
        call.echo_roundtrip(0, 2)
        call.ws.send(DEEP)
        code, reason = call.wait_closed()
    assert code in (1007, 1008)
    assert reason == "text message is nested too deeply"
    daemon.wait_metric("voicews_active_calls", 0)
    assert daemon.metric("voicews_calls_total", 'outcome="bad_message",pipeline="echo"') >= 1
    assert "Traceback" not in daemon.log() and "RecursionError" not in daemon.log()
    # The daemon still takes calls.
    with Call(daemon.ws, pipeline="echo") as call:
        call.echo_roundtrip(10, 3)
