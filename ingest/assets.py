"""The asset registry: create, read, update and delete clients, sites, gateways, devices and series,
with errors that say what to fix.

The database constraints are the source of truth (a race between two admins cannot slip past a
Python check); their violations are translated here, in one place, into :mod:`fwcore.errors`:

=============================  ==================================================  ==========
violation                      meaning                                             raised
=============================  ==================================================  ==========
unique, on write               a row with that slug/name/key already exists        Conflict
foreign key, on write          the fields name a client/site/... that is not there  Invalid (``loc`` names the field)
foreign key, on delete         other rows still point at this one                  Conflict
=============================  ==================================================  ==========

Deleting what a cascade would silently take with it is refused too: a device that still has
series, a series that still has telemetry (telemetry has no foreign key, it would be orphaned), a
gateway that still polls devices (their ``gateway_id`` would silently become NULL) or whose
discovered devices still hold points.

Writes take the fields as a mapping of column to value (the API passes its validated body) and
run in their own transaction (a savepoint inside the caller's), so a refused write leaves nothing.

Registering a device that ingest had discovered (its gateway announced it, or sent its data) is
also accepting it: the points it held are stored in the same transaction (:mod:`ingest.discovery`).
A gateway's record says what became of its data: its dead letters by reason, its discovered
devices waiting for a decision, one sentence per problem and whether it is healthy
(:mod:`ingest.rejections`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from fwcore.errors import Conflict, Invalid, NotFound
from fwcore.paging import Page, Row, fetch_page
from fwcore.policy import EVERYTHING, Facts, Visible
from ingest import discovery
from ingest.rejections import PendingDevice, RejectionSummary, problems

# --- records: the rows as stored (ids, not embedded objects) ------------------------------------


@dataclass(frozen=True, slots=True)
class ClientRecord:
    id: int
    name: str
    segment: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SiteRecord:
    id: int
    client_id: int
    slug: str
    name: str
    address: str
    latitude: float
    longitude: float


@dataclass(frozen=True, slots=True)
class GatewayRecord:
    id: int
    site_id: int
    site: str  # site slug
    slug: str
    name: str
    status: str
    status_at: datetime | None
    last_seq: int | None
    seq_gaps: int
    seq_skipped_total: int
    seq_filled_total: int
    seq_missing: list[tuple[int, int]]  # the newest 100 missing ranges [first, last], oldest first
    created_at: datetime
    auto_accept: bool = False  # devices it announces are registered without asking
    rejections: list[RejectionSummary] = field(default_factory=list)  # its dead letters, by reason
    discovered: list[PendingDevice] = field(default_factory=list)  # its devices waiting to be accepted
    problems: list[str] = field(default_factory=list)  # one sentence per rejection reason / waiting device
    healthy: bool = False  # online, and nothing rejected or waiting


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _gateway(**row: Any) -> GatewayRecord:
    """A gateway row with its rejections and waiting devices (JSON from the query) turned into records."""
    rejections = [
        RejectionSummary(
            r["reason"], r["messages"], r["points"], _when(r["since"]), _when(r["last"]), list(r["devices"])
        )
        for r in row.pop("rejections")
    ]
    pending = [PendingDevice(d["id"], d["key"], d["held_points"], _when(d["since"])) for d in row.pop("discovered")]
    said = problems(rejections, pending)
    healthy = row["status"] == "online" and not said
    return GatewayRecord(**row, rejections=rejections, discovered=pending, problems=said, healthy=healthy)


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    id: int
    site_id: int
    gateway_id: int | None
    key: str
    name: str
    equipment_model: str
    serial: str
    profile: str
    attributes: dict[str, Any]
    parent_id: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SeriesRecord:
    id: int
    device_id: int
    tag: str
    unit: str


@dataclass(frozen=True, slots=True)
class Resource:
    """How one registry table is read and written."""

    what: str  # "site": used in messages
    table: LiteralString
    select: LiteralString  # SELECT ... FROM ...; the table's alias is ``x``
    record: Callable[..., Any]  # the record type, built from a row's columns
    nullable: frozenset[str] = frozenset()  # fields an update may set to null
    order: LiteralString = "x.id"


CLIENTS = Resource("client", "clients", "SELECT x.id, x.name, x.segment, x.created_at FROM clients x", ClientRecord)
SITES = Resource(
    "site",
    "sites",
    "SELECT x.id, x.client_id, x.slug, x.name, x.address, x.latitude, x.longitude FROM sites x",
    SiteRecord,
)
GATEWAYS = Resource(
    "gateway",
    "gateways",
    """SELECT x.id, x.site_id, s.slug AS site, x.slug, x.name, x.status, x.status_at, x.last_seq, x.seq_gaps,
              x.seq_skipped_total, x.seq_filled_total,
              (SELECT coalesce(json_agg(json_build_array(m.seq_from, m.seq_to) ORDER BY m.seq_from), '[]')
               FROM (SELECT seq_from, seq_to FROM gateway_seq_missing WHERE gateway_id = x.id
                     ORDER BY seq_from DESC LIMIT 100) m) AS seq_missing,
              x.created_at, x.auto_accept,
              (SELECT coalesce(json_agg(json_build_object('reason', r.reason, 'messages', r.messages,
                                 'points', r.points, 'since', r.since, 'last', r.last,
                                 'devices', (SELECT coalesce(array_agg(q.dv ORDER BY q.dv), '{}')
                                             FROM (SELECT DISTINCT unnest(l2.devices) AS dv FROM dead_letters l2
                                                   WHERE l2.gateway = x.slug AND l2.reason = r.reason
                                                   ORDER BY 1 LIMIT 20) q))
                                 ORDER BY r.since), '[]')
               FROM (SELECT l.reason, count(*) AS messages, sum(l.points)::int8 AS points,
                            min(l.received_at) AS since, max(l.received_at) AS last
                     FROM dead_letters l WHERE l.gateway = x.slug GROUP BY l.reason) r) AS rejections,
              (SELECT coalesce(json_agg(json_build_object('id', d.id, 'key', d.key, 'held_points', d.held_points,
                                 'since', coalesce((SELECT min(h.received_at) FROM held_points h
                                                    WHERE h.discovered_id = d.id), d.first_seen))
                                 ORDER BY d.id), '[]')
               FROM discovered_devices d WHERE d.gateway_id = x.id AND d.state = 'pending') AS discovered
       FROM gateways x JOIN sites s ON s.id = x.site_id""",
    _gateway,
)
DEVICES = Resource(
    "device",
    "devices",
    """SELECT x.id, x.site_id, x.gateway_id, x.key, x.name, x.equipment_model, x.serial, x.profile, x.attributes,
              x.parent_id, x.created_at FROM devices x""",
    DeviceRecord,
    nullable=frozenset({"gateway_id", "parent_id"}),
)
SERIES = Resource("series", "series", "SELECT x.id, x.device_id, x.tag, x.unit FROM series x", SeriesRecord)

#: Filters a list may use, per resource: name -> SQL condition.
FILTERS: dict[str, dict[str, LiteralString]] = {
    "sites": {"client_id": "x.client_id = %(client_id)s"},
    "gateways": {"site_id": "x.site_id = %(site_id)s"},
    "series": {"device_id": "x.device_id = %(device_id)s"},
}

#: The client a row belongs to (parameter ``scope_client``), per resource: what the permission
#: policy's ``client`` scope narrows a list by (see :func:`list_`) and :func:`client_facts` reads.
CLIENT_OF: dict[str, LiteralString] = {
    "clients": "x.id",
    "sites": "x.client_id",
    "gateways": "(SELECT s.client_id FROM sites s WHERE s.id = x.site_id)",
    "devices": "(SELECT s.client_id FROM sites s WHERE s.id = x.site_id)",
    "series": "(SELECT s.client_id FROM devices d JOIN sites s ON s.id = d.site_id WHERE d.id = x.device_id)",
}

_KEY_DETAIL = re.compile(r"Key \((?P<cols>.*)\)=\((?P<vals>.*)\)")
_REF_TABLE = re.compile(r'table "(?P<table>[^"]+)"')


def _record(res: Resource) -> Callable[[Row], Any]:
    return lambda row: res.record(**row)


def get(conn: psycopg.Connection, res: Resource, ident: int) -> Any:
    """The ``res`` row with id ``ident`` as its record; :class:`NotFound` if there is none."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(res.select + " WHERE x.id = %s", (ident,)).fetchone()
    if row is None:
        raise NotFound(res.what, ident)
    return res.record(**row)


def list_(
    conn: psycopg.Connection,
    res: Resource,
    *,
    limit: int | None = None,
    offset: int = 0,
    filters: Mapping[str, Any] | None = None,
    visible: Visible = EVERYTHING,
) -> Page[Any]:
    """One page of ``res``, in id order, narrowed by the non-None ``filters`` (see :data:`FILTERS`)
    and to one client's rows when ``visible`` names a client (registry rows belong to no technician)."""
    if visible.technician_id is not None:
        raise ValueError(f"{res.table} belong to no technician: a technician-scoped list of them is empty by design")
    given = {k: v for k, v in (filters or {}).items() if v is not None}
    allowed = FILTERS.get(res.table, {})
    conditions = [allowed[k] for k in given]
    params: dict[str, Any] = dict(given)
    if visible.client_id is not None:
        conditions.append(CLIENT_OF[res.table] + " = %(scope_client)s")
        params["scope_client"] = visible.client_id
    return fetch_page(
        conn,
        res.select,
        res.table + " x",
        conditions,
        res.order,
        params,
        _record(res),
        limit=limit,
        offset=offset,
    )


def client_facts(conn: psycopg.Connection, res: Resource, ident: int) -> Facts:
    """The client the ``res`` row belongs to, for the permission policy; :class:`NotFound` if there is no row."""
    row = conn.execute(
        sql.SQL("SELECT {} FROM {} x WHERE x.id = %s").format(sql.SQL(CLIENT_OF[res.table]), sql.Identifier(res.table)),
        (ident,),
    ).fetchone()
    if row is None:
        raise NotFound(res.what, ident)
    return Facts(res.what, ident, client_ids=frozenset({row[0]}))


def _values(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: Jsonb(v) if isinstance(v, dict) else v for k, v in fields.items()}


def create(conn: psycopg.Connection, res: Resource, fields: Mapping[str, Any]) -> Any:
    """Insert a ``res`` row with ``fields`` (column -> value); returns its record."""
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
        sql.Identifier(res.table),
        sql.SQL(", ").join(map(sql.Identifier, fields)),
        sql.SQL(", ").join(map(sql.Placeholder, fields)),
    )
    with _translated(conn, res, "create"), conn.transaction():
        row = conn.execute(query, _values(fields)).fetchone()
        assert row is not None
        _check_consistency(conn, res, row[0])
        if res is DEVICES:
            discovery.adopt(conn, row[0])  # a device ingest discovered: what it held is stored now
    return get(conn, res, row[0])


def update(conn: psycopg.Connection, res: Resource, ident: int, fields: Mapping[str, Any]) -> Any:
    """Change the columns ``fields`` names; a field set to None is refused unless it may be empty."""
    for name, value in fields.items():
        if value is None and name not in res.nullable:
            raise Invalid(f"{name} may not be null; leave it out to keep the current value", loc=("body", name))
    if not fields:
        return get(conn, res, ident)
    query = sql.SQL("UPDATE {} SET {} WHERE id = %(__id)s RETURNING id").format(
        sql.Identifier(res.table),
        sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in fields),
    )
    with _translated(conn, res, "update"), conn.transaction():
        if conn.execute(query, {**_values(fields), "__id": ident}).fetchone() is None:
            raise NotFound(res.what, ident)
        _check_consistency(conn, res, ident)
    return get(conn, res, ident)


def delete(conn: psycopg.Connection, res: Resource, ident: int) -> None:
    """Delete the ``res`` row ``ident``, unless other rows still need it (:class:`Conflict`)."""
    with _translated(conn, res, "delete", ident), conn.transaction():
        if (
            conn.execute(
                sql.SQL("SELECT 1 FROM {} WHERE id = %s FOR UPDATE").format(sql.Identifier(res.table)), (ident,)
            ).fetchone()
            is None
        ):
            raise NotFound(res.what, ident)
        _check_unreferenced(conn, res, ident)
        conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.Identifier(res.table)), (ident,))


# --- rules the schema cannot express ----------------------------------------------------------


def _check_consistency(conn: psycopg.Connection, res: Resource, ident: int) -> None:
    """A device's gateway must be on the device's site (ingest resolves devices per gateway)."""
    if res is DEVICES:
        row = conn.execute(
            """SELECT g.slug, g.site_id FROM devices d JOIN gateways g ON g.id = d.gateway_id
               WHERE d.id = %s AND g.site_id <> d.site_id""",
            (ident,),
        ).fetchone()
        if row is not None:
            raise Invalid(
                f"gateway {row[0]!r} is on site {row[1]}, not on the device's site; "
                "pick a gateway of the same site or move the device",
                loc=("body", "gateway_id"),
            )
    elif res is GATEWAYS:
        row = conn.execute(
            """SELECT count(*) FROM devices d JOIN gateways g ON g.id = d.gateway_id
               WHERE g.id = %s AND d.site_id <> g.site_id""",
            (ident,),
        ).fetchone()
        if row is not None and row[0]:
            raise Invalid(
                f"{row[0]} device(s) polled by this gateway are on its old site; move them first",
                loc=("body", "site_id"),
            )


def _check_unreferenced(conn: psycopg.Connection, res: Resource, ident: int) -> None:
    """Refuse deletes a cascade or SET NULL would turn into silent data loss."""
    if res is DEVICES:
        tags = [r[0] for r in conn.execute("SELECT tag FROM series WHERE device_id = %s ORDER BY tag", (ident,))]
        if tags:
            raise Conflict(
                f"device {ident} still has {len(tags)} series "
                f"({', '.join(tags[:5])}{', ...' if len(tags) > 5 else ''}); "
                "delete its series first"
            )
    elif res is SERIES:
        if conn.execute("SELECT 1 FROM telemetry WHERE series_id = %s LIMIT 1", (ident,)).fetchone():
            raise Conflict(f"series {ident} still has telemetry; it is kept until retention drops it")
    elif res is GATEWAYS:
        n = conn.execute("SELECT count(*) FROM devices WHERE gateway_id = %s", (ident,)).fetchone()
        if n is not None and n[0]:
            raise Conflict(f"gateway {ident} still polls {n[0]} device(s); move or delete them first")
        held = conn.execute(
            "SELECT count(*), coalesce(sum(held_points), 0) FROM discovered_devices WHERE gateway_id = %s"
            " AND held_points > 0",
            (ident,),
        ).fetchone()
        if held is not None and held[0]:
            raise Conflict(
                f"gateway {ident} has {held[0]} discovered device(s) holding {held[1]} points; accept, reject or "
                "forget them first (GET /api/v1/discovered?gateway_id=" + str(ident) + ")"
            )


class _translated:
    """Map constraint violations raised inside the block to :mod:`fwcore.errors` (see the module docstring)."""

    def __init__(self, conn: psycopg.Connection, res: Resource, action: str, ident: int | None = None) -> None:
        self.conn, self.res, self.action, self.ident = conn, res, action, ident

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, psycopg.errors.UniqueViolation):
            cols, vals = _key(exc)
            raise Conflict(f"a {self.res.what} with {cols} {vals!r} already exists") from None
        if isinstance(exc, psycopg.errors.ForeignKeyViolation):
            detail = exc.diag.message_detail or ""
            found = _REF_TABLE.search(detail)
            table = found["table"] if found else "?"
            if self.action == "delete":
                raise Conflict(
                    f"{self.res.what} {self.ident} is still referenced by {table}; delete or move those first"
                ) from None
            col, val = _key(exc)
            if col == "segment":
                known = [r[0] for r in self.conn.execute("SELECT name FROM sla_segments ORDER BY weight DESC")]
                raise Invalid(
                    f"unknown segment {val!r}; known segments: {', '.join(known)}", loc=("body", col)
                ) from None
            raise Invalid(f"{col} {val} does not exist (no such row in {table})", loc=("body", col)) from None
        return None


def _key(exc: psycopg.Error) -> tuple[str, str]:
    """The column(s) and value(s) a constraint violation names, from its DETAIL line."""
    found = _KEY_DETAIL.search(exc.diag.message_detail or "")
    return (found["cols"], found["vals"]) if found else ("value", "?")
