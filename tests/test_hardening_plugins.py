"""Issue 12 item 19: one processor name from an installed package and a config-listed file.

A restart refused it with a message that did not say one came from an installed package,
while SIGHUP accepted the same config (entry points were read only at start).  Now both
read the installed packages, refuse the name the same way, and say where each comes from.
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import yaml

from conftest import INVERT_PLUGIN, REPO, base_config
from wire import Call

INVERT = Path(INVERT_PLUGIN).read_text()
"""tests/plugins/invert.py: ``invert`` negates the audio it passes."""


def install_package(site):
    """A package declaring a `voicews` entry point `demo`, as pip would leave it."""
    info = site / "voicews_ep_demo-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: voicews-ep-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[voicews]\ndemo = voicews_ep_demo\n")
    (site / "voicews_ep_demo.py").write_text(INVERT)


def config(plugin: str | None) -> dict:
    return base_config(plugins=[plugin] if plugin else [],
                       pipelines={"echo": ["echo"], "inv": ["echo", "invert"]})


def message(plugin) -> str:
    return (f"plugin file {plugin}: processor name 'invert' is already defined by plugin "
            "entry point demo = voicews_ep_demo (package voicews-ep-demo 0.1)")


def inverts(daemon) -> bool:
    voice = (np.sin(np.arange(1600) * 0.1) * 8000).astype("<i2")
    with Call(daemon.ws, pipeline="inv") as call:
        return np.array_equal(call.exchange(voice), -voice)


def test_restart_refuses_and_names_both_origins(start_daemon, tmp_path):
    site = tmp_path / "site"
    install_package(site)
    plugin = tmp_path / "invert.py"
    plugin.write_text(INVERT)
    d = start_daemon(config(str(plugin)), env={"PYTHONPATH": f"{REPO}:{site}"}, wait=False)
    assert d.proc.wait(30) == 2
    lines = [line for line in d.log().splitlines() if line.strip()]
    assert lines == [f"voicews: config error: {d.config_path}: plugins: {message(plugin)}"]


def test_sighup_refuses_the_same_config_and_recovers(start_daemon, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    plugin = tmp_path / "invert.py"
    plugin.write_text(INVERT)
    d = start_daemon(config(str(plugin)), env={"PYTHONPATH": f"{REPO}:{site}"})
    assert inverts(d)
    install_package(site)  # pip install while the daemon runs
    d.signal(signal.SIGHUP)
    log = d.wait_log("reload refused")
    line = next(line for line in log.splitlines() if "reload refused" in line)
    assert line.endswith(f"{d.config_path}: plugins: {message(plugin)}")
    assert inverts(d)  # the old config stays in force
    # Dropping the file from the config leaves the package's processor: accepted.
    d.config_path.write_text(yaml.safe_dump(config(None)))
    d.signal(signal.SIGHUP)
    d.wait_log("reloaded")
    assert inverts(d)
