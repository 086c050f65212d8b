"""The cluster link (voicews.cluster) between workers, through a real redis-server.

Each test starts its own redis-server on a free loopback port with no persistence and
stops it by its PID.  Two ClusterLinks ("A" and "B") share the one reactor as two
workers would share Redis; the expiry test SIGKILLs a third worker running in its own
process, because only a real kill shows what a dead worker leaves behind.

Reactor tests run as ``twisted.trial.unittest.TestCase`` classes, which pytest runs
natively: the real global reactor turns while a test's Deferred is pending (txredisapi
binds that reactor at import, so a private one would not do), a failure inside a callback
fails the test, and trial's dirty-reactor check proves every link closed its connections
and timers when it stopped.  No plugin to add and no thread.  Waiting is on real Redis
state (polled every 10 ms, bounded), never a fixed sleep.

The parts that need no Redis (the event fan-out, URLs, options): test_cluster_parts.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from twisted.internet import defer, reactor, task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from voicews.cluster import (
    ClusterLink,
    ClusterOptions,
    ClusterTimeout,
    ClusterUnavailable,
)

REPO = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
HAVE_REDIS = os.access(REDIS_SERVER, os.X_OK)
needs_redis = pytest.mark.skipif(not HAVE_REDIS, reason="redis-server is not installed "
                                 "(Debian package redis-server; .ci/run installs it)")

# Short timings so that outages, reconnections and expiry happen within a second.
FAST = ClusterOptions(refresh=0.2, ttl=1.0, request_timeout=1.0, reply_timeout=1.0,
                      connect_timeout=1.0, retry_initial=0.05, retry_max=0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server we started on loopback, no persistence; stopped by its PID."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="voicews-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:  # a few ms: blocking the reactor here is harmless
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                assert self.proc.poll() is None, "redis-server exited"
                assert time.monotonic() < deadline, "redis-server did not listen"
                time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class LogLines:
    """The voicews.cluster log events of this test."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self)

    def __call__(self, event: dict) -> None:
        if event.get("log_namespace") == "voicews.cluster":
            self.events.append(event)

    def count(self, **fields) -> int:
        return sum(all(e.get(k) == v for k, v in fields.items()) for e in self.events)

    def close(self) -> None:
        globalLogPublisher.removeObserver(self)


@defer.inlineCallbacks
def wait_for(condition, timeout: float = 5.0, what: str = "condition"):
    """Poll `condition` (may return a Deferred) every 10 ms until it is true; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = yield defer.maybeDeferred(condition)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        yield task.deferLater(reactor, 0.01, lambda: None)


class Worker:
    """One worker's side: its live calls, what its handler was asked, and its link."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = [{"uuid": uuid, "pipeline": "echo", "rate": 16000} for uuid in calls]
        self.handled: list[tuple[str, str, dict]] = []
        self.link: ClusterLink | None = None

    def local_calls(self) -> list[dict]:
        return self.calls

    def handle(self, uuid: str, action: str, body: dict) -> defer.Deferred:
        self.handled.append((uuid, action, body))
        if not any(call["uuid"] == uuid for call in self.calls):
            return defer.succeed((404, {"error": "no such call", "uuid": uuid}))
        if action == "stall":
            return defer.Deferred()  # never answers: the requester must time out
        if action == "crash":
            raise ZeroDivisionError("handler bug")
        return defer.succeed((200, {"action": action, "body": body, "handled_by": self.name}))


@needs_redis
class ClusterTests(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.cleanup)
        self.log = LogLines()
        self.addCleanup(self.log.close)
        self.a = self.start_worker("A", ["call-a"])
        self.b = self.start_worker("B", ["call-b"])
        return wait_for(lambda: self.a.link.available and self.b.link.available,
                        what="both links up")

    def start_worker(self, name: str, calls: list[str]) -> Worker:
        worker = Worker(name, calls)
        worker.link = ClusterLink(self.redis.url, name, reactor, worker.local_calls,
                                  worker.handle, FAST)
        worker.link.startService()
        self.addCleanup(lambda: worker.link.stopService() if worker.link.running else None)
        return worker

    def listed(self, link: ClusterLink, uuid: str):
        """A Deferred: does `link` list call `uuid` now?"""
        return link.list_calls().addCallback(lambda calls: any(c["uuid"] == uuid for c in calls))

    @defer.inlineCallbacks
    def test_b_lists_locates_and_acts_on_a_call_held_by_a(self):
        a, b = self.a.link, self.b.link
        yield wait_for(lambda: self.listed(b, "call-a"), what="B lists A's call")
        calls = yield b.list_calls()
        self.assertEqual(sorted((c["uuid"], c["worker"], c["pipeline"]) for c in calls),
                         [("call-a", "A", "echo"), ("call-b", "B", "echo")])
        self.assertEqual((yield b.locate("call-a")), "A")
        self.assertEqual((yield a.locate("call-b")), "B")

        status, body = yield b.request("call-a", "hangup", {"reason": "done"})
        self.assertEqual((status, body), (200, {"action": "hangup", "body": {"reason": "done"},
                                                "handled_by": "A"}))
        self.assertEqual(self.a.handled, [("call-a", "hangup", {"reason": "done"})])
        self.assertEqual(self.b.handled, [])

        # The other way round, and a worker's own call: handled where it lives.
        self.assertEqual((yield a.request("call-b", "clear", {}))[1]["handled_by"], "B")
        self.assertEqual((yield b.request("call-b", "notify", {"x": 1}))[1]["handled_by"], "B")
        self.assertEqual(len(self.a.handled), 1)

    @defer.inlineCallbacks
    def test_an_unknown_call_is_not_found_and_no_handler_runs(self):
        yield wait_for(lambda: self.listed(self.b.link, "call-a"), what="registration")
        status, body = yield self.b.link.request("no-such-call", "hangup", {})
        self.assertEqual(status, 404)
        self.assertEqual(body["uuid"], "no-such-call")
        self.assertIsNone((yield self.b.link.locate("no-such-call")))
        self.assertEqual(self.a.handled + self.b.handled, [])

    @defer.inlineCallbacks
    def test_a_silent_holder_times_out_and_a_crashing_one_answers_500(self):
        b = self.b.link
        yield wait_for(lambda: self.listed(b, "call-a"), what="registration")
        started = time.monotonic()
        with self.assertRaises(ClusterTimeout) as caught:
            yield b.request("call-a", "stall", {})
        self.assertEqual(caught.exception.status, 504)
        waited = time.monotonic() - started
        self.assertTrue(FAST.request_timeout <= waited < FAST.request_timeout + 0.5, waited)

        status, body = yield b.request("call-a", "crash", {})
        self.assertEqual((status, body["error"]), (500, "internal error"))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    @defer.inlineCallbacks
    def test_a_clean_stop_unregisters_at_once(self):
        yield wait_for(lambda: self.listed(self.b.link, "call-a"), what="registration")
        yield self.a.link.stopService()
        self.assertFalse((yield self.listed(self.b.link, "call-a")))
        self.assertIsNone((yield self.b.link.locate("call-a")))

    @defer.inlineCallbacks
    def test_a_killed_workers_calls_vanish_within_ttl(self):
        script = (
            "import sys\n"
            "from twisted.internet import defer, reactor\n"
            "from voicews.cluster import ClusterLink, ClusterOptions\n"
            "options = ClusterOptions(refresh=0.2, ttl=1.0, retry_initial=0.05, "
            "retry_max=0.2)\n"
            "ClusterLink(sys.argv[1], 'K', reactor, lambda: [{'uuid': 'call-k'}],\n"
            "            lambda *a: defer.succeed((200, {})), options).startService()\n"
            "reactor.run()\n")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        child = subprocess.Popen([sys.executable, "-c", script, self.redis.url], env=env)
        self.addCleanup(lambda: child.poll() is None and (child.kill(), child.wait()))
        b = self.b.link
        yield wait_for(lambda: self.listed(b, "call-k"), timeout=10, what="K registered")
        self.assertEqual((yield b.locate("call-k")), "K")

        child.send_signal(signal.SIGKILL)
        child.wait()
        killed = time.monotonic()
        # Its registration outlives it, but nobody listens on its channel any more.
        with self.assertRaises(ClusterUnavailable) as caught:
            yield b.request("call-k", "hangup", {})
        self.assertIn("not listening", caught.exception.reason)
        yield wait_for(lambda: self.listed(b, "call-k").addCallback(lambda yes: not yes),
                       what="K's call gone")
        gone = time.monotonic() - killed
        # Registered at most `refresh` before the kill, so gone in [ttl - refresh, ttl].
        self.assertGreaterEqual(gone, FAST.ttl - FAST.refresh - 0.1)
        self.assertLessEqual(gone, FAST.ttl + 0.3)
        self.assertIsNone((yield b.locate("call-k")))

    @defer.inlineCallbacks
    def test_redis_outage_fails_fast_leaves_calls_alone_and_recovers(self):
        a, b = self.a.link, self.b.link
        yield wait_for(lambda: self.listed(b, "call-a"), what="registration")
        b_events: list[dict] = []
        b.subscribe_events(b_events.append)

        self.redis.stop()
        yield wait_for(lambda: not a.available and not b.available, what="both links down")
        for _ in range(30):
            for attempt in (lambda: b.request("call-a", "say", {"text": "hi"}),
                            b.list_calls, lambda: b.locate("call-a")):
                started = time.monotonic()
                with self.assertRaises(ClusterUnavailable) as caught:
                    yield attempt()
                self.assertLess(time.monotonic() - started, 0.05)
                self.assertEqual(caught.exception.status, 503)
                self.assertIn(f"127.0.0.1:{self.redis.port}", caught.exception.reason)
        # A's call was never touched; A still acts on it, and events stay local.
        self.assertEqual(self.a.handled, [])
        self.assertEqual((yield a.request("call-a", "clear", {}))[0], 200)
        b.publish_event({"type": "local-only"})
        self.assertEqual(b_events, [{"type": "local-only", "worker": "B"}])
        for worker in "AB":
            self.assertEqual(self.log.count(cluster_state="down", worker=worker), 1)

        self.redis.start()  # same port, empty: A must register again by itself
        yield wait_for(lambda: a.available and b.available, what="both links back")
        yield wait_for(lambda: self.listed(b, "call-a"), what="A registered again")
        self.assertEqual((yield b.request("call-a", "hangup", {}))[0], 200)
        self.assertEqual(self.log.count(cluster_state="down"), 2)
        self.assertEqual(self.log.count(cluster_state="up"), 4)  # joined, then back: each
        self.assertEqual((a.outages, b.outages), (1, 1))

    @defer.inlineCallbacks
    def test_a_silent_redis_is_noticed_within_the_reply_timeout_and_survived(self):
        a, b = self.a.link, self.b.link
        yield wait_for(lambda: self.listed(b, "call-a"), what="registration")
        os.kill(self.redis.proc.pid, signal.SIGSTOP)  # connections stay open, no answers
        self.addCleanup(lambda: self.redis.proc and os.kill(self.redis.proc.pid, signal.SIGCONT))
        started = time.monotonic()
        with self.assertRaises(ClusterUnavailable):
            yield b.request("call-a", "hangup", {})
        waited = time.monotonic() - started
        self.assertTrue(FAST.reply_timeout <= waited < FAST.reply_timeout + 0.5, waited)
        yield wait_for(lambda: not a.available and not b.available, what="both links down")
        started = time.monotonic()
        with self.assertRaises(ClusterUnavailable):
            yield b.list_calls()
        self.assertLess(time.monotonic() - started, 0.05)

        os.kill(self.redis.proc.pid, signal.SIGCONT)
        yield wait_for(lambda: a.available and b.available, what="both links back")
        self.assertEqual((yield b.request("call-a", "hangup", {}))[0], 200)
        self.assertEqual(self.a.handled, [("call-a", "hangup", {})])  # the stalled one: never
        for worker in "AB":
            self.assertEqual(self.log.count(cluster_state="down", worker=worker), 1)

    @defer.inlineCallbacks
    def test_events_published_on_a_reach_each_subscriber_once(self):
        a, b = self.a.link, self.b.link
        a_got: list[dict] = []
        b_got: list[dict] = []
        a.subscribe_events(a_got.append)
        stop_b = b.subscribe_events(b_got.append)

        a.publish_event({"type": "transcript", "uuid": "call-a", "text": "hello"})
        a.publish_event({"type": "marker"})
        yield wait_for(lambda: any(e["type"] == "marker" for e in b_got), what="A's marker on B")
        # B answers after A's events; pub/sub keeps order, so an echo of A's own events
        # through Redis would reach A before B's reply does.
        b.publish_event({"type": "reply"})
        yield wait_for(lambda: any(e["type"] == "reply" for e in a_got), what="B's reply on A")
        expected = [{"type": "transcript", "uuid": "call-a", "text": "hello", "worker": "A"},
                    {"type": "marker", "worker": "A"}]
        self.assertEqual(b_got, [*expected, {"type": "reply", "worker": "B"}])
        self.assertEqual(a_got, [*expected, {"type": "reply", "worker": "B"}])

        stop_b()
        late: list[dict] = []
        b.subscribe_events(late.append)
        a.publish_event({"type": "after"})
        yield wait_for(lambda: late, what="the event after unsubscribing")
        self.assertEqual(len(b_got), 3)
