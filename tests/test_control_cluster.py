"""Two twistd workers sharing one Redis act as one control API.

Worker A holds a call (the simulator, paced in real time); everything is asked of worker
B.  Redis is a real redis-server on a loopback port, stopped mid-call by its PID and
started again: the call's audio must not notice (bit-exact echo throughout), B answers
503 meanwhile, A still acts on its own call, and once Redis is back B reaches the call
again without either worker being restarted.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
from test_cluster import RedisServer, needs_redis
from test_control import RATE, TOKEN, Live, api
from test_events import Receiver, Stream

from voicews.audio.samples import db_to_factor, saturate

from audio_checks import needs_espeak, spoken
from conftest import Daemon, base_config
from conftest import wait_for as poll

N = RATE // 50


def worker(folder, name: str, redis_url: str, events_url: str) -> Daemon:
    path = folder / name
    path.mkdir()
    config = base_config(
        security={"control_token": TOKEN},
        cluster={"redis": redis_url, "refresh": 0.2, "ttl": 1.0, "request_timeout": 2.0},
        events={"url": events_url},
    )
    return Daemon(path, config).start()


wait_for = functools.partial(poll, timeout=15.0)


def listed(daemon: Daemon) -> dict[str, str]:
    """uuid -> worker, as `daemon` lists every worker's calls (empty unless 200)."""
    status, answer = api(daemon, "GET", "/calls")
    return {c["uuid"]: c["worker"] for c in answer["calls"]} if status == 200 else {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    redis = RedisServer().start()
    app = Receiver()
    workers = []
    try:
        workers.append(worker(folder, "a", redis.url, app.url))
        workers.append(worker(folder, "b", redis.url, app.url))
        yield redis, workers[0], workers[1], app
    finally:
        for daemon in workers:
            daemon.stop()
        app.close()
        redis.cleanup()


@needs_redis
def test_a_call_held_by_a_is_listed_switched_and_hung_up_through_b(cluster):
    redis, a, b, _ = cluster
    voice = np.random.default_rng(5).integers(-8000, 8000, 30 * RATE).astype("<i2")
    held = Live(a, "held-by-a", play=voice, seconds=30)
    other = Live(b, "held-by-b", seconds=1.0)
    name_a = held.info()["worker"]
    assert other.info()["worker"] != name_a
    both = {"held-by-a", "held-by-b"}
    wait_for(lambda: both <= set(listed(b)) and both <= set(listed(a)), "both calls on both")
    assert listed(b)["held-by-a"] == name_a
    status, info = api(b, "GET", "/calls/held-by-a")
    assert status == 200 and info["worker"] == name_a and info["pipeline"] == "echo"
    assert other.end().ok

    # Redis goes away mid-call: B cannot reach A's call (503, fast), A still can.
    redis.stop()
    a.wait_log("cross-worker control answers 503")
    b.wait_log("cross-worker control answers 503")
    for _ in range(5):
        started = time.monotonic()
        status, answer = api(b, "POST", "/calls/held-by-a/pipeline", {"name": "louder"})
        assert status == 503 and f"127.0.0.1:{redis.port}" in answer["error"]
        assert time.monotonic() - started < 1.0
    status, answer = api(b, "GET", "/calls")
    assert status == 503 and answer["complete"] is False and answer["calls"] == []
    status, answer = api(a, "GET", "/calls")  # A lists what it holds, in the 503's body
    assert status == 503 and [c["uuid"] for c in answer["calls"]] == ["held-by-a"]
    assert api(a, "POST", "/calls/held-by-a/notify", {"payload": {"local": True}})[0] == 200

    # Redis is back (same port, empty): the workers reconnect and register by themselves.
    redis.start()
    wait_for(lambda: listed(b).get("held-by-a") == name_a, "A's call listed by B again")
    frames = held.info()["frames_in"]
    status, answer = api(b, "POST", "/calls/held-by-a/pipeline", {"name": "louder"})
    assert status == 200 and (answer["worker"], answer["previous"]) == (name_a, "echo")
    switched_by = held.info()["frames_in"]
    assert listed(b)["held-by-a"] == name_a
    held.wait_frames(switched_by + 25)
    status, answer = api(b, "POST", "/calls/held-by-a/hangup", {})
    assert (status, answer["outcome"], answer["worker"]) == (200, "hangup_api", name_a)

    result = held.end()
    assert (result.close_code, result.closed_by) == (1000, "server")
    heard = result.received.reshape(-1, N)
    sent = result.sent.reshape(-1, N)[: len(heard)]
    echoed = np.all(heard == sent, axis=1)
    switch = int(np.argmin(echoed))
    assert frames <= switch <= switched_by
    assert echoed[:switch].all()  # bit-exact through the whole outage
    louder = saturate(sent[switch:].astype(np.float64) * db_to_factor(6))
    assert np.array_equal(heard[switch:], louder)
    assert "outcome=hangup_api" in a.wait_log("call ended uuid=held-by-a")
    assert "control hangup uuid=held-by-a routed here -> 200" in a.log()
    assert f"control hangup uuid=held-by-a -> 200 worker={name_a}" in b.log()
    for daemon in (a, b):  # one line per outage, however many requests met it
        assert daemon.log().count("cross-worker control answers 503") == 1
        assert daemon.log().count("registers its calls again") == 1
    assert api(b, "GET", "/calls/held-by-a")[0] == 404


@needs_redis
@needs_espeak
def test_say_through_b_speaks_in_a_call_held_by_a_and_answers_with_its_outcome(cluster):
    _, a, b, _ = cluster
    call = Live(a, "say-via-b", seconds=7.0)
    name_a = call.info()["worker"]
    wait_for(lambda: listed(b).get("say-via-b") == name_a, "A's call listed by B")
    status, answer = api(b, "POST", "/calls/say-via-b/say", {"text": "Hello."})
    assert status == 200, answer
    assert (answer["outcome"], answer["worker"]) == ("played", name_a)
    # Longer than cluster.request_timeout (2 s here): B gives up waiting, A goes on saying it.
    long_text = "This one takes longer to say than the cluster waits for an answer."
    status, answer = api(b, "POST", "/calls/say-via-b/say", {"text": long_text})
    assert status == 504 and "did not answer within 2.0 s" in answer["error"]
    result = call.end()
    heard = result.received
    speech = spoken("Hello.")
    start = int(np.flatnonzero(heard)[0]) // N * N
    assert np.array_equal(heard[start: start + len(speech)], speech)
    longer = spoken(long_text)
    assert len(longer) > 3 * RATE
    assert any(np.array_equal(heard[at: at + len(longer)], longer)  # said in full
               for at in range(start + len(speech) // N * N, len(heard) - len(longer), N))
    assert "control say uuid=say-via-b routed here -> 200" in a.log()


@needs_redis
def test_call_events_reach_every_workers_stream_and_the_app_once(cluster):
    """A's call events stream from B's /events too; the app gets each one once (from A)."""
    _, a, b, app = cluster
    streams = {"a": Stream(a, token=TOKEN), "b": Stream(b, token=TOKEN)}
    try:
        call = Live(a, "evented", seconds=1.0)
        name_a = call.info()["worker"]
        for stream in streams.values():
            stream.wait(lambda s=stream: "call_ended" in s.kinds("evented"))
        seen = {name: [r for _, r in s.records if r["uuid"] == "evented"]
                for name, s in streams.items()}
    finally:
        for stream in streams.values():
            stream.close()
    assert [r["kind"] for r in seen["a"]] == [r["kind"] for r in seen["b"]]
    assert [r["kind"] for r in seen["b"]][0] == "call_started"
    assert {r["worker"] for r in seen["b"]} == {name_a}
    posted = [e for e in app.wait(lambda events: any(
        e["uuid"] == "evented" and e["kind"] == "call_ended" for e in events))
        if e["uuid"] == "evented"]
    assert sorted(e["seq"] for e in posted) == sorted(r["seq"] for r in seen["a"])
