"""No-data, device-offline and gateway-offline checks: a scheduled job, not a reading hook.

Silence produces no readings to evaluate, so a job (:func:`no_data_job`, every 30 s) computes a
*silence score* per (no-data rule, device) and feeds it to :meth:`RuleEvaluator.process_scores` —
the same state machine, ``for_s``/ladders/hysteresis, suppression and ``fw_events`` as any rule.

The score is "how many normal readings were missed": silence divided by the cadence learned from
the series' own recent inter-arrival times (median of its last 50 gaps), so a 1 s vibration
series and a 15 min tank level are judged by their own rhythm. Gateways have no cadence: their
score is minutes spent ``offline`` according to the retained birth/death status ingest maintains.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import psycopg

from rules.devices import load_devices
from rules.model import NoData, Rule
from rules.service import AlarmEvent, RuleEvaluator
from rules.store import list_rules

log = logging.getLogger(__name__)

#: Readings a series needs before its cadence is trusted (fewer: not judged).
MIN_READINGS = 3
_HISTORY = 50

_SERIES_SQL = """
SELECT s.device_id, s.tag, lat.last_ms, lat.cadence_s, lat.n
FROM series s CROSS JOIN LATERAL (
    SELECT (extract(epoch FROM max(t)) * 1000)::bigint AS last_ms,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY gap) AS cadence_s, count(*) AS n
    FROM (SELECT time AS t, extract(epoch FROM time - lag(time) OVER (ORDER BY time)) AS gap
          FROM (SELECT time FROM telemetry WHERE series_id = s.id ORDER BY time DESC LIMIT %(h)s) recent) g
) lat
WHERE s.device_id = ANY(%(devices)s) AND (%(tag)s::text IS NULL OR s.tag = %(tag)s)
"""


def silence_score(now_ms: int, last_ms: int, cadence_s: float, min_cadence_s: float) -> float:
    """Silence since ``last_ms`` in multiples of the (floored) cadence; 0 for a reading from the future."""
    return max(0.0, (now_ms - last_ms) / 1000) / max(cadence_s, min_cadence_s)


def _series_scores(
    conn: psycopg.Connection, cond: NoData, tag: str | None, devices: list[int], now_ms: int
) -> dict[int, float]:
    """device id → score; for target ``device`` the device's latest reading and fastest cadence."""
    rows = conn.execute(_SERIES_SQL, {"h": _HISTORY, "devices": devices, "tag": tag}).fetchall()
    latest: dict[int, tuple[int, float]] = {}
    for device_id, _tag, last_ms, cadence_s, n in rows:
        if n < MIN_READINGS or cadence_s is None or last_ms is None:
            continue
        prev = latest.get(device_id)
        if prev is None:
            latest[device_id] = (last_ms, cadence_s)
        else:  # target "device" (several series): the newest reading, the fastest rhythm
            latest[device_id] = (max(prev[0], last_ms), min(prev[1], cadence_s))
    return {d: silence_score(now_ms, last, cad, cond.min_cadence_s) for d, (last, cad) in latest.items()}


def _gateway_scores(conn: psycopg.Connection, devices: list[int], now_ms: int) -> dict[int, float]:
    rows = conn.execute(
        """SELECT d.id, g.status, (extract(epoch FROM g.status_at) * 1000)::bigint
           FROM devices d JOIN gateways g ON g.id = d.gateway_id WHERE d.id = ANY(%s)""",
        (devices,),
    ).fetchall()
    return {d: (max(0, now_ms - (at or now_ms)) / 60_000 if status == "offline" else 0.0) for d, status, at in rows}


def compute_scores(conn: psycopg.Connection, rules: Iterable[Rule], now_ms: int) -> list[tuple[Rule, int, int, float]]:
    """``(rule, device_id, now_ms, score)`` for every enabled no-data rule and device in its scope."""
    rules = [r for r in rules if isinstance(r.spec.condition, NoData) and r.spec.enabled]
    if not rules:
        return []
    ids = [r[0] for r in conn.execute("SELECT id FROM devices").fetchall()]
    devices = load_devices(conn, ids)
    out: list[tuple[Rule, int, int, float]] = []
    for rule in rules:
        cond = rule.spec.condition
        assert isinstance(cond, NoData)
        in_scope = [d.id for d in devices.values() if rule.spec.scope.matches(d)]
        if not in_scope:
            continue
        if cond.target == "gateway":
            scores = _gateway_scores(conn, in_scope, now_ms)
        else:
            scores = _series_scores(conn, cond, rule.spec.tag if cond.target == "series" else None, in_scope, now_ms)
        out.extend((rule, d, now_ms, s) for d, s in sorted(scores.items()))
    return out


def check_no_data(db_url: str, *, now_ms: int | None = None) -> list[AlarmEvent]:
    """One pass: score every no-data rule and open/clear alarms through the shared alarm path."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    with psycopg.connect(db_url, autocommit=True) as conn:
        scores = compute_scores(conn, list_rules(conn, enabled_only=True), now)
    with RuleEvaluator(db_url) as ev:
        events = ev.process_scores(scores)
    for e in events:
        log.info("no-data %s alarm %d (rule %d, device %d)", e.type, e.alarm_id, e.rule_id, e.device_id)
    return events


def no_data_job(db_url: str) -> int:
    """Scheduler entry point; returns how many alarm events it committed."""
    return len(check_no_data(db_url))
