"""The documentation site builds with warnings as errors, and its generated parts are current.

`mkdocs build --strict` fails on any warning: a broken link or anchor, a page missing from the
nav, a docstring mkdocstrings cannot render. The configuration reference is generated from the
config dataclasses (tools/config_reference.py); the committed page must be what it writes.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("config_reference",
                                              REPO / "tools" / "config_reference.py")
assert spec is not None and spec.loader is not None
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)


def mkdocs_build(project, site) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=project, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def test_the_configuration_reference_is_what_the_dataclasses_say():
    page = reference.PAGE.read_text(encoding="utf-8")
    assert reference.updated(page) == page, "run: python tools/config_reference.py"


def test_every_config_key_is_documented():
    keys = []
    for key, cls, fields in reference.sections(reference.RawConfig):
        for field in fields:
            assert field.doc, f"{cls.__qualname__}.{field.name} needs a docstring"
            keys.append(f"{key}.{field.name}" if key else field.name)
    page = reference.PAGE.read_text(encoding="utf-8")
    for key in keys:
        assert f"`{key}` — " in page
    assert {"listen", "security.signature_secret", "limits.max_calls"} <= set(keys)


def test_the_site_builds_strict(tmp_path):
    result = mkdocs_build(REPO, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for anchor in ("voicews.Processor.process", "voicews.Session.play", "voicews.Event",
                   "voicews.CallInfo", "voicews.PrepareContext", "voicews.testing.call_with",
                   "voicews.hookspecs.register_processors"):
        assert f'id="{anchor}"' in api, anchor
    assert ":meth:" not in api and ":class:" not in api
    changelog = (tmp_path / "site" / "changelog" / "index.html").read_text()
    assert "Unreleased" in changelog  # CHANGELOG.md, included


@pytest.mark.parametrize("mistake", [
    "[a page that is not there](nowhere.md)",
    "[an anchor that is not there](configuration.md#no-such-key)",
])
def test_a_broken_link_fails_the_build(tmp_path, mistake):
    project = tmp_path / "project"
    shutil.copytree(REPO / "docs", project / "docs")
    for name in ("mkdocs.yml", "CHANGELOG.md"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / "tools", project / "tools")
    (project / "voicews").symlink_to(REPO / "voicews")  # for the API reference
    with (project / "docs" / "development.md").open("a") as page:
        page.write(f"\n{mistake}\n")
    result = mkdocs_build(project, tmp_path / "site")
    assert result.returncode != 0
    assert "development.md" in result.stderr
