"""MQTT over TLS, against a real Mosquitto whose TLS listener uses a certificate authority made in the test."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from fwcore.settings import SettingsError, load_settings
from fwcore.tls import TlsConfigError, TlsFiles, mqtt_tls_context
from gateway import Gateway, load_config, parse_config
from gateway.errors import ConfigError
from ingest import BrokerUnavailable, IngestWorker
from simulators import PumpModbusServer
from tests.support import gateways
from tests.support.brokers import BrokerTls, PrivateMosquitto
from tests.support.gateways import config_data, pump
from tests.support.registry import register
from tests.support.tls import TestCA
from tests.support.waits import wait_until, wait_until_async

sim = gateways.sim  # the pump simulator fixture


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    """The CA the broker's certificate comes from."""
    return TestCA(tmp_path / "ca")


@pytest.fixture
def other_ca(tmp_path: Path) -> TestCA:
    """An unrelated CA: trusting it must not be enough."""
    return TestCA(tmp_path / "other-ca", name="some other CA")


@pytest.fixture
def tls_broker(ca: TestCA, tmp_path: Path) -> Iterator[PrivateMosquitto]:
    """A private Mosquitto whose only listener speaks TLS with a certificate for 127.0.0.1."""
    server = ca.server()
    with PrivateMosquitto(tls=BrokerTls(server.cert, server.key), workdir=tmp_path / "broker") as broker:
        yield broker


def _rows(db_url: str, gateway_id: int) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM telemetry t JOIN series s ON s.id = t.series_id"
            " JOIN devices d ON d.id = s.device_id WHERE d.gateway_id = %s",
            (gateway_id,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _worker(db_url: str, url: str, uid: str, tls: TlsFiles | None, site: str = "+") -> IngestWorker:
    return IngestWorker(
        db_url,
        url,
        client_id=f"ing-tls-{uid}",
        batch_max_wait_ms=20,
        session_expiry_s=0,
        site_filter=site,
        tls=tls,
    )


@pytest.mark.timeout(60)
async def test_gateway_publishes_and_ingest_stores_over_tls(
    db_url: str, uid: str, tls_broker: PrivateMosquitto, ca: TestCA, sim: PumpModbusServer, tmp_path: Path
) -> None:
    """A gateway trusting the test CA publishes over mqtts:// and ingest, trusting it too, commits the points."""
    reg = register(db_url, uid, devices=("pump-1",))
    data = config_data((reg.site, reg.gateway), tmp_path / "state", pump(sim.port))
    data |= {"mqtt_url": tls_broker.url, "mqtt_tls": {"ca_file": str(ca.ca_file)}}
    worker = _worker(db_url, tls_broker.url, uid, TlsFiles(ca_file=ca.ca_file), site=reg.site)
    worker.start(timeout=10)
    try:
        async with Gateway(parse_config(data)) as gw:
            await wait_until_async(lambda: _rows(db_url, reg.gateway_id) >= 8, 20, what="points committed over TLS")
            assert gw.stats.mqtt_connected
    finally:
        worker.stop()


@pytest.mark.timeout(60)
async def test_sparkplug_node_connects_over_tls(
    tls_broker: PrivateMosquitto, ca: TestCA, sim: PumpModbusServer, tmp_path: Path, uid: str
) -> None:
    """In Sparkplug B mode the gateway uses the same broker TLS section and connects over mqtts://."""
    data = config_data((f"site-{uid}", f"gw-{uid}"), tmp_path / "state", pump(sim.port))
    data |= {"mqtt_url": tls_broker.url, "mqtt_tls": {"ca_file": str(ca.ca_file)}, "sparkplug": {"enabled": True}}
    async with Gateway(parse_config(data)) as gw:
        await wait_until_async(lambda: gw.stats.mqtt_connected, 15, what="the Sparkplug node to connect over TLS")


def test_ingest_refuses_a_broker_signed_by_another_ca_with_a_clear_error(
    db_url: str, uid: str, tls_broker: PrivateMosquitto, other_ca: TestCA
) -> None:
    """Trusting the wrong CA fails start() naming the untrusted certificate and the setting to fix."""
    worker = _worker(db_url, tls_broker.url, uid, TlsFiles(ca_file=other_ca.ca_file))
    with pytest.raises(BrokerUnavailable) as info:
        worker.start(timeout=5)
    message = str(info.value)
    assert "not trusted" in message and "certificate verify failed" in message, message
    assert "FIELDWATCH_MQTT_CA_FILE" in message and f"127.0.0.1:{tls_broker.port}" in message, message


def test_ingest_refuses_a_certificate_for_another_host(db_url: str, uid: str, ca: TestCA, tmp_path: Path) -> None:
    """A certificate signed by the trusted CA but naming another host is refused: hostnames are checked."""
    server = ca.server("elsewhere", hosts=("broker.elsewhere.example",))
    with PrivateMosquitto(tls=BrokerTls(server.cert, server.key), workdir=tmp_path / "b") as broker:
        worker = _worker(db_url, broker.url, uid, TlsFiles(ca_file=ca.ca_file))
        with pytest.raises(BrokerUnavailable, match=r"does not name 127\.0\.0\.1"):
            worker.start(timeout=5)


def test_plaintext_to_the_tls_port_fails(db_url: str, uid: str, tls_broker: PrivateMosquitto) -> None:
    """mqtt:// to the TLS listener never gets a session: start() fails and the broker logs the refused client."""
    plain = tls_broker.url.replace("mqtts://", "mqtt://")
    worker = _worker(db_url, plain, uid, None)
    with pytest.raises(BrokerUnavailable):
        worker.start(timeout=3)
    wait_until(lambda: "failed" in tls_broker.log_tail(), 5, what="the broker to log the plaintext client")


async def test_gateway_with_the_wrong_ca_says_why_once_and_stays_off(
    tls_broker: PrivateMosquitto,
    other_ca: TestCA,
    sim: PumpModbusServer,
    tmp_path: Path,
    uid: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A gateway trusting the wrong CA logs one ERROR saying the certificate is not trusted, then retries quietly."""
    data = config_data((f"site-{uid}", f"gw-{uid}"), tmp_path / "state", pump(sim.port))
    data |= {"mqtt_url": tls_broker.url, "mqtt_tls": {"ca_file": str(other_ca.ca_file)}}
    caplog.set_level(logging.INFO, logger="gateway")

    def refused_handshakes() -> int:
        return tls_broker.log_tail(200).count("unknown ca")

    async with Gateway(parse_config(data)) as gw:
        await wait_until_async(lambda: refused_handshakes() >= 2, 15, what="two refused TLS handshakes")
        assert not gw.stats.mqtt_connected
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "TLS" in r.getMessage()]
    assert len(errors) == 1, errors
    assert "not trusted" in errors[0] and "mqtt_tls.ca_file" in errors[0], errors[0]


def test_client_certificate_is_sent_when_the_broker_requires_one(
    db_url: str, uid: str, ca: TestCA, tmp_path: Path
) -> None:
    """With require_certificate on, a client with a certificate from the CA connects; one without is refused."""
    server = ca.server()
    client = ca.client(f"ingest-{uid}")
    tls = BrokerTls(server.cert, server.key, client_ca=ca.ca_file)
    with PrivateMosquitto(tls=tls, workdir=tmp_path / "b") as broker:
        worker = _worker(db_url, broker.url, uid, TlsFiles(ca.ca_file, client.cert, client.key))
        worker.start(timeout=5)
        worker.stop()
        anonymous = _worker(db_url, broker.url, uid + "x", TlsFiles(ca_file=ca.ca_file))
        with pytest.raises(BrokerUnavailable):
            anonymous.start(timeout=3)


# --- configuration: settings and the gateway's broker TLS section ----------------------------------


def test_settings_read_the_tls_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """FIELDWATCH_MQTT_CA_FILE/_CERT_FILE/_KEY_FILE become the settings' TlsFiles; none set: None."""
    assert load_settings().mqtt_tls is None
    monkeypatch.setenv("FIELDWATCH_MQTT_URL", "mqtts://broker.example:8883")
    monkeypatch.setenv("FIELDWATCH_MQTT_CA_FILE", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("FIELDWATCH_MQTT_CERT_FILE", str(tmp_path / "c.crt"))
    monkeypatch.setenv("FIELDWATCH_MQTT_KEY_FILE", str(tmp_path / "c.key"))
    assert load_settings().mqtt_tls == TlsFiles(tmp_path / "ca.crt", tmp_path / "c.crt", tmp_path / "c.key")


@pytest.mark.parametrize("given", ["FIELDWATCH_MQTT_CERT_FILE", "FIELDWATCH_MQTT_KEY_FILE"])
def test_settings_want_the_client_certificate_and_key_together(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    """A client certificate without its key (or the reverse) stops at start, naming the missing one."""
    monkeypatch.setenv(given, "/etc/fieldwatch/x.pem")
    missing = {"FIELDWATCH_MQTT_CERT_FILE": "FIELDWATCH_MQTT_KEY_FILE"}.get(given, "FIELDWATCH_MQTT_CERT_FILE")
    with pytest.raises(SettingsError, match=missing):
        load_settings()


def test_tls_files_with_a_plaintext_url_are_refused(ca: TestCA) -> None:
    """A CA file with an mqtt:// URL is a mistake to report, not a reason to send in clear."""
    with pytest.raises(TlsConfigError, match="mqtts://"):
        mqtt_tls_context("mqtt://broker.example:1883", TlsFiles(ca_file=ca.ca_file))
    assert mqtt_tls_context("mqtt://broker.example:1883", None) is None


def test_a_missing_ca_file_is_named(tmp_path: Path) -> None:
    """A CA file that cannot be read fails with its path and the reason, before any connection."""
    with pytest.raises(TlsConfigError, match=r"nope\.crt.*No such file"):
        mqtt_tls_context("mqtts://broker.example", TlsFiles(ca_file=tmp_path / "nope.crt"))


def test_a_key_that_does_not_match_its_certificate_is_named(ca: TestCA) -> None:
    """A client certificate with another certificate's key is refused naming both files."""
    one, two = ca.client("one", "one"), ca.client("two", "two")
    with pytest.raises(TlsConfigError, match=r"one\.crt.*two\.key"):
        mqtt_tls_context("mqtts://broker.example", TlsFiles(ca.ca_file, one.cert, two.key))


def test_gateway_tls_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    """mqtt_tls paths in a gateway YAML are read relative to that file, like its other certificate paths."""
    cfg = {
        "gateway": "gw-1",
        "site": "site-1",
        "mqtt_url": "mqtts://broker.example:8883",
        "mqtt_tls": {"ca_file": "tls/ca.crt", "cert_file": "tls/gw.crt", "key_file": "/abs/gw.key"},
        "devices": [pump(502)],
    }
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg))
    tls = load_config(path).mqtt_tls
    assert tls is not None
    assert tls.files() == TlsFiles(tmp_path / "tls/ca.crt", tmp_path / "tls/gw.crt", Path("/abs/gw.key"))


def test_gateway_run_with_an_unreadable_ca_file_says_which_and_exits(tmp_path: Path) -> None:
    """`gateway run` with a CA file that does not exist exits 2 with one line naming the config and the file."""
    cfg = {
        "gateway": "gw-1",
        "site": "site-1",
        "state_dir": str(tmp_path / "state"),
        "mqtt_url": "mqtts://127.0.0.1:1",
        "mqtt_tls": {"ca_file": "missing-ca.crt"},
        "devices": [pump(1)],
    }
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", str(path)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"{path}: broker TLS: cannot use CA file"), res.stderr
    assert "missing-ca.crt" in res.stderr and "No such file" in res.stderr and "Traceback" not in res.stderr


def test_gateway_tls_section_wants_certificate_and_key_together() -> None:
    """A broker TLS section with a client certificate but no key is refused naming the section."""
    cfg = {"gateway": "gw-1", "site": "site-1", "mqtt_tls": {"cert_file": "gw.crt"}, "devices": [pump(502)]}
    with pytest.raises(ConfigError, match=r"mqtt_tls.*key_file"):
        parse_config(cfg)
