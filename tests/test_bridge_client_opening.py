"""The bridge's WebSocket client opening a connection, on loopback: wss verified against the
given CA (and refused with another), a refused handshake, nothing listening, a handshake
never answered; and settings refused at construction.  The open connection's life:
test_bridge_client.py; the rig (`Net`, `Wrapper`): bridge_net.py.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock

from voicews.audio.files import tone
from voicews.bridge.client import BridgeError, Reconnect

from bots import TwilioBot
from bridge_net import RATE, Net, Wrapper, result_of


@pytest.fixture
def net():
    with Net() as n:
        yield n


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
