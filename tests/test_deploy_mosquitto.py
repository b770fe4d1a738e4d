"""The shipped Mosquitto config (deploy/mosquitto/mosquitto.conf) against a broker crash.

The broker here is a private one run with the shipped persistence settings; it is SIGKILLed, so
only what its last autosave wrote survives.
"""

from __future__ import annotations

from pathlib import Path

from ingest import IngestWorker
from tests.support.brokers import PrivateMosquitto
from tests.support.db import scalar
from tests.support.mqtt import publisher
from tests.support.registry import NOW_MS, pts, register
from tests.support.waits import wait_until

SHIPPED = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "mosquitto.conf"
#: Mosquitto's own default when the config says nothing (every 30 minutes).
DEFAULT_AUTOSAVE = ["autosave_interval 1800"]


def shipped_persistence() -> list[str]:
    """The shipped config's persistence and autosave lines (the broker's default autosave when it has none)."""
    lines = [ln.strip() for ln in SHIPPED.read_text().splitlines() if not ln.lstrip().startswith("#")]
    assert "persistence true" in lines
    autosave = [ln for ln in lines if ln.startswith("autosave")]
    return autosave or DEFAULT_AUTOSAVE


def test_sigkilled_broker_keeps_ingest_session_and_queued_messages(db_url: str, uid: str, tmp_path: Path) -> None:
    """With the shipped autosave, a SIGKILLed broker comes back with ingest's persistent session and the
    messages queued for it while ingest was away, and ingest stores them once it reconnects."""
    reg = register(db_url, uid, devices=("pump-1",))
    conf = shipped_persistence()
    with PrivateMosquitto(persistence=True, workdir=tmp_path / "broker", conf_lines=conf) as broker:
        with IngestWorker(db_url, broker.url, client_id=f"ingest-{uid}", site_filter=reg.site):
            pass  # subscribed with a persistent session, then gone: the broker queues for it
        saves = broker.saves()
        with publisher(broker.url, f"gw-{uid}") as publish:
            for seq in range(1, 6):
                publish(reg.topic(), reg.batch(seq, pts("pump-1", "temp", 10, start_ms=NOW_MS - 60_000 + seq * 10_000)))
        # What a crash keeps is what the last autosave wrote: one must come soon after the publishes.
        wait_until(
            broker.saves,
            15,
            done=lambda n: n > saves,
            what=f"an autosave within 15 s of the publishes (shipped: {' '.join(conf)})",
        )
        broker.kill()
        broker.start()
        with IngestWorker(db_url, broker.url, client_id=f"ingest-{uid}", site_filter=reg.site):
            wait_until(
                lambda: scalar(db_url, "SELECT count(*) FROM telemetry"),
                15,
                done=lambda n: n == 50,
                what="the 50 queued points stored after the crash",
            )
