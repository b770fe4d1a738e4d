"""Demo fleet: two clients in different SLA segments, four real sites, six pumps, four technicians.

The fleet is plain data (:data:`DEMO_FLEET`) so the demo, tests and docs share
one description; :func:`seed` writes it to a migrated database in one
transaction. Coordinates are real places around Chicago, so distances and ETAs
in the demo are believable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from rules import create_rule

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
    """Write ``fleet`` and ``rules`` into a migrated, empty database, in one transaction."""
    with conn.transaction():
        client_ids = {}
        for name, segment in fleet.clients.items():
            client_ids[name] = conn.execute(
                "INSERT INTO clients (name, segment) VALUES (%s, %s) RETURNING id", (name, segment)
            ).fetchone()[0]
        for site in fleet.sites:
            site_id = conn.execute(
                "INSERT INTO sites (client_id, slug, name, address, latitude, longitude)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (client_ids[site.client], site.slug, site.name, site.address, site.lat, site.lon),
            ).fetchone()[0]
            gw_id = conn.execute(
                "INSERT INTO gateways (site_id, slug, name) VALUES (%s, %s, %s) RETURNING id",
                (site_id, site.gateway, f"{site.name} gateway"),
            ).fetchone()[0]
            for n, key in enumerate(site.devices, start=1):
                dev_id = conn.execute(
                    "INSERT INTO devices (site_id, gateway_id, key, name, equipment_model, serial)"
                    " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                    (site_id, gw_id, key, f"Pump {key}", PUMP_MODEL, f"P100-{site.slug.upper()}-{n:03d}"),
                ).fetchone()[0]
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO series (device_id, tag, unit) VALUES (%s, %s, %s)",
                        [(dev_id, tag, unit) for tag, unit in PUMP_TAG_UNITS.items()],
                    )
        skill_ids = {}
        for code, name in fleet.skills.items():
            skill_ids[code] = conn.execute(
                "INSERT INTO skills (code, name) VALUES (%s, %s) RETURNING id", (code, name)
            ).fetchone()[0]
        for tech in fleet.technicians:
            tech_id = conn.execute(
                "INSERT INTO technicians (name, email, home_lat, home_lon) VALUES (%s, %s, %s, %s) RETURNING id",
                (tech.name, tech.email, tech.lat, tech.lon),
            ).fetchone()[0]
            for code, level in tech.skills.items():
                conn.execute(
                    "INSERT INTO technician_skills (technician_id, skill_id, level) VALUES (%s, %s, %s)",
                    (tech_id, skill_ids[code], level),
                )
        for rule in rules:
            create_rule(conn, **rule)
