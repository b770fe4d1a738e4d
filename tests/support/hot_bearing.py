"""A plant with one threshold rule, "hot bearing" (bearing_temp > 80 on P100 pumps), for live-evaluation tests.

:func:`seed` writes the registry and the rule, :func:`temps` makes readings as ingest's hook
hands them to rules, :func:`alarms` reads back what the evaluator opened.
"""

from __future__ import annotations

import psycopg

from fieldwatch.seed import DEMO_RULES
from rules import create_rule
from tests.support.points import T0, Point

__all__ = ["CONSOLE_RULE", "T0", "alarms", "seed", "temps"]

#: The rule the console's browser tests and ``bench/ui.py`` seed with a fleet: the demo's bearing rule
#: (``fieldwatch.seed.DEMO_RULES``) made instant and critical — one reading over 80 °C opens the alarm at
#: once — and asking no skill (a test that wants tickets left unassigned adds one nobody has).
CONSOLE_RULE = {k: v for k, v in DEMO_RULES[0].items() if k != "required_skill"} | {
    "duration_s": 0.0,
    "severity": "critical",
}


def seed(url: str, *, duration_s: float = 30.0) -> tuple[int, int, int]:
    """A client, a site, a pump and a hot-bearing rule; returns (rule_id, device_id, other_model_device_id)."""
    with psycopg.connect(url) as conn:
        client = conn.execute("INSERT INTO clients (name, segment) VALUES ('Acme', 'gold') RETURNING id").fetchone()[0]
        site = conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude) VALUES (%s, 'plant', 'Plant', 48.1, 11.5)"
            " RETURNING id",
            (client,),
        ).fetchone()[0]
        pump, fan = (
            conn.execute(
                "INSERT INTO devices (site_id, key, name, equipment_model) VALUES (%s, %s, %s, %s) RETURNING id",
                (site, key, key, model),
            ).fetchone()[0]
            for key, model in (("pump-1", "P100"), ("fan-1", "F20"))
        )
        r = create_rule(
            conn,
            name="hot bearing",
            tag="bearing_temp",
            operator=">",
            threshold=80,
            duration_s=duration_s,
            severity="critical",
            problem_code="BEARING_OVERHEAT",
            equipment_model="P100",
        )
    return r.id, pump, fan


def alarms(url: str) -> list[tuple]:
    """(rule, device, state, message, trigger value, triggered at, cleared) of every alarm, oldest first."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT rule_id, device_id, state, message, trigger_value, triggered_at, cleared_at IS NOT NULL"
            " FROM alarms ORDER BY id"
        ).fetchall()


def temps(device: int, start_s: int, values: list[float], step_s: int = 10) -> list[Point]:
    """Bearing temperatures ``values`` of ``device``, one every ``step_s`` s from :data:`T0` + ``start_s``."""
    return [Point(device, "bearing_temp", T0 + (start_s + i * step_s) * 1000, v) for i, v in enumerate(values)]
