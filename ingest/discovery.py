"""Discovered devices: devices a gateway announces (in its status, or by sending their data) that nobody
registered — listed with their tags, their data held until someone decides, then accepted or rejected.

Life of a discovered device (one row of ``discovered_devices`` per gateway and device key)::

    pending ──accept (CLI, API, auto_accept on the gateway, or registering the device by hand)──▶ accepted
       │          held points are stored, in time order, exactly once; later points go straight in
       └──reject──▶ rejected: held and later points are dead-lettered as ``rejected_device``
    forget: the row goes (held points dead-lettered as ``unknown_device``); the next announcement
            discovers the device again

Concurrency: every change to a discovered row — holding points, accepting, rejecting, expiring —
first locks that row, so an accept and a worker holding points for the same device serialise: the
worker that waited sees ``accepted`` and stores its points under the new device, the accept that
waited finds the points the worker held and stores them. Nothing is held twice
(``held_points``' key) or stored twice (telemetry's ``(series_id, time)`` key), and a retried accept
finds the row accepted and does nothing.

:func:`apply` runs inside the ingest writer's transaction; the other functions are the API's and
the CLI's, each in a transaction of its own. The bounds (:class:`ingest.hold.HoldLimits`) are
enforced here: what they refuse is dead-lettered with its reason.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from fwcore.contract import MAX_POINTS_PER_MESSAGE, Point, topic
from fwcore.errors import Conflict, Invalid, NotFound
from fwcore.paging import Page, Row, fetch_page
from ingest.announce import DeviceAnnouncement
from ingest.hold import HoldLimits, HoldWrite, split_room
from ingest.letters import DeadLetter, points_letter, write_letters
from ingest.rollups import flag_hours

log = logging.getLogger(__name__)

#: Held points older than this when stored flag their hour for the rollup job (as ingest.writer.LATE_FLAG_MS).
_LATE_S = 300
STATES = ("pending", "accepted", "rejected")


@dataclass(frozen=True, slots=True)
class Discovered:
    """A discovered device as listed: its gateway, what the gateway said about it, what it holds."""

    id: int
    gateway_id: int
    gateway: str  # slug
    site: str  # slug of the gateway's site (where an accepted device is registered)
    key: str
    profile: str
    tags: dict[str, str]  # tag -> unit ('' when unknown)
    state: str
    held_points: int
    oldest_held: datetime | None  # when the oldest held point arrived
    first_seen: datetime
    last_seen: datetime
    device_id: int | None
    decided_at: datetime | None
    decided_by: str | None


@dataclass(frozen=True, slots=True)
class Accepted:
    """What accepting did: the device (created, or the one registered by hand meanwhile) and the held points."""

    discovered_id: int
    device_id: int
    stored: int  # held points newly stored
    duplicates: int  # held points that were stored already
    created: bool  # False: the device existed (registered by hand, or accepted before)


@dataclass(slots=True)
class Announce:
    """The devices one gateway's status described."""

    gateway_id: int
    devices: tuple[DeviceAnnouncement, ...]


@dataclass(frozen=True, slots=True)
class DeviceHold:
    """A discovered device that held points in a transaction, and its hold afterwards."""

    gateway: str
    key: str
    discovered_id: int
    held: int
    refused: int  # points refused by the bound in that transaction


@dataclass(slots=True)
class Outcome:
    """What :func:`apply` decided, for the writer (store, dead-letter) and the worker (cache, metrics, logs)."""

    store: list[tuple[HoldWrite, int]] = field(default_factory=list)  # points whose device exists: device id
    letters: list[DeadLetter] = field(default_factory=list)
    held: int = 0  # points newly held
    accepted: dict[tuple[int, str], int] = field(default_factory=dict)  # (gateway id, key) -> device id
    holds: list[DeviceHold] = field(default_factory=list)
    #: Gateway slug -> (points held by its pending devices, the fullest device's points).
    gateways: dict[str, tuple[int, int]] = field(default_factory=dict)
    late_hours: set[int] = field(default_factory=set)  # epoch hours of old held points stored (rollups)
    skipped: list[str] = field(default_factory=list)  # announced devices not recorded (bound), for a warning


# --- inside the ingest writer's transaction -----------------------------------------------------


def apply(
    conn: psycopg.Connection, holds: Sequence[HoldWrite], announces: Sequence[Announce], limits: HoldLimits
) -> Outcome:
    """Record announced devices, give registered ones' series their units, and hold (or store) points of
    devices that were unknown when validated. Runs in the caller's transaction."""
    out = Outcome()
    announced: dict[tuple[int, str], DeviceAnnouncement] = {}
    for a in announces:
        for d in a.devices:
            announced[(a.gateway_id, d.key)] = d
    held_by: dict[tuple[int, str], list[HoldWrite]] = defaultdict(list)
    for h in holds:
        held_by[(h.gateway_id, h.device)].append(h)
    keys = sorted(set(announced) | set(held_by))
    if not keys:
        return out
    registered = _registered(conn, keys)
    _set_units(conn, {registered[k]: announced[k].tags for k in announced if k in registered})
    gateways = _gateways(conn, {g for g, _ in keys})

    # Rows of devices registered meanwhile (by hand, between validation and now) are adopted.
    for row in _lock_rows(conn, [k for k in keys if k in registered], unaccepted_only=True):
        device_id = registered[(row["gateway_id"], row["key"])]
        out.late_hours |= _accept_locked(conn, row, {}, by="registered", device_id=device_id)[1]
    for k in keys:
        if k in registered and k in held_by:  # registered after the worker validated: store, and tell its cache
            out.store += [(h, registered[k]) for h in held_by[k]]
            out.accepted[k] = registered[k]

    if not limits.enabled:  # discovery off: the worker sends no holds; announcements only set units
        return out
    unknown = [k for k in keys if k not in registered]
    rows = _upsert(conn, unknown, announced, held_by, limits, gateways, out)
    for row in rows:
        k = (row["gateway_id"], row["key"])
        gw = gateways[row["gateway_id"]]
        if row["state"] == "pending" and gw["auto_accept"]:
            acc, hours = _accept_locked(conn, row, {}, by="auto")
            out.late_hours |= hours
            row = {**row, "state": "accepted", "device_id": acc.device_id}
        if row["state"] == "accepted" and row["device_id"] is not None:
            out.accepted[k] = row["device_id"]
            out.store += [(h, row["device_id"]) for h in held_by.get(k, [])]
        elif row["state"] == "rejected":
            when = row["decided_at"].isoformat(timespec="seconds") if row["decided_at"] else "?"
            detail = (
                f"device {row['key']!r} was rejected (by {row['decided_by'] or '?'} at {when}); accept it to "
                "store its data, or remove it from the gateway's config"
            )
            out.letters += [_letter(h, h.points, "rejected_device", detail) for h in held_by.get(k, [])]
        elif k in held_by:
            _hold(conn, row, held_by[k], limits, gw["slug"], out)
    if out.holds:
        out.gateways = _gateway_holds(conn, sorted({h.gateway for h in out.holds}))
    return out


def _registered(conn: psycopg.Connection, keys: Sequence[tuple[int, str]]) -> dict[tuple[int, str], int]:
    rows = conn.execute(
        """SELECT d.gateway_id, d.key, d.id FROM devices d
           JOIN unnest(%s::int[], %s::text[]) AS k(gateway_id, key) ON d.gateway_id = k.gateway_id AND d.key = k.key""",
        ([k[0] for k in keys], [k[1] for k in keys]),
    ).fetchall()
    return {(g, k): d for g, k, d in rows}


def _gateways(conn: psycopg.Connection, ids: set[int]) -> dict[int, dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT g.id, g.slug, s.slug AS site, g.auto_accept FROM gateways g JOIN sites s ON s.id = g.site_id
               WHERE g.id = ANY(%s)""",
            (sorted(ids),),
        ).fetchall()
    return {r["id"]: r for r in rows}


def _set_units(conn: psycopg.Connection, units: Mapping[int, Mapping[str, str]]) -> None:
    """Series for every announced tag of registered devices, and the announced unit where a series has none."""
    rows = sorted((dev, tag, unit) for dev, tags in units.items() for tag, unit in tags.items())
    if not rows:
        return
    cols = [list(c) for c in zip(*rows, strict=True)]
    # Sorted, as the writer creates series, so two transactions lock new series in the same order.
    conn.execute(
        """INSERT INTO series (device_id, tag, unit)
           SELECT * FROM unnest(%s::int[], %s::text[], %s::text[]) ORDER BY 1, 2
           ON CONFLICT (device_id, tag) DO NOTHING""",
        cols,
    )
    conn.execute(
        """UPDATE series s SET unit = u.unit
           FROM unnest(%s::int[], %s::text[], %s::text[]) AS u(device_id, tag, unit)
           WHERE s.device_id = u.device_id AND s.tag = u.tag AND s.unit = '' AND u.unit <> ''""",
        cols,
    )


_ROW_COLUMNS: LiteralString = (
    "d.id, d.gateway_id, d.key, d.profile, d.tags, d.state, d.held_points, d.device_id, d.decided_at, d.decided_by"
)


def _lock_rows(
    conn: psycopg.Connection, keys: Sequence[tuple[int, str]], *, unaccepted_only: bool = False
) -> list[dict[str, Any]]:
    if not keys:
        return []
    cond: LiteralString = " AND (d.state <> 'accepted' OR d.device_id IS NULL)" if unaccepted_only else ""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT "
            + _ROW_COLUMNS
            + """ FROM discovered_devices d
               JOIN unnest(%s::int[], %s::text[]) AS k(gateway_id, key)
                 ON d.gateway_id = k.gateway_id AND d.key = k.key"""
            + cond
            + " ORDER BY d.gateway_id, d.key FOR UPDATE OF d",
            ([k[0] for k in keys], [k[1] for k in keys]),
        ).fetchall()


def _upsert(
    conn: psycopg.Connection,
    keys: Sequence[tuple[int, str]],
    announced: Mapping[tuple[int, str], DeviceAnnouncement],
    held_by: Mapping[tuple[int, str], list[HoldWrite]],
    limits: HoldLimits,
    gateways: Mapping[int, Mapping[str, Any]],
    out: Outcome,
) -> list[dict[str, Any]]:
    """Create or touch the discovered rows of ``keys`` (locked, in key order); new ones only within max_devices."""
    if not keys:
        return []
    existing = set(
        conn.execute(
            """SELECT d.gateway_id, d.key FROM discovered_devices d
               JOIN unnest(%s::int[], %s::text[]) AS k(gateway_id, key)
                 ON d.gateway_id = k.gateway_id AND d.key = k.key""",
            ([k[0] for k in keys], [k[1] for k in keys]),
        ).fetchall()
    )
    pending: dict[int, int] = dict(
        conn.execute(
            "SELECT gateway_id, count(*) FROM discovered_devices WHERE gateway_id = ANY(%s) AND state = 'pending'"
            " GROUP BY gateway_id",
            (sorted({g for g, _ in keys}),),
        ).fetchall()
    )
    chosen = []
    for k in keys:
        if k not in existing:
            if pending.get(k[0], 0) >= limits.max_devices:
                _refuse_device(k, announced, held_by, limits, gateways, out)
                continue
            pending[k[0]] = pending.get(k[0], 0) + 1
        chosen.append(k)
    if not chosen:
        return []
    seen = {k: {p.tag: "" for h in held_by.get(k, []) for p in h.points} for k in chosen}
    told = {k: dict(announced[k].tags) if k in announced else {} for k in chosen}
    profiles = {k: announced[k].profile if k in announced else "" for k in chosen}
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """INSERT INTO discovered_devices AS d (gateway_id, key, profile, tags)
               SELECT g, k, p, s || t FROM unnest(%s::int[], %s::text[], %s::text[], %s::jsonb[], %s::jsonb[])
                   AS u(g, k, p, s, t) ORDER BY g, k
               ON CONFLICT (gateway_id, key) DO UPDATE SET
                   last_seen = now(),
                   state = CASE WHEN d.state = 'accepted' AND d.device_id IS NULL THEN 'pending' ELSE d.state END
               RETURNING """
            + _ROW_COLUMNS,
            (
                [k[0] for k in chosen],
                [k[1] for k in chosen],
                [profiles[k] for k in chosen],
                [Jsonb(seen[k]) for k in chosen],
                [Jsonb(told[k]) for k in chosen],
            ),
        ).fetchall()
        # Tags seen in data never overwrite an announced unit; announced ones do; the profile follows the gateway.
        changes = []
        for r in rows:
            k = (r["gateway_id"], r["key"])
            tags = {**seen[k], **r["tags"], **told[k]}
            new_profile = profiles[k] or r["profile"]
            if tags != r["tags"] or new_profile != r["profile"]:
                changes.append({"id": r["id"], "tags": Jsonb(tags), "profile": new_profile})
                r["tags"], r["profile"] = tags, new_profile
        if changes:
            cur.executemany(
                "UPDATE discovered_devices SET tags = %(tags)s, profile = %(profile)s WHERE id = %(id)s", changes
            )
    return sorted(rows, key=lambda r: (r["gateway_id"], r["key"]))


def _refuse_device(
    k: tuple[int, str],
    announced: Mapping[tuple[int, str], DeviceAnnouncement],
    held_by: Mapping[tuple[int, str], list[HoldWrite]],
    limits: HoldLimits,
    gateways: Mapping[int, Mapping[str, Any]],
    out: Outcome,
) -> None:
    slug = gateways[k[0]]["slug"]
    detail = (
        f"device {k[1]!r} is not registered on gateway {slug!r}, which already has {limits.max_devices} discovered "
        "devices pending (discovery_max_devices); accept or reject them, or register this one, then replay"
    )
    out.letters += [_letter(h, h.points, "unknown_device", detail) for h in held_by.get(k, [])]
    if k in announced and k not in held_by:
        out.skipped.append(f"{slug}/{k[1]}")


def _letter(h: HoldWrite, points: Sequence[Point], reason: str, detail: str) -> DeadLetter:
    return points_letter(
        h.topic,
        site=h.site,
        gateway=h.gateway,
        seq=h.seq,
        sent_at=h.sent_at,
        historical=h.historical,
        points=points,
        reason=reason,
        detail=detail,
    )


def _hold(
    conn: psycopg.Connection, row: dict[str, Any], writes: list[HoldWrite], limits: HoldLimits, slug: str, out: Outcome
) -> None:
    """Hold the points of ``writes`` under the locked row ``row`` up to the bound; dead-letter the rest."""
    held, refused = row["held_points"], 0
    for h in writes:
        fits, beyond = split_room(h.points, held, limits)
        if fits:
            cur = conn.execute(
                """INSERT INTO held_points (discovered_id, tag, time, value, quality)
                   SELECT %s, tag, timestamptz 'epoch' + ms * interval '1 millisecond', value, quality
                   FROM unnest(%s::text[], %s::int8[], %s::float8[], %s::int2[]) AS p(tag, ms, value, quality)
                   ON CONFLICT (discovered_id, tag, time) DO NOTHING""",
                (
                    row["id"],
                    [p.tag for p in fits],
                    [p.ts for p in fits],
                    [p.value for p in fits],
                    [int(p.quality) for p in fits],
                ),
            )
            held += cur.rowcount
            out.held += cur.rowcount
        if beyond:
            refused += len(beyond)
            detail = (
                f"{len(beyond)} point(s) of device {row['key']!r} (not registered) beyond the hold of "
                f"{limits.max_points} points (discovery_hold_max_points); accept discovered device {row['id']}, "
                "then replay"
            )
            out.letters.append(_letter(h, beyond, "hold_full", detail))
    if held != row["held_points"]:
        conn.execute(
            "UPDATE discovered_devices SET held_points = %s, last_seen = now() WHERE id = %s", (held, row["id"])
        )
    out.holds.append(DeviceHold(slug, row["key"], row["id"], held, refused))


def _gateway_holds(conn: psycopg.Connection, slugs: Sequence[str]) -> dict[str, tuple[int, int]]:
    rows = conn.execute(
        """SELECT g.slug, coalesce(sum(d.held_points), 0)::int8, coalesce(max(d.held_points), 0)::int8
           FROM gateways g LEFT JOIN discovered_devices d ON d.gateway_id = g.id AND d.state = 'pending'
           WHERE g.slug = ANY(%s) GROUP BY g.slug""",
        (list(slugs),),
    ).fetchall()
    return {slug: (int(total), int(most)) for slug, total, most in rows}


def _default_model(profile: str) -> str:
    return profile.split("@", 1)[0] if profile else "unknown"


def _accept_locked(
    conn: psycopg.Connection,
    row: Mapping[str, Any],
    fields: Mapping[str, Any],
    *,
    by: str,
    device_id: int | None = None,
) -> tuple[Accepted, set[int]]:
    """Register the locked discovered ``row`` (or adopt ``device_id``), store its held points, mark it accepted.

    Returns what was done and the epoch hours of stored points older than a few minutes (the caller
    flags them for the rollup job).
    """
    created = False
    if device_id is None:
        found = conn.execute(
            "SELECT id FROM devices WHERE gateway_id = %s AND key = %s", (row["gateway_id"], row["key"])
        ).fetchone()
        if found is None:
            values = {
                "gateway_id": row["gateway_id"],
                "key": row["key"],
                "name": fields.get("name") or "",
                "equipment_model": fields.get("equipment_model") or _default_model(row["profile"]),
                "serial": fields.get("serial") or "",
                "profile": row["profile"],
                "attributes": Jsonb(fields.get("attributes") or {}),
            }
            try:
                with conn.transaction():
                    found = conn.execute(
                        """INSERT INTO devices (site_id, gateway_id, key, name, equipment_model, serial, profile,
                                                attributes)
                           SELECT site_id, %(gateway_id)s, %(key)s, %(name)s, %(equipment_model)s, %(serial)s,
                                  %(profile)s, %(attributes)s FROM gateways WHERE id = %(gateway_id)s
                           RETURNING id""",
                        values,
                    ).fetchone()
            except psycopg.errors.IntegrityError as exc:
                raise Invalid(f"cannot register device {row['key']!r}: {exc.diag.message_primary}") from None
            created = True
        assert found is not None
        device_id = int(found[0])
    did = device_id
    params = {"d": did, "id": row["id"], "tags": Jsonb(row["tags"] or {}), "late": _LATE_S}
    conn.execute(
        """INSERT INTO series (device_id, tag, unit)
           SELECT %(d)s, tag, max(unit) FROM (
               SELECT key AS tag, value AS unit FROM jsonb_each_text(%(tags)s)
               UNION ALL SELECT DISTINCT tag, '' FROM held_points WHERE discovered_id = %(id)s) t
           GROUP BY tag ORDER BY tag
           ON CONFLICT (device_id, tag) DO NOTHING""",
        params,
    )
    conn.execute(
        """UPDATE series s SET unit = t.value FROM jsonb_each_text(%(tags)s) t
           WHERE s.device_id = %(d)s AND s.tag = t.key AND s.unit = '' AND t.value <> ''""",
        params,
    )
    conn.execute(
        """SELECT fw_ensure_telemetry_partition(day) FROM (
               SELECT DISTINCT (time AT TIME ZONE 'UTC')::date AS day FROM held_points WHERE discovered_id = %(id)s
           ) days ORDER BY day""",
        params,
    )
    stored = conn.execute(
        """INSERT INTO telemetry (series_id, time, value, quality)
           SELECT s.id, h.time, h.value, h.quality FROM held_points h
           JOIN series s ON s.device_id = %(d)s AND s.tag = h.tag
           WHERE h.discovered_id = %(id)s ORDER BY h.time, h.tag
           ON CONFLICT (series_id, time) DO NOTHING""",
        params,
    ).rowcount
    hours = {
        int(h)
        for (h,) in conn.execute(
            """SELECT DISTINCT floor(extract(epoch FROM time) / 3600)::int8 FROM held_points
               WHERE discovered_id = %(id)s AND time < now() - make_interval(secs => %(late)s)""",
            params,
        )
    }
    moved = conn.execute("DELETE FROM held_points WHERE discovered_id = %(id)s", params).rowcount
    conn.execute(
        """UPDATE discovered_devices SET state = 'accepted', device_id = %s, held_points = 0, decided_at = now(),
                  decided_by = %s WHERE id = %s""",
        (did, by, row["id"]),
    )
    log.info("discovered device %r accepted as device %d by %s: %d held points stored", row["key"], did, by, stored)
    return Accepted(row["id"], did, stored, moved - stored, created), hours


def flag_late_hours(conn: psycopg.Connection, hours: set[int]) -> None:
    """Flag epoch hours of old held points just stored, so the rollups (tables or continuous
    aggregates) are redone there (:mod:`ingest.rollups`)."""
    flag_hours(conn, hours)


# --- the API's and the CLI's -------------------------------------------------------------------

_FROM: LiteralString = " discovered_devices d JOIN gateways g ON g.id = d.gateway_id JOIN sites s ON s.id = g.site_id"
_SELECT: LiteralString = (
    """SELECT d.id, d.gateway_id, g.slug AS gateway, s.slug AS site, d.key, d.profile, d.tags, d.state,
              d.held_points, (SELECT min(h.received_at) FROM held_points h WHERE h.discovered_id = d.id) AS oldest_held,
              d.first_seen, d.last_seen, d.device_id, d.decided_at, d.decided_by FROM"""
    + _FROM
)


def _discovered(r: Row) -> Discovered:
    return Discovered(**r)


def list_discovered(
    conn: psycopg.Connection,
    *,
    gateway: str | None = None,
    gateway_id: int | None = None,
    state: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> Page[Discovered]:
    """Discovered devices, newest first, of one gateway (slug or id) and/or in one state when given."""
    if state is not None and state not in STATES:
        raise Invalid(f"state {state!r} is not one of {', '.join(STATES)}", loc=("query", "state"))
    conditions: list[LiteralString] = []
    if gateway is not None:
        conditions.append("g.slug = %(gateway)s")
    if gateway_id is not None:
        conditions.append("g.id = %(gateway_id)s")
    if state is not None:
        conditions.append("d.state = %(state)s")
    return fetch_page(
        conn,
        _SELECT,
        _FROM,
        conditions,
        "d.id DESC",
        {"gateway": gateway, "gateway_id": gateway_id, "state": state},
        _discovered,
        limit=limit,
        offset=offset,
    )


def get_discovered(conn: psycopg.Connection, discovered_id: int) -> Discovered:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_SELECT + " WHERE d.id = %s", (discovered_id,)).fetchone()
    if row is None:
        raise NotFound("discovered device", discovered_id)
    return _discovered(row)


def counts_by_state(conn: psycopg.Connection) -> list[tuple[str, int, int]]:
    """(state, discovered devices, points they hold) for each state present."""
    rows = conn.execute(
        "SELECT state, count(*), coalesce(sum(held_points), 0)::int8 FROM discovered_devices GROUP BY state"
    ).fetchall()
    return [(state, int(n), int(held)) for state, n, held in rows]


def _lock_one(conn: psycopg.Connection, discovered_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT " + _ROW_COLUMNS + " FROM discovered_devices d WHERE d.id = %s FOR UPDATE", (discovered_id,)
        ).fetchone()
    if row is None:
        raise NotFound("discovered device", discovered_id)
    return row


def accept(conn: psycopg.Connection, discovered_id: int, fields: Mapping[str, Any], *, by: str) -> Accepted:
    """Register the discovered device at its gateway's site and store its held points, in time order, once.

    ``fields`` may name ``name``, ``equipment_model`` (default: the announced profile's name),
    ``serial`` and ``attributes``. Accepting an accepted device does nothing and says so
    (``stored`` 0); a rejected one may be accepted (its earlier points are in the dead letters:
    replay them).
    """
    with conn.transaction():
        row = _lock_one(conn, discovered_id)
        if row["state"] == "accepted" and row["device_id"] is not None:
            return Accepted(discovered_id, row["device_id"], 0, 0, False)
        acc, hours = _accept_locked(conn, row, fields, by=by)
        flag_late_hours(conn, hours)
    return acc


def adopt(conn: psycopg.Connection, device_id: int) -> Accepted | None:
    """A device was just registered by hand: if it had been discovered, store what it holds and mark it accepted.

    Runs in the caller's transaction (the registry's create), so the device and its held data
    commit together.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT "
            + _ROW_COLUMNS
            + """ FROM discovered_devices d JOIN devices v ON v.gateway_id = d.gateway_id AND v.key = d.key
               WHERE v.id = %s AND (d.state <> 'accepted' OR d.device_id IS NULL) FOR UPDATE OF d""",
            (device_id,),
        ).fetchone()
    if row is None:
        return None
    acc, hours = _accept_locked(conn, row, {}, by="registered", device_id=device_id)
    flag_late_hours(conn, hours)
    return acc


def _dead_letter_held(
    conn: psycopg.Connection, row: Mapping[str, Any], reason: str, detail: str, *, before: datetime | None = None
) -> int:
    """Move the locked row's held points (those received before ``before``, or all) to dead letters."""
    names = conn.execute(
        "SELECT g.slug, s.slug FROM gateways g JOIN sites s ON s.id = g.site_id WHERE g.id = %s", (row["gateway_id"],)
    ).fetchone()
    assert names is not None  # the row's gateway exists (foreign key, row locked)
    gateway, site = names
    cond: LiteralString = " AND received_at < %(before)s" if before is not None else ""
    params = {"id": row["id"], "before": before}
    points = [
        Point(row["key"], tag, int(ms), value, quality)
        for tag, ms, value, quality in conn.execute(
            """SELECT tag, (extract(epoch FROM time) * 1000)::int8, value, quality FROM held_points
               WHERE discovered_id = %(id)s"""
            + cond
            + " ORDER BY time, tag",
            params,
        )
    ]
    if not points:
        return 0
    where = topic(site, gateway, "telemetry")
    write_letters(
        conn,
        [
            points_letter(
                where,
                site=site,
                gateway=gateway,
                seq=None,
                sent_at=0,
                historical=True,
                points=points[i : i + MAX_POINTS_PER_MESSAGE],
                reason=reason,
                detail=detail,
            )
            for i in range(0, len(points), MAX_POINTS_PER_MESSAGE)
        ],
    )
    moved = conn.execute("DELETE FROM held_points WHERE discovered_id = %(id)s" + cond, params).rowcount
    conn.execute(
        "UPDATE discovered_devices SET held_points = greatest(held_points - %s, 0) WHERE id = %s", (moved, row["id"])
    )
    return moved


def reject(conn: psycopg.Connection, discovered_id: int, *, by: str) -> Discovered:
    """Refuse the device: its held points, and every later one, go to the dead letters as ``rejected_device``."""
    with conn.transaction():
        row = _lock_one(conn, discovered_id)
        if row["state"] == "accepted" and row["device_id"] is not None:
            raise Conflict(
                f"discovered device {discovered_id} was accepted as device {row['device_id']}; "
                "delete that device to undo it"
            )
        detail = f"device {row['key']!r} was rejected by {by}; accept it to store its data, then replay"
        _dead_letter_held(conn, row, "rejected_device", detail)
        conn.execute(
            """UPDATE discovered_devices SET state = 'rejected', held_points = 0, decided_at = now(), decided_by = %s
               WHERE id = %s""",
            (by, discovered_id),
        )
    return get_discovered(conn, discovered_id)


def forget(conn: psycopg.Connection, discovered_id: int) -> int:
    """Delete the discovered row (its held points are dead-lettered first); returns the points dead-lettered.

    The gateway's next announcement or point discovers the device again, as pending.
    """
    with conn.transaction():
        row = _lock_one(conn, discovered_id)
        detail = f"held for discovered device {row['key']!r}, which was forgotten; register the device, then replay"
        moved = _dead_letter_held(conn, row, "unknown_device", detail)
        conn.execute("DELETE FROM discovered_devices WHERE id = %s", (discovered_id,))
    return moved


def expire_held(db_url: str, max_age_s: float | None = None) -> int:
    """The scheduled job: dead-letter points held longer than ``max_age_s`` (default: settings) as
    ``hold_expired``, and adopt discovered devices that were registered by hand in a race. Returns the
    points dead-lettered."""
    if max_age_s is None:
        from fwcore.settings import load_settings

        max_age_s = HoldLimits.from_settings(load_settings(database_url=db_url)).max_age_s
    moved = 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        orphans = conn.execute(
            """SELECT d.id, v.id FROM discovered_devices d
               JOIN devices v ON v.gateway_id = d.gateway_id AND v.key = d.key
               WHERE d.state <> 'accepted' OR d.device_id IS NULL"""
        ).fetchall()
        for discovered_id, device_id in orphans:
            with conn.transaction():
                row = _lock_one(conn, discovered_id)
                flag_late_hours(conn, _accept_locked(conn, row, {}, by="registered", device_id=device_id)[1])
        found = conn.execute("SELECT now() - make_interval(secs => %s)", (max_age_s,)).fetchone()
        assert found is not None
        cutoff = found[0]
        old = conn.execute("SELECT DISTINCT discovered_id FROM held_points WHERE received_at < %s", (cutoff,))
        ids = [r[0] for r in old]
        age_h = max_age_s / 3600
        for discovered_id in sorted(ids):
            with conn.transaction():
                try:
                    row = _lock_one(conn, discovered_id)
                except NotFound:
                    continue
                detail = (
                    f"held for device {row['key']!r} (not registered) longer than {age_h:g} h "
                    f"(discovery_hold_max_hours); accept discovered device {row['id']}, then replay"
                )
                moved += _dead_letter_held(conn, row, "hold_expired", detail, before=cutoff)
    if moved:
        log.warning(
            "%d held point(s) waited longer than %g h for their device to be accepted: dead-lettered",
            moved,
            max_age_s / 3600,
        )
    return moved
