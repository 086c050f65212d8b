"""The bridge's WebSocket client (voicews.bridge.client) against the test bots, on loopback.

Each test turns a private Twisted reactor by hand while a bot (tests/bots.py, a
`websockets` server written from the protocol's reference) runs in its own
thread.  `Wrapper` (tests/bridge_net.py) does what the bridge processor will do with the
client and a protocol state machine: send the opening, the caller's frames and the mark
answers; carry out what the bot asks.  Opening a connection (TLS, refusals, timeouts):
test_bridge_client_opening.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from twisted.internet.task import Clock

from voicews.audio.files import tone
from voicews.bridge.client import Reconnect

from audio_checks import level_db, peak_frequency
from bots import TwilioBot, VonageBot
from bridge_net import RATE, UUID, Net, Wrapper, result_of, sweep


@pytest.fixture
def net():
    with Net() as n:
        yield n


# -- both protocols, end to end -----------------------------------------------------------


def test_a_twilio_bot_gets_the_call_and_its_echo_comes_back_inverted(net):
    with TwilioBot() as bot:
        call = Wrapper(net, bot.url, headers={"Authorization": "Bearer t0ken"})
        assert call.start() is None
        net.turn_until(lambda: len(bot.sessions) == 1 and len(bot.sessions[0].texts) >= 2)
        session = bot.sessions[0]
        assert session.request_headers["Authorization"] == "Bearer t0ken"
        connected, start = session.texts[:2]
        assert connected["event"] == "connected"
        assert start["start"]["customParameters"] == {"pipeline": "bot"}
        assert start["start"]["callSid"] == "CA" + UUID.replace("-", "")

        sent = tone(RATE, 1.0, 1000, level=0.25)
        call.send_audio(sent)
        net.turn_until(lambda: session.echoed == 50 and len(call.marks) == 50, what="echoes")
        heard = call.heard()[RATE // 10:]
        assert peak_frequency(heard, RATE) == pytest.approx(1000, abs=2)
        assert abs(level_db(heard) - level_db(sent)) < 1.0
        # The bot's twist: its audio is ours upside down (a chirp, so that no lag can fake it).
        chirp = sweep(RATE, 0.5)
        before = sum(len(p) for p in call.played)
        call.send_audio(chirp)
        net.turn_until(lambda: session.echoed == 75, what="the chirp's echo")
        net.turn(0.05)
        echo = call.heard()[before:].astype(float)
        corr = np.correlate(echo, chirp.astype(float), "full")
        best = corr[np.argmax(np.abs(corr))]
        # Less than the chirp's whole energy: its last ms are still on their way.
        assert best < -0.8 * np.dot(chirp.astype(float), chirp)

        call.play_marks()
        net.turn_until(lambda: len(bot.marks_back(session)) == 75, what="mark answers")
        assert bot.marks_back(session) == [f"echo {i}" for i in range(1, 76)]
        call.client.send(call.stream.dtmf("9"))
        for message in call.stream.stop():
            call.client.send(message)
        result_of(net, call.client.close())
        net.turn_until(session.closed.is_set, what="the bot to see the close")
        assert session.events("dtmf")[0]["dtmf"] == {"track": "inbound_track", "digit": "9"}
        assert session.texts[-1]["event"] == "stop"
        assert session.close_code == 1000
        assert call.closes == [] and call.ignored == []


def test_a_vonage_protocol_bot_gets_frames_and_its_inverted_echo_is_bit_exact(net):
    with VonageBot() as bot:
        call = Wrapper(net, bot.url, protocol="vonage")
        call.start()
        sent = tone(RATE, 0.2, 440, level=0.5)
        call.send_audio(sent)
        net.turn_until(lambda: bot.sessions and bot.sessions[0].echoed == 10 and
                       len(call.marks) == 10, what="echoes")
        session = bot.sessions[0]
        assert session.texts[0] == {"event": "websocket:connected",
                                    "content-type": "audio/l16;rate=16000", "pipeline": "bot"}
        assert [len(b) for b in session.binaries] == [640] * 10
        np.testing.assert_array_equal(call.heard(), -sent)
        call.play_marks()
        bot.notify(session, {"last": True})
        bot.clear(session)
        net.turn_until(lambda: call.clears == 1)
        net.turn_until(lambda: session.events("websocket:cleared"), what="cleared")
        assert bot.notifies_back(session) == [{"echo": n} for n in range(1, 11)] + [{"last": True}]
        result_of(net, call.client.close())


def test_marks_and_clear_round_trip_with_a_twilio_bot(net):
    with TwilioBot(echo=False) as bot:
        call = Wrapper(net, bot.url)
        call.start()
        net.turn_until(lambda: bot.sessions and len(bot.sessions[0].texts) >= 2)
        session = bot.sessions[0]
        bot.play(session, bytes([0x80]) * 8000)  # 1 s of loud μ-law, in 800-byte messages
        bot.mark(session, "greeting")
        bot.mark(session, "menu")
        net.turn_until(lambda: len(call.marks) == 2, what="marks")
        assert sum(len(p) for p in call.played) > RATE * 0.9
        # Nothing has played yet: a clear answers both marks at once.
        bot.clear(session)
        net.turn_until(lambda: len(bot.marks_back(session)) == 2, what="mark answers")
        assert call.clears == 1
        assert bot.marks_back(session) == ["greeting", "menu"]
        call.play_marks()  # Vonage's late notifies change nothing
        net.turn(0.05)
        assert len(bot.marks_back(session)) == 2


# -- a far end that misbehaves ------------------------------------------------------------


def test_garbage_from_the_bot_is_ignored_and_the_call_goes_on(net):
    with TwilioBot() as bot:
        call = Wrapper(net, bot.url)
        call.start()
        net.turn_until(lambda: bot.sessions and len(bot.sessions[0].texts) >= 2)
        session = bot.sessions[0]
        for junk in [b"\x00\xff binary", "not json", '{"event": "dance"}',
                     '{"event": "media", "media": {"payload": "!!"}}', "[]"]:
            bot.send(session, junk)
        net.turn_until(lambda: len(call.ignored) == 5, what="five ignored")
        call.send_audio(tone(RATE, 0.1, 1000))
        net.turn_until(lambda: session.echoed == 5, what="echoes after the garbage")
        assert call.client.connected and call.closes == []


def test_the_far_end_closing_is_reported_once_and_not_retried(net):
    clock = Clock()
    with TwilioBot() as bot:
        call = Wrapper(net, bot.url, reconnect=Reconnect(tries=3), clock=clock)
        call.start()
        net.turn_until(lambda: bot.sessions)
        bot.close(bot.sessions[0], 1000, "bye now")
        net.turn_until(lambda: call.closes, what="on_close")
        [(reason, retrying)] = call.closes
        assert retrying is False
        assert "closed the socket with code 1000 (bye now)" in reason and "\n" not in reason
        clock.advance(60)
        net.turn(0.05)
        assert bot.connections == 1


def test_a_far_end_that_never_reads_is_dropped_at_the_bound(net):
    with VonageBot() as bot:
        call = Wrapper(net, bot.url, protocol="vonage", max_buffer_bytes=256 * 1024)
        call.start()
        net.turn_until(lambda: bot.sessions)
        bot.stop_reading(bot.sessions[0])
        net.turn(0.05)
        frame = tone(RATE, 0.02, 1000)
        sent = 0
        while call.client.connected and sent < 64 << 20:
            if call.client.send(call.stream.media(frame)):
                sent += 640
            net.reactor.runUntilCurrent()
            net.reactor.doIteration(0)
        net.turn_until(lambda: call.closes, what="the drop to be reported")
        [(reason, retrying)] = call.closes
        assert "not reading" in reason and retrying is False
        assert sent < 32 << 20  # socket buffers plus our bound, not everything we had


# -- reconnecting -------------------------------------------------------------------------


def test_a_drop_is_retried_with_backoff_and_the_new_socket_is_a_new_stream(net):
    clock = Clock()
    with TwilioBot() as bot:
        call = Wrapper(net, bot.url, clock=clock,
                       reconnect=Reconnect(tries=3, initial_delay=0.5, max_delay=4))
        call.start()
        net.turn_until(lambda: bot.sessions and len(bot.sessions[0].texts) >= 2)
        bot.drop(bot.sessions[0])
        net.turn_until(lambda: call.closes, what="the drop")
        assert call.closes[0][1] is True  # retrying
        clock.advance(0.49)
        net.turn(0.05)
        assert bot.connections == 1
        clock.advance(0.01)
        net.turn_until(lambda: len(call.opens) == 2, what="the reconnection")
        assert call.opens == [0, 1] and bot.connections == 2
        net.turn_until(lambda: len(bot.sessions) == 2 and len(bot.sessions[1].texts) >= 2)
        first, second = (s.texts[1]["streamSid"] for s in bot.sessions)
        assert first != second  # a new connection is a new stream of the same call
        assert bot.sessions[1].texts[1]["start"]["callSid"] == bot.sessions[0].texts[1][
            "start"]["callSid"]
        result_of(net, call.client.close())


def test_retries_back_off_then_give_up_with_one_final_report(net):
    clock = Clock()
    with TwilioBot() as bot:
        call = Wrapper(net, bot.url, clock=clock,
                       reconnect=Reconnect(tries=4, initial_delay=0.5, max_delay=1.5))
        call.start()
        net.turn_until(lambda: bot.sessions)
        bot.call(bot._stop())  # the bot goes away: every reconnection is refused
        bot.drop(bot.sessions[0])
        net.turn_until(lambda: call.closes, what="the drop")
        attempts = []
        for delay in (0.5, 1.0, 1.5, 1.5):
            clock.advance(delay - 0.01)
            net.turn(0.02)
            assert call.client.attempt == len(attempts)
            clock.advance(0.01)
            wanted = len(attempts) + 1
            net.turn_until(lambda wanted=wanted: call.client.attempt == wanted)
            attempts.append(clock.seconds())
            net.turn_until(lambda: not call.client._connecting, what="the refusal")
        net.turn(0.05)
        assert call.closes[0][1] is True
        [*_, (reason, retrying)] = call.closes
        assert retrying is False and len(call.closes) == 2
        assert "could not connect" in reason
        clock.advance(60)
        net.turn(0.05)
        assert call.client.attempt == 4  # no more


def test_no_timer_is_left_on_the_global_reactor(net):
    """Autobahn's timers are off: the client's own run on its reactor or clock."""
    from twisted.internet import reactor as global_reactor

    before = len(global_reactor.getDelayedCalls())
    with TwilioBot() as bot:
        call = Wrapper(net, bot.url)
        call.start()
        net.turn_until(lambda: bot.sessions)
        bot.close(bot.sessions[0], 1001, "going away")
        net.turn_until(lambda: call.closes)
        call = Wrapper(net, bot.url)
        call.start()
        result_of(net, call.client.close())
    assert len(global_reactor.getDelayedCalls()) == before


