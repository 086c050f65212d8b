"""Call events to the application: HTTP callbacks and the /events stream, through real twistd.

A small HTTP receiver in a thread plays the application; a plugin step (tests/plugins/
chatter.py) emits as many events as a test needs.  What a user would check: every event
arrives, signed, in order per call, batched when they come fast; a dead or slow
application costs neither audio nor memory and its losses are counted; the stream is
behind the control token, filters by call, is live, and drops a client that never reads.
The event record in-process and the ``events:`` config: test_events_record.py.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from voicews.simulator import CallSpec, simulate, simulate_many
from voicews.vonage.tokens import verify_token

from conftest import REPO, base_config, free_port
from wire import Call, Witness

CHATTER = str(REPO / "tests" / "plugins" / "chatter.py")
SECRET = "events-test-signature-secret-0123456789"
TOKEN = "events-test-control-token"


def events_config(url: str | None, **events) -> dict:
    return base_config(
        plugins=[CHATTER],
        pipelines={"echo": ["echo"], "chatter": [{"chatter": {"count": 0}}]},
        security={"signature_secret": SECRET, "control_token": TOKEN},
        events={"url": url, **events} if url else events,
    )


def chatter(count: int, per_frame: int = 1, size: int = 0, odd: bool = False) -> dict:
    """First-message headers selecting a chatter pipeline (the plugin's params come from
    config; see `chatter_pipelines`)."""
    return {"pipeline": f"chatter-{count}-{per_frame}-{size}-{int(odd)}"}


def chatter_pipelines(*shapes: tuple[int, int, int, bool]) -> dict:
    return {
        f"chatter-{c}-{p}-{s}-{int(o)}": [
            {"chatter": {"count": c, "per_frame": p, "size": s, "odd": o}}
        ]
        for c, p, s, o in shapes
    }


class Receiver:
    """The application: records each POST it accepts; may be slow or fail the first ones."""

    def __init__(self, delay: float = 0.0, fail_first: int = 0) -> None:
        self.posts: list[tuple[float, dict, bytes]] = []
        self.refused = 0
        self.delay = delay
        self.fail_first = fail_first
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                time.sleep(receiver.delay)
                with receiver.lock:
                    fail = receiver.refused < receiver.fail_first
                    if fail:
                        receiver.refused += 1
                    else:
                        receiver.posts.append((time.monotonic(), dict(self.headers), body))
                try:
                    self.send_response(503 if fail else 204)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the daemon gave up on us

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/voice-events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict]:
        with self.lock:
            return [record for _, _, body in self.posts for record in json.loads(body)]

    def wait(self, predicate, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if predicate(events) or time.monotonic() > deadline:
                return events
            time.sleep(0.02)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def ended(uuids):
    return lambda events: {e["uuid"] for e in events if e["kind"] == "call_ended"} >= set(uuids)


class Stream:
    """An /events client in a thread, recording (arrival time, record) for each message."""

    def __init__(self, daemon, query: str = "", token: str | None = TOKEN) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=20)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.conn.request("GET", "/events" + query, headers=headers)
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.records: list[tuple[float, dict]] = []
        self.ended = threading.Event()
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()
        else:
            self.body = self.response.read()
            self.ended.set()

    def _read(self) -> None:
        try:
            for line in iter(self.response.readline, b""):
                if line.startswith(b"data: "):
                    self.records.append((time.monotonic(), json.loads(line[6:])))
        except (OSError, http.client.HTTPException, ValueError):
            pass
        self.ended.set()

    def kinds(self, uuid: str) -> list[str]:
        return [r["kind"] for _, r in self.records if r["uuid"] == uuid]

    def wait(self, predicate, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        sock = self.conn.sock
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)  # the reader sees the end, then we close
        self.ended.wait(5)
        self.conn.close()


# -- HTTP callbacks --------------------------------------------------------------------------


def test_callbacks_arrive_signed_in_order_per_call_and_batched_under_load(start_daemon, receiver):
    app = receiver(delay=0.05, fail_first=2)  # slow enough for events to pile up; two 503s
    config = events_config(app.url, backoff=0.05)
    config["pipelines"].update(chatter_pipelines((300, 10, 0, True)))
    daemon = start_daemon(config)
    specs = [
        CallSpec(socket_uri=daemon.ws, headers={**chatter(300, 10, 0, True), "uuid": f"call-{i}"},
                 fast=True, seconds=1.0, dtmf=[("5", 0.2)])
        for i in range(3)
    ]
    results = simulate_many(specs)
    assert all(r.ok for r in results), [r.error for r in results]
    uuids = [f"call-{i}" for i in range(3)]
    events = app.wait(ended(uuids))
    assert ended(uuids)(events), [e["kind"] for e in events][-20:]

    assert app.refused == 2
    for _, headers, body in app.posts:
        assert headers["Content-Type"] == "application/json"
        token = headers["Authorization"].removeprefix("Bearer ")
        claims = verify_token(token, SECRET, body)  # raises when not signed for this body
        assert claims["iss"] == "voicews"
        assert isinstance(json.loads(body), list)
    sizes = [len(json.loads(body)) for _, _, body in app.posts]
    assert max(sizes) > 1 and len(app.posts) < len(events), sizes  # batched when fast
    assert max(sizes) <= 50

    for uuid in uuids:
        mine = [e for e in events if e["uuid"] == uuid]
        kinds = [e["kind"] for e in mine]
        # Each call's events once each, in the order they happened (the 503s were retried).
        assert kinds[0] == "call_started" and kinds[-1] == "call_ended"
        assert [e["data"]["n"] for e in mine if e["kind"] == "chat"] == list(range(300))
        assert [e["seq"] for e in mine] == sorted({e["seq"] for e in mine})
        times = [e["time"] for e in mine]
        assert times == sorted(times)
        assert mine[-1]["data"] == {"outcome": "hangup"}
        for e in mine:
            assert set(e) == {"uuid", "conversation_uuid", "pipeline", "kind", "time", "source",
                              "seq", "data"}
            assert e["pipeline"] == "chatter-300-10-0-1"
        (dtmf,) = [e for e in mine if e["kind"] == "dtmf"]
        assert dtmf["source"] == "vonage" and dtmf["data"] == {"digit": "5", "duration": 260}
        # Vonage's notify (our mark played) reaches the app as `played`, payload kept.
        (played,) = [e for e in mine if e["kind"] == "played"]
        assert played["source"] == "vonage" and played["data"] == {"payload": {"key": "5"}}
        assert played["time"] > dtmf["time"]
        (odd,) = [e for e in mine if e["kind"] == "odd"]
        assert odd["source"] == "chatter"
        data = odd["data"]
        assert data["blob"] == repr(b"\x00\x01") and data["thing"].startswith("<object object")
        assert data["nan"] == "nan" and data["numpy"] == 7 and data["pair"] == [1, 2]
        assert data["keys"] == {"3": "three"}
    published = daemon.metric("voicews_events_total")
    assert daemon.metric("voicews_events_delivered_total") == published == len(events)


def test_a_dead_or_slow_app_costs_no_audio_and_bounded_memory(start_daemon, receiver):
    """10,000 events of 4 KB each (40 MB) at an app that refuses, then one that takes 5 s."""
    slow = receiver(delay=5.0)
    for url in (f"http://127.0.0.1:{free_port()}/nobody", slow.url):
        config = events_config(url, max_queue=200, timeout=1.0, retries=2, backoff=0.2)
        config["drain_timeout"] = 1
        config["pipelines"].update(chatter_pipelines((10, 10, 4000, False),
                                                     (10000, 100, 4000, False)))
        daemon = start_daemon(config)
        warm = simulate(CallSpec(socket_uri=daemon.ws, headers=chatter(10, 10, 4000),
                                 fast=True, seconds=0.5))
        assert warm.ok, warm.error
        before = daemon.rss_kb()
        with Witness(daemon) as witness:
            flood = simulate(CallSpec(socket_uri=daemon.ws, headers=chatter(10000, 100, 4000),
                                      fast=True, seconds=2.4))
            assert flood.ok, flood.error
            assert flood.received.tobytes() == flood.sent.tobytes()  # its own echo: bit-exact
            daemon.wait_metric("voicews_active_calls", 1)
            grown = daemon.rss_kb() - before
        assert witness.frames > 0  # and it stayed bit-exact throughout (checked on exit)
        assert grown < 20_000, f"RSS grew {grown} kB for 40 MB of events"
        page = daemon.request("/metrics")[2].decode()  # one scrape: a consistent count
        metric = _metrics(page)
        dropped = sum(v for k, v in metric.items() if k.startswith("voicews_events_dropped_total"))
        published = metric["voicews_events_total"]
        assert published >= 10_000
        assert dropped >= 10_000 - 200 - 100  # all but a queue's worth (and a batch or two)
        assert metric["voicews_events_queued"] <= 200
        assert (metric["voicews_events_delivered_total"] + dropped
                + metric["voicews_events_queued"]) == published
        log = daemon.wait_log("event callbacks to ")
        assert log.count("event callbacks to ") == 1, log  # one line for the whole outage
        assert log.count("event callbacks: dropping events") == 1


def _metrics(page: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in page.splitlines() if line.startswith("voicews_event")
    }


def test_stopping_flushes_the_callbacks_and_ends_the_streams(start_daemon, receiver):
    app = receiver()
    daemon = start_daemon(events_config(app.url))
    stream = Stream(daemon)
    with Call(daemon.ws, pipeline="echo", uuid="held-call") as call:
        call.echo_roundtrip(0, 3)
        daemon.signal(15)
        assert call.wait_closed()[0] == 1001
    assert daemon.proc.wait(20) == 0
    kinds = [(e["kind"], e["data"]) for e in app.events() if e["uuid"] == "held-call"]
    assert kinds == [("call_started", {}), ("call_ended", {"outcome": "drained"})]
    assert stream.ended.wait(5)
    assert stream.kinds("held-call") == ["call_started", "call_ended"]


# -- the /events stream ----------------------------------------------------------------------


def test_the_stream_needs_the_control_token(start_daemon):
    off = start_daemon(base_config())
    refused = Stream(off, token="anything")
    assert refused.status == 403
    assert "security.control_token" in json.loads(refused.body)["error"]
    daemon = start_daemon(events_config(None))
    missing = Stream(daemon, token=None)
    assert missing.status == 401 and missing.response.getheader("www-authenticate") == "Bearer"
    assert Stream(daemon, token="wrong").status == 403
    assert Stream(daemon, query=f"?token={TOKEN}", token=None).status == 401  # header only
    assert daemon.metric("voicews_rejected_total", 'reason="events_auth"') == 3
    assert off.metric("voicews_rejected_total", 'reason="events_off"') == 1


def test_a_calls_events_arrive_live_and_the_uuid_filter_keeps_one_call(start_daemon):
    daemon = start_daemon(events_config(None))
    everything = Stream(daemon)
    one = Stream(daemon, "?uuid=live-a")
    spec = dict(socket_uri=daemon.ws, seconds=3.0, events=True, control_token=TOKEN)
    a, b = simulate_many([
        CallSpec(headers={"pipeline": "echo", "uuid": "live-a"}, dtmf=[("1", 0.5)], **spec),
        CallSpec(headers={"pipeline": "echo", "uuid": "live-b"}, dtmf=[("2", 0.5)], **spec),
    ])
    assert a.ok and b.ok, (a.error, b.error)
    for result, digit in ((a, "1"), (b, "2")):
        assert [e["kind"] for e in result.events] == ["call_started", "dtmf", "call_ended"]
        assert {e["uuid"] for e in result.events} == {result.uuid}
        assert result.events[1]["data"]["digit"] == digit
        # Live: the key press (0.5 s in) arrived while the 3 s call was still running.
        assert result.events_received_at[1] < 2.0 < result.duration - 0.5
    everything.wait(lambda: "call_ended" in everything.kinds("live-b"))
    one.wait(lambda: "call_ended" in one.kinds("live-a"))
    assert everything.kinds("live-a") == everything.kinds("live-b") == [
        "call_started", "dtmf", "call_ended"]
    assert {r["uuid"] for _, r in one.records} == {"live-a"}
    assert daemon.metric("voicews_event_streams") == 2  # the simulated calls' have closed
    for stream in (everything, one):
        stream.close()
    daemon.wait_metric("voicews_event_streams", 0)  # a client going away unsubscribes


def test_a_client_that_never_reads_is_bounded_and_dropped(start_daemon):
    """40 MB of events over a 4 s call: more than the kernel's socket buffers can hold."""
    config = events_config(None, stream_queue=100, stream_timeout=1.0)
    config["pipelines"].update(chatter_pipelines((10, 10, 4000, False), (10000, 50, 4000, False)))
    daemon = start_daemon(config)
    warm = simulate(CallSpec(socket_uri=daemon.ws, headers=chatter(10, 10, 4000), fast=True,
                             seconds=0.5))
    assert warm.ok
    before = daemon.rss_kb()
    lazy = socket.socket()
    lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lazy.connect(("127.0.0.1", daemon.port))
    lazy.sendall(f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
                 .encode())
    reader = Stream(daemon)  # a client that reads keeps its stream
    daemon.wait_metric("voicews_event_streams", 2)
    with Witness(daemon):
        flood = simulate(CallSpec(socket_uri=daemon.ws,
                                  headers={**chatter(10000, 50, 4000), "uuid": "flood"},
                                  seconds=4.0))
        assert flood.ok, flood.error
        daemon.wait_metric("voicews_event_streams", 1)  # the lazy one was cut off
        grown = daemon.rss_kb() - before
    assert grown < 20_000, f"RSS grew {grown} kB for 40 MB of events"
    assert daemon.metric("voicews_events_dropped_total", 'reason="slow_client",sink="stream"') > 0
    assert "read nothing for 1 s: disconnected" in daemon.log()
    lazy.settimeout(10)
    with contextlib.suppress(ConnectionResetError):  # cut off: what it had not read is gone
        while lazy.recv(1 << 20):
            pass
    lazy.close()
    reader.wait(lambda: "call_ended" in reader.kinds("flood"))
    chats = [r["data"]["n"] for _, r in reader.records if r["kind"] == "chat"]
    assert chats == sorted(chats) and len(chats) > 0
    reader.close()


# -- voicews-call --events -------------------------------------------------------------------


def test_voicews_call_prints_the_calls_events(start_daemon):
    daemon = start_daemon(events_config(None))
    env = {**os.environ, "PYTHONPATH": str(REPO), "VOICEWS_CONTROL_TOKEN": TOKEN}
    command = [sys.executable, "-m", "voicews.simulator", f"{daemon.base}/webhooks/answer",
               "--seconds", "1", "--dtmf", "4@0.3", "--events", "-q",
               "--signature-secret", SECRET]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
    lines = done.stdout.splitlines()
    assert [line.split()[3] for line in lines[:3]] == ["call_started", "dtmf", "call_ended"]
    assert lines[1].endswith('(vonage) {"digit": "4", "duration": 260}')
    assert lines[3].startswith("call: ok")
    env["VOICEWS_CONTROL_TOKEN"] = "wrong"
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert "events stream" in done.stdout and "HTTP 403" in done.stdout
