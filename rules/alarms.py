"""Alarms as people see them: listing, one alarm, and acknowledging it.

Rules open and clear alarms (:mod:`rules.service`); people read and acknowledge them here.

An alarm is of one of two kinds (:data:`ALARM_KINDS`):

* ``equipment`` — a row of ``alarms``: the equipment misbehaves. Ticketing tickets it (it listens for
  ``alarm_opened``), and it can be acknowledged, commented, silenced;
* ``rule_error`` — a row of ``rule_errors`` (:mod:`rules.health`): a rule cannot evaluate a device (a
  threshold bound to a device attribute that is missing or not a number). It is listed here beside the
  equipment alarms so the people who watch alarms see it, addressed to the rule's ``owner`` with a
  ``hint`` saying what to fix; it clears by itself once the device is evaluated again. It lives in its
  own table and is announced by its own events (``rule_error_opened``/``_cleared``), so nothing that
  tickets or dispatches — which reads ``alarms`` and ``alarm_opened`` only — can ever see it. Its ``id``
  is the rule error's id: ``(kind, id)`` names an alarm, and ``/alarms/{id}`` routes are equipment only.

Acknowledging is one step for the caller, two in the database: mark the alarm acknowledged, then
release it if it is latched and its condition is already gone (:func:`release_latched`), each in
its own transaction so the acknowledgement stands even if the release has to wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row

from fwcore.errors import Conflict, NotFound
from fwcore.events import AlarmAcknowledgedEvent, AlarmClearedEvent, publish
from fwcore.paging import Page, fetch_page
from rules.health import rule_error_hint


@dataclass(frozen=True, slots=True)
class Alarm:
    """An alarm with the names a person needs: its rule's, its device's (name, else key) and site's."""

    id: int
    rule_id: int
    rule_name: str
    problem_code: str
    device_id: int
    device_key: str
    device_name: str
    site: str  # site slug
    severity: str
    state: str  # active, acknowledged, cleared
    message: str
    trigger_value: float | None
    triggered_at: datetime
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    cleared_at: datetime | None
    ticket_id: int | None
    suppressed_by: str | None  # why it is hidden: 'maintenance:ID', 'parent:ALARM', ...
    flapping: bool
    explanation: dict[str, Any] | None = None  # anomaly alarms: the tags that drove the score
    auto_dispatch: bool = True  # False: its rule was not validated; ticketed but not dispatched on its own
    kind: str = "equipment"  # or "rule_error": see the module docstring
    owner: str | None = None  # rule errors: who must fix it (who last changed the rule)
    hint: str | None = None  # rule errors: what to do

    @property
    def key(self) -> str:
        """Unique across kinds (ids are per kind): ``alarm-ID`` or ``rule-error-ID``, as the console's test ids."""
        return f"alarm-{self.id}" if self.kind == "equipment" else f"rule-error-{self.id}"


#: The kinds of alarm, as the ``kind`` field and filter say them.
ALARM_KINDS: tuple[str, ...] = ("equipment", "rule_error")


_ALARM_FROM: LiteralString = """
    alarms a JOIN rules r ON r.id = a.rule_id JOIN devices d ON d.id = a.device_id
    JOIN sites s ON s.id = d.site_id"""
_ALARM_SELECT: LiteralString = (
    """SELECT a.id, a.rule_id, r.name AS rule_name, r.problem_code, a.device_id, d.key AS device_key,
              COALESCE(NULLIF(d.name, ''), d.key) AS device_name, s.slug AS site, a.severity, a.state,
              a.message, a.trigger_value, a.triggered_at, a.opened_at, a.acknowledged_at, a.acknowledged_by,
              a.cleared_at, a.ticket_id, a.suppressed_by, a.flapping, a.explanation, a.auto_dispatch,
              'equipment' AS kind, NULL::text AS owner
       FROM"""
    + _ALARM_FROM
)
#: Rule errors in the shape of an alarm (``hint`` is added in Python, from the reason). Listed as a
#: ``warning``: the rule is blind on one device; nothing is known to be broken on the equipment.
_RULE_ERROR_SELECT: LiteralString = """
    SELECT e.id, e.rule_id, r.name AS rule_name, r.problem_code, e.device_id, d.key AS device_key,
           COALESCE(NULLIF(d.name, ''), d.key) AS device_name, s.slug AS site, 'warning' AS severity,
           CASE WHEN e.cleared_at IS NULL THEN 'active' ELSE 'cleared' END AS state,
           e.reason AS message, NULL::float8 AS trigger_value, e.opened_at AS triggered_at, e.opened_at,
           NULL::timestamptz AS acknowledged_at, NULL::text AS acknowledged_by, e.cleared_at,
           NULL::bigint AS ticket_id, NULL::text AS suppressed_by, false AS flapping, NULL::jsonb AS explanation,
           false AS auto_dispatch, 'rule_error' AS kind, e.owner
    FROM rule_errors e JOIN rules r ON r.id = e.rule_id JOIN devices d ON d.id = e.device_id
    JOIN sites s ON s.id = d.site_id"""
#: Both kinds, as one relation ``a`` the list's filters apply to.
_EVERY_KIND_FROM: LiteralString = "(" + _ALARM_SELECT + " UNION ALL " + _RULE_ERROR_SELECT + ") a"


def _alarm(row: dict[str, Any]) -> Alarm:
    if row["kind"] == "rule_error":
        row["hint"] = rule_error_hint(row["message"], device_id=row["device_id"], device_key=row["device_key"])
    return Alarm(**row)


def list_alarms(
    conn: psycopg.Connection,
    *,
    state: str | None = None,
    device_id: int | None = None,
    kind: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> Page[Alarm]:
    """Alarms of both kinds (rule errors too), newest opened first, in ``state``, of ``device_id`` and of
    ``kind`` when given. A rule error is ``active`` while open, then ``cleared``."""
    conditions: list[LiteralString] = []
    if state is not None:
        conditions.append("a.state = %(state)s")
    if device_id is not None:
        conditions.append("a.device_id = %(device_id)s")
    if kind is not None:
        conditions.append("a.kind = %(kind)s")
    return fetch_page(
        conn,
        "SELECT * FROM " + _EVERY_KIND_FROM,
        _EVERY_KIND_FROM,
        conditions,
        "a.opened_at DESC, a.kind, a.id DESC",
        {"state": state, "device_id": device_id, "kind": kind},
        _alarm,
        limit=limit,
        offset=offset,
    )


def get_alarm(conn: psycopg.Connection, alarm_id: int) -> Alarm:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_ALARM_SELECT + " WHERE a.id = %s", (alarm_id,)).fetchone()
    if row is None:
        raise NotFound("alarm", alarm_id)
    return Alarm(**row)


def acknowledge(conn: psycopg.Connection, alarm_id: int, by: str) -> Alarm:
    """Mark an active alarm acknowledged by ``by``, and clear it now if it is latched and its condition is gone.

    Acknowledging an already acknowledged alarm changes nothing (a retried request must not fail
    or steal the acknowledgement); a cleared alarm is a :class:`Conflict`. The row lock orders
    this against rules clearing it.
    """
    with conn.transaction():
        row = conn.execute(
            "SELECT state, device_id, rule_id FROM alarms WHERE id = %s FOR UPDATE", (alarm_id,)
        ).fetchone()
        if row is None:
            raise NotFound("alarm", alarm_id)
        if row[0] == "cleared":
            raise Conflict(f"alarm {alarm_id} is cleared; only an active alarm can be acknowledged")
        if row[0] == "active":
            conn.execute(
                """UPDATE alarms SET state = 'acknowledged', acknowledged_at = now(), acknowledged_by = %s
                   WHERE id = %s""",
                (by, alarm_id),
            )
            publish(conn, AlarmAcknowledgedEvent(alarm_id=alarm_id, device_id=row[1], rule_id=row[2], by=by))
    release_latched(conn, alarm_id, by=by)
    return get_alarm(conn, alarm_id)


def release_latched(conn: psycopg.Connection, alarm_id: int, *, by: str) -> bool:
    """Clear an acknowledged latched alarm whose condition is already gone; True if it cleared.

    Called after an acknowledgement. The ``alarm_cleared`` event goes out on commit like any other.
    """
    with conn.transaction():
        row = conn.execute(
            """UPDATE alarms SET state = 'cleared', cleared_at = now(), cleared_by = %s
               WHERE id = %s AND latched AND cleared_at IS NULL AND condition_cleared_at IS NOT NULL
                 AND acknowledged_at IS NOT NULL
               RETURNING rule_id, device_id""",
            (by, alarm_id),
        ).fetchone()
        if row is None:
            return False
        publish(conn, AlarmClearedEvent(alarm_id=alarm_id, device_id=row[1], rule_id=row[0]))
    return True


#: Severities, worst first (the ``rules.severity`` check).
SEVERITIES: tuple[str, ...] = ("critical", "major", "minor", "warning")


def open_alarms(conn: psycopg.Connection, *, limit: int = 500) -> list[Alarm]:
    """Alarms of both kinds not cleared (active or acknowledged) and not suppressed, worst severity then
    newest first (a rule error ranks as a warning, after the equipment warnings)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT * FROM "
            + _EVERY_KIND_FROM
            + """ WHERE a.state <> 'cleared' AND a.suppressed_by IS NULL
                  ORDER BY array_position(ARRAY['critical','major','minor','warning'], a.severity),
                           a.kind, a.opened_at DESC, a.id DESC LIMIT %s""",
            (limit,),
        ).fetchall()
    return [_alarm(r) for r in rows]


def open_counts(conn: psycopg.Connection) -> dict[str, int]:
    """How many alarms are open (not cleared, not suppressed): equipment alarms per severity (every severity
    is a key), and open rule errors under ``rule_error`` (kept apart: they are not the equipment's state)."""
    with conn.cursor() as cur:
        rows = cur.execute(
            """SELECT severity, count(*) FROM alarms WHERE state <> 'cleared' AND suppressed_by IS NULL
               GROUP BY severity"""
        ).fetchall()
        errors = cur.execute("SELECT count(*) FROM rule_errors WHERE cleared_at IS NULL").fetchone()
    counts = dict.fromkeys(SEVERITIES, 0)
    counts.update({severity: n for severity, n in rows})
    counts["rule_error"] = errors[0] if errors else 0
    return counts


def worst_open_by_site(conn: psycopg.Connection) -> dict[str, str]:
    """Each site (slug) with an open, unsuppressed alarm, and the worst severity among them."""
    with conn.cursor() as cur:
        rows = cur.execute(
            """SELECT s.slug, (array_agg(a.severity ORDER BY
                   array_position(ARRAY['critical','major','minor','warning'], a.severity)))[1]
               FROM alarms a JOIN devices d ON d.id = a.device_id JOIN sites s ON s.id = d.site_id
               WHERE a.state <> 'cleared' AND a.suppressed_by IS NULL GROUP BY s.slug"""
        ).fetchall()
    return {slug: severity for slug, severity in rows}
