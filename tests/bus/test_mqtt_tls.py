"""``mqtts://``: the bridge against a private Mosquitto with a TLS listener.

The test makes its own certificate authority, a server certificate for
127.0.0.1 and a client certificate, with ``cryptography``; the broker requires a
client certificate, as a scale-out deployment over a network should.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bus import Bus, CallRinging
from bus.codec import decode
from bus.mqtt import BridgeHealth, MqttBridge, tls_context
from config import BusConfig
from tests._services import HOST, PrivateMosquitto

TIMEOUT = 10.0


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(
    directory: Path,
    stem: str,
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    ip: str | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer or (_name(subject), key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{stem}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca_cert, ca_key = _issue(tmp_path, "ca", "Switchboard test CA", None, ca=True)
    issuer = (ca_cert.subject, ca_key)
    _issue(tmp_path, "server", "broker", issuer, ip=HOST)
    _issue(tmp_path, "client", "switchboard-paris", issuer)
    return Pki(
        ca=tmp_path / "ca.pem",
        server_cert=tmp_path / "server.pem",
        server_key=tmp_path / "server.key",
        client_cert=tmp_path / "client.pem",
        client_key=tmp_path / "client.key",
    )


@pytest.fixture
def tls_broker(pki: Pki) -> Iterator[PrivateMosquitto]:
    broker = PrivateMosquitto(
        listener_options=[
            f"cafile {pki.ca}",
            f"certfile {pki.server_cert}",
            f"keyfile {pki.server_key}",
            "require_certificate true",
        ]
    )
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


def _config(url: str, pki: Pki, *, client_cert: bool = True) -> BusConfig:
    data: dict[str, object] = {"mqtt_url": url}
    if url.startswith("mqtts://"):
        data["mqtt_ca_file"] = str(pki.ca)
        if client_cert:
            data |= {"mqtt_cert_file": str(pki.client_cert), "mqtt_key_file": str(pki.client_key)}
    return BusConfig.model_validate(data)


async def _no_auth(token: str) -> None:
    return None


async def _no_handler(principal: object, name: str, args: object) -> None:
    raise AssertionError("no command is sent in these tests")


def _bridge(bus: Bus, config: BusConfig) -> MqttBridge[object]:
    bridge: MqttBridge[object] = MqttBridge.from_config(
        bus, config, site="paris", authenticate=_no_auth, handler=_no_handler
    )
    # Quick retries for the test; from_config takes the production defaults. A broker
    # that drops the connection before its CONNACK is noticed after ``timeout`` (aiomqtt
    # waits for the CONNACK that long), hence a short one here.
    bridge._connection.reconnect_min, bridge._connection.reconnect_max = 0.05, 0.2
    bridge._connection.timeout = 1.0
    return bridge


async def test_bridge_publishes_over_mqtts_with_a_ca_file_and_a_client_certificate(
    tls_broker: PrivateMosquitto, pki: Pki
) -> None:
    config = _config(f"mqtts://{HOST}:{tls_broker.port}", pki)
    bus = Bus("paris")
    observer = aiomqtt.Client(
        HOST, tls_broker.port, timeout=TIMEOUT, tls_context=tls_context(config)
    )
    async with observer, _bridge(bus, config) as bridge:
        await observer.subscribe("switchboard/paris/events/#", qos=1)
        await bridge.wait_connected(timeout=TIMEOUT)
        sent = bus.publish(CallRinging(call_id=uuid.uuid4(), leg="customer", agent="alice"))
        async with asyncio.timeout(TIMEOUT):
            message = await anext(aiter(observer.messages))
    assert isinstance(message.payload, bytes)
    assert decode(message.payload) == sent


@pytest.mark.parametrize("how", ["plain mqtt://", "no client certificate"])
async def test_a_connection_the_tls_listener_refuses_fails_cleanly_and_is_retried(
    tls_broker: PrivateMosquitto, pki: Pki, how: str
) -> None:
    url = f"mqtt://{HOST}:{tls_broker.port}"
    if how == "no client certificate":
        url = f"mqtts://{HOST}:{tls_broker.port}"
    config = _config(url, pki, client_cert=False)
    bus = Bus("paris")
    with structlog.testing.capture_logs() as logs:
        async with _bridge(bus, config) as bridge:
            # Two failed attempts: the second proves the first left the bridge able
            # to retry.
            await bridge._wait_until(lambda: bridge._connection.failures >= 2, TIMEOUT)
            assert not bridge.connected
            assert bridge.health is BridgeHealth.DISCONNECTED
            assert bridge.restarts == 0
    assert not any(e["event"] == "mqtt.crashed" for e in logs)
    assert sum(e["event"] == "mqtt.disconnected" for e in logs) >= 2
