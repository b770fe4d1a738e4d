"""The spine, end to end, with every part real: simulator → gateway → Mosquitto → ingest →
PostgreSQL → rule → alarm → ticket → assignment, read back over real HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest

from fieldwatch.seed import DEMO_RULES, PUMP_MODEL, Fleet, SiteSpec, TechnicianSpec, seed
from fieldwatch.server import ServerStack
from fwcore.auth import create_token
from fwcore.settings import Settings
from gateway import Gateway, parse_config
from simulators import PumpModbusServer, PumpModel
from tests.support.ports import free_port
from tests.support.waits import wait_until_async


def _fleet(uid: str) -> Fleet:
    return Fleet(
        clients={f"Client {uid}": "gold"},
        sites=(
            SiteSpec(
                f"s-{uid}",
                "Evanston pumping station",
                f"Client {uid}",
                "Evanston, IL",
                42.0630,
                -87.6740,
                ("P-1", "P-2"),
            ),
        ),
        skills={"pump_mechanical": "pumps", "electrical": "motors"},
        technicians=(
            # nearest, but not qualified
            TechnicianSpec("Near Electrician", f"e-{uid}@x.example", 42.0451, -87.6877, {"electrical": 3}),
            # qualified and near: must win
            TechnicianSpec("Near Mechanic", f"m-{uid}@x.example", 42.0324, -87.7416, {"pump_mechanical": 2}),
            # qualified but far (Joliet)
            TechnicianSpec("Far Mechanic", f"f-{uid}@x.example", 41.5250, -88.0817, {"pump_mechanical": 3}),
        ),
    )


RULE = dict(DEMO_RULES[0], duration_s=2.0)  # the demo's bearing rule, 2 s instead of 30 s to keep the test short


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_fault_on_a_pump_dispatches_the_nearest_qualified_technician(
    db_url: str, mqtt_url: str, uid: str, tmp_path: Path
) -> None:
    """A bearing fault on P-1 ends as one ticket assigned to the nearest technician with the pump skill."""
    fleet = _fleet(uid)
    site = fleet.sites[0]
    with psycopg.connect(db_url) as conn:
        seed(conn, fleet, rules=(RULE,))
        token = create_token(conn, name="e2e", role="dispatcher")

    faulty, healthy = PumpModel(seed=1), PumpModel(seed=2)
    server = PumpModbusServer("127.0.0.1", 0, {1: faulty, 2: healthy}, update_interval=0.1)
    await server.start()
    config = parse_config(
        {
            "gateway": site.gateway,
            "site": site.slug,
            "poll_interval": 0.2,
            "state_dir": str(tmp_path),
            "devices": [
                {
                    "name": "P-1",
                    "protocol": "modbus_tcp",
                    "host": "127.0.0.1",
                    "port": server.port,
                    "unit_id": 1,
                    "profile": PUMP_MODEL,
                },
                {
                    "name": "P-2",
                    "protocol": "modbus_tcp",
                    "host": "127.0.0.1",
                    "port": server.port,
                    "unit_id": 2,
                    "profile": PUMP_MODEL,
                },
            ],
        }
    )
    settings = Settings(
        database_url=db_url,
        mqtt_url=mqtt_url,
        mqtt_protocol="5",
        api_port=free_port(),
        ingest_client_id=f"e2e-ingest-{uid}",
        ingest_share_group=f"e2e-{uid}",
        ingest_batch_max_wait_ms=20,
    )
    stack = ServerStack(settings)
    gateway = Gateway(config)
    try:
        await stack.start()
        await gateway.start()
        faulty.inject_fault("bearing_wear", rate=15.0)  # ~60 °C → past 80 °C in about 2 s
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{settings.api_port}", headers={"Authorization": f"Bearer {token}"}
        ) as client:

            async def assigned_ticket() -> dict | None:
                tickets = (await client.get("/api/v1/tickets")).json()
                items = tickets["items"] if isinstance(tickets, dict) else tickets
                if items and items[0].get("status") == "assigned":
                    return (await client.get(f"/api/v1/tickets/{items[0]['id']}")).json()
                return None

            ticket = await wait_until_async(assigned_ticket, 60, what="a ticket assigned to a technician", interval=0.3)
        assert ticket is not None, "no ticket was assigned within 60 s"
        assert ticket["assignment"]["technician_name"] == "Near Mechanic"
    finally:
        await gateway.stop()
        await stack.stop()
        await server.stop()

    with psycopg.connect(db_url) as conn:
        alarms = conn.execute(
            "SELECT d.key, a.state, a.ticket_id FROM alarms a JOIN devices d ON d.id = a.device_id"
        ).fetchall()
        assert [(key, tid) for key, _, tid in alarms] == [("P-1", ticket["id"])]
        n_tickets = conn.execute("SELECT count(*) FROM tickets").fetchone()[0]
        assert n_tickets == 1
        stored = conn.execute(
            "SELECT count(*), count(DISTINCT s.device_id) FROM telemetry t JOIN series s ON s.id = t.series_id"
        ).fetchone()
        assert stored[0] > 20 and stored[1] == 2  # both pumps' readings arrived
        # (retained status messages of other tests' gateways are dead-lettered as unknown: not ours)
        dead = conn.execute(
            "SELECT reason, detail FROM dead_letters WHERE topic LIKE %s", (f"%/{site.slug}/%",)
        ).fetchall()
        assert dead == []
