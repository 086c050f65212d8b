"""--listen takes any Twisted endpoint string: here TLS (ssl:), serving webhooks and socket."""

from __future__ import annotations

import datetime
import json
import ssl
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.sync.client import connect

from conftest import base_config
from wire import first_message, random_frames


def self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_ssl_endpoint_serves_https_webhooks_and_wss_calls(start_daemon, tmp_path):
    key, cert = self_signed(tmp_path)
    daemon = start_daemon(
        base_config(), listen=f"ssl:{{port}}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    )
    port = daemon.port
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    with urllib.request.urlopen(
        f"https://127.0.0.1:{port}/webhooks/answer?uuid=T-1", context=context, timeout=10
    ) as resp:
        ncco = json.load(resp)
    assert ncco[0]["endpoint"][0]["uri"] == f"wss://127.0.0.1:{port}/socket"
    frames = random_frames(50, rate=24000)
    with connect(f"wss://127.0.0.1:{port}/socket", ssl=context) as ws:
        ws.send(first_message(24000))
        for frame in frames:
            ws.send(frame)
        assert [ws.recv(timeout=5) for _ in frames] == frames
