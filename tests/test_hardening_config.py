"""Config mistakes found by attacking voicews (issue 12): each stops the daemon, naming file+key."""

from __future__ import annotations

import subprocess

import pytest

from voicews.config.settings import ConfigError, load_settings

from conftest import REPO, TWISTD, Daemon


def twistd_errors(path, cwd, *args: str) -> tuple[int, list[str]]:
    """Run twistd on `path` (not config.yaml, which Daemon writes); exit status, stderr lines."""
    result = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "voicews", "-c", str(path), *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, env=Daemon(cwd, "").env,
    )
    return result.returncode, [line for line in result.stderr.splitlines() if line.strip()]


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_bad_listen_names_file_and_key(tmp_path):
    """Item 16: a bad `listen` was the only config error naming neither the file nor the key."""
    path = tmp_path / "bad-listen.yaml"
    path.write_text("listen: 'bogus:1'\n")
    code, lines = twistd_errors(path, tmp_path)
    assert code == 2
    assert lines == [f"voicews: config error: {path}: listen: cannot listen on 'bogus:1': "
                     "ValueError: Unknown endpoint type: 'bogus'"]


def test_bad_listen_option_names_the_option(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    code, lines = twistd_errors(path, tmp_path, "--listen", "tcp:notaport")
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith("voicews: --listen: cannot listen on 'tcp:notaport': ")


@pytest.mark.parametrize(
    ("text", "key", "line", "first"),
    [
        ("limits:\n  max_calls: 5\nlimits:\n  max_calls: 6\n", "limits", 3, 1),
        ("limits:\n  max_calls: 5\n  idle_timeout: 3\n  max_calls: 6\n", "limits.max_calls", 4, 2),
        ("pipelines:\n  a: [echo]\n  b:\n    - gain: {db: 1, db: 2}\ndefault_pipeline: a\n",
         "pipelines.b[0].gain.db", 4, 4),
    ],
)
def test_duplicate_yaml_keys_refused(tmp_path, text, key, line, first):
    """Item 17: a repeated key was accepted silently, the last one winning."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == (
        f"{path}: {key}: duplicate key (line {line}; first given on line {first})"
    )


def test_readme_plugin_snippet_appended_to_shipped_config(tmp_path):
    """The issue's case: the README's plugin snippet appended to config.yaml repeats keys."""
    shipped = (REPO / "config.yaml").read_text()
    snippet = "\nplugins:\n  - plugins/whisper.py\npipelines:\n  whisper:\n    - echo\n"
    path = write(tmp_path, shipped + snippet)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    first_line = shipped.splitlines().index("plugins:") + 1
    dup_line = len(shipped.splitlines()) + 2
    assert str(info.value) == (f"{path}: plugins: duplicate key "
                               f"(line {dup_line}; first given on line {first_line})")


def test_custom_socket_token_needs_signed_webhooks(tmp_path):
    """Item 9: with `websocket_auth: custom` and no signature secret, an unsigned
    GET /webhooks/answer handed the socket token to anyone (it is in the NCCO)."""
    path = tmp_path / "custom.yaml"
    path.write_text("security: {websocket_auth: custom, websocket_token: tok}\n")
    code, lines = twistd_errors(path, tmp_path, "--listen", "tcp:0:interface=127.0.0.1")
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith(f"voicews: config error: {path}: security.signature_secret: "
                               "required when websocket_auth is custom")


@pytest.mark.parametrize("entry", ["example.com", "10.0.0.0/33", ""])
def test_trusted_proxies_are_addresses_or_networks(tmp_path, entry):
    path = write(tmp_path, f"trusted_proxies: ['127.0.0.1', '{entry}']\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == (
        f"{path}: trusted_proxies[1]: expected an IP address or network, got {entry!r}"
    )
