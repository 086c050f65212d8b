"""`pip install .` (not editable) into a fresh venv must make `twistd voicews` exist."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile

from conftest import REPO


def test_wheel_ships_the_twistd_plugin_and_twistd_finds_it(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path / "dist"), str(REPO)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("voicews-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/voicews_plugin.py" in names
    assert "twisted/plugins/__init__.py" not in names
    assert "twisted/__init__.py" not in names
    assert "voicews/hookspecs.py" in names

    # Exactly what a user does: a fresh venv, a plain (non-editable) install, twistd.
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=True)
    subprocess.run(
        [fresh / "bin" / "pip", "install", "-q", str(wheel)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    listing = subprocess.run(
        [fresh / "bin" / "twistd", "--help"], capture_output=True, text=True, cwd=tmp_path,
        env=env,
    )
    assert "voicews" in listing.stdout, listing.stdout + listing.stderr
    options = subprocess.run(
        [fresh / "bin" / "twistd", "voicews", "--help"], capture_output=True, text=True,
        cwd=tmp_path, env=env,
    )
    assert "--config=" in options.stdout and "--listen=" in options.stdout
    assert (fresh / "bin" / "voicews-call").exists()
