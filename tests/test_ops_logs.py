"""Logs: one line when a call starts and one when it ends, with fields; JSON lines on request."""

from __future__ import annotations

import json

from conftest import base_config
from wire import Call, echo_call, random_frames


def test_text_log_has_one_line_at_start_and_end_of_a_call(start_daemon):
    daemon = start_daemon()
    sent, got = echo_call(daemon.ws, count=200, pipeline="louder", uuid="text-1")
    assert len(got) == len(sent)
    log = daemon.wait_log("call ended uuid=text-1")
    lines = [line for line in log.splitlines() if "text-1" in line]
    assert len(lines) == 2, lines  # nothing per frame
    assert "call started uuid=text-1 pipeline=louder rate=16000" in lines[0]
    assert "call ended uuid=text-1 pipeline=louder outcome=hangup" in lines[1]
    assert "frames_in=200 frames_out=200 code=1000" in lines[1]


def test_json_log_format_writes_one_json_object_per_line_with_fields(start_daemon):
    daemon = start_daemon(base_config(log_format="json"))
    sent, got = echo_call(daemon.ws, count=200, pipeline="echo", uuid="json-1",
                          conversation_uuid="conv-1")
    assert got == sent
    rejected = Call(daemon.ws, pipeline="nope", uuid="json-2")
    assert rejected.wait_closed()[0] == 1008
    daemon.wait_log('"call_ended"')
    assert daemon.stop() == 0

    records = [json.loads(line) for line in daemon.log().splitlines()]  # every line parses
    for record in records:
        assert {"time", "level", "namespace", "message"} <= record.keys(), record
    assert records[0]["namespace"] == "voicews.tap"  # the config it uses, first
    assert records[0]["config"] == str(daemon.config_path) and records[0]["chosen_by"] == "-c"
    assert records[1]["namespace"].startswith("twisted.")  # twistd's own lines too

    mine = [r for r in records if r.get("uuid") == "json-1"]
    assert [r["event"] for r in mine] == ["call_started", "call_ended"]  # nothing per frame
    started, ended = mine
    assert started["pipeline"] == "echo" and started["conversation_uuid"] == "conv-1"
    assert started["namespace"] == "voicews.call" and started["level"] == "info"
    assert started["message"].startswith("call started uuid=json-1 pipeline=echo")
    assert ended["outcome"] == "hangup" and ended["code"] == 1000
    assert ended["frames_in"] == 200 and ended["frames_out"] == 200
    assert isinstance(ended["duration"], float) and "reason" in ended

    closing = [r for r in records if r.get("reason") == "unknown pipeline 'nope'"]
    assert len(closing) == 1 and closing[0]["code"] == 1008 and closing[0]["level"] == "warn"
    assert closing[0]["outcome"] == "rejected"
    assert any(r.get("pipeline") == "nope" and r["level"] == "warn" for r in records)
    assert records[-1]["message"] == "Server Shut Down."


def test_json_log_keeps_failures_as_tracebacks(start_daemon, tmp_path):
    plugin = tmp_path / "boom.py"
    plugin.write_text(
        "from voicews import Processor, hookimpl\n"
        "class Boom(Processor):\n"
        "    name = 'boom'\n"
        "    def process(self, inbound, outbound):\n"
        "        raise RuntimeError('kaboom')\n"
        "@hookimpl\n"
        "def register_processors(register):\n"
        "    register(Boom)\n"
    )
    config = base_config(log_format="json", plugins=[str(plugin)])
    config["pipelines"]["boom"] = ["boom"]
    daemon = start_daemon(config)
    call = Call(daemon.ws, pipeline="boom", uuid="boom-1")
    call.ws.send(random_frames(1)[0])
    assert call.wait_closed()[0] == 1011
    daemon.wait_log('"call_ended"')
    records = [json.loads(line) for line in daemon.log().splitlines()]
    failed = [r for r in records if "traceback" in r]
    assert failed and "RuntimeError: kaboom" in failed[0]["traceback"]
    assert failed[0]["uuid"] == "boom-1" and failed[0]["level"] == "error"
