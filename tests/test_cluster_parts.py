"""The cluster's parts that need no Redis: the event fan-out to local subscribers (a slow one
bounded, a raising one logged once, neither holding the others back), redis:// URLs, and
options that could not work.  The link through a real redis-server: test_cluster.py.
"""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.logger import globalLogPublisher

from voicews.cluster import ClusterOptions, EventFanout, parse_redis_url


def test_a_slow_subscriber_is_bounded_and_others_are_not_held_back():
    fanout = EventFanout(limit=8)
    fast: list[int] = []
    slow: list[int] = []
    held: list[defer.Deferred] = []
    warnings: list[dict] = []

    def slow_subscriber(event):
        slow.append(event["n"])
        if not held:  # the first event keeps it busy until the test lets it go
            held.append(defer.Deferred())
            return held[0]
        return None

    observer = warnings.append
    globalLogPublisher.addObserver(observer)
    try:
        fanout.subscribe(lambda event: fast.append(event["n"]))
        fanout.subscribe(slow_subscriber)
        for n in range(1000):
            fanout.deliver({"n": n})
        assert fast == list(range(1000))
        assert slow == [0]
        assert fanout.dropped == 1000 - 1 - 8  # the first was taken, the last 8 are held
        held[0].callback(None)
        assert slow == [0, *range(992, 1000)]
        assert len([w for w in warnings if "too slow" in w.get("log_format", "")]) == 1
    finally:
        globalLogPublisher.removeObserver(observer)


def test_a_raising_subscriber_is_logged_once_and_does_not_stop_the_others():
    fanout = EventFanout()
    got: list[dict] = []
    errors: list[dict] = []

    def broken(event):
        raise RuntimeError("subscriber bug")

    def observer(event):
        if event.get("log_failure") is not None:
            errors.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        fanout.subscribe(broken)
        fanout.subscribe(got.append)
        for n in range(5):
            fanout.deliver({"n": n})
    finally:
        globalLogPublisher.removeObserver(observer)
    assert [e["n"] for e in got] == list(range(5))
    assert len(errors) == 1


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:6380/2", ("127.0.0.1", 6380, 2, None, None, False)),
    ("redis://redis.internal", ("redis.internal", 6379, 0, None, None, False)),
    ("rediss://u%40x:p%3As@host:1/0", ("host", 1, 0, "u@x", "p:s", True)),
    ("redis://:secret@[::1]:7000/", ("::1", 7000, 0, None, "secret", False)),
])
def test_redis_urls_parse(url, expected):
    a = parse_redis_url(url)
    assert (a.host, a.port, a.db, a.username, a.password, a.tls) == expected
    assert "secret" not in str(a) and "p:s" not in str(a)  # logs never show a password


@pytest.mark.parametrize(("url", "complaint"), [
    ("http://host:6379", "scheme"), ("redis://", "no host"), ("redis://h:99999", "(?i)port"),
    ("redis://h/zero", "database number"),
])
def test_bad_redis_urls_say_what_is_wrong(url, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_redis_url(url)


def test_options_refuse_a_ttl_that_refreshing_cannot_keep_alive():
    with pytest.raises(ValueError, match="shorter than ttl"):
        ClusterOptions(refresh=5, ttl=5)
