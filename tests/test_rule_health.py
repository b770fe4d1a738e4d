"""Rule health: every (rule, device) pair says whether it evaluates, and a pair that cannot raises a rule
error for the rule's owner — not a log line only, and never a ticket."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import psycopg
import pytest
from typer.testing import CliRunner

from fwcore.events import CHANNEL
from rules import RuleEvaluator, save_rule
from rules.cli import app
from rules.health import list_rule_errors, rule_health
from rules.rulesfile import load_rules_file
from tests.support.api import BASE, api_client, auth, token
from tests.support.hot_bearing import seed, temps
from ticketing import TicketingService

LIMIT_RULE = (
    "- {name: own limit, tag: bearing_temp, problem_code: HOT, scope: {equipment_models: [P100]},"
    " condition: {kind: above, threshold: {attribute: limit}}}"
)


@dataclass
class Plant:
    url: str
    rule: int
    good: int  # limit 100
    bad: int  # limit "hot": not a number
    quiet: int  # no reading yet


@pytest.fixture
def plant(db_url: str) -> Plant:
    """Three P100 pumps under a rule whose threshold is each pump's own `limit` attribute, written by ann:
    one with a good limit, one whose limit is not a number, one that has sent nothing."""
    _, good, _ = seed(db_url, duration_s=0)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM rules")
        site = conn.execute("SELECT site_id FROM devices WHERE id = %s", (good,)).fetchone()[0]  # type: ignore[index]
        bad, quiet = (
            conn.execute(
                "INSERT INTO devices (site_id, key, name, equipment_model, attributes) "
                "VALUES (%s, %s, %s, 'P100', %s) RETURNING id",
                (site, key, key, attrs),
            ).fetchone()[0]  # type: ignore[index]
            for key, attrs in (("pump-2", '{"limit": "hot"}'), ("pump-3", '{"limit": 90}'))
        )
        conn.execute("UPDATE devices SET attributes = '{\"limit\": 100}' WHERE id = %s", (good,))
        (spec,) = load_rules_file(LIMIT_RULE)
        rule, _ = save_rule(conn, spec, author="ann")
    return Plant(db_url, rule.id, good, bad, quiet)


@pytest.fixture
def events(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        yield conn


def _rule_events(conn: psycopg.Connection) -> list[dict]:
    got = [orjson.loads(n.payload) for n in conn.notifies(timeout=0.5)]
    return [e for e in got if e["type"].startswith("rule_error")]


def test_a_device_the_rule_cannot_evaluate_raises_a_rule_error_that_clears_when_it_evaluates_again(
    plant: Plant, events: psycopg.Connection
) -> None:
    """A bad attribute opens one rule error (event and row, owner = who wrote the rule) and no alarm or ticket;
    fixing the attribute clears it and the device is evaluated (and alarms) again."""
    with RuleEvaluator(plant.url) as ev:
        assert ev.process(temps(plant.good, 0, [95]) + temps(plant.bad, 0, [200])) == []
        ev.process(temps(plant.bad, 10, [210]))  # still broken: no second error
        (opened,) = _rule_events(events)
        assert opened == {"type": "rule_error_opened", "rule_error_id": opened["rule_error_id"],
                          "rule_id": plant.rule, "device_id": plant.bad}  # fmt: skip
        with psycopg.connect(plant.url, autocommit=True) as conn:
            (error,) = list_rule_errors(conn)
            assert (error.device_id, error.owner, error.cleared_at) == (plant.bad, "ann", None)
            assert "'limit' is 'hot', not a number" in error.reason
            assert conn.execute("SELECT count(*) FROM alarms").fetchone() == (0,)
        with TicketingService(plant.url) as svc:
            svc.sweep()
        with psycopg.connect(plant.url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM tickets").fetchone() == (0,)
            conn.execute("UPDATE devices SET attributes = '{\"limit\": 150}' WHERE id = %s", (plant.bad,))
        ev.refresh()
        (alarm,) = ev.process(temps(plant.bad, 20, [220]))
    assert alarm.type == "alarm_opened" and alarm.device_id == plant.bad
    (cleared,) = _rule_events(events)
    assert cleared == {**opened, "type": "rule_error_cleared"}
    with psycopg.connect(plant.url, autocommit=True) as conn:
        assert list_rule_errors(conn) == []
        (closed,) = list_rule_errors(conn, open_only=False)
        assert closed.cleared_at is not None


def test_health_says_what_each_device_in_scope_is_doing_and_since_when(plant: Plant) -> None:
    """Health lists every device in the rule's scope: evaluating (in which phase), error (with the reason
    and since when) and waiting for its first reading; the API says the same."""
    with RuleEvaluator(plant.url) as ev:
        ev.process(temps(plant.good, 0, [95]) + temps(plant.bad, 0, [200]))
    with psycopg.connect(plant.url, autocommit=True) as conn:
        report = rule_health(conn, "own limit")
        admin = token(plant.url, "admin")
    states = {p.device_id: p for p in report.devices}
    assert (report.owner, report.counts) == ("ann", {"evaluating": 1, "error": 1, "waiting": 1})
    assert (states[plant.good].state, states[plant.good].phase) == ("evaluating", "normal")
    assert states[plant.bad].state == "error" and "'limit'" in (states[plant.bad].reason or "")
    assert states[plant.bad].since is not None and states[plant.bad].rule_error_id is not None
    assert states[plant.quiet].state == "waiting"

    with api_client(plant.url) as api:
        r = api.get(f"{BASE}/rules/own limit/health", headers=auth(admin))
        assert api.get(f"{BASE}/rules/nope/health", headers=auth(admin)).status_code == 404
    assert r.status_code == 200
    assert {d["device_key"]: d["state"] for d in r.json()["devices"]} == {
        "pump-1": "evaluating",
        "pump-2": "error",
        "pump-3": "waiting",
    }


def test_an_anomaly_rule_without_scores_yet_is_warming_up(plant: Plant) -> None:
    """An anomaly rule's devices are warming up until their window yields a first score."""
    with psycopg.connect(plant.url, autocommit=True) as conn:
        (spec,) = load_rules_file(
            "- {name: pump health, problem_code: ODD, scope: {equipment_models: [P100]},"
            " condition: {kind: anomaly, tags: [bearing_temp, vibration], training: {last_days: 14}}}"
        )
        save_rule(conn, spec, author="ann")
        report = rule_health(conn, "pump health")
    assert report.counts == {"warming_up": 3}
    assert all("window is filling" in (p.reason or "") for p in report.devices)


def test_cli_health_shows_states_and_exits_1_on_a_rule_error(plant: Plant, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rules health RULE` tabulates the states and exits 1 while a rule error is open; without RULE it lists
    the open rule errors with their owner."""
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", plant.url)
    runner = CliRunner()
    clean = runner.invoke(app, ["health"])
    assert clean.exit_code == 0 and "no rule errors" in clean.output
    with RuleEvaluator(plant.url) as ev:
        ev.process(temps(plant.bad, 0, [200]))
    one = runner.invoke(app, ["health", "own limit"], terminal_width=200)
    assert one.exit_code == 1, one.output
    assert "pump-2" in one.output and "error" in one.output and "waiting" in one.output
    listed = runner.invoke(app, ["health"], terminal_width=200)
    assert listed.exit_code == 1 and "own limit" in listed.output and "ann" in listed.output


def test_a_rule_error_is_listed_as_an_alarm_of_its_own_kind_until_the_attribute_is_fixed(plant: Plant) -> None:
    """GET /alarms lists the rule error (kind rule_error, for the owner, with the reason and what to fix), the
    kind filter separates it from equipment alarms, the overview counts it apart, ticketing never tickets it,
    and fixing the attribute clears it there too."""
    from rules.alarms import open_alarms, open_counts

    viewer = token(plant.url, "viewer")
    with RuleEvaluator(plant.url) as ev:
        ev.process(temps(plant.good, 0, [120]) + temps(plant.bad, 0, [200]))  # pump-1 alarms; pump-2 cannot
        with TicketingService(plant.url) as svc:
            svc.sweep()
        with api_client(plant.url) as api:
            every = api.get(f"{BASE}/alarms", headers=auth(viewer)).json()
            errors = api.get(f"{BASE}/alarms", params={"kind": "rule_error"}, headers=auth(viewer)).json()
            equipment = api.get(f"{BASE}/alarms", params={"kind": "equipment"}, headers=auth(viewer)).json()
            assert api.get(f"{BASE}/alarms", params={"kind": "nope"}, headers=auth(viewer)).status_code == 422
        assert every["total"] == 2 and {a["kind"] for a in every["items"]} == {"equipment", "rule_error"}
        (error,) = errors["items"]
        assert (error["kind"], error["state"], error["owner"], error["device_id"]) == (
            "rule_error",
            "active",
            "ann",
            plant.bad,
        )
        assert (error["rule_name"], error["ticket_id"], error["auto_dispatch"]) == ("own limit", None, False)
        assert "'limit' is 'hot', not a number" in error["message"]
        assert "set the attribute 'limit' of device pump-2" in error["hint"]
        assert f"PATCH /api/v1/devices/{plant.bad}" in error["hint"]
        (alarm,) = equipment["items"]
        assert (alarm["kind"], alarm["device_id"], alarm["owner"], alarm["hint"]) == (
            "equipment",
            plant.good,
            None,
            None,
        )
        with psycopg.connect(plant.url, autocommit=True) as conn:
            assert [(a.kind, a.device_id) for a in open_alarms(conn)] == [
                ("equipment", plant.good),
                ("rule_error", plant.bad),
            ]
            assert open_counts(conn)["rule_error"] == 1
            # the equipment alarm is ticketed; the rule error is not, and never reaches ticketing's tables
            tickets = conn.execute("SELECT alarm_id FROM tickets").fetchall()
            assert tickets == [(alarm["id"],)]
            conn.execute("UPDATE devices SET attributes = '{\"limit\": 150}' WHERE id = %s", (plant.bad,))
        ev.refresh()
        ev.process(temps(plant.bad, 20, [120]))
    with api_client(plant.url) as api:
        still = api.get(f"{BASE}/alarms", params={"kind": "rule_error", "state": "active"}, headers=auth(viewer))
        ended = api.get(f"{BASE}/alarms", params={"kind": "rule_error"}, headers=auth(viewer)).json()
    assert still.json()["total"] == 0
    ((cleared_state, cleared_at),) = [(a["state"], a["cleared_at"]) for a in ended["items"]]
    assert cleared_state == "cleared" and cleared_at is not None
    with psycopg.connect(plant.url, autocommit=True) as conn:
        assert open_counts(conn)["rule_error"] == 0
        assert conn.execute("SELECT count(*) FROM tickets").fetchone() == (1,)
