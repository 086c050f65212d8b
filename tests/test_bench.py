"""The benchmark runs end to end in a tiny mode and writes its JSON (no figures asserted)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO


def test_bench_tiny_run_writes_results(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--calls", "5", "--seconds", "1",
         "--warmup", "0.5", "--idle", "0.2", "--targets", "echo,gain,peer",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "latest.json").read_text())
    by_target = {r["target"]: r for r in report["results"]}
    assert set(by_target) == {"voicews:echo", "voicews:gain", "peer (websockets)"}
    for r in by_target.values():
        assert r["calls"] == 5
        assert r["frames_received"] > 0
        assert r["wrong_size_frames"] == 0
        assert r["closed_by_server"] == 0
        for key in ("server_us_per_frame", "calls_per_core", "latency_ms", "rss_per_call_kb",
                    "rss_per_idle_call_kb", "startup_seconds", "client_pacing_ms"):
            assert key in r
    # Echo comes back bit-exact from both servers.
    assert by_target["voicews:echo"]["wrong_content_frames"] == 0
    assert by_target["peer (websockets)"]["wrong_content_frames"] == 0
    assert {row["target"] for row in report["vs_peer"]} == {"voicews:echo", "voicews:gain"}
    assert "voicews:echo" in done.stdout  # the table


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
