"""The bridge's WebSocket client (voicews.bridge.client) against the test bots, on loopback.

Each test turns a private Twisted reactor by hand while a bot (tests/bots.py, a
`websockets` server written from the protocol's reference) runs in its own
thread.  `Wrapper` does what the bridge processor will do with the client and a
protocol state machine: send the opening, the caller's frames and the mark
answers; carry out what the bot asks.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock

from voicews.audio.files import tone
from voicews.bridge.actions import Clear, Ignored, Mark, Play, Reply
from voicews.bridge.client import BridgeClient, BridgeError, Reconnect
from voicews.bridge.twilio import TwilioStream
from voicews.bridge.vonage import VonageStream

from audio_checks import level_db, peak_frequency
from bots import TwilioBot, VonageBot

UUID = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
RATE = 16000
FRAME = RATE // 50


class Net:
    """A private reactor, turned by hand."""

    def __init__(self) -> None:
        self.reactor = EPollReactor()

    def turn_until(self, done, timeout: float = 5.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            self.reactor.runUntilCurrent()
            self.reactor.doIteration(0.005)

    def turn(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.reactor.runUntilCurrent()
            self.reactor.doIteration(0.005)

    def close(self) -> None:
        self.reactor.disconnectAll()
        self.turn(0.05)
        self.reactor._poller.close()


@pytest.fixture
def net():
    n = Net()
    yield n
    n.close()


def result_of(net: Net, d, timeout: float = 5.0):
    """Turn the reactor until Deferred `d` fires; its result, or the exception it failed with."""
    box = []
    d.addBoth(box.append)
    net.turn_until(lambda: box, timeout, "a Deferred")
    return box[0].value if hasattr(box[0], "value") and hasattr(box[0], "trap") else box[0]


class Wrapper:
    """What the bridge processor does, reduced to what these tests need."""

    def __init__(self, net: Net, url: str, protocol: str = "twilio", **options) -> None:
        self.net = net
        self.protocol = protocol
        self.streams: list[TwilioStream | VonageStream] = []
        self.played: list[np.ndarray] = []
        self.marks: list[Mark] = []
        self.clears = 0
        self.ignored: list[str] = []
        self.closes: list[tuple[str, bool]] = []
        self.opens: list[int] = []
        self.client = BridgeClient(
            net.reactor, url, on_open=self.opened, on_message=self.message,
            on_close=lambda reason, retrying: self.closes.append((reason, retrying)),
            **options,
        )

    @property
    def stream(self):
        return self.streams[-1]

    def opened(self, attempt: int) -> None:
        self.opens.append(attempt)
        if self.protocol == "twilio":
            stream = TwilioStream(UUID, {"pipeline": "bot"}, RATE, attempt=attempt)
        else:
            stream = VonageStream({"pipeline": "bot"}, RATE)
        self.streams.append(stream)
        for message in stream.opening():
            self.client.send(message)

    def message(self, message) -> None:
        for action in self.stream.receive(message):
            if isinstance(action, Play):
                self.played.append(action.samples)
            elif isinstance(action, Mark):
                self.marks.append(action)
            elif isinstance(action, Clear):
                self.clears += 1
            elif isinstance(action, Reply):
                self.client.send(action.message)
            elif isinstance(action, Ignored):
                self.ignored.append(action.reason)

    def start(self):
        return result_of(self.net, self.client.start())

    def send_audio(self, samples: np.ndarray) -> None:
        for i in range(0, len(samples) - FRAME + 1, FRAME):
            assert self.client.send(self.stream.media(samples[i:i + FRAME]))

    def play_marks(self) -> None:
        """As if Vonage said every mark's audio has played."""
        for mark in self.marks:
            for answer in self.stream.mark_played(mark.id):
                self.client.send(answer)
        self.marks.clear()

    def heard(self) -> np.ndarray:
        return np.concatenate(self.played) if self.played else np.empty(0, "<i2")


def sweep(rate: int, seconds: float) -> np.ndarray:
    """A 300 Hz -> 3 kHz chirp at -12 dBFS: no two stretches of it look alike."""
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * (300 * t + (3000 - 300) / (2 * seconds) * t**2)
    return (np.sin(phase) * 8192).astype("<i2")


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


# -- opening: TLS, refusals, timeouts ---------------------------------------------------------


def make_ca(common_name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_server_cert(ca_key, ca_cert, tmp_path: Path):
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    import ssl

    tmp = tmp_path_factory.mktemp("tls")
    ca_key, ca_cert = make_ca("voicews test CA")
    cert_path, key_path = make_server_cert(ca_key, ca_cert, tmp)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    ca_file = tmp / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _, other = make_ca("some other CA")
    wrong_ca = tmp / "wrong-ca.pem"
    wrong_ca.write_bytes(other.public_bytes(serialization.Encoding.PEM))
    return context, ca_file, wrong_ca


def test_wss_is_verified_against_the_given_ca(net, tls):
    context, ca_file, _ = tls
    with TwilioBot(ssl_context=context) as bot:
        assert bot.url.startswith("wss://")
        call = Wrapper(net, bot.url, ca_file=ca_file)
        assert call.start() is None
        call.send_audio(tone(RATE, 0.1, 1000))
        net.turn_until(lambda: bot.sessions and bot.sessions[0].echoed == 5)
        result_of(net, call.client.close())


def test_wss_with_the_wrong_ca_or_the_system_cas_is_refused(net, tls):
    context, _, wrong_ca = tls
    with TwilioBot(ssl_context=context) as bot:
        for ca_file in (wrong_ca, None):
            call = Wrapper(net, bot.url, ca_file=ca_file)
            failure = call.start()
            assert isinstance(failure, BridgeError)
            assert "certificate verify failed" in failure.reason, failure.reason
            assert "\n" not in failure.reason and call.opens == []
        assert bot.sessions == []


def test_a_refused_handshake_fails_the_start_with_the_status(net):
    with TwilioBot(reject=403) as bot:
        failure = Wrapper(net, bot.url).start()
        assert isinstance(failure, BridgeError) and "403" in failure.reason, failure.reason


def test_nothing_listening_fails_the_start(net):
    port = net.reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    number = port.getHost().port
    port.stopListening()
    net.turn(0.02)
    failure = Wrapper(net, f"ws://127.0.0.1:{number}/x").start()
    assert isinstance(failure, BridgeError)
    assert "could not connect" in failure.reason and "refused" in failure.reason.lower()


def test_a_far_end_that_never_answers_the_handshake_times_out(net):
    clock = Clock()
    port = net.reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    call = Wrapper(net, f"ws://127.0.0.1:{port.getHost().port}/x", timeout=3, clock=clock)
    started = call.client.start()
    box = []
    started.addBoth(box.append)
    net.turn(0.1)
    assert box == []
    clock.advance(2.9)
    net.turn(0.05)
    assert box == []
    clock.advance(0.1)
    net.turn_until(lambda: box)
    assert isinstance(box[0].value, BridgeError)
    assert "not open after 3 s" in box[0].value.reason
    port.stopListening()


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


def test_bad_settings_are_refused_at_construction(net, tmp_path):
    with pytest.raises(ValueError, match="bad WebSocket URL"):
        Wrapper(net, "http://127.0.0.1:1/x")
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="no PEM certificate"):
        Wrapper(net, "wss://127.0.0.1:1/x", ca_file=empty)
    with pytest.raises(ValueError):
        Reconnect(tries=3, initial_delay=2, max_delay=1)
    assert [Reconnect(initial_delay=0.5, max_delay=3).delay(n) for n in (1, 2, 3, 4)] == [
        0.5, 1.0, 2.0, 3.0]
