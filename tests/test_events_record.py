"""Call events without a daemon: the record an application gets (an oversized event keeps
its envelope and loses only its data; Vonage's notify answers are ``played``), and the
``events:`` config's mistakes named by key.  Through real twistd: test_events.py.
"""

from __future__ import annotations

import json

import pytest

from voicews import CallInfo, Event
from voicews.config.settings import ConfigError, load_settings
from voicews.runtime.events import AppEvent, EventBus


def test_an_oversized_event_reaches_the_app_without_its_data():
    bus = EventBus()
    got: list = []

    class Sink:
        def offer(self, event):
            got.append(event)

        def close(self):
            pass

    bus.subscribe(Sink())
    info = CallInfo(rate=8000, content_type="audio/l16;rate=8000", pipeline="p",
                    headers={"uuid": "u1", "conversation_uuid": "c1"})
    bus.publish(info, Event("transcript", {"text": "y" * 100_000}, "asr", 1.23456))
    bus.publish(info, Event("notify", {"payload": {"m": 1}}, "vonage", 2.0))
    bus.publish(info, Event("notify", {"payload": 2}, "my-step", 2.5))  # a step's own: as is
    big, played, own = (json.loads(e.text) for e in got)
    assert big == {"uuid": "u1", "conversation_uuid": "c1", "pipeline": "p",
                   "kind": "transcript", "time": 1.235, "source": "asr", "seq": 1,
                   "data": {"truncated": True, "bytes": big["data"]["bytes"]}}
    assert big["data"]["bytes"] > 100_000 and len(got[0].text) < 1000
    assert (played["kind"], played["data"]) == ("played", {"payload": {"m": 1}})
    assert own["kind"] == "notify"
    assert AppEvent.from_record(big).text == got[0].text  # what a cluster link would hand back


# -- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize("events, problem", [
    ({"url": "ftp://app.example.com/x"}, "events.url: expected http(s)://host"),
    ({"url": "https://app.example.com/x", "batch_size": 0}, "events.batch_size: must be greater"),
    ({"retries": -1}, "events.retries: must not be negative"),
    ({"max_queue": 1, "connections": 2}, "events.max_queue: must be at least events.connections"),
    ({"urls": "x"}, "events.urls: unknown key"),
])
def test_events_config_errors_name_the_key(tmp_path, events, problem):
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"events": events}))
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        load_settings(path)
