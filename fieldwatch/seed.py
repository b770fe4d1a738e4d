"""Demo fleet: two clients in different SLA segments, four real sites, six pumps, four technicians.

The fleet is plain data (:data:`DEMO_FLEET`) so the demo, tests and docs share
one description; :func:`seed` writes it to a migrated database in one
transaction, through the domains' functions (no SQL here). Coordinates are
real places around Chicago, so distances and ETAs in the demo are believable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from ingest import assets
from rules import create_rule
from ticketing import create_technician, ensure_skill

PUMP_MODEL = "pump-p100"
#: Units of the pump profile's tags (gateway/profiles/pump-p100.yaml), so series carry units from the start.
PUMP_TAG_UNITS = {
    "flow": "m3/h",
    "discharge_pressure": "bar",
    "motor_current": "A",
    "bearing_temp": "degC",
    "vibration": "mm/s",
    "status": "",
    "run_hours": "h",
    "fault_code": "",
}


@dataclass(frozen=True)
class SiteSpec:
    slug: str
    name: str
    client: str
    address: str
    lat: float
    lon: float
    devices: tuple[str, ...]

    @property
    def gateway(self) -> str:
        return f"gw-{self.slug}"


@dataclass(frozen=True)
class TechnicianSpec:
    name: str
    email: str
    lat: float
    lon: float
    skills: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Fleet:
    clients: dict[str, str]  # name -> SLA segment
    sites: tuple[SiteSpec, ...]
    skills: dict[str, str]  # code -> name
    technicians: tuple[TechnicianSpec, ...]


DEMO_FLEET = Fleet(
    clients={"Northwind Water": "platinum", "Contoso Foods": "standard"},
    sites=(
        SiteSpec(
            "nw-evanston",
            "Evanston pumping station",
            "Northwind Water",
            "555 Lincoln St, Evanston, IL",
            42.0630,
            -87.6740,
            ("P-101", "P-102"),
        ),
        SiteSpec(
            "nw-joliet",
            "Joliet booster station",
            "Northwind Water",
            "150 W Jefferson St, Joliet, IL",
            41.5250,
            -88.0817,
            ("P-201",),
        ),
        SiteSpec(
            "cf-aurora",
            "Aurora bottling plant",
            "Contoso Foods",
            "44 E Downer Pl, Aurora, IL",
            41.7606,
            -88.3201,
            ("P-301", "P-302"),
        ),
        SiteSpec(
            "cf-gary", "Gary cold store", "Contoso Foods", "401 Broadway, Gary, IN", 41.6020, -87.3372, ("P-401",)
        ),
    ),
    skills={
        "pump_mechanical": "Pump mechanics (bearings, seals, alignment)",
        "electrical": "Motors and drives",
        "hvac": "Chillers and HVAC",
    },
    technicians=(
        # Ben lives closest to Evanston but is an electrician: the bearing job must go to Ana.
        TechnicianSpec("Ben Okafor", "ben@fieldwatch.example", 42.0451, -87.6877, {"electrical": 3}),
        TechnicianSpec(
            "Ana Ruiz", "ana@fieldwatch.example", 42.0324, -87.7416, {"pump_mechanical": 3, "electrical": 2}
        ),
        TechnicianSpec("Chloe Martin", "chloe@fieldwatch.example", 41.7508, -88.1535, {"pump_mechanical": 2}),
        TechnicianSpec("Dev Patel", "dev@fieldwatch.example", 41.5834, -87.5000, {"pump_mechanical": 1, "hvac": 2}),
    ),
)

#: The demo's rules: the spine's "bearing temperature > 80 °C for 30 s", and high vibration.
DEMO_RULES = (
    dict(
        name="Bearing overheating",
        tag="bearing_temp",
        operator=">",
        threshold=80.0,
        duration_s=30.0,
        severity="major",
        problem_code="bearing_overheat",
        equipment_model=PUMP_MODEL,
        required_skill="pump_mechanical",
    ),
    dict(
        name="High vibration",
        tag="vibration",
        operator=">",
        threshold=7.1,
        duration_s=30.0,
        severity="minor",
        problem_code="high_vibration",
        equipment_model=PUMP_MODEL,
        required_skill="pump_mechanical",
    ),
)


def seed(conn: psycopg.Connection, fleet: Fleet = DEMO_FLEET, *, rules: tuple[dict, ...] = DEMO_RULES) -> None:
    """Write ``fleet`` and ``rules`` into a migrated, empty database, in one transaction.

    Everything goes through the domains' own functions (the registry's, ticketing's, the rules'),
    so the demo fleet passes the checks an API client's data passes.
    """
    with conn.transaction():
        client_ids = {
            name: assets.create(conn, assets.CLIENTS, {"name": name, "segment": segment}).id
            for name, segment in fleet.clients.items()
        }
        for site in fleet.sites:
            site_id = assets.create(
                conn,
                assets.SITES,
                {
                    "client_id": client_ids[site.client],
                    "slug": site.slug,
                    "name": site.name,
                    "address": site.address,
                    "latitude": site.lat,
                    "longitude": site.lon,
                },
            ).id
            gw_id = assets.create(
                conn, assets.GATEWAYS, {"site_id": site_id, "slug": site.gateway, "name": f"{site.name} gateway"}
            ).id
            for n, key in enumerate(site.devices, start=1):
                dev_id = assets.create(
                    conn,
                    assets.DEVICES,
                    {
                        "site_id": site_id,
                        "gateway_id": gw_id,
                        "key": key,
                        "name": f"Pump {key}",
                        "equipment_model": PUMP_MODEL,
                        "serial": f"P100-{site.slug.upper()}-{n:03d}",
                    },
                ).id
                for tag, unit in PUMP_TAG_UNITS.items():
                    assets.create(conn, assets.SERIES, {"device_id": dev_id, "tag": tag, "unit": unit})
        for code, name in fleet.skills.items():
            ensure_skill(conn, code, name)
        for tech in fleet.technicians:
            create_technician(
                conn, name=tech.name, email=tech.email, home_lat=tech.lat, home_lon=tech.lon, skills=tech.skills
            )
        for rule in rules:
            create_rule(conn, **rule)
