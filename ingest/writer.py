"""Writes validated telemetry, dead letters, sequence bookkeeping and gateway status.

One call to :meth:`TelemetryWriter.write` is one transaction: points, the
dead-letter rows for whatever was refused, the held points of devices nobody registered
(:mod:`ingest.discovery`), ``gateways.last_seq``/``seq_gaps`` with the
missing sequence ranges (``gateway_seq_missing``)
and status updates commit together or not at all, so a message is either fully
accounted for (and may be acked) or not at all (and will be redelivered).

Points go through a binary ``COPY`` straight into ``telemetry`` inside a
savepoint; if any row is already stored (a redelivery) the unique key refuses
it, the savepoint is undone, and the batch goes through a temporary staging table
and ``INSERT … ON CONFLICT (series_id, time) DO NOTHING`` instead: a redelivered
point is a no-op either way. Series ids are created on first sight and cached; the cache only learns
ids after the transaction that created them committed. Telemetry partitions for
new UTC days are ensured in a short transaction of their own first (it is
idempotent DDL, and a no-op function on TimescaleDB).
"""

from __future__ import annotations

import datetime as dt
import logging
import struct
import time
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.errors import DeadlockDetected, SerializationFailure, UniqueViolation
from psycopg.types.json import Jsonb

from fwcore.contract import Batch, Point, encode_batch, topic
from fwcore.events import (
    MAX_TELEMETRY_DEVICE_IDS,
    EventBase,
    GatewayBufferEvent,
    GatewayConfigEvent,
    GatewayStatusEvent,
    TelemetryStoredEvent,
    publish,
    publish_all,
)
from ingest import discovery
from ingest.discovery import Announce, DeviceHold
from ingest.errors import DatabaseUnavailable, NotMigrated
from ingest.fastpath import Row
from ingest.gateway_report import config_outcome
from ingest.hold import HoldLimits, HoldWrite
from ingest.letters import DeadLetter, clean_text, points_letter, resolve_letters, write_letters
from ingest.liveness import NO_HEARTBEAT, StoredStatus, status_applies
from ingest.points import CommittedPoint
from ingest.rollups import flag_hours
from ingest.rollups import late_hours as rollup_late_hours
from ingest.sequences import SeqRange, advance
from ingest.validate import AcceptedPoint, Rejection

__all__ = ["BatchWrite", "DeadLetter", "StatusWrite", "TelemetryWriter", "WriteResult", "rejection_dead_letters"]

log = logging.getLogger(__name__)

_EPOCH = dt.date(1970, 1, 1)
_MS_PER_DAY = 86_400_000
#: Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
_PG_EPOCH_MS = 946_684_800_000
_INT8 = struct.Struct("!q")


#: One telemetry row in COPY BINARY form: 4 fields, each (length, value): int4, timestamptz (int8 µs), float8, int2.
_ROW = struct.Struct("!hiiiqidih")
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)


def encode_copy(batches: list[BatchWrite], ids: dict[tuple[int, str], int]) -> bytes | None:
    """The whole ``COPY telemetry … (FORMAT BINARY)`` stream for ``batches``; None if a series id is not in ``ids``.

    One ``struct.pack`` per row and one join: about 4x cheaper than psycopg's
    ``write_row`` with a dumper per field, which profiling showed as the biggest
    cost after JSON parsing.
    """
    pack = _ROW.pack
    parts = [_COPY_HEADER]
    try:
        for b in batches:
            parts += [
                pack(4, 4, ids[(did, tag)], 8, (ts - _PG_EPOCH_MS) * 1000, 8, value, 2, q)
                for did, _dev, tag, ts, value, q in b.accepted
            ]
    except KeyError:
        return None
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


@dataclass(slots=True)
class BatchWrite:
    """A telemetry message from a known gateway whose accepted points are to be stored."""

    site: str
    gateway: str  # slug
    gateway_id: int
    seq: int | None  # None: not from a gateway's sequence (history import); no gap bookkeeping
    historical: bool
    #: The accepted readings as writer rows (see :func:`rows_of` for validated points).
    accepted: list[Row]
    #: Where a point kept aside (``conflicting_value``) is filed; default: the gateway's telemetry topic.
    topic: str = ""


def late_hours(batches: list[BatchWrite], now_ms: int) -> list[int]:
    """Sorted epoch hour numbers holding rows older than ``ingest.rollups.LATE_FLAG_MS`` (pure).

    The rollups refresh the recent past by themselves; older (late, replayed, imported) rows are
    only seen because their hour is flagged in ``telemetry_rollup_dirty`` (ingest/rollups.py).
    """
    return rollup_late_hours((r[3] for b in batches for r in b.accepted), now_ms)


def _rows(h: HoldWrite, device_id: int) -> list[Row]:
    return [(device_id, p.device, p.tag, p.ts, p.value, int(p.quality)) for p in h.points]


def rows_of(accepted: list[AcceptedPoint]) -> list[Row]:
    """Writer rows for points accepted by :func:`ingest.validate.validate_batch`."""
    return [
        (a.device_id, a.point.device, a.point.tag, a.point.ts, a.point.value, int(a.point.quality)) for a in accepted
    ]


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """A birth/death message for a known gateway (``session`` None: a gateway that sends none)."""

    gateway_id: int
    state: str
    ts_ms: int
    session: int | None = None
    reason: str = ""
    report: dict[str, Any] | None = None  # devices, profiles, config outcome of a full status (ingest.gateway_report)


@dataclass(frozen=True, slots=True)
class WatchedGateway:
    """A gateway whose heartbeat ingest watches: online, or offline because its heartbeat stopped."""

    id: int
    site: str
    slug: str
    status: StoredStatus


@dataclass(slots=True)
class WriteResult:
    """What one committed transaction did."""

    inserted: int = 0
    duplicates: int = 0  # already stored with the same value and quality (redelivery): nothing to do
    conflicts: int = 0  # already stored (or earlier in the batch) with another value: dead-lettered
    gaps: int = 0  # sequences newly skipped (a batch above last_seq)
    filled: int = 0  # missing sequences that arrived late or were resent
    #: Gateway slug → (change stamp, sequences missing now) for each gateway whose bookkeeping changed;
    #: the stamp (skipped + filled totals) only grows, so a stale report can be told from a newer one.
    missing: dict[str, tuple[int, int]] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)
    #: Newly stored points, filled only when asked for (it costs a RETURNING).
    committed: list[CommittedPoint] = field(default_factory=list)
    held: int = 0  # points newly held for discovered devices
    #: (gateway id, device key) -> device id of discovered devices accepted (or found registered) meanwhile.
    accepted: dict[tuple[int, str], int] = field(default_factory=dict)
    holds: list[DeviceHold] = field(default_factory=list)  # discovered devices that held points now
    #: Gateway slug -> (points held by its pending devices, the fullest device's points), where holds changed.
    hold_gateways: dict[str, tuple[int, int]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # announced devices not recorded (max_devices)
    resolved: int = 0  # dead letters deleted because a replay stored or held their points


def rejection_dead_letters(
    topic: str, payload: bytes, batch: Batch | None, rejections: list[Rejection]
) -> list[DeadLetter]:
    """Dead letters for a validation verdict.

    A whole-message rejection keeps the original bytes; a point-level rejection
    keeps a batch of just the refused points (same gateway, site, seq), so it can
    be replayed once the cause (say, an unregistered device) is fixed.
    """
    out = []
    for r in rejections:
        if not r.points or batch is None:
            devices = tuple(sorted({p.device for p in batch.points})) if batch is not None else ()
            points = len(batch.points) if batch is not None else 0
            out.append(DeadLetter(topic, payload, r.reason, r.detail, devices, points))
        else:
            out.append(
                points_letter(
                    topic,
                    site=batch.site,
                    gateway=batch.gateway,
                    seq=batch.seq,
                    sent_at=batch.sent_at,
                    historical=batch.historical,
                    points=r.points,
                    reason=r.reason,
                    detail=r.detail,
                )
            )
    return out


#: One point that met a different stored reading: (its index over all rows of the write, stored value, stored quality).
Clash = tuple[int, float, int]

CONFLICTING_VALUE = "conflicting_value"


def conflict_dead_letters(batches: list[BatchWrite], clashes: list[Clash]) -> list[DeadLetter]:
    """One ``conflicting_value`` dead letter per batch with clashes: a batch of just those points (pure).

    ``clashes`` index the rows of ``batches`` in order, as the writer stages them. The payload is a
    telemetry batch like the original (same gateway, site, seq, historical flag), so the points can
    be looked at and replayed; ``detail`` names the first clash and what is stored instead.
    """
    if not clashes:
        return []
    starts, n = [], 0
    for b in batches:
        starts.append(n)
        n += len(b.accepted)
    by_batch: dict[int, list[tuple[Row, float, int]]] = defaultdict(list)
    for i, value, quality in sorted(clashes):
        k = bisect_right(starts, i) - 1
        by_batch[k].append((batches[k].accepted[i - starts[k]], value, quality))
    out = []
    for k, found in sorted(by_batch.items()):
        b = batches[k]
        (_, dev, tag, ts, value, q), stored, stored_q = found[0]
        when = dt.datetime.fromtimestamp(ts / 1000, dt.UTC).isoformat(timespec="milliseconds")
        detail = (
            f"{dev}/{tag} at {when}: stored {stored!r} (quality {stored_q}), this point {value!r} (quality {q}); "
            "the first value is kept"
        )
        if len(found) > 1:
            detail += f"; and {len(found) - 1} more point(s) in this batch"
        part = Batch(
            gateway=b.gateway,
            site=b.site,
            seq=b.seq if b.seq is not None else 0,
            points=[Point(r[1], r[2], r[3], r[4], r[5]) for r, _, _ in found],
            historical=b.historical,
        )
        where = b.topic or (topic(b.site, b.gateway, "telemetry") if b.site and b.gateway else "telemetry")
        out.append(DeadLetter(where, encode_batch(part), CONFLICTING_VALUE, detail))
    return out


class TelemetryWriter:
    """Owns one PostgreSQL connection (autocommit; explicit transactions) and the id caches."""

    def __init__(
        self, db_url: str, *, connect_timeout: int = 5, direct_copy: bool = True, hold: HoldLimits | None = None
    ) -> None:
        self._db_url = db_url
        #: Bounds of what discovered (unregistered) devices may hold (:mod:`ingest.hold`).
        self.hold = hold or HoldLimits()
        self._connect_timeout = connect_timeout
        self._conn: psycopg.Connection | None = None
        self._series: dict[tuple[int, str], int] = {}
        self._days: set[int] = set()
        #: COPY straight into telemetry when nothing conflicts (set False to always stage).
        self._direct = direct_copy
        self.direct_fallbacks = 0  # batches that hit an existing row and went through staging
        #: True when the database has rollups (migration 0004, either kind): late rows flag their hour.
        self._flag_late = False

    def connection(self) -> psycopg.Connection:
        """The live connection, (re)connecting if needed; raises :class:`DatabaseUnavailable`."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = psycopg.connect(self._db_url, autocommit=True, connect_timeout=self._connect_timeout)
            row = conn.execute("SELECT to_regclass('telemetry')").fetchone()
            if row is None or row[0] is None:
                conn.close()
                raise NotMigrated(f"database {self._db_url!r} has no telemetry table; run `fieldwatch db migrate`")
            conn.execute(
                """CREATE TEMP TABLE IF NOT EXISTS fw_stage
                   (series_id int4, ms int8, value float8, quality int2, ord int4) ON COMMIT DELETE ROWS"""
            )
            mode = conn.execute("SELECT value FROM fw_meta WHERE key = 'rollups'").fetchone()
            self._flag_late = mode is not None and mode[0] in ("tables", "continuous")
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from exc
        self._conn = conn
        return conn

    def close(self) -> None:
        """Close the connection (safe twice); the next call reconnects."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                log.debug("closing the database connection failed", exc_info=True)
            self._conn = None

    def forget_series(self) -> None:
        """Drop cached series ids (e.g. after a device was deleted)."""
        self._series.clear()

    def write(
        self,
        batches: list[BatchWrite],
        dead_letters: Sequence[DeadLetter] = (),
        statuses: Sequence[StatusWrite] = (),
        *,
        want_points: bool = False,
        holds: Sequence[HoldWrite] = (),
        announces: Sequence[Announce] = (),
        resolved: Sequence[int] = (),
    ) -> WriteResult:
        """Store everything in one transaction. Raises :class:`DatabaseUnavailable` when the server is gone;
        other ``psycopg.Error`` subclasses mean the data itself was refused (the caller isolates it).

        ``holds``: points of devices that were not registered when validated (held, or stored if
        the device exists by now); ``announces``: devices named by gateways' statuses; ``resolved``:
        dead letters a replay has taken care of (deleted in the same transaction).
        """
        conn = self.connection()
        try:
            self._ensure_days(conn, batches, holds)
            created: dict[tuple[int, str], int] = {}
            with conn.transaction():
                result = self._write(
                    conn, batches, dead_letters, statuses, created, want_points, holds, announces, resolved
                )
        except (DeadlockDetected, SerializationFailure) as exc:
            # Another worker's transaction won (e.g. both locking a gateway row): rolled back, the
            # connection is fine; the caller's retry path writes the batch again.
            raise DatabaseUnavailable(f"database write conflicted with another transaction: {exc}") from exc
        except psycopg.OperationalError as exc:
            self.close()
            raise DatabaseUnavailable(f"database write failed: {exc}") from exc
        self._series.update(created)
        return result

    def _ensure_days(
        self, conn: psycopg.Connection, batches: list[BatchWrite], holds: Sequence[HoldWrite] = ()
    ) -> None:
        # Held points may be stored at once (their device was registered meanwhile): their days too.
        days = {r[3] // _MS_PER_DAY for b in batches for r in b.accepted}
        days |= {p.ts // _MS_PER_DAY for h in holds for p in h.points}
        days -= self._days
        if not days:
            return
        with conn.transaction():
            for d in sorted(days):
                conn.execute("SELECT fw_ensure_telemetry_partition(%s)", (_EPOCH + dt.timedelta(days=d),))
        self._days |= days

    def _series_ids(
        self, conn: psycopg.Connection, pairs: set[tuple[int, str]], created: dict[tuple[int, str], int]
    ) -> dict[tuple[int, str], int]:
        missing = sorted(p for p in pairs if p not in self._series)
        if not missing:
            return self._series
        devs = [p[0] for p in missing]
        tags = [p[1] for p in missing]
        # Sorted so two workers creating the same series lock them in the same order.
        conn.execute(
            """INSERT INTO series (device_id, tag)
               SELECT * FROM unnest(%s::int[], %s::text[]) ORDER BY 1, 2
               ON CONFLICT (device_id, tag) DO NOTHING""",
            (devs, tags),
        )
        for dev, tag, sid in conn.execute(
            """SELECT s.device_id, s.tag, s.id FROM series s
               JOIN unnest(%s::int[], %s::text[]) AS w(device_id, tag)
                 ON s.device_id = w.device_id AND s.tag = w.tag""",
            (devs, tags),
        ):
            created[(dev, tag)] = sid
        return {**self._series, **created}

    def _write(
        self,
        conn: psycopg.Connection,
        batches: list[BatchWrite],
        dead_letters: Sequence[DeadLetter],
        statuses: Sequence[StatusWrite],
        created: dict[tuple[int, str], int],
        want_points: bool,
        holds: Sequence[HoldWrite] = (),
        announces: Sequence[Announce] = (),
        resolved: Sequence[int] = (),
    ) -> WriteResult:
        result = WriteResult()
        late: set[int] = set()
        if holds or announces:
            # First in the transaction: discovered rows are locked before any series or gateway row.
            found = discovery.apply(conn, holds, announces, self.hold)
            batches = batches + [
                BatchWrite(h.site, h.gateway, h.gateway_id, None, h.historical, _rows(h, device_id))
                for h, device_id in found.store
            ]
            dead_letters = [*dead_letters, *found.letters]
            result.held, result.accepted, result.holds = found.held, found.accepted, found.holds
            result.hold_gateways, result.skipped, late = found.gateways, found.skipped, found.late_hours
        total = sum(len(b.accepted) for b in batches)
        if total:
            ids = self._series
            data = encode_copy(batches, ids) if self._direct else None
            if data is None:  # a series seen for the first time (or direct COPY is off)
                ids = self._series_ids(conn, {(r[0], r[2]) for b in batches for r in b.accepted}, created)
                data = encode_copy(batches, ids) if self._direct else None
            if data is not None and self._copy_direct(conn, data):
                result.inserted = total
                if want_points:
                    result.committed = [self._point(ids[(r[0], r[2])], r, b) for b in batches for r in b.accepted]
            else:
                result.inserted, result.committed, clashes = self._copy_staged(conn, batches, ids, want_points)
                if clashes:
                    result.conflicts = len(clashes)
                    dead_letters = [*dead_letters, *conflict_dead_letters(batches, clashes)]
            result.duplicates = total - result.inserted - result.conflicts
        if dead_letters:
            result.dead_letters.update(write_letters(conn, dead_letters))
        if resolved:
            result.resolved = resolve_letters(conn, resolved)
        if batches:
            self._advance_sequences(conn, batches, result)
        if statuses:
            self._write_statuses(conn, statuses)
        if total:
            # After the rows, inside their transaction: the Device page hears of them once they commit.
            devices = sorted({r[0] for b in batches for r in b.accepted})
            named = devices if len(devices) <= MAX_TELEMETRY_DEVICE_IDS else None
            publish(conn, TelemetryStoredEvent(device_ids=named))
        if self._flag_late and (total or late):
            # Last in the transaction (after the gateway row locks), hours in order: no lock-order cycles.
            flag_hours(conn, set(late_hours(batches, int(time.time() * 1000))) | late)
        return result

    @staticmethod
    def _write_statuses(conn: psycopg.Connection, statuses: Sequence[StatusWrite]) -> None:
        """Apply births/deaths in arrival order, each only if it wins over the stored one (by session).

        A death that carries a session is dated when ingest receives it: the Last Will's own ``ts``
        is when its connection began, since MQTT has the Will composed before connecting.
        """
        rows = conn.execute(
            """SELECT id, status, status_session, (extract(epoch FROM status_at) * 1000)::int8, status_reason,
                      report
               FROM gateways WHERE id = ANY(%s) ORDER BY id FOR UPDATE""",
            (sorted({s.gateway_id for s in statuses}),),
        ).fetchall()
        stored = {r[0]: StoredStatus(r[1], r[2], r[3], r[4]) for r in rows}
        reports: dict[int, dict[str, Any] | None] = {r[0]: r[5] for r in rows}
        changed: dict[int, StoredStatus] = {}
        reported: dict[int, dict[str, Any]] = {}
        now_ms = int(time.time() * 1000)
        for s in statuses:
            current = stored.get(s.gateway_id)
            if current is None or not status_applies(current, s.state, s.ts_ms, s.session):
                continue
            at_ms = now_ms if s.state == "offline" and s.session is not None else s.ts_ms
            stored[s.gateway_id] = changed[s.gateway_id] = StoredStatus(s.state, s.session, at_ms, s.reason)
            if s.report is not None:
                reported[s.gateway_id] = s.report
        if changed:
            with conn.cursor() as cur:
                cur.executemany(
                    """UPDATE gateways SET status = %s, status_session = %s, status_reason = %s,
                              status_at = timestamptz 'epoch' + %s * interval '1 millisecond'
                       WHERE id = %s""",
                    [
                        (st.state, st.session, clean_text(st.reason), st.at_ms, gid)
                        for gid, st in sorted(changed.items())
                    ],
                )
                if reported:
                    cur.executemany(
                        "UPDATE gateways SET report = %s, report_at = now() WHERE id = %s",
                        [(Jsonb(r), gid) for gid, r in sorted(reported.items())],
                    )
            events: list[EventBase] = [
                GatewayStatusEvent(gateway_id=gid, status=st.state) for gid, st in sorted(changed.items())
            ]
            for gid, report in sorted(reported.items()):
                outcome = config_outcome(report)
                if outcome is not None and outcome != config_outcome(reports.get(gid)):
                    events.append(GatewayConfigEvent(gateway_id=gid, version=outcome[0], outcome=outcome[1]))
            publish_all(conn, events)

    def watched_gateways(self, site: str = "+") -> list[WatchedGateway]:
        """Gateways online, or offline for a stopped heartbeat, at ``site`` (``+``: every site)."""
        rows = (
            self.connection()
            .execute(
                """SELECT g.id, s.slug, g.slug, g.status, g.status_session,
                          (extract(epoch FROM g.status_at) * 1000)::int8, g.status_reason
                   FROM gateways g JOIN sites s ON s.id = g.site_id
                   WHERE (g.status = 'online' OR (g.status = 'offline' AND g.status_reason = %s))
                     AND (%s = '+' OR s.slug = %s)""",
                (NO_HEARTBEAT, site, site),
            )
            .fetchall()
        )
        return [WatchedGateway(r[0], r[1], r[2], StoredStatus(r[3], r[4], r[5], r[6])) for r in rows]

    def set_liveness(
        self, gateway_id: int, seen: StoredStatus, state: str, at_ms: int, reason: str, session: int | None
    ) -> bool:
        """Set a heartbeat verdict, only if the gateway's status is still ``seen`` (no birth or death came between)."""
        conn = self.connection()
        with conn.transaction():
            cur = conn.execute(
                """UPDATE gateways SET status = %s, status_reason = %s, status_session = %s,
                          status_at = timestamptz 'epoch' + %s * interval '1 millisecond'
                   WHERE id = %s AND status = %s AND status_session IS NOT DISTINCT FROM %s AND status_reason = %s""",
                (state, reason, session, at_ms, gateway_id, seen.state, seen.session, seen.reason),
            )
            if cur.rowcount == 1:
                publish(conn, GatewayStatusEvent(gateway_id=gateway_id, status=state))
        return cur.rowcount == 1

    def set_buffers(self, buffers: Sequence[tuple[int, int, float]]) -> None:
        """Store (gateway id, disk buffer depth, oldest unacked age in s) from gateways' health messages."""
        if not buffers:
            return
        conn = self.connection()
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                """UPDATE gateways SET buffer_depth = %s, buffer_oldest_age_s = %s, health_at = now()
                   WHERE id = %s""",
                [(depth, age, gid) for gid, depth, age in buffers],
            )
            ids = sorted({gid for gid, _, _ in buffers})
            for i in range(0, len(ids), 500):  # a NOTIFY payload stays under 8000 bytes
                publish(conn, GatewayBufferEvent(gateway_ids=ids[i : i + 500]))

    def _copy_direct(self, conn: psycopg.Connection, data: bytes) -> bool:
        """COPY ``data`` straight into ``telemetry``; False (and nothing written) if a row is already there.

        The common case, new data, costs one COPY instead of COPY + INSERT … SELECT
        (half the database work: docs/ingest.md, "Storage"). A redelivered or repeated point makes
        the unique key refuse the COPY; the savepoint undoes it and the caller takes
        the staging path, which skips duplicates row by row.
        """
        try:
            sql = "COPY telemetry (series_id, time, value, quality) FROM STDIN (FORMAT BINARY)"
            with conn.transaction(), conn.cursor() as cur, cur.copy(sql) as cp:
                cp.write(data)
        except UniqueViolation:
            self.direct_fallbacks += 1
            return False
        return True

    @staticmethod
    def _copy_staged(
        conn: psycopg.Connection, batches: list[BatchWrite], ids: dict[tuple[int, str], int], want_points: bool
    ) -> tuple[int, list[CommittedPoint], list[Clash]]:
        """COPY into the staging table, then insert what is not stored yet; returns (inserted, committed, clashes).

        Rows are inserted in arrival order (``ord``), so of two points with the same series and time
        in one write the first is stored. When some rows were not inserted, one more query finds
        those whose stored reading differs (value or quality): a conflicting point, not a redelivery.
        """
        with conn.cursor() as cur:
            with cur.copy("COPY fw_stage (series_id, ms, value, quality, ord) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "int8", "float8", "int2", "int4"])
                i = 0
                for b in batches:
                    for did, _dev, tag, ts, value, q in b.accepted:
                        copy.write_row((ids[(did, tag)], ts, value, q, i))
                        i += 1
            insert = """INSERT INTO telemetry (series_id, time, value, quality)
                        SELECT series_id, timestamptz 'epoch' + ms * interval '1 millisecond', value, quality
                        FROM fw_stage ORDER BY ord ON CONFLICT (series_id, time) DO NOTHING"""
            new: set[tuple[int, int]] = set()
            if want_points:
                cur.execute(insert + " RETURNING series_id, (extract(epoch FROM time) * 1000)::int8")
                new = set(cur.fetchall())
                inserted = len(new)
            else:
                cur.execute(insert)
                inserted = cur.rowcount
            clashes: list[Clash] = []
            if inserted < i:
                cur.execute(
                    """SELECT s.ord, t.value, t.quality FROM fw_stage s
                       JOIN telemetry t ON t.series_id = s.series_id
                                       AND t.time = timestamptz 'epoch' + s.ms * interval '1 millisecond'
                       WHERE t.value <> s.value OR t.quality <> s.quality"""
                )
                clashes = cur.fetchall()
        if not want_points:
            return inserted, [], clashes
        out = []
        for b in batches:
            for r in b.accepted:
                key = (ids[(r[0], r[2])], r[3])
                if key in new:
                    new.discard(key)  # a point repeated inside the batch was stored once
                    out.append(TelemetryWriter._point(key[0], r, b))
        return len(out), out, clashes

    @staticmethod
    def _point(series_id: int, r: Row, b: BatchWrite) -> CommittedPoint:
        return CommittedPoint(
            series_id=series_id,
            device_id=r[0],
            device_key=r[1],
            gateway_id=b.gateway_id,
            tag=r[2],
            ts_ms=r[3],
            value=r[4],
            quality=r[5],
            historical=b.historical,
        )

    @staticmethod
    def _advance_sequences(conn: psycopg.Connection, batches: list[BatchWrite], result: WriteResult) -> None:
        """Move ``last_seq`` and the missing sequence ranges of the batches' gateways (ingest/sequences.py).

        The gateway rows are locked first, in id order, so two workers committing the same
        gateway's batches serialise here without deadlocks; ``gateway_seq_missing`` is only
        written under that lock. A deadlock or serialization failure elsewhere in the
        transaction rolls all of this back and the caller retries the whole batch.
        """
        seqs: dict[int, set[int]] = defaultdict(set)
        slugs: dict[int, str] = {}
        for b in batches:
            if b.seq is not None:
                seqs[b.gateway_id].add(b.seq)
                slugs[b.gateway_id] = b.gateway
        if not seqs:
            return
        rows = conn.execute(
            "SELECT id, last_seq FROM gateways WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (sorted(seqs),)
        ).fetchall()
        late = [(gid, q) for gid, last in rows if last is not None for q in seqs[gid] if q <= last]
        missing: dict[int, list[SeqRange]] = defaultdict(list)
        if late:
            # Per late sequence, the one range that could hold it: the last starting at or before it.
            for gid, lo, hi in conn.execute(
                """SELECT DISTINCT m.gateway_id, m.seq_from, m.seq_to
                   FROM unnest(%s::int[], %s::int8[]) AS l(gid, seq)
                   CROSS JOIN LATERAL (SELECT * FROM gateway_seq_missing m
                                       WHERE m.gateway_id = l.gid AND m.seq_from <= l.seq
                                       ORDER BY m.seq_from DESC LIMIT 1) AS m
                   WHERE m.seq_to >= l.seq""",
                ([g for g, _ in late], [q for _, q in late]),
            ):
                missing[gid].append((lo, hi))
        removed, added, updates = [], [], []
        for gid, last in rows:
            adv = advance(last, missing[gid], seqs[gid])
            removed += [(gid, r[0]) for r in adv.removed]
            added += [(gid, r[0], r[1]) for r in adv.added]
            if adv.last_seq != last or adv.changed:
                updates.append((gid, adv.last_seq, adv.skipped, adv.filled))
            result.gaps += adv.skipped
            result.filled += adv.filled
        with conn.cursor() as cur:
            if removed:
                cur.executemany("DELETE FROM gateway_seq_missing WHERE gateway_id = %s AND seq_from = %s", removed)
            if added:
                cur.executemany(
                    "INSERT INTO gateway_seq_missing (gateway_id, seq_from, seq_to) VALUES (%s, %s, %s)", added
                )
        if updates:
            cols = [list(c) for c in zip(*updates, strict=True)]
            for gid, gaps, stamp in conn.execute(
                """UPDATE gateways g SET last_seq = u.last_seq, seq_gaps = g.seq_gaps + u.skipped - u.filled,
                          seq_skipped_total = g.seq_skipped_total + u.skipped,
                          seq_filled_total = g.seq_filled_total + u.filled
                   FROM unnest(%s::int[], %s::int8[], %s::int8[], %s::int8[]) AS u(id, last_seq, skipped, filled)
                   WHERE g.id = u.id
                   RETURNING g.id, g.seq_gaps, g.seq_skipped_total + g.seq_filled_total""",
                cols,
            ):
                result.missing[slugs[gid]] = (stamp, gaps)
