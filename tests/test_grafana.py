"""deploy/grafana-dashboard.json queries what a running daemon exposes at /metrics.

Every metric name in every query (and in the instance variable) is a sample name a daemon
serves after a call and a refusal; every label a query groups by or names in a legend is on
that metric's samples. (No Grafana here: the JSON's shape is checked, not its rendering.)
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest

from conftest import REPO, base_config
from wire import echo_call

DASHBOARD = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
METRIC = re.compile(r"\bvoicews_[a-z_]+\b")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? ")


def queries() -> list[tuple[str, str]]:
    """(panel title, expression) for every query, the instance variable's included."""
    found = [(panel["title"], target["expr"])
             for panel in DASHBOARD["panels"] for target in panel["targets"]]
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"${variable['name']}", variable["definition"]))
    return found


@pytest.fixture(scope="module")
def exposed(tmp_path_factory) -> dict[str, set[str]]:
    """Sample name -> label names, from /metrics of a daemon that had a call and a refusal."""
    from conftest import Daemon

    tmp = tmp_path_factory.mktemp("grafana")
    daemon = Daemon(tmp, base_config(security={"metrics_token": "scrape"})).start()
    try:
        sent, got = echo_call(daemon.ws, uuid="grafana-1")
        assert got == sent
        daemon.wait_log("call ended uuid=grafana-1")
        status, _, _ = daemon.request("/metrics")  # no token: refused, counted
        assert status == 401
        status, _, body = daemon.request("/metrics", headers={"authorization": "Bearer scrape"})
        assert status == 200
    finally:
        assert daemon.stop() == 0
    labels: dict[str, set[str]] = defaultdict(set)
    for line in body.decode().splitlines():
        match = SAMPLE.match(line)
        if match and not line.startswith("#"):
            name, given = match.groups()
            labels[name] |= {pair.split("=")[0] for pair in (given or "").split(",") if pair}
    return labels


def test_the_dashboard_is_grafana_json_with_one_grid():
    assert DASHBOARD["uid"] == "voicews" and DASHBOARD["schemaVersion"] >= 36
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    boxes = []
    for panel in DASHBOARD["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for other, box in boxes:
            overlap = (grid["x"] < box["x"] + box["w"] and box["x"] < grid["x"] + grid["w"]
                       and grid["y"] < box["y"] + box["h"] and box["y"] < grid["y"] + grid["h"])
            assert not overlap, (panel["title"], other)
        boxes.append((panel["title"], grid))
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_the_panels_the_docs_promise():
    titles = " / ".join(panel["title"] for panel in DASHBOARD["panels"])
    for wanted in ("Active calls", "by outcome", "Frames in and out", "Dropped",
                   "by reason", "Pipeline time per frame"):
        assert wanted in titles
    heatmaps = [p for p in DASHBOARD["panels"] if p["type"] == "heatmap"]
    assert heatmaps and "voicews_processing_seconds_bucket" in heatmaps[0]["targets"][0]["expr"]


def test_every_query_names_metrics_and_labels_a_daemon_serves(exposed):
    assert "voicews_calls_total" in exposed and "voicews_rejected_total" in exposed
    for title, expr in queries():
        names = set(METRIC.findall(expr))
        assert names, (title, expr)
        for name in names:
            assert name in exposed, f"{title}: {name} is not in /metrics"
        assert expr.count("(") == expr.count(")"), (title, expr)
        grouped = {label.strip() for by in re.findall(r"\bby \(([^)]*)\)", expr)
                   for label in by.split(",")}
        for label in grouped - {"le", "instance"}:  # instance: Prometheus adds it at scrape
            assert any(label in exposed[name] for name in names), (title, label)
    for panel in DASHBOARD["panels"]:
        for target in panel["targets"]:
            for label in re.findall(r"\{\{(\w+)\}\}", target["legendFormat"]):
                grouped = re.findall(r"\bby \(([^)]*)\)", target["expr"])
                assert label == "instance" or any(label in by for by in grouped), panel["title"]
