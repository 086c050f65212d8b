"""SIGHUP reloads config.yaml without touching live calls; SIGTERM drains and exits 0."""

from __future__ import annotations

import signal

import numpy as np
import yaml

from conftest import base_config
from wire import Call, RawCall, echo_call, random_frames

# A processor plugin that is not built in: it turns the caller's audio upside down.
INVERT_PLUGIN = '''
import numpy as np
from voicews import Processor, hookimpl


class Invert(Processor):
    name = "invert"

    def process(self, inbound, outbound):
        return np.clip(-inbound.astype(np.int32), -32768, 32767).astype(np.int16)


@hookimpl
def register_processors(register):
    register(Invert)
'''


def write_config(daemon, config: dict) -> None:
    daemon.config_path.write_text(yaml.safe_dump(config))


def test_sighup_adds_a_pipeline_and_live_calls_keep_theirs(start_daemon):
    daemon = start_daemon()
    live = Call(daemon.ws, pipeline="echo", uuid="live-1")
    before = random_frames(20)
    assert live.exchange_frames(before) == before

    # The new file redefines `echo` as louder and adds `quiet`.
    config = base_config()
    config["pipelines"]["echo"] = ["echo", {"gain": {"db": 6}}]
    config["pipelines"]["quiet"] = ["echo", {"gain": {"db": -6}}]
    write_config(daemon, config)
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded")
    assert daemon.get_json("/health")["pipelines"] == ["echo", "louder", "quiet"]

    # The live call still runs the echo it started with: bit-exact.
    after = random_frames(50, start=20)
    assert live.exchange_frames(after) == after
    # New calls get the new pipelines.
    sent, got = echo_call(daemon.ws, pipeline="quiet", start=3)
    assert len(got) == len(sent) and got != sent
    sent, got = echo_call(daemon.ws, pipeline="echo", start=4)
    assert len(got) == len(sent) and got != sent
    live.close()
    log = daemon.wait_log("call ended uuid=live-1")
    assert "call ended uuid=live-1 pipeline=echo outcome=hangup" in log


def test_sighup_with_a_broken_file_keeps_the_old_config(start_daemon):
    daemon = start_daemon()
    daemon.config_path.write_text("pipelines: [this is not\n  closed")
    daemon.signal(signal.SIGHUP)
    log = daemon.wait_log("reload refused")
    line = next(line for line in log.splitlines() if "reload refused" in line)
    assert "old config stays in force" in line
    assert str(daemon.config_path) in line and "YAML error" in line

    # An unknown processor is refused the same way, naming the key.
    config = base_config()
    config["pipelines"]["bad"] = ["no-such-processor"]
    write_config(daemon, config)
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("unknown processor 'no-such-processor'")

    assert daemon.get_json("/health")["pipelines"] == ["echo", "louder"]
    sent, got = echo_call(daemon.ws, pipeline="echo")
    assert got == sent
    assert daemon.proc.poll() is None


def test_sighup_loads_plugins_listed_anew(start_daemon):
    daemon = start_daemon()
    (daemon.workdir / "invert.py").write_text(INVERT_PLUGIN)
    live = Call(daemon.ws, pipeline="upside-down")
    assert live.wait_closed() == (1008, "unknown pipeline 'upside-down'")

    config = base_config(plugins=["invert.py"])
    config["pipelines"]["upside-down"] = ["invert"]
    write_config(daemon, config)
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded")

    sent, got = echo_call(daemon.ws, pipeline="upside-down", count=10)
    inverted = [
        np.clip(-np.frombuffer(f, "<i2").astype(np.int32), -32768, 32767).astype("<i2").tobytes()
        for f in sent
    ]
    assert got == inverted


def test_sigterm_says_goodbye_1001_and_exits_0(start_daemon):
    daemon = start_daemon(base_config(drain_timeout=10))
    live = Call(daemon.ws, pipeline="echo", uuid="drained-1")
    frames = random_frames(5)
    assert live.exchange_frames(frames) == frames

    daemon.signal(signal.SIGTERM)
    assert live.wait_closed() == (1001, "server shutting down")
    assert daemon.proc.wait(20) == 0
    log = daemon.log()
    assert "draining 1 calls" in log
    assert "call ended uuid=drained-1 pipeline=echo outcome=drained" in log
    assert "drain timeout" not in log


def test_a_call_that_ignores_the_goodbye_is_dropped_at_drain_timeout(start_daemon):
    daemon = start_daemon(base_config(drain_timeout=0.5))
    rude = RawCall(daemon.ws, pipeline="echo", uuid="rude-1")
    daemon.wait_log("call started uuid=rude-1")

    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(20) == 0
    assert rude.closed_by_server()
    rude.close()
    log = daemon.log()
    assert "drain timeout: dropping 1 calls" in log
    assert "call ended uuid=rude-1" in log


def test_sigterm_with_no_calls_exits_0_at_once(start_daemon):
    daemon = start_daemon()
    assert daemon.stop() == 0
    assert "draining" not in daemon.log()
