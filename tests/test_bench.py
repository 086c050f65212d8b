"""The benchmark runs end to end in a tiny mode and writes its JSON (no figures asserted)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny run of voicews (echo, gain) and every default peer: (report, stdout)."""
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--calls", "5", "--seconds", "1",
         "--warmup", "0.5", "--idle", "0.2", "--targets", "echo,gain,peer",
         "--out", str(out)],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    return json.loads((out / "latest.json").read_text()), done.stdout


def check_served(r: dict, bit_exact: bool) -> None:
    assert r["calls"] == 5
    assert r["frames_received"] > 0
    assert r["wrong_size_frames"] == 0
    assert r["closed_by_server"] == 0
    for key in ("server_us_per_frame", "calls_per_core", "latency_ms", "rss_per_call_kb",
                "rss_per_idle_call_kb", "rss_base_kb", "startup_seconds", "client_pacing_ms"):
        assert key in r
    if bit_exact:
        assert r["wrong_content_frames"] == 0


def test_bench_tiny_run_writes_results(tiny_run):
    report, stdout = tiny_run
    by_target = {r["target"]: r for r in report["results"]}
    assert {"voicews:echo", "voicews:gain", "peer (websockets)"} <= set(by_target)
    # Echo comes back bit-exact from voicews and the websockets peer.
    check_served(by_target["voicews:echo"], bit_exact=True)
    check_served(by_target["voicews:gain"], bit_exact=False)
    check_served(by_target["peer (websockets)"], bit_exact=True)
    assert {row["target"] for row in report["vs_peer"]} == {"voicews:echo", "voicews:gain"}
    # Ratios to every peer (a 1 s run may measure 0 CPU ticks, so a ratio may be absent).
    assert all("websockets" in row["vs_peer"] for row in report["vs_peer"])
    assert "voicews:echo" in stdout and "vs websockets" in stdout  # the table


def test_bench_runs_the_picows_peer(tiny_run):
    report, stdout = tiny_run
    if importlib.util.find_spec("picows") is None:
        assert any("picows" in note for note in report["notes"])  # said, not silently dropped
        pytest.skip("picows is not installed (pip install '.[bench]')")
    by_target = {r["target"]: r for r in report["results"]}
    check_served(by_target["peer (picows)"], bit_exact=True)
    assert all("picows" in row["vs_peer"] for row in report["vs_peer"])
    assert "vs picows" in stdout


def test_micro_times_the_hot_path(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "micro.py"), "--frames", "2000",
         "--pipeline", "gain"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["pipeline"] == "gain" and report["frames"] == 2000
    assert report["us_per_frame"] > 0


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_micro_counts_instructions_per_frame():
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "micro.py"), "--instructions"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # An echoed frame is some thousands of instructions: not zero, not a whole start-up.
    assert 1_000 < report["instructions_per_frame"] < 1_000_000, report


def test_micro_measures_a_pipeline_of_a_users_config():
    """The shipped config's `robot` pipeline runs the bitcrush example plugin."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "micro.py"), "--frames", "2000",
         "--config", str(REPO / "config.yaml"), "--pipeline", "robot"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["pipeline"] == "robot" and report["frames"] == 2000
