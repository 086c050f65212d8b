"""Benchmark voicews against reference echo servers, at growing call counts.

For every call count and every target (voicews with the echo, echo+gain and,
when those processors are registered, file-inject and record pipelines; the reference peers:
a plain `websockets` echo server, bench/peer.py, and a `picows` one,
bench/peer_picows.py), it starts a fresh server process on loopback, measures
its start-up time to listening, runs bench/load.py as a separate process (paced
20 ms calls, the Vonage first message), and collects server CPU per echoed frame
(from /proc/<pid>/stat over the steady window), latency, losses and RSS.
Every voicews figure is also given as a ratio to each peer's, same call count.

    .venv/bin/python bench/run.py --calls 50,100,200,400 --seconds 20 [--peers websockets,picows]

Writes bench/results/bench-<time>.json and .png (and latest.json/png).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from host import Background, machine, wait_quiet  # bench/host.py: a script's folder is on sys.path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PY = sys.executable
TWISTD = str(Path(PY).with_name("twistd"))

sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Peer:
    """A reference echo server: its script in bench/, extra arguments, what it imports."""

    script: str
    args: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        return [m for m in self.needs if importlib.util.find_spec(m) is None]


PEERS = {
    "websockets": Peer("peer.py", needs=("websockets",)),
    "picows": Peer("peer_picows.py", needs=("picows",)),
    "picows-uvloop": Peer("peer_picows.py", ("--uvloop",), needs=("picows", "uvloop")),
}
DEFAULT_PEERS = "websockets,picows"


def peer_label(name: str) -> str:
    return f"peer ({name})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available_processors() -> set[str]:
    from voicews.config import plugins

    return set(plugins.collect_processors(plugins.make_plugin_manager()))


def write_tone(path: Path, rate: int = 16000, seconds: float = 2.0) -> None:
    """A 440 Hz tone for the file-inject pipeline (the bench makes its own input)."""
    import numpy as np
    import soundfile

    t = np.arange(int(rate * seconds)) / rate
    soundfile.write(str(path), (0.2 * np.sin(2 * np.pi * 440 * t)).astype("float32"), rate,
                    subtype="PCM_16")


def bench_config(workdir: Path, pipelines: dict, max_calls: int) -> Path:
    config = {
        "content_type": "audio/l16;rate=16000",
        "default_pipeline": "echo",
        "pipelines": pipelines,
        # A long lead: a stall from a noisy machine must not turn into a permanent 1 s hold
        # (the paced sender doing its job) that would hide the server's own latency.
        "limits": {"max_calls": max_calls + 10, "idle_timeout": 600, "max_lead_seconds": 60},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Server:
    """A server process we started; stopped by its PID."""

    def __init__(self, name: str, command: list[str], port: int, workdir: Path,
                 env: dict | None = None) -> None:
        self.name = name
        self.port = port
        self.log_path = workdir / f"{name.replace(':', '-')}-{port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(command, cwd=workdir, env={**os.environ, **(env or {})},
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.startup_seconds = self._wait_listening()

    def _wait_listening(self, timeout: float = 20.0) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.005)
        raise RuntimeError(f"{self.name} did not listen within {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def start_peer(name: str, workdir: Path) -> Server:
    port = free_port()
    peer = PEERS[name]
    return Server(f"peer-{name}", [PY, str(BENCH / peer.script), "--port", str(port), *peer.args],
                  port, workdir)


def start_voicews(workdir: Path, config: Path, source: Path = REPO) -> Server:
    port = free_port()
    pythonpath = os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))
    return Server(
        "voicews",
        [TWISTD, "-n", "--pidfile=", "voicews", "-c", str(config),
         "--listen", f"tcp:{port}:interface=127.0.0.1"],
        port, workdir, env={"PYTHONPATH": pythonpath},
    )


def run_load(server: Server, calls: int, pipeline: str, args, check_echo: bool) -> dict:
    command = [
        PY, str(BENCH / "load.py"), "--port", str(server.port), "--calls", str(calls),
        "--pipeline", pipeline, "--server-pid", str(server.proc.pid),
        "--seconds", str(args.seconds), "--warmup", str(args.warmup), "--idle", str(args.idle),
    ]
    if check_echo:
        command.append("--check-echo")
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


RATIO_KEYS = ("server_us_per_frame", "rss_per_call_kb", "rss_per_idle_call_kb", "rss_base_kb",
              "startup_seconds")


def ratios_to(r: dict, peer: dict) -> dict:
    ratio = {}
    for key in RATIO_KEYS:
        if r.get(key) and peer.get(key):
            ratio[key] = round(r[key] / peer[key], 3)
    p99, peer_p99 = r["latency_ms"]["p99"], peer["latency_ms"]["p99"]
    if p99 and peer_p99:
        ratio["latency_p99"] = round(p99 / peer_p99, 3)
    return ratio


def summarise(results: list[dict]) -> list[dict]:
    """Per call count: each voicews target's figures as ratios to every peer's.

    Rows are {"calls", "target", "vs_peer": {peer name: {figure: ratio}}}.
    """
    rows = []
    for calls in sorted({r["calls"] for r in results}):
        here = [r for r in results if r["calls"] == calls]
        peers = {r["peer"]: r for r in here if "peer" in r}
        if not peers:
            continue
        for r in here:
            if "peer" not in r:
                rows.append({"calls": calls, "target": r["target"],
                             "vs_peer": {name: ratios_to(r, p) for name, p in peers.items()}})
    return rows


def print_table(results: list[dict], ratios: list[dict], peers: list[str]) -> None:
    head = (f"{'target':<22}{'calls':>6}{'us/frame':>10}{'calls/core':>11}{'p50ms':>8}"
            f"{'p99ms':>8}{'maxms':>8}{'lost':>6}{'wrong':>6}{'KB/call':>9}{'idleKB':>8}"
            f"{'baseMB':>8}{'start s':>8}{'client%':>8}{'pace99':>8}{'other%':>7}"
            + "".join(f"{'vs ' + name:>{max(9, len(name) + 4)}}" for name in peers))
    print(head)
    ratio_of = {(r["calls"], r["target"]): r["vs_peer"] for r in ratios}
    order = {name: i for i, name in enumerate(peers)}
    for r in sorted(results, key=lambda r: (r["calls"], "peer" in r, order.get(r.get("peer")),
                                            r["target"])):
        lat = r["latency_ms"]
        vs = ratio_of.get((r["calls"], r["target"]), {})
        cells = ""
        for name in peers:
            x = vs.get(name, {}).get("server_us_per_frame")
            cells += f"{'' if x is None else f'{x:.2f}x':>{max(9, len(name) + 4)}}"
        print(
            f"{r['target']:<22}{r['calls']:>6}{r['server_us_per_frame'] or 0:>10.1f}"
            f"{r['calls_per_core'] or 0:>11}{lat['p50'] or 0:>8.2f}{lat['p99'] or 0:>8.2f}"
            f"{lat['max'] or 0:>8.1f}{r['frames_lost']:>6}"
            f"{r['wrong_size_frames'] + r['wrong_content_frames']:>6}"
            f"{r['rss_per_call_kb']:>9.1f}{r['rss_per_idle_call_kb']:>8.1f}"
            f"{r['rss_base_kb'] / 1024:>8.1f}"
            f"{r['startup_seconds']:>8.2f}{r['client_cpu_percent']:>8.1f}"
            f"{r['client_pacing_ms']['p99'] or 0:>8.2f}{r.get('background_cpu_percent', 0):>7.0f}"
            f"{cells}"
        )
    print()
    for row in ratios:  # one line per voicews target: its CPU per frame against each peer
        r = next(x for x in results if x["calls"] == row["calls"] and x["target"] == row["target"])
        against = ", ".join(f"{vs['server_us_per_frame']:.2f}x {name}"
                            for name, vs in row["vs_peer"].items()
                            if "server_us_per_frame" in vs)
        print(f"{row['target']} at {row['calls']} calls: {r['server_us_per_frame']} us/frame "
              f"= {against}")


def plot(results: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install '.[bench]'): no plot", file=sys.stderr)
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for target in sorted({r["target"] for r in results}):
        rows = sorted((r for r in results if r["target"] == target), key=lambda r: r["calls"])
        calls = [r["calls"] for r in rows]
        ax1.plot(calls, [r["server_us_per_frame"] for r in rows], marker="o", label=target)
        ax2.plot(calls, [r["latency_ms"]["p99"] for r in rows], marker="o", label=target)
    ax1.set(xlabel="concurrent calls", ylabel="server CPU µs per echoed frame",
            title="CPU per frame")
    ax2.set(xlabel="concurrent calls", ylabel="echo latency p99 (ms)", title="p99 latency")
    ax1.set_ylim(bottom=0)
    ax2.set_yscale("log")  # a saturated server's seconds beside a healthy one's milliseconds
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="voicews benchmark")
    p.add_argument("--calls", default="50,100,200,400", help="comma-separated call counts")
    p.add_argument("--seconds", type=float, default=20.0, help="steady measuring window")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--idle", type=float, default=1.0, help="idle seconds for the idle-RSS figure")
    p.add_argument("--targets", default="echo,gain,file-inject,record,peer",
                   help="voicews pipelines to run, and `peer` for the reference peers (--peers)")
    p.add_argument("--peers", default=DEFAULT_PEERS,
                   help=f"reference echo servers run for `peer`, of: {', '.join(PEERS)}")
    p.add_argument("--out", default=str(BENCH / "results"), help="folder for JSON and PNG")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds; each figure is the round with the median CPU per frame")
    p.add_argument("--quiet", type=float, metavar="PCT",
                   help="before each target, wait (up to 10 min) until the rest of the machine "
                        "uses under PCT %% of one core over 5 s: for shared VMs")
    p.add_argument("--compare-src", metavar="DIR",
                   help="another voicews source tree (e.g. `git archive main`), run as "
                        "before:<pipeline> next to this one, for before/after figures")
    args = p.parse_args(argv)
    counts = [int(c) for c in args.calls.split(",") if c.strip()]
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    peer_names = [n.strip() for n in args.peers.split(",") if n.strip()] if "peer" in wanted else []
    unknown = [n for n in peer_names if n not in PEERS]
    if unknown:
        p.error(f"unknown peer(s) {', '.join(unknown)}: choose from {', '.join(PEERS)}")

    notes = []
    for name in list(peer_names):
        missing = PEERS[name].missing()
        if missing:
            peer_names.remove(name)
            notes.append(f"{' and '.join(missing)} not installed (pip install '.[bench]'): "
                         f"the {name} peer was skipped")
            print(f"note: {notes[-1]}", file=sys.stderr)
    processors = available_processors()
    pipelines = {"echo": ["echo"], "gain": ["echo", {"gain": {"db": 6}}]}
    workdir = Path(tempfile.mkdtemp(prefix="voicews-bench-"))
    if "file-inject" in processors:
        write_tone(workdir / "tone.wav")
        pipelines["file-inject"] = [
            "echo", {"file-inject": {"path": "tone.wav", "mode": "mix", "loop": True}},
        ]
    elif "file-inject" in wanted:
        notes.append("file-inject is not a registered processor here: its pipeline was skipped")
        print(f"note: {notes[-1]}", file=sys.stderr)
    if "record" in processors:  # both channels, 16 kHz: what a recording call costs
        pipelines["record"] = ["echo", {"record": {"path": str(workdir / "rec" / "{uuid}.wav")}}]
    targets = [t for t in wanted if t in pipelines]
    config = bench_config(workdir, pipelines, max(counts))

    # (pipeline or None for a peer, voicews source or peer name, label)
    runs: list[tuple[str | None, Path | str, str]] = [(t, REPO, f"voicews:{t}") for t in targets]
    if args.compare_src:
        runs += [(t, Path(args.compare_src).resolve(), f"before:{t}") for t in targets]
    runs += [(None, name, peer_label(name)) for name in peer_names]
    rounds: dict[tuple[int, str], list[dict]] = {}
    for _ in range(args.repeat):
        for calls in counts:
            for pipeline, source, label in runs:
                waited = wait_quiet(args.quiet) if args.quiet else None
                background = Background()
                if pipeline is None:
                    server = start_peer(str(source), workdir)
                else:
                    assert isinstance(source, Path)
                    server = start_voicews(workdir, config, source)
                try:
                    print(f"{label}: {calls} calls ...", file=sys.stderr, flush=True)
                    r = run_load(server, calls, pipeline or "echo", args,
                                 check_echo=pipeline in (None, "echo", "record"))
                finally:
                    server.stop()
                    shutil.rmtree(workdir / "rec", ignore_errors=True)  # 64 KB/s a call
                r["target"] = label
                if pipeline is None:
                    r["peer"] = source
                r["startup_seconds"] = round(server.startup_seconds, 3)
                r["background_cpu_percent"] = background.percent()
                if waited is not None:
                    r["waited_quiet_seconds"] = waited
                rounds.setdefault((calls, label), []).append(r)
    results = []
    for tries in rounds.values():
        tries.sort(key=lambda r: r["server_us_per_frame"] or 0)
        chosen = dict(tries[len(tries) // 2])
        if len(tries) > 1:
            chosen["rounds_us_per_frame"] = [r["server_us_per_frame"] for r in tries]
            chosen["rounds_background_cpu_percent"] = [r["background_cpu_percent"]
                                                        for r in tries]
            chosen["rounds"] = [  # every round's own figures, so an odd one can be seen
                {k: r.get(k) for k in ("server_us_per_frame", "window_frames", "frames_lost",
                                       "closed_by_server", "close_codes", "latency_ms",
                                       "background_cpu_percent")}
                for r in tries
            ]
        results.append(chosen)

    ratios = summarise(results)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report = {
        "when": stamp, "machine": machine(), "seconds": args.seconds, "calls": counts,
        "repeat": args.repeat, "load_average": os.getloadavg(), "peers": peer_names,
        "notes": notes, "results": results, "vs_peer": ratios,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in (f"bench-{stamp}.json", "latest.json"):
        (out / name).write_text(json.dumps(report, indent=2) + "\n")
    print_table(results, ratios, peer_names)
    if plot(results, out / f"bench-{stamp}.png"):
        (out / "latest.png").write_bytes((out / f"bench-{stamp}.png").read_bytes())
    print(f"results: {out / f'bench-{stamp}.json'}")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
