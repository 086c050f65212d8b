"""Which Redis client for the cluster link: txredisapi on the epoll reactor, or redis-py's
asyncio client through Twisted's asyncio reactor.  Measures what the link does most.

`rtt`: a control request and its reply through Redis pub/sub on loopback, the pattern
voicews.cluster uses: the requester PUBLISHes a ~200-byte JSON request on the holder's
channel, the holder (a second process, same client) gets it from its subscription and
PUBLISHes the reply on the requester's channel.  One request at a time: wall latency
p50/p99, and CPU µs per round trip in each process (process_time over the run).

`link`: the same through voicews.cluster as built: two ClusterLinks ("A" holds a call,
"B" asks) in one process; a request is GET call:{uuid}, PUBLISH, A's handler, PUBLISH
back.  CPU µs is both workers' share together.

`reactor`: what the asyncio reactor costs voicews itself: the same paced load
(bench/load.py, echo pipeline) against `twistd voicews` on the epoll reactor and on the
asyncio reactor; server CPU µs per echoed frame and p99 latency.

    .venv/bin/python bench/redis_clients.py rtt --rounds 5000
    .venv/bin/python bench/redis_clients.py link --rounds 3000
    .venv/bin/python bench/redis_clients.py reactor --calls 100 --seconds 15

Starts its own redis-server (no persistence) on a free loopback port, stops it by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PY = sys.executable
PAYLOAD = {"action": "say", "uuid": "0" * 32, "body": {"text": "x" * 120}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis() -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port),
         "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("redis-server did not listen")


# --- txredisapi on the default (epoll) reactor --------------------------------------------

def tx_role(role: str, port: int, rounds: int) -> None:
    import txredisapi
    from twisted.internet import defer, reactor
    from twisted.internet.endpoints import HostnameEndpoint

    mine, theirs = ("bench:req", "bench:rep") if role == "holder" else ("bench:rep", "bench:req")
    state: dict = {"waiting": None}

    class Sub(txredisapi.SubscriberProtocol):
        def messageReceived(self, pattern, channel, message):  # noqa: N802
            if role == "holder":
                state["cmd"].publish(theirs, message)
            elif state["waiting"] is not None:
                d, state["waiting"] = state["waiting"], None
                d.callback(message)

    def connect(factory):
        factory.startConnecting(HostnameEndpoint(reactor, "127.0.0.1", port))
        return factory.deferred

    @defer.inlineCallbacks
    def run():
        cmd = state["cmd"] = yield connect(txredisapi.RedisFactory(None, None, 1))
        subf = txredisapi.SubscriberFactory()
        subf.protocol = Sub
        sub = yield connect(subf)
        yield sub.subscribe(mine)
        if role == "holder":
            print("ready", flush=True)
            return
        yield wait_subscribers(lambda: cmd.execute_command("PUBSUB", "NUMSUB", theirs),
                               lambda reply: reply[1] >= 1)
        body = json.dumps(PAYLOAD)
        lat = []
        cpu0 = time.process_time()
        for _ in range(rounds):
            t0 = time.perf_counter()
            state["waiting"] = defer.Deferred()
            cmd.publish(theirs, body)
            yield state["waiting"]
            lat.append(time.perf_counter() - t0)
        report(lat, time.process_time() - cpu0)
        reactor.stop()

    @defer.inlineCallbacks
    def wait_subscribers(ask, ok):
        from twisted.internet.task import deferLater

        while not ok((yield ask())):
            yield deferLater(reactor, 0.01, lambda: None)

    run().addErrback(lambda f: (f.printTraceback(), reactor.stop()))
    reactor.run()


# --- redis-py asyncio through Twisted's asyncio reactor -----------------------------------

def aio_role(role: str, port: int, rounds: int) -> None:
    import asyncio

    from twisted.internet import asyncioreactor

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    import redis.asyncio as aioredis
    from twisted.internet import defer, reactor

    mine, theirs = ("bench:req", "bench:rep") if role == "holder" else ("bench:rep", "bench:req")
    state: dict = {"waiting": None}

    def later(coro) -> defer.Deferred:
        return defer.Deferred.fromFuture(asyncio.ensure_future(coro, loop=loop))

    @defer.inlineCallbacks
    def run():
        cmd = aioredis.Redis(host="127.0.0.1", port=port)
        pubsub = cmd.pubsub()
        yield later(pubsub.subscribe(mine))

        async def listen():
            async for m in pubsub.listen():
                if m["type"] != "message":
                    continue
                if role == "holder":
                    later(cmd.publish(theirs, m["data"]))  # from Twisted code, like the link would
                elif state["waiting"] is not None:
                    d, state["waiting"] = state["waiting"], None
                    d.callback(m["data"])

        later(listen())
        if role == "holder":
            print("ready", flush=True)
            return
        while (yield later(cmd.pubsub_numsub(theirs)))[0][1] < 1:
            yield later(asyncio.sleep(0.01))
        body = json.dumps(PAYLOAD)
        lat = []
        cpu0 = time.process_time()
        for _ in range(rounds):
            t0 = time.perf_counter()
            state["waiting"] = defer.Deferred()
            later(cmd.publish(theirs, body))
            yield state["waiting"]
            lat.append(time.perf_counter() - t0)
        report(lat, time.process_time() - cpu0)
        reactor.stop()

    run().addErrback(lambda f: (f.printTraceback(), reactor.stop()))
    reactor.run()


def report(lat: list[float], cpu: float, cpu_key: str = "requester_cpu_us") -> None:
    lat.sort()
    print(json.dumps({
        "rounds": len(lat), "p50_us": round(1e6 * statistics.median(lat), 1),
        "p99_us": round(1e6 * lat[int(0.99 * len(lat))], 1),
        cpu_key: round(1e6 * cpu / len(lat), 1),
    }), flush=True)


def rtt(args) -> int:
    redis_proc, port = start_redis()
    results = []
    try:
        for client in args.clients.split(","):
            for _ in range(args.repeat):
                results.append(rtt_once(client, port, args.rounds))
    finally:
        redis_proc.send_signal(signal.SIGTERM)
        redis_proc.wait(10)
    for r in results:
        print(json.dumps(r))
    return 0


def rtt_once(client: str, port: int, rounds: int) -> dict:
    role = [PY, __file__, "role", "--client", client, "--port", str(port),
            "--rounds", str(rounds)]
    holder = subprocess.Popen([*role, "--role", "holder"], stdout=subprocess.PIPE, text=True,
                              stderr=subprocess.DEVNULL)  # asyncio's "Task destroyed" at kill
    try:
        assert holder.stdout.readline().strip() == "ready"
        cpu0 = holder_cpu(holder.pid)
        done = subprocess.run([*role, "--role", "requester"], capture_output=True, text=True,
                              check=True, timeout=600)
        out = json.loads(done.stdout.strip().splitlines()[-1])
        out["holder_cpu_us"] = round(1e6 * (holder_cpu(holder.pid) - cpu0) / rounds, 1)
        return {"client": client, **out}
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait(10)


def holder_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def link_rtt(args) -> int:
    sys.path.insert(0, str(BENCH.parent))
    from twisted.internet import defer, reactor, task

    from voicews.cluster import ClusterLink

    redis_proc, port = start_redis()
    url = f"redis://127.0.0.1:{port}/0"
    a = ClusterLink(url, "A", reactor, lambda: [{"uuid": "call-a"}],
                    lambda uuid, action, body: defer.succeed((200, {"ok": True})))
    b = ClusterLink(url, "B", reactor, lambda: [],
                    lambda uuid, action, body: defer.succeed((404, {})))

    @defer.inlineCallbacks
    def run():
        a.startService()
        b.startService()
        while not (a.available and b.available and (yield b.locate("call-a"))):
            yield task.deferLater(reactor, 0.01, lambda: None)
        lat = []
        cpu0 = time.process_time()
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            status, _ = yield b.request("call-a", "say", PAYLOAD["body"])
            assert status == 200
            lat.append(time.perf_counter() - t0)
        cpu = time.process_time() - cpu0
        yield defer.gatherResults([a.stopService(), b.stopService()])
        report(lat, cpu, "both_workers_cpu_us")

    run().addErrback(lambda f: f.printTraceback()).addBoth(lambda _: reactor.stop())
    try:
        reactor.run()
    finally:
        redis_proc.send_signal(signal.SIGTERM)
        redis_proc.wait(10)
    return 0


def reactor_cost(args) -> int:
    """voicews itself on each reactor: the load generator's own figures (bench/load.py)."""
    sys.path.insert(0, str(BENCH))
    import run as benchrun

    out = []
    with tempfile.TemporaryDirectory(prefix="voicews-reactor-") as tmp:
        workdir = Path(tmp)
        config = benchrun.bench_config(workdir, {"echo": ["echo"]}, args.calls)
        for name in args.reactors.split(","):
            port = benchrun.free_port()
            env = {"PYTHONPATH": str(BENCH.parent)}
            server = benchrun.Server(
                f"voicews-{name}",
                [benchrun.TWISTD, "-n", "--pidfile=", f"--reactor={name}", "voicews",
                 "-c", str(config), "--listen", f"tcp:{port}:interface=127.0.0.1"],
                port, workdir, env=env)
            try:
                r = benchrun.run_load(server, args.calls, "echo", args, check_echo=False)
            finally:
                server.stop()
            out.append({"reactor": name, "calls": args.calls,
                        "server_us_per_frame": r["server_us_per_frame"],
                        "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"],
                        "lost": r["frames_lost"]})
            print(json.dumps(out[-1]), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("rtt")
    a.add_argument("--rounds", type=int, default=5000)
    a.add_argument("--repeat", type=int, default=3)
    a.add_argument("--clients", default="txredisapi,redis-asyncio")
    c = sub.add_parser("link")
    c.add_argument("--rounds", type=int, default=3000)
    b = sub.add_parser("reactor")
    b.add_argument("--calls", type=int, default=100)
    b.add_argument("--seconds", type=float, default=15.0)
    b.add_argument("--warmup", type=float, default=2.0)
    b.add_argument("--idle", type=float, default=0.5)
    b.add_argument("--reactors", default="epoll,asyncio")
    r = sub.add_parser("role")
    r.add_argument("--client", required=True)
    r.add_argument("--role", required=True)
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--rounds", type=int, required=True)
    args = p.parse_args(argv)
    if args.mode == "rtt":
        return rtt(args)
    if args.mode == "link":
        return link_rtt(args)
    if args.mode == "reactor":
        return reactor_cost(args)
    (tx_role if args.client == "txredisapi" else aio_role)(args.role, args.port, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
