"""Rules over the HTTP API: apply with diff and versions, list, show, backtest."""

from __future__ import annotations

import psycopg

from tests.support.api import BASE, api_client, auth, token

RULE = {
    "name": "hot bearing",
    "tag": "bearing_temp",
    "condition": {"kind": "above", "threshold": 80},
    "for_s": 0,
    "problem_code": "BEARING",
}


def test_apply_list_show_and_backtest(db_url: str) -> None:
    """An engineer applies a rule (dry run first), edits it to version 2, reads it back and backtests it."""
    eng, reader = auth(token(db_url, "reliability_engineer")), auth(token(db_url, "field_engineer"))
    with psycopg.connect(db_url, autocommit=True) as conn:
        client = conn.execute("INSERT INTO clients (name, segment) VALUES ('A', 'gold') RETURNING id").fetchone()[0]
        site = conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude) VALUES (%s, 'p', 'P', 1, 1) RETURNING id",
            (client,),
        ).fetchone()[0]
        dev = conn.execute(
            "INSERT INTO devices (site_id, key, equipment_model) VALUES (%s, 'pump-1', 'P100') RETURNING id", (site,)
        ).fetchone()[0]
        series = conn.execute(
            "INSERT INTO series (device_id, tag) VALUES (%s, 'bearing_temp') RETURNING id", (dev,)
        ).fetchone()[0]
        conn.execute("SELECT fw_ensure_telemetry_partition('2024-05-01')")
        conn.execute(
            "INSERT INTO telemetry (series_id, time, value) SELECT %s, '2024-05-01T00:00Z'::timestamptz"
            " + make_interval(secs => g), CASE WHEN g BETWEEN 10 AND 20 THEN 90 ELSE 60 END"
            " FROM generate_series(0, 59) g",
            (series,),
        )
    with api_client(db_url) as api:
        assert api.post(f"{BASE}/rules/apply", json={"rules": [RULE]}, headers=reader).status_code == 403
        dry = api.post(f"{BASE}/rules/apply", json={"rules": [RULE], "dry_run": True}, headers=eng).json()
        assert dry == {
            "changes": [{"name": "hot bearing", "action": "create", "live_version": None, "fields": {}}],
            "applied": {},
            "trained": {},
        }
        assert api.post(f"{BASE}/rules/apply", json={"rules": [RULE]}, headers=eng).json()["applied"] == {
            "hot bearing": 1
        }
        edited = {**RULE, "condition": {"kind": "above", "threshold": 85}}
        body = api.post(f"{BASE}/rules/apply", json={"rules": [edited]}, headers=eng).json()
        assert body["changes"][0]["fields"] == {"condition.levels.0.threshold": [80.0, 85.0]}
        bad = api.post(f"{BASE}/rules/apply", json={"rules": [{**RULE, "count": 0}]}, headers=eng)
        assert bad.status_code == 422 and "rule 'hot bearing' (#1): count" in bad.json()["detail"][0]["msg"]
        listed = api.get(f"{BASE}/rules", headers=reader).json()
        assert [(r["version"], r["describe"]) for r in listed] == [(2, "bearing_temp > 85")]
        shown = api.get(f"{BASE}/rules/hot bearing", headers=reader).json()
        assert [v["version"] for v in shown["versions"]] == [1, 2]
        assert api.get(f"{BASE}/rules/nope", headers=reader).status_code == 404
        bt = api.post(
            f"{BASE}/rules/hot bearing/backtest",
            headers=reader,
            json={
                "device": "pump-1",
                "from": "2024-05-01T00:00:00Z",
                "to": "2024-05-01T00:01:00Z",
                "compare": 1,
                "incidents": [{"start": "2024-05-01T00:00:09Z", "end": "2024-05-01T00:00:30Z"}],
            },
        ).json()
        (v2, v1) = bt["runs"]
        assert (v2["version"], v1["version"]) == ("2", "1")
        assert [(e["start"], e["end"]) for e in v2["episodes"]] == [("2024-05-01T00:00:10Z", "2024-05-01T00:00:21Z")]
        assert v2["score"]["recall"] == 1.0 and v2["score"]["mean_detection_delay_s"] == 1.0
        rows = [{"time": f"2024-05-01T00:00:{s:02d}Z", "anomaly": 10 <= s <= 25, "label": "hot"} for s in range(60)]
        per_row = api.post(
            f"{BASE}/rules/hot bearing/backtest",
            headers=reader,
            json={"device": "pump-1", "from": "2024-05-01T00:00:00Z", "to": "2024-05-01T00:01:00Z", "labels": rows},
        ).json()["runs"][0]["score"]
        # v2 (above 85) is active after the readings at 10-20 s: 11 of the 16 labelled readings, no normal one
        assert per_row["points"] == {
            "readings": 60,
            "anomalous": 16,
            "alarmed": 11,
            "true_positives": 11,
            "false_positives": 0,
            "false_negatives": 5,
            "true_negatives": 44,
            "precision": 1.0,
            "recall": 0.6875,
            "f1": 0.8148,
            "false_alarm_rate": 0.0,
            "missed_alarm_rate": 0.3125,
        }
        assert per_row["by_label"]["hot"]["detected"] == 1 and per_row["mean_detection_delay_s"] == 0.0
        assert (
            api.post(
                f"{BASE}/rules/hot bearing/backtest",
                headers=reader,
                json={"device": "nope", "from": "2024-05-01T00:00:00Z", "to": "2024-05-01T00:01:00Z"},
            ).status_code
            == 422
        )
