"""The ``bridge`` processor through a real ``twistd voicews`` on loopback.

The Vonage side of each call is ``voicews.simulator`` (paced at 20 ms, with
Vonage's playout model answering notify and clear); the far end is one of the
test bots of tests/bots.py, written from the protocols' references, which echo
the caller *inverted*, so the bot's audio is told apart from a plain echo.  One
daemon serves every test, with one pipeline per case; each call carries its own
uuid, by which the test finds the bot's session of that call.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest
import soundfile

from voicews.audio import g711
from voicews.audio.files import resample, tone
from voicews.simulator import CallResult, echo_lag, simulate_socket

from bots import Bot, Session, TwilioBot, VonageBot
from conftest import REPO, Daemon, base_config, free_port
from conftest import wait_for as poll

SPEECH = REPO / "tests" / "data" / "speech" / "two_cities.wav"
RATE = 16000
FRAME = RATE // 50
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    samples, rate = soundfile.read(SPEECH, dtype="int16")
    assert rate == RATE
    return samples[RATE // 2 : RATE * 3 // 2]  # 1 s of speech


@pytest.fixture(scope="module")
def bots():
    with TwilioBot() as tw, VonageBot() as vo, TwilioBot(echo=False) as tw_quiet, \
            VonageBot(echo=False) as vo_quiet, TwilioBot(reject=403) as refusing:
        yield {"tw": tw, "vo": vo, "tw_quiet": tw_quiet, "vo_quiet": vo_quiet,
               "refusing": refusing}


@pytest.fixture(scope="module")
def doc_bot(tmp_path_factory):
    """The example bot of docs/bridge.md, run as its reader would: a process of its own."""
    page = (REPO / "docs" / "bridge.md").read_text()
    code = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    workdir = tmp_path_factory.mktemp("doc-bot")
    (workdir / "bot.py").write_text(code)
    port = free_port()
    out = (workdir / "out.txt").open("w")
    proc = subprocess.Popen([sys.executable, "bot.py", str(port)], cwd=workdir, stdout=out,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "the bot did not start"
            time.sleep(0.02)
    yield f"ws://127.0.0.1:{port}/", workdir / "out.txt"
    proc.terminate()
    proc.wait(5)
    out.close()


@pytest.fixture(scope="module")
def daemon(bots, doc_bot, tmp_path_factory):
    tw, vo, quiet, vquiet = (bots[k].url for k in ("tw", "vo", "tw_quiet", "vo_quiet"))
    nobody = f"ws://127.0.0.1:{free_port()}/stream"

    def bridge(url: str, protocol: str = "twilio", **more) -> dict:
        return {"bridge": {"url": url, "protocol": protocol, **more}}

    pipelines = {
        "tw": [bridge(tw, headers={"Authorization": "Bearer t0k"},
                      parameters={"botId": "b-7"})],
        "vo": [bridge(vo, "vonage", parameters={"botId": "b-7"})],
        "tw_quiet": [bridge(quiet)],
        "vo_quiet": [bridge(vquiet, "vonage")],
        "tw_flood": [bridge(quiet, max_lead_seconds=0.5)],
        "nobody_hangup": [bridge(nobody)],
        "nobody_continue": ["echo", bridge(nobody, on_failure="continue")],
        "refused": [bridge(bots["refusing"].url, "vonage")],
        "tw_continue": [bridge(tw, on_failure="continue")],
        "tw_reconnect": [bridge(tw, reconnect={"tries": 2, "initial_delay": 0.05})],
        "doc": [bridge(doc_bot[0])],
    }
    workdir = tmp_path_factory.mktemp("bridge-daemon")
    d = Daemon(workdir, base_config(pipelines=pipelines)).start()
    yield d
    d.stop()


pool = ThreadPoolExecutor(4)


def call(daemon: Daemon, pipeline: str, **fields) -> tuple[str, Future[CallResult]]:
    """Start a simulated call in a thread; its uuid and its future result."""
    call_uuid = str(uuid.uuid4())
    future = pool.submit(simulate_socket, daemon.ws,
                         headers={"pipeline": pipeline, "uuid": call_uuid}, **fields)
    return call_uuid, future


def session_of(bot: Bot, call_uuid: str, index: int = 0) -> Session:
    """The bot's `index`-th connection for the call `call_uuid` (waits for it)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        found = [s for s in list(bot.sessions) if _uuid(s) == call_uuid]
        if len(found) > index:
            return found[index]
        time.sleep(0.01)
    raise AssertionError(f"no connection {index} for call {call_uuid}")


def _uuid(session: Session) -> str | None:
    for message in session.texts[:2]:
        if message.get("event") == "start":
            return message["start"]["customParameters"].get("uuid")
        if message.get("event") == "websocket:connected":
            return message.get("uuid")
    return None


def ended(session: Session) -> Session:
    """The session, once the bot has seen its socket close (all it was sent is in)."""
    wait_for(session.closed.is_set, what="the bot's socket to close")
    return session


wait_for = functools.partial(poll, timeout=TIMEOUT, every=0.005)


def loud_frames(audio: np.ndarray) -> int:
    """Frames of `audio` with more than digital-silence energy."""
    frames = audio[: len(audio) // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64)
    return int(np.sum(np.sqrt(np.mean(frames**2, axis=1)) > 100))


def log_count(daemon: Daemon, text: str) -> int:
    return daemon.log().count(text)


# -- each protocol end to end -----------------------------------------------------------------


def test_a_twilio_bot_hears_the_caller_and_the_caller_hears_its_inverted_echo(
        daemon, bots, speech):
    bot = bots["tw"]
    call_uuid, future = call(daemon, "tw", play=speech, seconds=1.4, dtmf=[("5", 0.5)])
    result = future.result(30)
    assert result.ok, result.error
    session = ended(session_of(bot, call_uuid))

    # What Twilio sends first, with the call's headers and the step's parameters.
    assert session.request_headers.get("Authorization") == "Bearer t0k"
    connected, start = session.texts[0], session.texts[1]
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start["start"]["callSid"] == "CA" + call_uuid.replace("-", "")
    assert start["start"]["customParameters"] == {"pipeline": "tw", "uuid": call_uuid,
                                                  "botId": "b-7"}
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                             "channels": 1}
    # The caller's audio reached the bot: every frame, as μ-law 8 kHz of the same speech.
    media = session.events("media")
    assert len(media) == result.frames_sent
    assert [m["media"]["chunk"] for m in media] == [str(i + 1) for i in range(len(media))]
    heard = g711.decode(b"".join(base64.b64decode(m["media"]["payload"]) for m in media))
    assert echo_lag(resample(result.sent, RATE, 8000), heard, 8000) is not None
    # The key press went through; the stream ended with stop; sequence numbers count up.
    assert [m["dtmf"]["digit"] for m in session.events("dtmf")] == ["5"]
    assert session.texts[-1]["event"] == "stop"
    assert [int(m["sequenceNumber"]) for m in session.texts[1:]] == list(
        range(1, len(session.texts)))
    # The caller heard the bot: the speech inverted (a plain echo would not match this way).
    assert echo_lag(result.sent, -result.received.astype(np.int32), RATE) is not None
    assert echo_lag(result.sent, result.received, RATE) is None
    # Marks after each echo were answered in order once their audio had played.
    answered = bot.marks_back(session)
    assert answered == [f"echo {i + 1}" for i in range(len(answered))]
    assert len(result.received) // FRAME - 5 <= len(answered) <= session.echoed


def test_a_vonage_protocol_bot_gets_the_frames_bit_exact_and_its_echo_is_played(
        daemon, bots, speech):
    bot = bots["vo"]
    call_uuid, future = call(daemon, "vo", play=speech, seconds=1.4, dtmf=[("7", 0.4)])
    result = future.result(30)
    assert result.ok, result.error
    session = ended(session_of(bot, call_uuid))
    assert session.texts[0] == {"event": "websocket:connected",
                                "content-type": "audio/l16;rate=16000",
                                "pipeline": "vo", "uuid": call_uuid, "botId": "b-7"}
    assert b"".join(session.binaries) == result.sent.tobytes()
    inverted = np.clip(-result.sent.astype(np.int32), -32768, 32767).astype(np.int16)
    assert len(result.received) >= len(result.sent) - 5 * FRAME
    assert np.array_equal(result.received, inverted[: len(result.received)])
    assert [(m["digit"], m["duration"]) for m in session.events("websocket:dtmf")] == [("7", 260)]
    answered = bot.notifies_back(session)
    assert answered == [{"echo": i + 1} for i in range(len(answered))]
    assert len(result.received) // FRAME - 5 <= len(answered) <= session.echoed


# -- marks and clear --------------------------------------------------------------------------


def _marks_and_clear(daemon, bot, pipeline: str, play, mark, answers, clear) -> Session:
    """Idle mark, 1 s of tone + mark, 3 s of tone + mark then clear after 0.3 s."""
    call_uuid, future = call(daemon, pipeline, seconds=2.0)
    session = session_of(bot, call_uuid)

    sent = time.monotonic()
    mark(session, "idle")
    wait_for(lambda: len(answers(session)) == 1, what="idle mark")
    assert time.monotonic() - sent < 0.5  # nothing queued: answered at once

    play(session, 1.0)
    sent = time.monotonic()
    mark(session, "tone")
    wait_for(lambda: len(answers(session)) == 2, what="tone mark")
    waited = time.monotonic() - sent
    assert 0.9 <= waited <= 2.0, waited  # once its second of audio had played

    play(session, 3.0)
    mark(session, "cut")
    time.sleep(0.3)
    cleared = time.monotonic()
    clear(session)
    wait_for(lambda: len(answers(session)) == 3, what="cut mark")
    assert time.monotonic() - cleared < 0.5  # the clear answered it, not its audio
    result = future.result(30)
    assert result.ok, result.error
    assert answers(session) == ["idle", "tone", "cut"]
    assert {"action": "clear"} in result.commands
    # 1 s of tone, then about 0.3 s of the 3 s one: the rest was cleared.
    assert 60 <= loud_frames(result.received) <= 100, loud_frames(result.received)
    return session


def test_twilio_marks_are_answered_after_their_audio_and_clear_cuts_it(daemon, bots):
    bot = bots["tw_quiet"]
    tone8k = tone(8000, 3.0, 440)

    def play(session, seconds):
        bot.play(session, g711.encode(tone8k[: int(8000 * seconds)]))

    _marks_and_clear(daemon, bot, "tw_quiet", play, bot.mark, bot.marks_back, bot.clear)


def test_vonage_notifies_are_answered_after_their_audio_and_clear_cuts_it(daemon, bots):
    bot = bots["vo_quiet"]
    tone16k = tone(RATE, 3.0, 440)

    def play(session, seconds):
        audio = tone16k[: int(RATE * seconds)].astype("<i2").tobytes()
        for start in range(0, len(audio), 6400):
            bot.send(session, audio[start : start + 6400])

    def answers(session):
        return [p for p in bot.notifies_back(session)]

    session = _marks_and_clear(daemon, bot, "vo_quiet", play, bot.notify, answers, bot.clear)
    cleared = [m["event"] for m in session.texts if m.get("event") != "websocket:connected"]
    assert cleared[-1] == "websocket:cleared"  # after the notify the clear answered


# -- a bot sending faster than real time --------------------------------------------------------


def test_a_bot_flooding_audio_is_held_to_the_lead_limit(daemon, bots):
    bot = bots["tw_quiet"]
    call_uuid, future = call(daemon, "tw_flood", seconds=1.0)
    session = session_of(bot, call_uuid)
    bot.play(session, g711.encode(tone(8000, 30.0, 440)), chunk=8000)  # 30 s in 1 s messages
    bot.mark(session, "flooded")
    result = future.result(30)
    assert result.ok, result.error
    # 0.5 s ahead of the caller's ear is kept (max_lead_seconds), the rest dropped: what
    # the caller heard is what played during the (1 s) call, the rest of the 30 s is counted.
    assert loud_frames(result.received) <= result.frames_sent
    assert bot.marks_back(session) == ["flooded"]
    log = daemon.wait_log(f"audio dropped past the lead limit, 0 messages ignored uuid={call_uuid}")
    dropped = re.search(rf"(\d+\.\d+) s of the bot's audio dropped[^\n]*{call_uuid}", log)
    assert dropped and 28.4 <= float(dropped.group(1)) <= 29.6
    assert log.count(f"faster than it plays; dropping what is over 0.5 s ahead "
                     f"(max_lead_seconds) uuid={call_uuid}") == 1


# -- garbage ----------------------------------------------------------------------------------


def test_garbage_from_the_bot_is_ignored_with_one_log_line(daemon, bots, speech):
    bot = bots["vo"]
    call_uuid, future = call(daemon, "vo", play=speech, seconds=1.4)
    session = session_of(bot, call_uuid)
    wait_for(lambda: session.echoed > 5, what="echo")
    for junk in ("not json", b"\x01\x02\x03", '{"action": "dance"}', "[1, 2]",
                 '{"action": "notify"}' * 3):
        bot.send(session, junk)
    result = future.result(30)
    assert result.ok, result.error  # the call went on to its end
    inverted = np.clip(-result.sent.astype(np.int32), -32768, 32767).astype(np.int16)
    assert np.array_equal(result.received, inverted[: len(result.received)])
    log = daemon.wait_log(f"5 messages ignored uuid={call_uuid}")
    assert log.count(f"at most one line a minute) uuid={call_uuid}") == 1


# -- failures ----------------------------------------------------------------------------------


def test_nothing_listening_hangs_up_with_1014_or_goes_on_with_continue(daemon, speech):
    _, hangup = call(daemon, "nobody_hangup", play=speech)
    _, goes_on = call(daemon, "nobody_continue", play=speech, seconds=1.0)
    refused_uuid, refused = call(daemon, "refused", play=speech)
    result = hangup.result(30)
    assert (result.close_code, result.closed_by) == (1014, "server")
    assert result.close_reason.startswith("bridge: could not connect to ws://127.0.0.1:")
    result = refused.result(30)
    assert (result.close_code, result.closed_by) == (1014, "server")
    # The close frame's reason is cut at 123 bytes; the log has all of it.
    daemon.wait_log(f"closing call uuid={refused_uuid}")
    assert re.search(rf"uuid={refused_uuid} .*code=1014: bridge: could not open .*\[403\]",
                     daemon.log())
    # continue: the call lasts, and the step passes its input (here: the echo) through.
    result = goes_on.result(30)
    assert result.ok and result.closed_by == "simulator", result.error
    assert echo_lag(result.sent, result.received, RATE) == 0
    assert "the call goes on without the bot (on_failure: continue)" in daemon.log()


def _mid_call(daemon, bots, pipeline: str, action) -> tuple[CallResult, Session]:
    bot = bots["tw"]
    call_uuid, future = call(daemon, pipeline, seconds=1.0)
    session = session_of(bot, call_uuid)
    wait_for(lambda: session.echoed > 10, what="echo")
    action(bot, session)
    return future.result(30), session


def test_the_bot_closing_normally_ends_the_call_normally(daemon, bots):
    result, _ = _mid_call(daemon, bots, "tw", lambda bot, s: bot.close(s, 1000, "bye"))
    assert (result.close_code, result.closed_by) == (1000, "server")
    assert "far end closed the socket with code 1000 (bye)" in result.close_reason
    assert result.frames_sent < 40  # well before the call's 1 s


def test_the_bot_dropping_hangs_up_with_1014(daemon, bots):
    result, _ = _mid_call(daemon, bots, "tw", lambda bot, s: bot.drop(s))
    assert (result.close_code, result.closed_by) == (1014, "server")
    assert result.close_reason.startswith("bridge: ")


def test_the_bot_dropping_with_continue_keeps_the_call(daemon, bots):
    result, _ = _mid_call(daemon, bots, "tw_continue", lambda bot, s: bot.drop(s))
    assert result.ok and result.closed_by == "simulator", result.error
    assert result.frames_sent == 50


def test_the_bot_dropping_with_reconnect_gets_a_new_stream(daemon, bots):
    result, first = _mid_call(daemon, bots, "tw_reconnect", lambda bot, s: bot.drop(s))
    assert result.ok and result.closed_by == "simulator", result.error
    second = ended(session_of(bots["tw"], _uuid(first) or "", index=1))
    assert second.events("start")[0]["streamSid"] != first.events("start")[0]["streamSid"]
    # The caller's audio went on to the new stream, chunks counted afresh, and ended with stop.
    assert second.events("media")[0]["media"]["chunk"] == "1"
    assert len(first.events("media")) + len(second.events("media")) >= 45
    assert second.texts[-1]["event"] == "stop"


# -- the documentation's bot, and the benchmark ----------------------------------------------


def test_the_documented_twilio_bot_runs_unchanged(daemon, doc_bot, speech):
    _, printed = doc_bot
    call_uuid, future = call(daemon, "doc", play=speech, seconds=1.4, dtmf=[("5", 0.6)])
    result = future.result(30)
    assert result.ok, result.error
    # The caller hears themself (through μ-law at 8 kHz), and the key press cleared.
    assert echo_lag(result.sent, result.received, RATE, window_seconds=0.5) is not None
    assert {"action": "clear"} in result.commands
    lines = wait_for(lambda: "stop" in printed.read_text().split("\n") and printed.read_text(),
                     what="the bot's stop").splitlines()
    assert f"call CA{call_uuid.replace('-', '')} {{'pipeline': 'doc', 'uuid': '{call_uuid}'}}" \
        in lines
    assert "played: key 5" in lines


def test_the_bridge_bench_runs_and_reports():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bridge.py"), "--frames", "300"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(report["us_per_frame"]) == {"echo", "bridge-twilio", "bridge-vonage"}
    assert all(us > 0 for us in report["us_per_frame"].values())
