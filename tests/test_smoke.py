"""The smallest end-to-end check: the daemon starts and answers /health."""


def test_health(daemon):
    health = daemon.get_json("/health")
    assert health["status"] == "ok"
    assert health["active_calls"] == 0
