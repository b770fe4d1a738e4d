"""One device's alarms as its page shows them: the episodes over a chart's range, its open alarms, and the
thresholds of the anomaly scores it has.

An *episode* is an alarm's life on the time axis: from the reading that triggered it to the moment it
cleared (still open: no end). Suppressed alarms are episodes too — the condition happened, someone only
chose not to be told. Reads only, each bounded by a ``limit``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import psycopg

from rules.alarms import Alarm, list_alarms
from rules.model import ANOMALY_TAG_PREFIX

#: The most episodes one chart range reads (the newest win): more would be a solid band anyway.
EPISODE_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Episode:
    """An alarm's span: ``start`` (triggered) to ``end`` (cleared; None while it is open)."""

    alarm_id: int
    rule_name: str
    tag: str  # the rule's tag: the series the condition watched
    severity: str  # the worst severity it reached
    state: str
    start: datetime
    end: datetime | None
    trigger_value: float | None


def episodes(
    conn: psycopg.Connection, device_id: int, start: datetime, end: datetime, *, limit: int = EPISODE_LIMIT
) -> list[Episode]:
    """Alarm episodes of the device overlapping ``[start, end)``, oldest first, at most ``limit`` (the newest)."""
    rows = conn.execute(
        """SELECT * FROM (
               SELECT a.id, r.name, r.tag, COALESCE(a.peak_severity, a.severity), a.state, a.triggered_at,
                      a.cleared_at, a.trigger_value
               FROM alarms a JOIN rules r ON r.id = a.rule_id
               WHERE a.device_id = %s AND a.triggered_at < %s AND (a.cleared_at IS NULL OR a.cleared_at >= %s)
               ORDER BY a.triggered_at DESC LIMIT %s) newest
           ORDER BY triggered_at""",
        (device_id, end, start, limit),
    ).fetchall()
    return [Episode(*r) for r in rows]


def device_open_alarms(conn: psycopg.Connection, device_id: int, *, limit: int = 100) -> list[Alarm]:
    """The device's alarms not cleared (active, then acknowledged), newest first, suppressed ones included."""
    active = list_alarms(conn, state="active", device_id=device_id, limit=limit).items
    acknowledged = list_alarms(conn, state="acknowledged", device_id=device_id, limit=limit).items
    return [*active, *acknowledged][:limit]


def is_score_tag(tag: str) -> bool:
    """True for the series an anomaly rule stores its scores in (``anomaly_score:<rule>``)."""
    return tag.startswith(ANOMALY_TAG_PREFIX)


def score_thresholds(conn: psycopg.Connection, tags: Iterable[str]) -> dict[str, float]:
    """``{score tag: threshold}`` for the anomaly rules storing scores under ``tags``: the least severe level's
    threshold, in multiples of the model's calibrated one (1.0 unless the rule says otherwise)."""
    wanted = [t for t in tags if is_score_tag(t)]
    if not wanted:
        return {}
    out: dict[str, float] = {}
    for tag, levels in conn.execute(
        "SELECT tag, definition->'condition'->'levels' FROM rules WHERE kind = 'anomaly' AND tag = ANY(%s)",
        (wanted,),
    ):
        limits = [float(lv["threshold"]) for lv in levels or [] if isinstance(lv.get("threshold"), int | float)]
        out[tag] = min(limits, default=1.0)
    return out


def rule_tags(conn: psycopg.Connection, rule_ids: Iterable[int]) -> dict[int, str]:
    """``{rule id: the tag it watches}`` for ``rule_ids`` (the page charts the tags of a device's open alarms)."""
    ids = sorted(set(rule_ids))
    if not ids:
        return {}
    return dict(conn.execute("SELECT id, tag FROM rules WHERE id = ANY(%s)", (ids,)).fetchall())
