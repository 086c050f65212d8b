"""The console's server side, without a browser: the page's files and headers, the setup and
ticket routes, socket tickets, and the level sampler behind ``/events?levels=1``.

The sampler is checked on real pipelines (voicews.testing) on a task.Clock: a tone of known
amplitude reads at its RMS in dBFS, silence at the floor, a side that moved no frame as
null, and no timer runs while nobody listens.  The routes run on a real twistd.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from twisted.internet.task import Clock
from websockets.exceptions import InvalidStatus

from voicews.audio.samples import SAMPLE_DTYPE
from voicews.processors.echo import Echo
from voicews.runtime.calls import CallRecord, CallRegistry
from voicews.simulator import simulate_socket
from voicews.testing import call_with
from voicews.vonage.tokens import SeenTokens
from voicews.web import tickets
from voicews.web.levels import FLOOR_DB, LevelSampler, level_db

from audio_checks import write_tone
from conftest import Daemon, base_config
from wire import Call

TOKEN = "console-token-0123"
CONSOLE_FILES = Path(__file__).resolve().parent.parent / "voicews" / "web" / "console"


# -- tickets ------------------------------------------------------------------------------


def test_a_ticket_opens_once_within_its_time_and_only_with_its_key():
    seen = SeenTokens()
    now = time.time()
    ticket = tickets.issue("key-a", now)
    with pytest.raises(tickets.InvalidTicket, match="bad ticket signature"):
        tickets.check(ticket, "key-b", now, seen)  # the control token changed: void
    tickets.check(ticket, "key-a", now + 1, seen)
    with pytest.raises(tickets.InvalidTicket, match="already used"):
        tickets.check(ticket, "key-a", now + 2, seen)
    late = tickets.issue("key-a", now - tickets.TTL - 1)
    with pytest.raises(tickets.InvalidTicket, match="expired"):
        tickets.check(late, "key-a", now, seen)
    future = tickets.issue("key-a", now + tickets.SKEW + 2)
    with pytest.raises(tickets.InvalidTicket, match="expired"):
        tickets.check(future, "key-a", now, seen)
    issued, nonce, mac = tickets.issue("key-a", now).split(".")
    with pytest.raises(tickets.InvalidTicket, match="signature"):  # its time moved: void
        tickets.check(f"{int(issued) + 10}.{nonce}.{mac}", "key-a", now, seen)
    for bad in ("", "x", "1.2", "a.b.c", "1.2.3.4", "9" * 300):
        with pytest.raises(tickets.InvalidTicket, match="malformed"):
            tickets.check(bad, "key-a", now, seen)
    with pytest.raises(tickets.InvalidTicket, match="off"):
        tickets.check(tickets.issue("key-a", now), None, now, seen)


# -- levels -------------------------------------------------------------------------------


def tone(rate: int, amplitude: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amplitude * 32767 * np.sin(2 * np.pi * 440 * t)).astype(SAMPLE_DTYPE)


def test_level_db_is_the_rms_of_the_frame_in_dbfs():
    frame = tone(16000, 0.1, 0.02).tobytes()
    expected = 20 * math.log10(0.1 * 32767 / math.sqrt(2) / 32768)  # -23.0
    assert level_db(frame) == pytest.approx(expected, abs=0.06)
    assert level_db(tone(16000, 1.0, 0.02).tobytes()) == pytest.approx(-3.0, abs=0.06)
    assert level_db(bytes(640)) == FLOOR_DB
    assert level_db(b"") is None


def registered(calls: CallRegistry, local) -> None:
    record = CallRecord("127.0.0.1:1", 0.0, end=lambda *a: None, abort=lambda: None,
                        pipeline=local.pipeline)
    calls.add(record)


def test_the_sampler_reads_each_call_a_few_times_a_second_while_someone_listens():
    clock = Clock()
    calls = CallRegistry()
    loud = call_with([Echo], rate=16000, headers={"uuid": "loud"})
    quiet = call_with([Echo], rate=8000, headers={"uuid": "quiet"})
    for local in (loud, quiet):
        registered(calls, local)
    sampler = LevelSampler(calls, clock)
    got: list[dict] = []
    assert not clock.getDelayedCalls()
    stop = sampler.listen(lambda event: got.append(json.loads(event.text)))
    assert sampler.running and len(clock.getDelayedCalls()) == 1

    loud.frames(10, tone(16000, 0.1))
    quiet.frames(10)
    clock.advance(0.2)
    by_uuid = {record["uuid"]: record for record in got}
    assert set(by_uuid) == {"loud", "quiet"}
    assert by_uuid["loud"]["kind"] == "levels" and "seq" not in by_uuid["loud"]
    assert by_uuid["loud"]["data"]["in"] == pytest.approx(-23.0, abs=0.1)
    assert by_uuid["loud"]["data"]["out"] == by_uuid["loud"]["data"]["in"]  # echo
    assert by_uuid["loud"]["data"]["frames_in"] == 10
    assert by_uuid["quiet"]["data"]["in"] == FLOOR_DB

    got.clear()
    quiet.frames(1)  # the loud call moved no frame since: its sides read null
    clock.advance(0.2)
    by_uuid = {record["uuid"]: record for record in got}
    assert by_uuid["loud"]["data"]["in"] is None and by_uuid["loud"]["data"]["out"] is None
    assert by_uuid["quiet"]["data"]["in"] == FLOOR_DB

    quiet.pipeline.close("hangup")
    got.clear()
    clock.advance(0.2)
    assert [record["uuid"] for record in got] == ["loud"]  # a closed call is not read

    stop()
    assert not sampler.running and not clock.getDelayedCalls()
    clock.advance(1.0)
    assert [record["uuid"] for record in got] == ["loud"]


# -- the routes, on a real daemon ---------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("console")
    prompts = folder / "prompts"
    (prompts / "sub").mkdir(parents=True)
    write_tone(prompts / "beep.wav", 16000, seconds=0.3)
    write_tone(prompts / "sub" / "two.flac", 16000, seconds=0.3, format="FLAC")
    (prompts / "notes.txt").write_text("not audio")
    write_tone(folder / "outside.wav", 16000, seconds=0.3)
    (prompts / "escape.wav").symlink_to(folder / "outside.wav")
    write_tone(folder / "tone.wav", 16000, seconds=2.0, freq=440.0, amplitude=0.1)
    return folder


@pytest.fixture(scope="module")
def daemon(folder):
    config = base_config(security={"control_token": TOKEN}, control={"prompts": "prompts"})
    daemon = Daemon(folder, config).start()
    yield daemon
    assert daemon.stop() == 0


def get(daemon: Daemon, path: str, token: str | None = TOKEN, method: str | None = None,
        headers: dict | None = None):
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return daemon.request(path, headers=sent, method=method,
                          data=b"" if method == "POST" else None)


def test_the_page_is_public_static_files_with_strict_headers(daemon):
    status, headers, body = get(daemon, "/console/", token=None)
    assert status == 200 and b'<script type="module" src="console.js">' in body
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe" not in csp
    host = f"127.0.0.1:{daemon.port}"  # the softphone's socket, named for any browser
    assert f"connect-src 'self' ws://{host} wss://{host};" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-cache"
    status, _, again = get(daemon, "/console/", token=None,
                           headers={"If-None-Match": headers["ETag"]})
    assert status == 304 and again == b""
    shipped = sorted(p.name for p in CONSOLE_FILES.iterdir())
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
             ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml"}
    for name in shipped:
        status, headers, body = get(daemon, f"/console/{name}", token=None)
        assert status == 200 and body == (CONSOLE_FILES / name).read_bytes(), name
        assert headers["Content-Type"] == types[Path(name).suffix]
        assert "Content-Security-Policy" in headers
    for name in ("nope.js", "..%2Fsite.py", "%2e%2e"):
        assert get(daemon, f"/console/{name}", token=None)[0] == 404, name
    connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    connection.request("GET", "/console")
    redirect = connection.getresponse()
    assert redirect.status in (301, 308)
    assert redirect.headers["Location"].endswith("/console/")
    connection.close()
    # No inline script, handler or style in the page: the CSP would refuse them (the
    # browser tests also watch for any CSP violation while the page runs).
    page = (CONSOLE_FILES / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)|\son[a-z]+\s*=|\sstyle\s*=", page)


def test_setup_and_tickets_need_the_control_token(daemon):
    assert get(daemon, "/console/api/setup", token=None)[0] == 401
    assert get(daemon, "/console/api/setup", token="wrong")[0] == 403
    assert get(daemon, "/console/api/ticket", token="wrong", method="POST")[0] == 403
    status, headers, body = get(daemon, "/console/api/setup")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    setup = json.loads(body)
    assert setup["pipelines"] == ["echo", "louder"] and setup["default_pipeline"] == "echo"
    assert setup["rates"] == [8000, 16000, 24000] and setup["default_rate"] == 16000
    assert setup["socket_auth"] == "none" and setup["ticket"] is False
    assert setup["prompts"] == ["beep.wav", "sub/two.flac"]  # no text, no way out
    assert "hangup" in setup["actions"] and "pipeline" in setup["actions"]
    status, _, body = get(daemon, "/console/api/ticket", method="POST")
    assert status == 200 and json.loads(body)["expires_in"] == tickets.TTL


class Levels:
    """An ``/events`` stream read in a thread: (id line or None, record) per message."""

    def __init__(self, daemon: Daemon, query: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=20)
        self.conn.request("GET", "/events" + query, headers={"Authorization": f"Bearer {TOKEN}"})
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        self.messages: list[tuple[str | None, dict]] = []
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        ident = None
        try:
            for raw in iter(self.response.readline, b""):
                line = raw.decode().rstrip("\n")
                if line.startswith("id: "):
                    ident = line[4:]
                elif line.startswith("data: "):
                    self.messages.append((ident, json.loads(line[6:])))
                    ident = None
        except (OSError, http.client.HTTPException, ValueError):
            pass
        self.ended.set()

    def close(self) -> None:
        if self.conn.sock is not None:
            self.conn.sock.shutdown(socket.SHUT_RDWR)  # the reader sees the end, then we close
        self.ended.wait(5)
        self.conn.close()


def test_events_with_levels_carry_each_calls_measured_levels(daemon, folder):
    with_levels, plain = Levels(daemon, "?levels=1"), Levels(daemon, "")
    try:
        clip = np.round(0.1 * 32767 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000))
        result = simulate_socket(daemon.ws, "audio/l16;rate=16000",
                                 {"uuid": "level-1", "pipeline": "echo"},
                                 play=clip.astype(SAMPLE_DTYPE), play_rate=16000, seconds=2.0)
        assert result.ok, result.summary()
        deadline = time.monotonic() + 5
        while not any(r["kind"] == "call_ended" for _, r in plain.messages):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        with_levels.close()
        plain.close()
    levels = [(i, r) for i, r in with_levels.messages if r["kind"] == "levels"]
    assert not [r for _, r in plain.messages if r["kind"] == "levels"]
    # 5 a second over a 2 s call (give or take the edges), none with an id: line.
    assert 7 <= len(levels) <= 13, len(levels)
    assert all(i is None and r["uuid"] == "level-1" for i, r in levels)
    heard = [r["data"]["in"] for _, r in levels if r["data"]["in"] is not None]
    sent = [r["data"]["out"] for _, r in levels if r["data"]["out"] is not None]
    assert np.median(heard) == pytest.approx(-23.0, abs=0.2)
    assert np.median(sent) == pytest.approx(-23.0, abs=0.2)  # the echo
    frames = [r["data"]["frames_in"] for _, r in levels]
    assert frames == sorted(frames) and frames[-1] >= 80
    # Real call events kept their ids.
    assert all(i is not None for i, r in with_levels.messages if r["kind"] != "levels")


def test_a_ticket_opens_one_socket_when_socket_auth_is_on(tmp_path):
    config = base_config(security={"control_token": TOKEN, "websocket_auth": "custom",
                                   "websocket_token": "vonage-sends-this",
                                   "signature_secret": "s" * 32})
    daemon = Daemon(tmp_path, config).start()
    try:
        setup = json.loads(get(daemon, "/console/api/setup")[2])
        assert setup["socket_auth"] == "custom" and setup["ticket"] is True
        ticket = json.loads(get(daemon, "/console/api/ticket", method="POST")[2])["ticket"]

        def handshake(url: str) -> int:
            try:
                with Call(url, pipeline="echo") as call:
                    call.echo_roundtrip(0, 3)
                    return 101
            except InvalidStatus as exc:
                return exc.response.status_code

        assert handshake(daemon.ws) == 401
        assert handshake(f"{daemon.ws}?ticket={ticket}") == 101
        assert handshake(f"{daemon.ws}?ticket={ticket}") == 403  # once only
        forged = tickets.issue("not-the-control-token")
        assert handshake(f"{daemon.ws}?ticket={forged}") == 403
        assert "socket ticket refused: ticket already used" in daemon.log()
        assert daemon.log().count("call started") == 1
    finally:
        assert daemon.stop() == 0


def test_the_console_is_off_without_a_control_token(tmp_path):
    daemon = Daemon(tmp_path, base_config()).start()
    try:
        for path in ("/console/", "/console/console.js", "/console/api/setup"):
            status, _, body = get(daemon, path, token=None)
            assert status == 403 and b"set security.control_token" in body, path
    finally:
        assert daemon.stop() == 0
