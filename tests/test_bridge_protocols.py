"""The far end's protocols as state machines: voicews.bridge.twilio and voicews.bridge.vonage.

The expected messages are written from the references (Twilio's "Media Streams -
WebSocket Messages", shared/docs/vonage-voice-websocket.md), field by field.
"""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicews.audio import g711
from voicews.audio.files import tone
from voicews.bridge.actions import Clear, Ignored, Mark, Play, Reply
from voicews.bridge.twilio import TwilioStream
from voicews.bridge.vonage import VonageStream

from audio_checks import level_db, peak_frequency

UUID = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
HEADERS = {"pipeline": "echo", "caller": "447700900000", "attempt": 2, "vip": True}
SID = re.compile(r"^(MZ|CA|AC)[0-9a-f]{32}$")


def frames(samples: np.ndarray, rate: int) -> list[np.ndarray]:
    n = rate // 50
    return [samples[i:i + n] for i in range(0, len(samples) - n + 1, n)]


# -- Twilio: what voicews sends --------------------------------------------------------------


def test_opening_is_connected_then_start_as_in_the_reference():
    stream = TwilioStream(UUID, HEADERS, 16000)
    connected, start = (json.loads(m) for m in stream.opening())
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert set(start) == {"event", "sequenceNumber", "start", "streamSid"}
    assert start["event"] == "start"
    assert start["sequenceNumber"] == "1"
    body = start["start"]
    assert set(body) == {"accountSid", "streamSid", "callSid", "tracks", "customParameters",
                         "mediaFormat"}
    assert body["streamSid"] == start["streamSid"]
    for key in ("accountSid", "streamSid", "callSid"):
        assert SID.match(body[key]), body[key]
    assert body["streamSid"].startswith("MZ") and body["callSid"].startswith("CA")
    assert body["accountSid"].startswith("AC")
    assert body["callSid"] == "CA" + UUID.replace("-", "")  # the Vonage uuid, recognisably
    assert body["tracks"] == ["inbound"]
    assert body["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    # Twilio's customParameters are strings.
    assert body["customParameters"] == {"pipeline": "echo", "caller": "447700900000",
                                        "attempt": "2", "vip": "true"}
    with pytest.raises(RuntimeError):
        stream.opening()


def test_sids_are_stable_per_call_and_new_per_connection():
    a, b = TwilioStream(UUID, {}, 8000), TwilioStream(UUID, {}, 8000)
    assert (a.stream_sid, a.call_sid, a.account_sid) == (b.stream_sid, b.call_sid, b.account_sid)
    again = TwilioStream(UUID, {}, 8000, attempt=1)
    assert again.stream_sid != a.stream_sid and again.call_sid == a.call_sid
    other = TwilioStream("not-a-uuid", {}, 8000)
    assert SID.match(other.call_sid) and other.call_sid != a.call_sid


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_media_messages_number_and_time_their_chunks_as_the_reference(rate):
    stream = TwilioStream(UUID, {}, rate)
    stream.opening()
    messages = [json.loads(stream.media(f)) for f in frames(tone(rate, 0.1, 1000), rate)]
    assert len(messages) == 5
    for i, message in enumerate(messages, start=1):
        assert set(message) == {"event", "sequenceNumber", "media", "streamSid"}
        assert message["event"] == "media"
        assert message["sequenceNumber"] == str(i + 1)  # start was 1
        assert message["streamSid"] == stream.stream_sid
        media = message["media"]
        assert set(media) == {"track", "chunk", "timestamp", "payload"}
        assert media["track"] == "inbound"
        assert media["chunk"] == str(i)
        assert media["timestamp"] == str((i - 1) * 20)
        assert len(base64.b64decode(media["payload"], validate=True)) == 160  # 20 ms μ-law
    dtmf = json.loads(stream.dtmf("5"))
    assert dtmf == {"event": "dtmf", "streamSid": stream.stream_sid, "sequenceNumber": "7",
                    "dtmf": {"track": "inbound_track", "digit": "5"}}
    [stop] = stream.stop()
    assert json.loads(stop) == {"event": "stop", "sequenceNumber": "8",
                                "stop": {"accountSid": stream.account_sid,
                                         "callSid": stream.call_sid},
                                "streamSid": stream.stream_sid}
    assert stream.stop() == []


def test_a_frame_of_the_wrong_size_is_a_bug_in_the_caller():
    stream = TwilioStream(UUID, {}, 16000)
    with pytest.raises(ValueError):
        stream.media(np.zeros(160, dtype="<i2"))
    with pytest.raises(ValueError):
        TwilioStream(UUID, {}, 44100)


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_a_tone_keeps_its_pitch_and_level_through_mulaw_both_ways(rate):
    """1 kHz at the call's rate -> media() -> μ-law 8 kHz -> receive() -> the call's rate."""
    stream = TwilioStream(UUID, {}, rate)
    stream.opening()
    sent = tone(rate, 1.0, 1000, level=0.25)
    payloads = [json.loads(stream.media(f))["media"]["payload"] for f in frames(sent, rate)]
    mulaw = b"".join(base64.b64decode(p) for p in payloads)
    heard_by_bot = g711.decode(mulaw)[800:]  # past the resampler's delay
    assert peak_frequency(heard_by_bot, 8000) == pytest.approx(1000, abs=2)
    assert abs(level_db(heard_by_bot) - level_db(sent)) < 1.0
    # The bot sends it all back in messages of odd sizes: one signal comes out.
    played = []
    for start in range(0, len(mulaw), 333):
        chunk = base64.b64encode(mulaw[start:start + 333]).decode()
        for action in stream.receive(json.dumps({"event": "media", "streamSid": stream.stream_sid,
                                                 "media": {"payload": chunk}})):
            assert isinstance(action, Play)
            played.append(action.samples)
    played += [a.samples for a in stream.drain()]
    back = np.concatenate(played)
    assert len(back) == len(sent)
    assert back.dtype == np.dtype("<i2")
    steady = back[rate // 10:]
    assert peak_frequency(steady, rate) == pytest.approx(1000, abs=2)
    assert abs(level_db(steady) - level_db(sent)) < 1.0


def test_marks_wait_for_their_audio_and_a_clear_answers_them_all():
    stream = TwilioStream(UUID, {}, 16000)
    stream.opening()
    sid = stream.stream_sid

    def mark(name):
        [action] = stream.receive(json.dumps({"event": "mark", "streamSid": sid,
                                              "mark": {"name": name}}))
        assert isinstance(action, Mark) and action.name == name
        return action

    first, second, third = mark("one"), mark("two"), mark("one")  # names may repeat
    assert len({first.id, second.id, third.id}) == 3
    [echo] = stream.mark_played(first.id)
    assert json.loads(echo) == {"event": "mark", "sequenceNumber": "2", "streamSid": sid,
                                "mark": {"name": "one"}}
    assert stream.mark_played(first.id) == []  # answered once
    fourth = mark("four")
    actions = stream.receive(json.dumps({"event": "clear", "streamSid": sid}))
    assert isinstance(actions[0], Clear)
    replies = [json.loads(a.message) for a in actions[1:] if isinstance(a, Reply)]
    assert [r["mark"]["name"] for r in replies] == ["two", "one", "four"]
    assert [r["sequenceNumber"] for r in replies] == ["3", "4", "5"]
    assert stream.mark_played(fourth.id) == []  # Vonage's late notify after the clear


def test_a_later_mark_played_answers_the_earlier_ones_too():
    stream = TwilioStream(UUID, {}, 8000)
    marks = [stream.receive(json.dumps({"event": "mark", "mark": {"name": str(i)}}))[0]
             for i in range(3)]
    echoes = stream.mark_played(marks[2].id)
    assert [json.loads(e)["mark"]["name"] for e in echoes] == ["0", "1", "2"]


def test_waiting_marks_are_bounded():
    stream = TwilioStream(UUID, {}, 8000, max_pending_marks=2)
    kinds = [type(stream.receive('{"event":"mark","mark":{"name":"m"}}')[0]) for _ in range(3)]
    assert kinds == [Mark, Mark, Ignored]


@pytest.mark.parametrize("message", [
    b"\x00\x01binary", "not json", "[1, 2]", "{}", '{"event": "start"}', '{"event": "dance"}',
    '{"event": "media"}', '{"event": "media", "media": {"payload": 5}}',
    '{"event": "media", "media": {"payload": "***"}}', '{"event": "mark", "mark": {}}',
    '{"event": "mark", "mark": "x"}', '"media"', "null",
])
def test_twilio_garbage_is_ignored_with_a_reason(message):
    stream = TwilioStream(UUID, {}, 16000)
    [action] = stream.receive(message)
    assert isinstance(action, Ignored)
    assert action.reason and "\n" not in action.reason and len(action.reason) < 200


def test_an_oversized_message_is_refused_before_parsing():
    stream = TwilioStream(UUID, {}, 16000, max_message_chars=1000)
    payload = base64.b64encode(b"\xff" * 2000).decode()
    [action] = stream.receive(json.dumps({"event": "media", "media": {"payload": payload}}))
    assert isinstance(action, Ignored) and "limit" in action.reason


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                              lambda c: st.lists(c, max_size=4)
                              | st.dictionaries(st.sampled_from(
                                  ["event", "media", "mark", "payload", "name", "clear"]), c,
                                  max_size=4), max_leaves=12).map(json.dumps)))
def test_nothing_a_bot_sends_raises(message):
    for stream in (TwilioStream(UUID, {}, 16000), VonageStream({}, 16000)):
        for action in stream.receive(message):
            assert isinstance(action, Play | Mark | Clear | Reply | Ignored)


# -- Vonage: what voicews sends ----------------------------------------------------------------


def test_vonage_far_end_sees_what_vonage_sends():
    stream = VonageStream({"pipeline": "echo", "n": 3, "content-type": "spoofed"}, 16000)
    [first] = stream.opening()
    assert json.loads(first) == {"event": "websocket:connected",
                                 "content-type": "audio/l16;rate=16000",
                                 "pipeline": "echo", "n": 3}
    frame = tone(16000, 0.02, 1000)
    data = stream.media(frame)
    assert isinstance(data, bytes) and len(data) == 640
    np.testing.assert_array_equal(np.frombuffer(data, "<i2"), frame)
    assert json.loads(stream.dtmf("7", 260)) == {"event": "websocket:dtmf", "digit": "7",
                                                 "duration": 260}
    assert stream.stop() == []


def test_vonage_far_end_audio_notify_and_clear_come_back():
    stream = VonageStream({}, 8000)
    frame = tone(8000, 0.02, 500)
    [play] = stream.receive(frame.tobytes())
    assert isinstance(play, Play)
    np.testing.assert_array_equal(play.samples, frame)
    [mark] = stream.receive(json.dumps({"action": "notify", "payload": {"n": 1}}))
    [pending] = stream.receive(json.dumps({"action": "notify", "payload": "two"}))
    assert isinstance(mark, Mark) and isinstance(pending, Mark)
    assert [json.loads(m) for m in stream.mark_played(mark.id)] == [
        {"event": "websocket:notify", "payload": {"n": 1}}]
    actions = stream.receive('{"action": "clear"}')
    assert isinstance(actions[0], Clear)
    assert [json.loads(a.message) for a in actions[1:]] == [
        {"event": "websocket:notify", "payload": "two"}, {"event": "websocket:cleared"}]


@pytest.mark.parametrize("message", [
    b"\x01\x02\x03", "not json", "{}", '{"action": "talk"}', "[]", '{"event": "websocket:dtmf"}',
])
def test_vonage_garbage_is_ignored_with_a_reason(message):
    [action] = VonageStream({}, 16000).receive(message)
    assert isinstance(action, Ignored) and "\n" not in action.reason


def test_both_streams_offer_what_the_wrapper_calls():
    from voicews.bridge.actions import FarEnd

    def wrapper_side(stream: FarEnd) -> None:  # type-checked by mypy against FarEnd
        stream.opening()
        stream.media(np.zeros(stream.rate // 50, dtype="<i2"))
        stream.dtmf("1", 100)
        stream.receive('{"event": "mark", "mark": {"name": "x"}}')
        stream.drain()
        stream.mark_played(1)
        stream.stop()
        assert stream.stopped

    wrapper_side(TwilioStream(UUID, {}, 16000))
    wrapper_side(VonageStream({}, 16000))
