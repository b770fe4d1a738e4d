"""Store-and-forward: every telemetry batch is on disk before it is published.

The buffer is one SQLite database in WAL mode (stdlib ``sqlite3``) at
``{state_dir}/buffer-{site}-{gateway}.sqlite`` with one row per batch::

    batches(seq INTEGER PRIMARY KEY, created_ms, points, size, payload BLOB)

A row is deleted only when ingest acknowledges its ``seq`` on the ack topic
(``fwcore.contract.decode_ack``), never on MQTT PUBACK: the broker having a
message is not the database having it.

Durability (the fsync policy):

``sync="full"`` (default)
    ``PRAGMA synchronous=FULL``: every :meth:`DiskBuffer.put_many` commit fsyncs
    the WAL before returning, so a batch that was published survives a power
    cut. The gateway commits once per publish interval (all batches of a tick in
    one transaction), i.e. about one fsync per second.
``sync="normal"``
    ``PRAGMA synchronous=NORMAL``: commits survive a crash or SIGKILL of the
    process but the last transactions before a power cut may be lost (the file
    is never corrupted). For SD cards that wear out or fsync slowly.

Bounds and the drop policy: the buffer never holds more than ``max_bytes`` of
payload nor batches older than ``max_age`` seconds. When a bound is hit the
**oldest** batches are deleted (the newest data is the most useful to an
operator); every drop is counted in :attr:`DiskBuffer.dropped_batches` /
``dropped_points`` (by reason) and logged at WARNING. Nothing leaves silently.
"""

from __future__ import annotations

import builtins
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gateway.errors import DiskBufferError

log = logging.getLogger(__name__)

SyncMode = Literal["full", "normal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq        INTEGER PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    points     INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    payload    BLOB    NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class Buffered:
    """One batch as stored: ``payload`` is the live (non-historical) wire form."""

    seq: int
    created_ms: int
    points: int
    payload: bytes


@dataclass(slots=True)
class DropCounts:
    """Batches and points deleted unacknowledged, by reason (``max_bytes``, ``max_age``)."""

    batches: dict[str, int] = field(default_factory=dict)
    points: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, batches: int, points: int) -> None:
        self.batches[reason] = self.batches.get(reason, 0) + batches
        self.points[reason] = self.points.get(reason, 0) + points


class DiskBuffer:
    """Unacknowledged batches on disk, oldest first, bounded by bytes and age.

    Used from one thread (the gateway's event loop). Lifecycle: construct (opens
    or creates the file), use, :meth:`close` (safe twice).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        max_age: float = 7 * 24 * 3600.0,
        sync: SyncMode = "full",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes < 1 or max_age <= 0:
            raise ValueError("max_bytes and max_age must be positive")
        if sync not in ("full", "normal"):
            raise ValueError(f"sync must be 'full' or 'normal', not {sync!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.sync = sync
        self.drops = DropCounts()
        self._clock = clock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db: sqlite3.Connection | None = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={sync.upper()}")
            self._db.execute(_SCHEMA)
            row = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM batches").fetchone()
        except (sqlite3.Error, OSError) as exc:
            raise DiskBufferError(
                f"cannot open the disk buffer {str(self.path)!r}: {exc}; check the state_dir is writable, "
                "or move the file aside (its unacknowledged batches are then lost)"
            ) from exc
        self._count, self._bytes = int(row[0]), int(row[1])

    # --- properties ------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Batches held (unacknowledged)."""
        return self._count

    @property
    def bytes(self) -> int:
        """Payload bytes held."""
        return self._bytes

    @property
    def dropped_batches(self) -> int:
        return sum(self.drops.batches.values())

    @property
    def dropped_points(self) -> int:
        return sum(self.drops.points.values())

    @property
    def closed(self) -> bool:
        return self._db is None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise DiskBufferError(f"the disk buffer {str(self.path)!r} is closed")
        return self._db

    # --- writes ----------------------------------------------------------------------
    def put_many(self, batches: Iterable[tuple[int, int, builtins.bytes]]) -> list[int]:  # .bytes: the property
        """Store ``(seq, points, payload)`` rows in one transaction (one fsync).

        Returns the seqs dropped to stay under ``max_bytes`` (possibly including new ones).
        """
        now = int(self._clock() * 1000)
        rows = [(seq, now, points, len(payload), payload) for seq, points, payload in batches]
        if not rows:
            return []
        db = self._conn()
        try:
            with _transaction(db):
                db.executemany("INSERT INTO batches VALUES (?, ?, ?, ?, ?)", rows)
                self._count += len(rows)
                self._bytes += sum(r[3] for r in rows)
                dropped = self._trim_bytes(db) if self._bytes > self.max_bytes else []
        except sqlite3.Error as exc:
            self._reload_totals()
            raise DiskBufferError(f"cannot write to the disk buffer {str(self.path)!r}: {exc}") from exc
        return dropped

    def _trim_bytes(self, db: sqlite3.Connection) -> list[int]:
        """Delete oldest rows until under ``max_bytes`` (inside the caller's transaction)."""
        excess = self._bytes - self.max_bytes
        seqs: list[int] = []
        points = freed = 0
        for seq, n, size in db.execute("SELECT seq, points, size FROM batches ORDER BY seq"):
            if freed >= excess:
                break
            seqs.append(seq)
            points += n
            freed += size
        self._delete(db, seqs)
        self._count -= len(seqs)
        self._bytes -= freed
        self._record_drop("max_bytes", seqs, points)
        return seqs

    def expire(self) -> list[int]:
        """Delete batches older than ``max_age``; return their seqs (counted and logged)."""
        cutoff = int((self._clock() - self.max_age) * 1000)
        db = self._conn()
        rows = db.execute(
            "SELECT seq, points, size FROM batches WHERE created_ms < ? ORDER BY seq", (cutoff,)
        ).fetchall()
        if not rows:
            return []
        seqs = [r[0] for r in rows]
        with _transaction(db):
            self._delete(db, seqs)
        self._count -= len(rows)
        self._bytes -= sum(r[2] for r in rows)
        self._record_drop("max_age", seqs, sum(r[1] for r in rows))
        return seqs

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete acknowledged batches; return how many were held."""
        wanted = list(seqs)
        if not wanted:
            return 0
        db = self._conn()
        held = [
            (s, size)
            for chunk in _chunks(wanted, 500)
            for s, size in db.execute(
                f"SELECT seq, size FROM batches WHERE seq IN ({','.join('?' * len(chunk))})", chunk
            )
        ]
        if not held:
            return 0
        with _transaction(db):
            self._delete(db, [s for s, _ in held])
        self._count -= len(held)
        self._bytes -= sum(size for _, size in held)
        return len(held)

    @staticmethod
    def _delete(db: sqlite3.Connection, seqs: list[int]) -> None:
        for chunk in _chunks(seqs, 500):
            db.execute(f"DELETE FROM batches WHERE seq IN ({','.join('?' * len(chunk))})", chunk)

    def _record_drop(self, reason: str, seqs: list[int], points: int) -> None:
        if not seqs:
            return
        self.drops.add(reason, len(seqs), points)
        log.warning(
            "disk buffer over %s: dropped %d unacknowledged batches (seq %d..%d, %d points); "
            "%d batches dropped since start",
            reason,
            len(seqs),
            seqs[0],
            seqs[-1],
            points,
            self.dropped_batches,
        )

    def _reload_totals(self) -> None:
        row = self._conn().execute("SELECT count(*), coalesce(sum(size), 0) FROM batches").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])

    # --- reads -----------------------------------------------------------------------
    def get(self, seq: int) -> Buffered | None:
        """The stored batch ``seq``, or ``None`` if it was acked or dropped."""
        row = (
            self._conn()
            .execute("SELECT seq, created_ms, points, payload FROM batches WHERE seq = ?", (seq,))
            .fetchone()
        )
        return Buffered(row[0], row[1], row[2], bytes(row[3])) if row else None

    def seqs(self) -> list[int]:
        """Every held seq, oldest first."""
        return [r[0] for r in self._conn().execute("SELECT seq FROM batches ORDER BY seq")]

    def max_seq(self) -> int:
        """Highest seq ever held and not yet deleted (0 when empty)."""
        return int(self._conn().execute("SELECT coalesce(max(seq), 0) FROM batches").fetchone()[0])

    def oldest_created_ms(self) -> int | None:
        """When the oldest held batch was stored (epoch ms), or ``None`` when empty."""
        row = self._conn().execute("SELECT min(created_ms) FROM batches").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def close(self) -> None:
        """Checkpoint and close the file. Safe twice."""
        db, self._db = self._db, None
        if db is not None:
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:  # pragma: no cover - the data is in the WAL anyway
                log.warning("disk buffer checkpoint failed: %s", exc)
            db.close()


class _transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK``) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _chunks(items: list[int], n: int) -> Iterator[list[int]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
