"""Tokens and authentication found wanting by attacking voicews (issue 12), on a real twistd."""

from __future__ import annotations

import pytest

from conftest import base_config, free_port

SECRET = "test-signature-secret-0123456789abcdef"


def start_public(start_daemon, config, env=None):
    port = free_port()
    daemon = start_daemon(config, listen=f"tcp:{port}:interface=0.0.0.0", wait=False, env=env)
    daemon.port = port
    daemon.wait_healthy()
    return daemon


@pytest.mark.parametrize(
    ("security", "doors"),
    [
        ({"signature_secret": "${SECRET}"},
         ["the socket has no authorization (security.websocket_auth)",
          "/metrics is open (security.metrics_token)"]),
        ({"signature_secret": "${SECRET}", "websocket_auth": "vonage", "metrics_token": "m",
          "max_token_age": 0},
         ["signed tokens never expire (security.max_token_age is 0)"]),
        ({"websocket_auth": "vonage", "signature_secret": "${SECRET}"},
         ["/metrics is open (security.metrics_token)"]),
    ],
)
def test_public_warning_names_every_open_door(start_daemon, security, doors):
    """Item 9: the warning on a public interface was silent as soon as any one of the
    signature secret or socket authorization was set, whatever else was open."""
    daemon = start_public(start_daemon, base_config(security=security), env={"SECRET": SECRET})
    log = daemon.wait_log("listening on public interface 0.0.0.0 with")
    line = next(line for line in log.splitlines() if "listening on public interface" in line)
    assert line.split("authentication: ", 1)[1] == "; ".join(doors)


def test_no_warning_when_nothing_is_open(start_daemon):
    daemon = start_public(start_daemon, base_config(security={
        "signature_secret": "${SECRET}", "websocket_auth": "vonage", "metrics_token": "m"}),
        env={"SECRET": SECRET})
    daemon.wait_log("voicews listening on")
    assert "public interface" not in daemon.log()
