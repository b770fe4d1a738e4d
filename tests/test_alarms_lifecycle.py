"""Alarm lifecycle against the real database: comments, silences and maintenance windows, flapping,
parent-asset suppression, release when the reason is gone, and the API/CLI around them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from rich.console import Console
from typer.testing import CliRunner

from fwcore.events import AlarmCommentedEvent, AlarmOpenedEvent, SilenceCreatedEvent, parse
from rules import RuleEvaluator
from rules.cli import app
from rules.lifecycle import (
    LifecycleError,
    add_comment,
    create_silence,
    end_silence,
    list_comments,
    list_silences,
    release_suppressed,
)
from rules.model import RuleSpec
from rules.store import save_rule
from tests.support.api import api_client, auth, token
from tests.support.points import Point

NOW_MS = int(datetime.now(UTC).timestamp() * 1000) - 3_600_000  # an hour ago: inside windows made "now - 2 h"


def seed(url: str, *, flapping: dict | None = None) -> dict[str, int]:
    """A site with a skid (parent) and its pump (child), a pump at another site, and two rules with one problem code."""
    with psycopg.connect(url, autocommit=True) as conn:
        client = conn.execute("INSERT INTO clients (name, segment) VALUES ('Acme', 'gold') RETURNING id").fetchone()[0]
        ids: dict[str, int] = {}
        for slug in ("plant", "other"):
            ids[slug] = conn.execute(
                "INSERT INTO sites (client_id, slug, name, latitude, longitude) VALUES (%s, %s, %s, 48.1, 11.5)"
                " RETURNING id",
                (client, slug, slug),
            ).fetchone()[0]
        for key, site, parent in (("skid-1", "plant", None), ("pump-1", "plant", "skid-1"), ("pump-9", "other", None)):
            ids[key] = conn.execute(
                "INSERT INTO devices (site_id, key, name, equipment_model, parent_id) VALUES (%s, %s, %s, 'P100', %s)"
                " RETURNING id",
                (ids[site], key, key, ids.get(parent) if parent else None),
            ).fetchone()[0]
        base = {"condition": {"kind": "above", "threshold": 80, "clear": 75}, "problem_code": "OVERHEAT"}
        hot = RuleSpec.model_validate({**base, "name": "hot", "tag": "temp", "flapping": flapping})
        ids["hot"] = save_rule(conn, hot, author="ann")[0].id
        skid = RuleSpec.model_validate({**base, "name": "skid hot", "tag": "skid_temp"})
        ids["skid hot"] = save_rule(conn, skid, author="ann")[0].id
    return ids


def temps(device: int, start_s: int, values: list[float], tag: str = "temp") -> list[Point]:
    return [Point(device, tag, NOW_MS + (start_s + i) * 1000, v) for i, v in enumerate(values)]


def rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT id, device_id, suppressed_by, flapping, cleared_at IS NULL FROM alarms ORDER BY id"
        ).fetchall()


def window(url: str, **targets: int | str) -> int:
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        return create_silence(
            conn, created_by="ops", starts_at=now - timedelta(hours=2), ends_at=now + timedelta(hours=1), **targets
        ).id  # type: ignore[arg-type]


def test_comments_record_author_and_time_in_order(db_url: str) -> None:
    """Comments are kept per alarm, oldest first, with who wrote them and when; unknown alarms and empty text fail."""
    ids = seed(db_url)
    with RuleEvaluator(db_url) as ev:
        alarm_id = ev.process(temps(ids["pump-1"], 0, [90]))[0].alarm_id
    with psycopg.connect(db_url, autocommit=True) as conn:
        add_comment(conn, alarm_id, author="ann", body="checked on site: fan blocked")
        add_comment(conn, alarm_id, author="bob", body="cleared the fan")
        got = list_comments(conn, alarm_id)
        assert [(c.author, c.body) for c in got] == [
            ("ann", "checked on site: fan blocked"),
            ("bob", "cleared the fan"),
        ]
        assert got[0].created_at <= got[1].created_at
        for bad in ((alarm_id + 99, "x"), (alarm_id, "  ")):
            try:
                add_comment(conn, bad[0], author="ann", body=bad[1])
            except LifecycleError:
                pass
            else:
                raise AssertionError(f"{bad} was accepted")


def test_maintenance_window_suppresses_but_keeps_evaluating_and_releases_on_end(db_url: str) -> None:
    """In a site's maintenance window an alarm is recorded as suppressed (no alarm_opened); ending it releases it."""
    ids = seed(db_url)
    mw = window(db_url, kind="maintenance", site_id=ids["plant"])
    with RuleEvaluator(db_url) as ev:
        events = ev.process(temps(ids["pump-1"], 0, [90]) + temps(ids["pump-9"], 0, [90]))
        by_device = {e.device_id: (e.type, e.suppressed_by) for e in events}
        assert by_device == {
            ids["pump-1"]: ("alarm_suppressed", f"maintenance:{mw}"),
            ids["pump-9"]: ("alarm_opened", None),
        }
        assert ev.process(temps(ids["pump-1"], 1, [95])) == []  # still evaluated, still quiet
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("LISTEN fw_events")
        _, released = end_silence(conn, mw, by="ops")
        assert released == [events[0].alarm_id if events[0].device_id == ids["pump-1"] else events[1].alarm_id]
        notes = list(conn.notifies(timeout=1, stop_after=1))
        assert '"alarm_opened"' in notes[0].payload and '"released":true' in notes[0].payload
        assert parse(notes[0].payload) == AlarmOpenedEvent(
            alarm_id=released[0], device_id=ids["pump-1"], rule_id=ids["hot"], released=True
        )
        assert [s.id for s in list_silences(conn, active_only=True)] == []
    assert all(r[2] is None for r in rows(db_url))


def test_a_comment_and_a_silence_are_announced_once_committed(db_url: str) -> None:
    """A comment sends alarm_commented (with the alarm's device) and a new window silence_created, after
    their transaction commits, so every open console page redraws them; a refused comment sends nothing."""
    ids = seed(db_url)
    with RuleEvaluator(db_url) as ev:
        alarm_id = ev.process(temps(ids["pump-1"], 0, [90]))[0].alarm_id
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("LISTEN fw_events")
        comment = add_comment(conn, alarm_id, author="ann", body="fan blocked")
        mw = window(db_url, kind="maintenance", device_id=ids["pump-1"])
        try:
            add_comment(conn, alarm_id, author="ann", body=" ")
        except LifecycleError:
            pass
        got = [parse(n.payload) for n in conn.notifies(timeout=1, stop_after=3)]
    assert got == [
        AlarmCommentedEvent(alarm_id=alarm_id, device_id=ids["pump-1"], comment_id=comment.id),
        SilenceCreatedEvent(silence_id=mw, kind="maintenance", device_id=ids["pump-1"]),
    ]


def test_silence_by_rule_and_device_must_all_match(db_url: str) -> None:
    """A silence naming a rule and a device suppresses only that rule on that device."""
    ids = seed(db_url)
    window(db_url, rule_id=ids["hot"], device_id=ids["pump-9"])
    with RuleEvaluator(db_url) as ev:
        events = ev.process(temps(ids["pump-1"], 0, [90]) + temps(ids["pump-9"], 0, [90]))
    assert sorted((e.device_id, e.type) for e in events) == sorted(
        [(ids["pump-1"], "alarm_opened"), (ids["pump-9"], "alarm_suppressed")]
    )


def test_suppressed_alarm_clears_without_events(db_url: str) -> None:
    """A silenced alarm clears with its condition like any other, but nothing is announced."""
    ids = seed(db_url)
    window(db_url, device_id=ids["pump-1"])
    with RuleEvaluator(db_url) as ev:
        assert [e.type for e in ev.process(temps(ids["pump-1"], 0, [90]))] == ["alarm_suppressed"]
        assert ev.process(temps(ids["pump-1"], 1, [70])) == []
    assert [r[4] for r in rows(db_url)] == [False]


def test_parent_alarm_suppresses_duplicate_on_child_until_it_clears(db_url: str) -> None:
    """An open alarm on the skid suppresses the same problem on its pump; once the skid clears the pump is released."""
    ids = seed(db_url)
    with RuleEvaluator(db_url) as ev:
        parent = ev.process(temps(ids["skid-1"], 0, [90], tag="skid_temp"))[0]
        child = ev.process(temps(ids["pump-1"], 0, [90]))[0]
        assert (child.type, child.suppressed_by) == ("alarm_suppressed", f"parent:{parent.alarm_id}")
        other = ev.process(temps(ids["pump-9"], 0, [90]))[0]  # not a child: visible
        assert other.type == "alarm_opened"
        assert [e.type for e in ev.process(temps(ids["skid-1"], 1, [70], tag="skid_temp"))] == ["alarm_cleared"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert release_suppressed(conn) == [child.alarm_id]


def test_flapping_collapses_into_one_alarm(db_url: str) -> None:
    """Three openings within the window make the third one flapping; later openings are suppressed by it."""
    ids = seed(db_url, flapping={"transitions": 3, "window_s": 60})
    seen = []
    with RuleEvaluator(db_url) as ev:
        for i in range(6):
            seen += ev.process(temps(ids["pump-1"], i * 10, [90, 70]))
    opened = [e for e in seen if e.type in ("alarm_opened", "alarm_suppressed")]
    assert [e.type for e in opened] == ["alarm_opened"] * 3 + ["alarm_suppressed"] * 3
    flap = opened[2].alarm_id
    assert {e.suppressed_by for e in opened[3:]} == {f"flapping:{flap}"}
    assert [r[3] for r in rows(db_url)] == [False, False, True, False, False, False]
    with RuleEvaluator(db_url) as ev:  # quiet for longer than the window: the next opening is an ordinary alarm
        late = ev.process(temps(ids["pump-1"], 500, [90]))
    assert [(e.type, e.suppressed_by) for e in late] == [("alarm_opened", None)]


def test_api_comments_and_silences(db_url: str) -> None:
    """The API adds and lists comments, creates/lists/ends silences, and shows suppressed_by on alarms."""
    ids = seed(db_url)
    eng = auth(token(db_url, "reliability_engineer", "ann"))
    with api_client(db_url) as api:
        r = api.post(
            "/api/v1/silences",
            headers=eng,
            json={"kind": "maintenance", "device": "plant/pump-1", "duration_s": 3600, "reason": "bearing swap"},
        )
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        assert r.json()["device"] == "pump-1" and r.json()["created_by"] == "ann"
        assert api.post("/api/v1/silences", headers=eng, json={"duration_s": 60}).status_code == 422
        assert api.post("/api/v1/silences", headers=eng, json={"site": "nope", "duration_s": 60}).status_code == 422
        with RuleEvaluator(db_url) as ev:
            alarm_id = ev.process([Point(ids["pump-1"], "temp", int(datetime.now(UTC).timestamp() * 1000), 90)])[
                0
            ].alarm_id
        got = api.get(f"/api/v1/alarms/{alarm_id}", headers=eng).json()
        assert got["suppressed_by"] == f"maintenance:{sid}"
        c = api.post(f"/api/v1/alarms/{alarm_id}/comments", headers=eng, json={"body": "during the swap"})
        assert c.status_code == 201 and c.json()["author"] == "ann"
        assert [x["body"] for x in api.get(f"/api/v1/alarms/{alarm_id}/comments", headers=eng).json()] == [
            "during the swap"
        ]
        assert api.get("/api/v1/alarms/999999/comments", headers=eng).status_code == 404
        assert [s["id"] for s in api.get("/api/v1/silences?active=true", headers=eng).json()] == [sid]
        ended = api.post(f"/api/v1/silences/{sid}/end", headers=eng)
        assert ended.status_code == 200 and ended.json()["released_alarms"] == [alarm_id]
        assert api.get(f"/api/v1/alarms/{alarm_id}", headers=eng).json()["suppressed_by"] is None


def test_cli_silence_add_list_end(db_url: str, monkeypatch) -> None:
    """`rules silence add/list/end` create, show and end a window; a bad duration is refused with a hint."""
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    monkeypatch.setattr("rules.cli.out", Console(width=200))
    seed(db_url)
    runner = CliRunner()
    bad = runner.invoke(app, ["silence", "add", "--rule", "hot", "--for", "soon"])
    assert bad.exit_code == 2 and "15m" in bad.output
    added = runner.invoke(
        app,
        [
            "silence",
            "add",
            "--rule",
            "hot",
            "--site",
            "plant",
            "--for",
            "2h",
            "--maintenance",
            "--author",
            "ann",
            "--reason",
            "overhaul",
        ],
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["silence", "list"])
    assert "maintenance" in listed.output and "overhaul" in listed.output
    with psycopg.connect(db_url) as conn:
        sid = list_silences(conn)[0].id
    ended = runner.invoke(app, ["silence", "end", str(sid)])
    assert ended.exit_code == 0 and f"ended silence {sid}" in ended.output
    assert "overhaul" not in runner.invoke(app, ["silence", "list"]).output
    assert runner.invoke(app, ["silence", "end", "9999"]).exit_code == 1
