"""The control API (/calls) against live calls: a real twistd, calls from the voicews-call
simulator (paced in real time, in a thread) and curl-like requests beside them.

What a caller hears is checked sample for sample: a played prompt arrives bit-exact on a
frame boundary, a pipeline switch turns the echo 6 dB louder from one frame on with no
gap and no frame twice, a clear cuts a prompt short, a notify comes back from "Vonage".
The ``control:`` and ``cluster:`` config without a daemon: test_control_config.py.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from voicews.audio import files
from voicews.audio.samples import db_to_factor, saturate
from voicews.simulator import CallResult, simulate_socket

from audio_checks import needs_espeak, peak_frequency, spoken, write_tone
from conftest import Daemon, base_config

TOKEN = "s3cret-control"
RATE = 16000
N = RATE // 50  # samples per frame


def api(daemon: Daemon, method: str, path: str, body=None, token: str | None = TOKEN,
        raw: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    """One control request; (status, parsed JSON answer)."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    status, _, answer = daemon.request(path, data=data, headers=sent, method=method)
    return status, json.loads(answer) if answer else {}


class Live:
    """A simulated call in a thread, paced like Vonage's; listed by the API before we go on."""

    def __init__(self, daemon: Daemon, uuid: str, pipeline: str = "echo", seconds: float = 3.0,
                 play: np.ndarray | None = None) -> None:
        self.daemon, self.uuid = daemon, uuid
        self.result: CallResult | None = None

        def run() -> None:
            self.result = simulate_socket(
                daemon.ws, f"audio/l16;rate={RATE}", {"uuid": uuid, "pipeline": pipeline},
                play=play, play_rate=RATE, seconds=seconds, quiet_seconds=0.3)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while api(daemon, "GET", f"/calls/{uuid}")[0] != 200:
            assert time.monotonic() < deadline, f"call {uuid} never listed"
            time.sleep(0.02)

    def info(self) -> dict:
        status, answer = api(self.daemon, "GET", f"/calls/{self.uuid}")
        assert status == 200, answer
        return answer

    def wait_frames(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while self.info()["frames_in"] < count:
            assert time.monotonic() < deadline
            time.sleep(0.02)

    def end(self) -> CallResult:
        self.thread.join(60)
        assert self.result is not None
        return self.result


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("control")
    inside = folder / "prompts"
    (inside / "sub").mkdir(parents=True)
    write_tone(inside / "tone.wav", 22050, seconds=0.5, freq=440.0, amplitude=0.3)
    write_tone(inside / "sub" / "long.wav", 16000, seconds=2.0, freq=660.0, amplitude=0.3)
    (inside / "notes.txt").write_text("not audio")
    write_tone(folder / "outside.wav", 16000, seconds=0.5, freq=880.0, amplitude=0.3)
    (inside / "escape.wav").symlink_to(folder / "outside.wav")  # leads out: refused
    (inside / "alias.wav").symlink_to(inside / "tone.wav")  # stays inside: fine
    return folder


@pytest.fixture(scope="module")
def daemon(prompts):
    config = base_config(security={"control_token": TOKEN}, control={"prompts": "prompts"},
                         log_level="debug")  # notify/cleared answers are debug lines
    daemon = Daemon(prompts, config).start()
    yield daemon
    assert daemon.stop() == 0


def test_calls_are_listed_with_what_they_are_and_one_call_is_described(daemon):
    a = Live(daemon, "list-a", seconds=1.5)
    b = Live(daemon, "list-b", pipeline="louder", seconds=1.5)
    status, answer = api(daemon, "GET", "/calls")
    assert status == 200
    listed = {call["uuid"]: call for call in answer["calls"]}
    assert {"list-a", "list-b"} <= set(listed)
    one = listed["list-b"]
    assert one["pipeline"] == "louder" and one["rate"] == RATE and one["worker"]
    assert set(one) == {"uuid", "conversation_uuid", "pipeline", "rate", "started",
                        "frames_in", "frames_out", "worker"}
    b.wait_frames(one["frames_in"] + 5)
    assert b.info()["frames_out"] > one["frames_out"]  # live counters
    assert a.end().ok and b.end().ok
    assert api(daemon, "GET", "/calls/list-a")[0] == 404  # gone once the call has ended


def test_play_mixes_the_prompt_into_the_call_bit_exact_from_a_frame_boundary(daemon, prompts):
    call = Live(daemon, "play", seconds=2.0)  # the caller is silent: we hear the prompt alone
    status, answer = api(daemon, "POST", "/calls/play/play", {"path": "alias.wav"})
    assert status == 200, answer
    assert answer["seconds"] == 0.5 and answer["path"] == "alias.wav"
    heard = call.end().received
    prompt = files.load(prompts / "prompts" / "tone.wav").samples(RATE)  # 22.05 -> 16 kHz
    start = int(np.flatnonzero(heard)[0]) // N * N
    assert np.array_equal(heard[start: start + len(prompt)], prompt)
    assert not heard[:start].any() and not heard[start + len(prompt):].any()
    assert abs(peak_frequency(heard[start: start + len(prompt)], RATE) - 440) < 5


def test_hangup_closes_the_socket_1000_with_outcome_hangup_api(daemon):
    before = daemon.metric_or_zero("voicews_calls_total", 'outcome="hangup_api",pipeline="echo"')
    call = Live(daemon, "bye", seconds=30)
    status, answer = api(daemon, "POST", "/calls/bye/hangup", {"reason": "agent took over"})
    assert (status, answer["outcome"]) == (200, "hangup_api")
    result = call.end()
    assert (result.close_code, result.closed_by, result.close_reason) == (
        1000, "server", "agent took over")
    assert result.duration < 10
    log = daemon.wait_log("call ended uuid=bye")
    assert "call ended uuid=bye pipeline=echo outcome=hangup_api" in log
    daemon.wait_metric("voicews_calls_total", before + 1, 'outcome="hangup_api",pipeline="echo"')


def test_pipeline_switch_makes_the_echo_6_db_louder_from_one_frame_on_no_gap_no_double(daemon):
    voice = np.random.default_rng(3).integers(-8000, 8000, 3 * RATE).astype("<i2")
    call = Live(daemon, "switch", pipeline="echo", play=voice, seconds=3.0)
    call.wait_frames(40)
    first = call.info()["frames_in"]
    status, answer = api(daemon, "POST", "/calls/switch/pipeline", {"name": "louder"})
    assert status == 200, answer
    assert (answer["pipeline"], answer["previous"]) == ("louder", "echo")
    last = call.info()["frames_in"]
    result = call.end()
    assert result.ok and result.frames_received == result.frames_sent
    sent, heard = result.sent.reshape(-1, N), result.received.reshape(-1, N)
    louder = saturate(sent.astype(np.float64) * db_to_factor(6))
    echoed = np.all(heard == sent, axis=1)
    switch = int(np.argmin(echoed))  # the first frame that is not the plain echo
    assert first <= switch <= last  # it happened while the request was served
    assert echoed[:switch].all()  # up to there: the echo, bit-exact
    assert np.array_equal(heard[switch:], louder[switch:])  # then louder, every frame
    voiced = slice(switch, len(voice) // N)
    gain = np.sqrt(np.mean(heard[voiced].astype(float) ** 2) / np.mean(
        sent[voiced].astype(float) ** 2))
    assert gain == pytest.approx(1.995, abs=0.002)
    assert "call ended uuid=switch pipeline=louder" in daemon.wait_log("call ended uuid=switch")


def test_clear_cuts_what_is_playing_and_tells_vonage(daemon):
    call = Live(daemon, "clear", seconds=2.5)
    assert api(daemon, "POST", "/calls/clear/play", {"path": "sub/long.wav"})[0] == 200
    frames = call.info()["frames_out"]
    call.wait_frames(frames + 20)
    assert api(daemon, "POST", "/calls/clear/clear", {})[0] == 200
    result = call.end()
    assert {"action": "clear"} in result.commands
    assert {"event": "websocket:cleared"} in result.events_sent
    playing = np.flatnonzero(np.any(result.received.reshape(-1, N) != 0, axis=1))
    assert 20 <= len(playing) < 100  # 2 s asked: cut short
    assert np.array_equal(playing, np.arange(playing[0], playing[-1] + 1))  # one stretch
    daemon.wait_log("event cleared uuid=clear")


def test_notify_goes_to_vonage_and_comes_back_as_an_event(daemon):
    call = Live(daemon, "mark", seconds=1.5)
    status, _ = api(daemon, "POST", "/calls/mark/notify", {"payload": {"mark": "n1"}})
    assert status == 200
    result = call.end()
    assert {"action": "notify", "payload": {"mark": "n1"}} in result.commands
    assert {"event": "websocket:notify", "payload": {"mark": "n1"}} in result.events_sent
    assert "event notify uuid=mark digit=None payload={'mark': 'n1'}" in daemon.wait_log(
        "event notify uuid=mark")


def test_vonages_answers_to_a_burst_of_notifies_never_close_the_call(daemon):
    """Each notify is answered by an event on the socket; answers to our own commands do
    not count against the call's text limit (50 at once, 10 a second)."""
    call = Live(daemon, "burst", seconds=2.0)
    statuses = [api(daemon, "POST", "/calls/burst/notify", {"payload": {"n": n}})[0]
                for n in range(300)]
    assert set(statuses) == {200}
    result = call.end()
    assert result.ok and (result.close_code, result.closed_by) == (1000, "simulator")
    answered = [e for e in result.events_sent if e["event"] == "websocket:notify"]
    assert len(answered) == 300


SAID = "Hello from the control API."


def speech_start(heard: np.ndarray) -> int:
    return int(np.flatnonzero(heard)[0]) // N * N


@needs_espeak
def test_say_speaks_into_the_call_and_answers_once_vonage_has_played_it(daemon):
    call = Live(daemon, "say", seconds=4.0)  # a silent caller: we hear the speech alone
    asked = time.monotonic()
    status, answer = api(daemon, "POST", "/calls/say/say", {"text": SAID})
    took = time.monotonic() - asked
    assert status == 200, answer
    assert (answer["action"], answer["outcome"], answer["uuid"]) == ("say", "played", "say")
    assert answer["heard"] == answer["seconds"] and 1.0 < answer["seconds"] < 3.0
    assert took >= answer["seconds"]  # the answer came once it had played, not before
    result = call.end()
    speech = spoken(SAID)
    assert answer["seconds"] == round(len(speech) / RATE, 3)
    heard = result.received
    start = speech_start(heard)
    assert np.array_equal(heard[start: start + len(speech)], speech)  # exactly espeak-ng's
    assert not heard[start + len(speech):].any()
    assert {"action": "notify", "payload": {"say": 1}} in result.commands
    assert "control say uuid=say -> 200" in daemon.wait_log("control say uuid=say")


@needs_espeak
def test_say_without_waiting_answers_at_once_and_a_clear_interrupts_a_waiting_say(daemon):
    call = Live(daemon, "say-cut", seconds=6.0)
    asked = time.monotonic()
    status, answer = api(daemon, "POST", "/calls/say-cut/say", {"text": SAID, "wait": False})
    assert (status, answer["queued"]) == (200, True) and "outcome" not in answer
    assert time.monotonic() - asked < 1.0  # the speech itself lasts 1.8 s
    long_text = "This sentence is long enough to be cut short by a clear from the API. " * 2
    waiting: list = []
    thread = threading.Thread(target=lambda: waiting.append(
        api(daemon, "POST", "/calls/say-cut/say", {"text": long_text, "voice": "en-us"})))
    thread.start()
    call.wait_frames(call.info()["frames_in"] + 150)  # 3 s: the first text and some of this
    assert api(daemon, "POST", "/calls/say-cut/clear", {})[0] == 200
    thread.join(10)
    ((status, answer),) = waiting
    assert status == 200 and answer["outcome"] == "interrupted", answer
    assert 0 < answer["heard"] < answer["seconds"] - 2
    result = call.end()
    first = spoken(SAID)
    start = speech_start(result.received)
    assert np.array_equal(result.received[start: start + len(first)], first)
    assert {"action": "clear"} in result.commands


@needs_espeak
def test_say_refusals_name_what_is_wrong(daemon):
    call = Live(daemon, "say-bad", seconds=30)
    for body, status, reason in [
        ({}, 400, "say needs 'text'"),
        ({"text": ""}, 400, "'text' must not be empty"),
        ({"text": 3}, 400, "'text' must be a string"),
        ({"text": "hi", "wait": "no"}, 400, "'wait' must be true or false"),
        ({"text": "hi", "speed": 200}, 400, "unknown key 'speed' for say (keys: text, voice, "
                                            "wait)"),
        ({"text": "hi", "voice": "xx-nosuch"}, 400, "espeak-ng has no voice 'xx-nosuch' "
                                                    "(espeak-ng --voices lists them)"),
        ({"text": "hi", "voice": "-x"}, 400, "not an espeak-ng voice name: '-x'"),
        ({"text": "a" * 1001}, 400, "cannot say it: text is 1001 characters, more than "
                                    "max_chars (1000)"),
    ]:
        got, answer = api(daemon, "POST", "/calls/say-bad/say", body)
        assert (got, answer.get("error")) == (status, reason), body
    assert api(daemon, "POST", "/calls/nobody/say", {"text": "hi"}) == (
        404, {"error": "no such call", "uuid": "nobody"})
    assert api(daemon, "POST", "/calls/say-bad/say", {"text": "hi"}, token=None)[0] == 401
    assert api(daemon, "POST", "/calls/say-bad/say", {"text": "hi"}, token="wrong")[0] == 403
    assert daemon.metric("voicews_control_actions_total",
                         'action="say",result="bad_request"') >= 8
    assert api(daemon, "POST", "/calls/say-bad/hangup")[0] == 200
    result = call.end()
    assert not result.received.any()  # nothing was said


def test_no_token_wrong_token_and_other_schemes_are_refused(daemon):
    before = daemon.metric_or_zero("voicews_rejected_total", 'reason="control_auth"')
    status, _, body = daemon.request("/calls")
    assert status == 401 and b"Bearer" in body
    assert api(daemon, "GET", "/calls", token="wrong")[0] == 403
    assert api(daemon, "POST", "/calls/x/hangup", token=None,
               headers={"Authorization": f"Basic {TOKEN}"})[0] == 403
    assert daemon.metric("voicews_rejected_total", 'reason="control_auth"') == before + 3
    assert "GET /calls from 127.0.0.1" in daemon.wait_log("refused 401")


def test_the_api_is_off_without_a_token_and_says_how_to_turn_it_on(start_daemon):
    daemon = start_daemon()
    status, answer = api(daemon, "GET", "/calls")
    assert status == 403 and "security.control_token" in answer["error"]
    assert daemon.metric("voicews_rejected_total", 'reason="control_off"') == 1


def test_unknown_calls_and_actions_are_404_and_bad_bodies_400(daemon):
    assert api(daemon, "GET", "/calls/nobody") == (404, {"error": "no such call",
                                                         "uuid": "nobody"})
    assert api(daemon, "POST", "/calls/nobody/hangup", {})[0] == 404
    status, answer = api(daemon, "POST", "/calls/nobody/dance", {})
    assert status == 404 and "unknown action 'dance'" in answer["error"]
    assert api(daemon, "GET", "/calls/a%20b")[0] == 400  # uuids are plain: logs stay sane
    assert api(daemon, "POST", "/calls/" + "x" * 129 + "/clear", {})[0] == 400
    for body, reason in [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{}", "play needs 'path'"),
        (b'{"path": 3}', "'path' must be a string"),
        (b'{"path": "a.wav", "loop": true}', "unknown key 'loop'"),
    ]:
        status, answer = api(daemon, "POST", "/calls/nobody/play", raw=body)
        assert (status, reason in answer["error"]) == (400, True), (body, answer)
    status, answer = api(daemon, "POST", "/calls/nobody/notify", {"payload": "text"})
    assert status == 400 and "'payload' must be a JSON object" in answer["error"]
    before = daemon.metric("voicews_control_actions_total", 'action="play",result="bad_request"')
    assert before >= 5


def test_a_path_never_leaves_the_prompts_folder(daemon):
    call = Live(daemon, "paths", seconds=30)
    for path, reason in [
        ("/etc/passwd", "must be relative"),
        ("~/x.wav", "must be relative"),
        ("../outside.wav", "must not contain '..'"),
        ("sub/../../outside.wav", "must not contain '..'"),
        ("escape.wav", "leads outside the prompts folder"),
        ("missing.wav", "no prompt file 'missing.wav'"),
        ("sub", "no prompt file 'sub'"),
        ("notes.txt", "cannot play 'notes.txt'"),
    ]:
        status, answer = api(daemon, "POST", "/calls/paths/play", {"path": path})
        assert (status, reason in answer.get("error", "")) == (400, True), (path, answer)
    status, answer = api(daemon, "POST", "/calls/paths/pipeline", {"name": "nowhere"})
    assert status == 400 and "no pipeline named 'nowhere' (pipelines: echo, louder)" in answer[
        "error"]
    assert api(daemon, "POST", "/calls/paths/hangup")[0] == 200
    result = call.end()
    assert result.close_code == 1000 and not result.received.any()  # nothing was played
