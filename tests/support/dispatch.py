"""A small dispatch world at a fixed time: two pumps (Munich, Augsburg), two pump technicians near them.

``world`` is a fixture (the test modules that use it bind it to a module name); tickets are
inserted with plain SQL and the service runs on a clock that stands still at :data:`NOW`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import pytest

from ticketing import TicketingService, create_technician, ensure_skill

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SITE_A = (48.1374, 11.5755)  # Munich
SITE_B = (48.3705, 10.8978)  # Augsburg, ~56 km west
NEAR_A = (48.1500, 11.5800)
NEAR_B = (48.3600, 10.9000)
WAREHOUSE = (48.2000, 11.4000)


@dataclass
class World:
    """The seeded database: its URL, device ids by site slug ("a", "b") and technician ids by name."""

    url: str
    devices: dict[str, int]
    techs: dict[str, int]


@pytest.fixture
def world(db_url: str) -> World:
    """A gold client with one pump in Munich and one in Augsburg; Ana (pump) lives near Munich, Bo
    (pump) near Augsburg; neither has shift rows, so both are available around the clock."""
    with psycopg.connect(db_url) as conn:
        ensure_skill(conn, "pump")
        client = conn.execute("INSERT INTO clients (name, segment) VALUES ('Acme', 'gold') RETURNING id").fetchone()[0]
        devices = {}
        for slug, (lat, lon) in (("a", SITE_A), ("b", SITE_B)):
            site = conn.execute(
                "INSERT INTO sites (client_id, slug, name, latitude, longitude) VALUES (%s, %s, %s, %s, %s)"
                " RETURNING id",
                (client, slug, slug, lat, lon),
            ).fetchone()[0]
            devices[slug] = conn.execute(
                "INSERT INTO devices (site_id, key, equipment_model) VALUES (%s, %s, 'P100') RETURNING id",
                (site, f"pump-{slug}"),
            ).fetchone()[0]
        techs = {
            "Ana": create_technician(
                conn, name="Ana", email="ana@x", home_lat=NEAR_A[0], home_lon=NEAR_A[1], skills={"pump": 3}
            ).id,
            "Bo": create_technician(
                conn, name="Bo", email="bo@x", home_lat=NEAR_B[0], home_lon=NEAR_B[1], skills={"pump": 3}
            ).id,
        }
    return World(db_url, devices, techs)


def new_ticket(url: str, device: int, problem: str, **cols: object) -> int:
    """Insert a 'new' API ticket needing the pump skill; extra columns from ``cols``."""
    names = ["device_id", "problem_code", "title", "source", "required_skill", *cols]
    values = [device, problem, problem, "api", "pump", *cols.values()]
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"INSERT INTO tickets ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))}) RETURNING id",
            values,
        ).fetchone()[0]


def assignment(url: str, ticket: int) -> dict | None:
    """The ticket's active assignment with the technician's name, or None."""
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(
            "SELECT a.*, t.name FROM assignments a JOIN technicians t ON t.id = a.technician_id "
            "WHERE ticket_id = %s AND active",
            (ticket,),
        )
        return cur.fetchone()


def service(world: World) -> TicketingService:
    """A ticketing service on the world's database whose clock stands still at :data:`NOW`."""
    return TicketingService(world.url, clock=lambda: NOW)
