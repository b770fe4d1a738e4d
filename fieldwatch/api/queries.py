"""Data access for the API: plain SQL against the schema in ``ingest/migrations``.

Each function takes an open connection (the API's pool gives autocommit ones)
and returns response models, raising :mod:`.errors` for missing rows and
conflicts. Writes run inside ``conn.transaction()`` so they are committed before
the HTTP response leaves. Only fixed SQL fragments are ever concatenated;
every value is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row

from .errors import Conflict, Invalid, NotFound
from .schemas import (
    AlarmPublic,
    AssignmentPublic,
    DeviceLatest,
    DevicePublic,
    GatewayPublic,
    LatestValue,
    Page,
    Point,
    SeriesPoints,
    TechnicianCreate,
    TechnicianPublic,
    TicketPublic,
)

Row = dict[str, Any]


def _rows(conn: psycopg.Connection, query: LiteralString, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def _where(conditions: Sequence[LiteralString]) -> LiteralString:
    return (" WHERE " + " AND ".join(conditions)) if conditions else ""


def _page(
    conn: psycopg.Connection,
    select: LiteralString,
    count_from: LiteralString,
    conditions: list[LiteralString],
    order: LiteralString,
    params: dict[str, Any],
    limit: int,
    offset: int,
) -> tuple[list[Row], int]:
    """Rows of one page plus the total count matching the same conditions."""
    where = _where(conditions)
    rows = _rows(
        conn,
        select + where + " ORDER BY " + order + " LIMIT %(limit)s OFFSET %(offset)s",
        {**params, "limit": limit, "offset": offset},
    )
    total = _rows(conn, "SELECT count(*) AS n FROM " + count_from + where, params)[0]["n"]
    return rows, total


def ping(conn: psycopg.Connection) -> None:
    """Raise unless the database answers and is migrated."""
    conn.execute("SELECT 1 FROM schema_migrations LIMIT 1")


# --- devices ----------------------------------------------------------------------------------

_DEVICE_FROM: LiteralString = """
    devices d JOIN sites s ON s.id = d.site_id JOIN clients c ON c.id = s.client_id
    LEFT JOIN gateways g ON g.id = d.gateway_id"""
_DEVICE_SELECT: LiteralString = (
    """SELECT d.id, d.key, d.name, d.equipment_model, d.serial, d.attributes, d.created_at, g.slug AS gateway,
              s.id AS site_id, s.slug AS site_slug, s.name AS site_name, s.latitude, s.longitude,
              c.id AS client_id, c.name AS client_name, c.segment
       FROM"""
    + _DEVICE_FROM
)


def _device(r: Row) -> DevicePublic:
    return DevicePublic(
        id=r["id"],
        key=r["key"],
        name=r["name"],
        equipment_model=r["equipment_model"],
        serial=r["serial"],
        attributes=r["attributes"],
        gateway=r["gateway"],
        created_at=r["created_at"],
        site={
            "id": r["site_id"],
            "slug": r["site_slug"],
            "name": r["site_name"],
            "latitude": r["latitude"],
            "longitude": r["longitude"],
        },
        client={"id": r["client_id"], "name": r["client_name"], "segment": r["segment"]},
    )


def list_devices(
    conn: psycopg.Connection, *, site: str | None = None, site_id: int | None = None, limit: int, offset: int
) -> Page[DevicePublic]:
    conditions: list[LiteralString] = []
    if site is not None:
        conditions.append("s.slug = %(site)s")
    if site_id is not None:
        conditions.append("s.id = %(site_id)s")
    rows, total = _page(
        conn, _DEVICE_SELECT, _DEVICE_FROM, conditions, "d.id", {"site": site, "site_id": site_id}, limit, offset
    )
    return Page(items=[_device(r) for r in rows], total=total, limit=limit, offset=offset)


def get_device(conn: psycopg.Connection, device_id: int) -> DevicePublic:
    rows = _rows(conn, _DEVICE_SELECT + " WHERE d.id = %s", (device_id,))
    if not rows:
        raise NotFound("device", device_id)
    return _device(rows[0])


def device_latest(conn: psycopg.Connection, device_id: int) -> DeviceLatest:
    """Newest point of every series of the device (one index probe per series, newest first)."""
    if not _rows(conn, "SELECT 1 FROM devices WHERE id = %s", (device_id,)):
        raise NotFound("device", device_id)
    rows = _rows(
        conn,
        """SELECT s.id AS series_id, s.tag, s.unit, t.time, t.value, t.quality
           FROM series s
           LEFT JOIN LATERAL (
               SELECT time, value, quality FROM telemetry
               WHERE series_id = s.id ORDER BY time DESC LIMIT 1
           ) t ON true
           WHERE s.device_id = %s
           ORDER BY s.tag""",
        (device_id,),
    )
    return DeviceLatest(device_id=device_id, values=[LatestValue(**r) for r in rows])


def series_points(conn: psycopg.Connection, series_id: int, start: datetime, end: datetime, limit: int) -> SeriesPoints:
    """Points with ``start <= time < end``, oldest first, at most ``limit`` of them."""
    series = _rows(conn, "SELECT id, device_id, tag, unit FROM series WHERE id = %s", (series_id,))
    if not series:
        raise NotFound("series", series_id)
    with conn.cursor() as cur:
        rows = cur.execute(
            """SELECT time, value, quality FROM telemetry
               WHERE series_id = %s AND time >= %s AND time < %s
               ORDER BY time LIMIT %s""",
            (series_id, start, end, limit + 1),
        ).fetchall()
    truncated = len(rows) > limit
    points = [Point.model_construct(time=t, value=v, quality=q) for t, v, q in rows[:limit]]
    s = series[0]
    return SeriesPoints(
        series_id=series_id,
        device_id=s["device_id"],
        tag=s["tag"],
        unit=s["unit"],
        from_=start,
        to=end,
        limit=limit,
        truncated=truncated,
        points=points,
    )


# --- gateways ---------------------------------------------------------------------------------

_GATEWAY_FROM: LiteralString = " gateways g JOIN sites s ON s.id = g.site_id"


def list_gateways(
    conn: psycopg.Connection, *, site: str | None = None, status: str | None = None, limit: int, offset: int
) -> Page[GatewayPublic]:
    conditions: list[LiteralString] = []
    if site is not None:
        conditions.append("s.slug = %(site)s")
    if status is not None:
        conditions.append("g.status = %(status)s")
    rows, total = _page(
        conn,
        """SELECT g.id, g.slug, g.name, s.slug AS site, g.status, g.status_at, g.last_seq, g.seq_gaps,
                  g.created_at FROM"""
        + _GATEWAY_FROM,
        _GATEWAY_FROM,
        conditions,
        "g.id",
        {"site": site, "status": status},
        limit,
        offset,
    )
    return Page(items=[GatewayPublic(**r) for r in rows], total=total, limit=limit, offset=offset)


# --- alarms -----------------------------------------------------------------------------------

_ALARM_FROM: LiteralString = """
    alarms a JOIN rules r ON r.id = a.rule_id JOIN devices d ON d.id = a.device_id
    JOIN sites s ON s.id = d.site_id"""
_ALARM_SELECT: LiteralString = (
    """SELECT a.id, a.rule_id, r.name AS rule_name, r.problem_code, a.device_id,
              COALESCE(NULLIF(d.name, ''), d.key) AS device_name, s.slug AS site, a.severity, a.state,
              a.message, a.trigger_value, a.triggered_at, a.opened_at, a.acknowledged_at, a.acknowledged_by,
              a.cleared_at, a.ticket_id, a.suppressed_by, a.flapping
       FROM"""
    + _ALARM_FROM
)


def list_alarms(
    conn: psycopg.Connection, *, state: str | None = None, device_id: int | None = None, limit: int, offset: int
) -> Page[AlarmPublic]:
    """Alarms, newest opened first."""
    conditions: list[LiteralString] = []
    if state is not None:
        conditions.append("a.state = %(state)s")
    if device_id is not None:
        conditions.append("a.device_id = %(device_id)s")
    rows, total = _page(
        conn,
        _ALARM_SELECT,
        _ALARM_FROM,
        conditions,
        "a.opened_at DESC, a.id DESC",
        {"state": state, "device_id": device_id},
        limit,
        offset,
    )
    return Page(items=[AlarmPublic(**r) for r in rows], total=total, limit=limit, offset=offset)


def get_alarm(conn: psycopg.Connection, alarm_id: int) -> AlarmPublic:
    rows = _rows(conn, _ALARM_SELECT + " WHERE a.id = %s", (alarm_id,))
    if not rows:
        raise NotFound("alarm", alarm_id)
    return AlarmPublic(**rows[0])


def acknowledge_alarm(conn: psycopg.Connection, alarm_id: int, by: str) -> AlarmPublic:
    """Mark an active alarm acknowledged by ``by``.

    Acknowledging an already acknowledged alarm changes nothing (a retried
    request must not fail or steal the acknowledgement); a cleared alarm is a
    :class:`Conflict`. The row lock orders this against rules clearing it.
    """
    with conn.transaction():
        rows = _rows(conn, "SELECT state FROM alarms WHERE id = %s FOR UPDATE", (alarm_id,))
        if not rows:
            raise NotFound("alarm", alarm_id)
        state = rows[0]["state"]
        if state == "cleared":
            raise Conflict(f"alarm {alarm_id} is cleared; only an active alarm can be acknowledged")
        if state == "active":
            conn.execute(
                """UPDATE alarms SET state = 'acknowledged', acknowledged_at = now(), acknowledged_by = %s
                   WHERE id = %s""",
                (by, alarm_id),
            )
    return get_alarm(conn, alarm_id)


# --- tickets ----------------------------------------------------------------------------------

_TICKET_FROM: LiteralString = """
    tickets t JOIN devices d ON d.id = t.device_id JOIN sites s ON s.id = d.site_id"""
_TICKET_SELECT: LiteralString = (
    """SELECT t.id, t.device_id, COALESCE(NULLIF(d.name, ''), d.key) AS device_name, s.slug AS site,
              t.problem_code, t.title, t.priority, t.status, t.required_skill, t.source, t.alarm_id,
              t.unassigned_reason, t.created_at, t.updated_at, t.due_at,
              a.technician_id, tech.name AS technician_name, a.assigned_at, a.distance_km, a.eta_minutes,
              a.reason
       FROM"""
    + _TICKET_FROM
    + """
       LEFT JOIN assignments a ON a.ticket_id = t.id AND a.active
       LEFT JOIN technicians tech ON tech.id = a.technician_id"""
)
_ASSIGNMENT_KEYS = ("technician_id", "technician_name", "assigned_at", "distance_km", "eta_minutes", "reason")


def _ticket(r: Row) -> TicketPublic:
    assignment = {k: r.pop(k) for k in _ASSIGNMENT_KEYS}
    return TicketPublic(
        **r, assignment=AssignmentPublic(**assignment) if assignment["technician_id"] is not None else None
    )


def list_tickets(
    conn: psycopg.Connection, *, status: str | None = None, device_id: int | None = None, limit: int, offset: int
) -> Page[TicketPublic]:
    """Tickets, newest first, each with its active assignment."""
    conditions: list[LiteralString] = []
    if status is not None:
        conditions.append("t.status = %(status)s")
    if device_id is not None:
        conditions.append("t.device_id = %(device_id)s")
    rows, total = _page(
        conn,
        _TICKET_SELECT,
        _TICKET_FROM,
        conditions,
        "t.created_at DESC, t.id DESC",
        {"status": status, "device_id": device_id},
        limit,
        offset,
    )
    return Page(items=[_ticket(r) for r in rows], total=total, limit=limit, offset=offset)


def get_ticket(conn: psycopg.Connection, ticket_id: int) -> TicketPublic:
    rows = _rows(conn, _TICKET_SELECT + " WHERE t.id = %s", (ticket_id,))
    if not rows:
        raise NotFound("ticket", ticket_id)
    return _ticket(rows[0])


# --- technicians ------------------------------------------------------------------------------

_TECH_SELECT: LiteralString = """
    SELECT t.id, t.name, t.email, t.phone, t.home_lat, t.home_lon, t.current_lat, t.current_lon,
           t.available, t.created_at,
           COALESCE((SELECT jsonb_object_agg(sk.code, ts.level)
                     FROM technician_skills ts JOIN skills sk ON sk.id = ts.skill_id
                     WHERE ts.technician_id = t.id), '{}'::jsonb) AS skills
    FROM technicians t"""


def list_technicians(
    conn: psycopg.Connection,
    *,
    skill: str | None = None,
    available: bool | None = None,
    limit: int,
    offset: int,
) -> Page[TechnicianPublic]:
    conditions: list[LiteralString] = []
    if skill is not None:
        conditions.append(
            """EXISTS (SELECT 1 FROM technician_skills ts JOIN skills sk ON sk.id = ts.skill_id
                       WHERE ts.technician_id = t.id AND sk.code = %(skill)s)"""
        )
    if available is not None:
        conditions.append("t.available = %(available)s")
    rows, total = _page(
        conn,
        _TECH_SELECT,
        " technicians t",
        conditions,
        "t.id",
        {"skill": skill, "available": available},
        limit,
        offset,
    )
    return Page(items=[TechnicianPublic(**r) for r in rows], total=total, limit=limit, offset=offset)


def get_technician(conn: psycopg.Connection, technician_id: int) -> TechnicianPublic:
    rows = _rows(conn, _TECH_SELECT + " WHERE t.id = %s", (technician_id,))
    if not rows:
        raise NotFound("technician", technician_id)
    return TechnicianPublic(**rows[0])


def create_technician(conn: psycopg.Connection, body: TechnicianCreate) -> TechnicianPublic:
    """Insert a technician with skills. Skill codes must exist (a typo must not mint a new skill)."""
    try:
        with conn.transaction():
            skill_ids: dict[str, int] = {}
            if body.skills:
                found = _rows(conn, "SELECT code, id FROM skills WHERE code = ANY(%s)", (list(body.skills),))
                skill_ids = {r["code"]: r["id"] for r in found}
                missing = sorted(set(body.skills) - set(skill_ids))
                if missing:
                    known = [r["code"] for r in _rows(conn, "SELECT code FROM skills ORDER BY code")]
                    raise Invalid(
                        f"unknown skill code(s): {', '.join(missing)}; known codes: {', '.join(known) or '(none)'}",
                        loc=("body", "skills"),
                    )
            new_id = _rows(
                conn,
                """INSERT INTO technicians (name, email, phone, home_lat, home_lon, available)
                   VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""",
                (body.name.strip(), body.email.strip(), body.phone, body.home_lat, body.home_lon, body.available),
            )[0]["id"]
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO technician_skills (technician_id, skill_id, level) VALUES (%s, %s, %s)",
                    [(new_id, skill_ids[code], level) for code, level in body.skills.items()],
                )
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"a technician with email {body.email.strip()!r} already exists") from None
    return get_technician(conn, new_id)


def set_technician_location(conn: psycopg.Connection, technician_id: int, lat: float, lon: float) -> TechnicianPublic:
    """Record where a technician is now (dispatch uses it instead of home)."""
    with conn.transaction():
        rows = _rows(
            conn,
            "UPDATE technicians SET current_lat = %s, current_lon = %s WHERE id = %s RETURNING id",
            (lat, lon, technician_id),
        )
    if not rows:
        raise NotFound("technician", technician_id)
    return get_technician(conn, technician_id)
