"""The ``control:`` and ``cluster:`` config, without a daemon: mistakes named by key, the
prompts folder relative to the config file, and no Redis client imported when there is no
cluster.  The control API against live calls: test_control.py.
"""

from __future__ import annotations

import pytest

from voicews.config.settings import ConfigError, load_settings


@pytest.mark.parametrize(("text", "expected"), [
    ("control: {prompts: nowhere}\n", "control.prompts: no such folder: "),
    ("control: {prompts: config.yaml}\n", "control.prompts: no such folder: "),
    ("cluster: {redis: 'http://x:6379'}\n", "cluster.redis: 'http://x:6379': the scheme must"),
    ("cluster: {redis: 'redis://h/zero'}\n", "cluster.redis: 'redis://h/zero': the path must"),
    ("cluster: {redis: 'redis://h', refresh: 6}\n",
     "cluster: refresh must be positive and shorter than ttl"),
    ("cluster: {redis: 'redis://h', request_timeout: 0}\n",
     "cluster: timeouts and retry delays must be positive"),
    ("cluster: {redis: 'redis://h', colour: red}\n", "cluster.colour: unknown key"),
])
def test_control_and_cluster_config_mistakes_name_the_key(tmp_path, text, expected):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value).startswith(f"{path}: {expected}"), str(info.value)


def test_the_prompts_folder_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "voice").mkdir()
    path = tmp_path / "config.yaml"
    path.write_text("control: {prompts: voice}\n")
    assert load_settings(path).prompts == (tmp_path / "voice").resolve()
    path.write_text("")
    settings = load_settings(path)
    assert settings.prompts is None and settings.raw.cluster.redis is None


def test_without_a_cluster_section_no_redis_client_is_ever_imported(tmp_path):
    """The default is one process and no Redis: the service, the control API and the
    config loader leave voicews.cluster (and txredisapi) alone."""
    import subprocess
    import sys

    from conftest import REPO

    path = tmp_path / "config.yaml"
    path.write_text("security: {control_token: x}\n")
    code = (
        "import sys\n"
        "from twisted.internet import reactor\n"
        "from voicews.app.service import VoicewsService\n"
        "from voicews.config.settings import load_settings\n"
        "from voicews.config.plugins import make_plugin_manager\n"
        "from voicews.runtime.state import Runtime\n"
        f"settings = load_settings({str(path)!r})\n"
        "service = VoicewsService(Runtime(settings, make_plugin_manager(), reactor),\n"
        "                         'tcp:0:interface=127.0.0.1', reactor)\n"
        "assert service.cluster is None and service.root.control.cluster is None\n"
        "print(sorted(m for m in sys.modules if 'redis' in m or 'voicews.cluster' in m))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"
