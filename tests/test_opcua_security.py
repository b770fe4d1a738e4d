"""OPC-UA security: Basic256Sha256 Sign and SignAndEncrypt with username/password and certificate identities."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fwcore.contract import Quality
from gateway import DeviceError, parse_config
from gateway.opcua import OpcUaDriver
from simulators import PumpModel
from simulators.opcua_server import PumpOpcUaServer
from tests.support.ports import free_port


def make_cert(directory: Path, name: str, uri: str) -> tuple[Path, Path]:
    """A self-signed RSA-2048 certificate (DER) and key (PEM) fit for OPC-UA application instances."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(uri),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.der", directory / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    d = tmp_path_factory.mktemp("certs")
    return {
        "server": make_cert(d, "server", "urn:fieldwatch:sim:server"),
        "gateway": make_cert(d, "gateway", "urn:fieldwatch:gateway"),
        "user": make_cert(d, "user", "urn:fieldwatch:user"),
        "stranger": make_cert(d, "stranger", "urn:fieldwatch:stranger"),
    }


@pytest.fixture
async def secure_sim(certs: dict[str, tuple[Path, Path]]) -> AsyncIterator[PumpOpcUaServer]:
    server = PumpOpcUaServer(
        "127.0.0.1",
        free_port(),
        {"pump-1": PumpModel(seed=3)},
        security=("Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"),
        certificate=certs["server"][0],
        private_key=certs["server"][1],
        users={"operator": "s3cret"},
        user_certificates=[certs["user"][0]],
    )
    await server.start()
    yield server
    await server.stop()


def _driver(sim: PumpOpcUaServer, certs: dict[str, tuple[Path, Path]], **device: Any) -> OpcUaDriver:
    cfg = parse_config(
        {
            "gateway": "gw",
            "site": "site",
            "devices": [
                {
                    "name": "pump-1",
                    "protocol": "opcua",
                    "endpoint": sim.endpoint,
                    "mode": "poll",
                    "timeout": 2.0,
                    "tags": [{"name": "bearing_temp", "node": "ns=2;s=pump-1.bearing_temp"}],
                    "security_policy": "Basic256Sha256",
                    "certificate": str(certs["gateway"][0]),
                    "private_key": str(certs["gateway"][1]),
                    **device,
                }
            ],
        }
    )
    return OpcUaDriver(cfg.devices[0])  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
@pytest.mark.parametrize("identity", ["password", "certificate"])
async def test_secure_session_reads_values(
    secure_sim: PumpOpcUaServer, certs: dict[str, tuple[Path, Path]], mode: str, identity: str
) -> None:
    """Basic256Sha256 in both modes, with a username/password or a user certificate, reads good values."""
    who: dict[str, Any] = (
        {"username": "operator", "password": "s3cret"}
        if identity == "password"
        else {"user_certificate": str(certs["user"][0]), "user_private_key": str(certs["user"][1])}
    )
    driver = _driver(secure_sim, certs, security_mode=mode, **who)
    await driver.connect()
    try:
        (value,) = await driver.poll()
        assert value.quality == Quality.GOOD and 40 < value.value < 80
    finally:
        await driver.close()


@pytest.mark.parametrize(
    "who",
    [
        {"username": "operator", "password": "wrong"},
        {},  # anonymous
        {"user_certificate": "stranger"},
    ],
    ids=["bad-password", "anonymous", "unknown-certificate"],
)
async def test_wrong_identity_is_refused(
    secure_sim: PumpOpcUaServer, certs: dict[str, tuple[Path, Path]], who: dict[str, Any]
) -> None:
    """A wrong password, no identity or an unknown user certificate cannot open a session."""
    if who.get("user_certificate") == "stranger":
        who = {"user_certificate": str(certs["stranger"][0]), "user_private_key": str(certs["stranger"][1])}
    driver = _driver(secure_sim, certs, **who)
    with pytest.raises(DeviceError):
        await driver.connect()
    await driver.close()


def test_security_needs_a_certificate() -> None:
    """A secure policy without the gateway's certificate is refused at config time, naming the device."""
    with pytest.raises(ValueError, match=r"pump-1.*needs 'certificate'"):
        parse_config(
            {
                "gateway": "gw",
                "site": "site",
                "devices": [
                    {
                        "name": "pump-1",
                        "protocol": "opcua",
                        "endpoint": "opc.tcp://127.0.0.1:4840",
                        "security_policy": "Basic256Sha256",
                        "tags": [{"name": "t", "node": "ns=2;s=x"}],
                    }
                ],
            }
        )
