"""Writes validated telemetry, dead letters, sequence bookkeeping and gateway status.

One call to :meth:`TelemetryWriter.write` is one transaction: points, the
dead-letter rows for whatever was refused, ``gateways.last_seq``/``seq_gaps``
and status updates commit together or not at all, so a message is either fully
accounted for (and may be acked) or not at all (and will be redelivered).

Points go through a binary ``COPY`` into a temporary staging table, then
``INSERT … ON CONFLICT (series_id, time) DO NOTHING``: a redelivered point is a
no-op. Series ids are created on first sight and cached; the cache only learns
ids after the transaction that created them committed. Telemetry partitions for
new UTC days are ensured in a short transaction of their own first (it is
idempotent DDL, and a no-op function on TimescaleDB).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg

from fieldwatch.contract import Batch, encode_batch
from ingest.errors import DatabaseUnavailable, NotMigrated
from ingest.points import CommittedPoint
from ingest.validate import AcceptedPoint, Rejection, count_gaps, day_of

log = logging.getLogger(__name__)

_EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message (or some of its points) kept with the reason it was refused."""

    topic: str
    payload: bytes
    reason: str
    detail: str = ""


@dataclass(slots=True)
class BatchWrite:
    """A telemetry message from a known gateway whose accepted points are to be stored."""

    site: str
    gateway: str  # slug
    gateway_id: int
    seq: int
    historical: bool
    accepted: list[AcceptedPoint]


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """A birth/death message for a known gateway."""

    gateway_id: int
    state: str
    ts_ms: int


@dataclass(slots=True)
class WriteResult:
    """What one committed transaction did."""

    inserted: int = 0
    duplicates: int = 0
    gaps: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    #: Newly stored points, filled only when asked for (it costs a RETURNING).
    committed: list[CommittedPoint] = field(default_factory=list)


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
            out.append(DeadLetter(topic, payload, r.reason, r.detail))
        else:
            part = Batch(
                gateway=batch.gateway,
                site=batch.site,
                seq=batch.seq,
                points=list(r.points),
                sent_at=batch.sent_at,
                historical=batch.historical,
            )
            out.append(DeadLetter(topic, encode_batch(part), r.reason, r.detail))
    return out


def _clean(text: str) -> str:
    return text.replace("\x00", "\\0")


class TelemetryWriter:
    """Owns one PostgreSQL connection (autocommit; explicit transactions) and the id caches."""

    def __init__(self, db_url: str, *, connect_timeout: int = 5) -> None:
        self._db_url = db_url
        self._connect_timeout = connect_timeout
        self._conn: psycopg.Connection | None = None
        self._series: dict[tuple[int, str], int] = {}
        self._days: set[int] = set()

    def connection(self) -> psycopg.Connection:
        """The live connection, (re)connecting if needed; raises :class:`DatabaseUnavailable`."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = psycopg.connect(self._db_url, autocommit=True, connect_timeout=self._connect_timeout)
            if conn.execute("SELECT to_regclass('telemetry')").fetchone()[0] is None:  # type: ignore[index]
                conn.close()
                raise NotMigrated(f"database {self._db_url!r} has no telemetry table; run `fieldwatch db migrate`")
            conn.execute(
                """CREATE TEMP TABLE IF NOT EXISTS fw_stage
                   (series_id int4, ms int8, value float8, quality int2) ON COMMIT DELETE ROWS"""
            )
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
    ) -> WriteResult:
        """Store everything in one transaction. Raises :class:`DatabaseUnavailable` when the server is gone;
        other ``psycopg.Error`` subclasses mean the data itself was refused (the caller isolates it)."""
        conn = self.connection()
        try:
            self._ensure_days(conn, batches)
            created: dict[tuple[int, str], int] = {}
            with conn.transaction():
                result = self._write(conn, batches, dead_letters, statuses, created, want_points)
        except psycopg.OperationalError as exc:
            self.close()
            raise DatabaseUnavailable(f"database write failed: {exc}") from exc
        self._series.update(created)
        return result

    def _ensure_days(self, conn: psycopg.Connection, batches: list[BatchWrite]) -> None:
        days = {day_of(ap.point.ts) for b in batches for ap in b.accepted} - self._days
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
    ) -> WriteResult:
        result = WriteResult()
        total = sum(len(b.accepted) for b in batches)
        if total:
            ids = self._series_ids(conn, {(ap.device_id, ap.point.tag) for b in batches for ap in b.accepted}, created)
            with conn.cursor() as cur:
                with cur.copy("COPY fw_stage (series_id, ms, value, quality) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["int4", "int8", "float8", "int2"])
                    for b in batches:
                        for ap in b.accepted:
                            p = ap.point
                            copy.write_row((ids[(ap.device_id, p.tag)], p.ts, p.value, p.quality))
                insert = """INSERT INTO telemetry (series_id, time, value, quality)
                            SELECT series_id, timestamptz 'epoch' + ms * interval '1 millisecond', value, quality
                            FROM fw_stage ON CONFLICT (series_id, time) DO NOTHING"""
                if want_points:
                    cur.execute(
                        insert + " RETURNING series_id, (extract(epoch FROM time) * 1000)::int8, value, quality"
                    )
                    result.committed = self._committed(cur.fetchall(), batches, ids)
                    result.inserted = len(result.committed)
                else:
                    cur.execute(insert)
                    result.inserted = cur.rowcount
            result.duplicates = total - result.inserted
        if dead_letters:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO dead_letters (topic, payload, reason, detail) VALUES (%s, %s, %s, %s)",
                    [(_clean(d.topic), d.payload, _clean(d.reason), _clean(d.detail)) for d in dead_letters],
                )
            result.dead_letters.update(d.reason for d in dead_letters)
        if batches:
            result.gaps = self._advance_sequences(conn, batches)
        if statuses:
            with conn.cursor() as cur:
                cur.executemany(
                    """UPDATE gateways SET status = %(state)s, status_at = t.at
                       FROM (SELECT timestamptz 'epoch' + %(ts)s * interval '1 millisecond' AS at) AS t
                       WHERE id = %(id)s AND (status_at IS NULL OR status_at <= t.at)""",
                    [{"state": s.state, "ts": s.ts_ms, "id": s.gateway_id} for s in statuses],
                )
        return result

    @staticmethod
    def _committed(
        rows: list[tuple[int, int, float, int]], batches: list[BatchWrite], ids: dict[tuple[int, str], int]
    ) -> list[CommittedPoint]:
        source: dict[tuple[int, int], tuple[AcceptedPoint, BatchWrite]] = {}
        for b in batches:
            for ap in b.accepted:
                source.setdefault((ids[(ap.device_id, ap.point.tag)], ap.point.ts), (ap, b))
        out = []
        for sid, ms, value, quality in rows:
            ap, b = source[(sid, ms)]
            out.append(
                CommittedPoint(
                    series_id=sid,
                    device_id=ap.device_id,
                    device_key=ap.point.device,
                    gateway_id=b.gateway_id,
                    tag=ap.point.tag,
                    ts_ms=ms,
                    value=value,
                    quality=quality,
                    historical=b.historical,
                )
            )
        return out

    @staticmethod
    def _advance_sequences(conn: psycopg.Connection, batches: list[BatchWrite]) -> int:
        seqs: dict[int, list[int]] = defaultdict(list)
        for b in batches:
            seqs[b.gateway_id].append(b.seq)
        # Row locks in id order: concurrent workers serialise per gateway without deadlocks.
        rows = conn.execute(
            "SELECT id, last_seq FROM gateways WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (sorted(seqs),)
        ).fetchall()
        total = 0
        updates = []
        for gid, last in rows:
            high, gaps = count_gaps(last, seqs[gid])
            if high != last or gaps:
                updates.append((high, gaps, gid))
            total += gaps
        if updates:
            with conn.cursor() as cur:
                cur.executemany("UPDATE gateways SET last_seq = %s, seq_gaps = seq_gaps + %s WHERE id = %s", updates)
        return total
