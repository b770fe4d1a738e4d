"""Keeping the 1 min / 1 h rollups exact after writes outside the live window, on both storages.

Rollups are refreshed for the recent past by themselves: the scheduler's ``fw_refresh_rollups``
with rollup tables, TimescaleDB's refresh policies with continuous aggregates (last 3 days for
1 min, 7 days for 1 h). Anything written older than that window — history imports, dead-letter
replays, the held data of a device accepted later, late points — is only seen because its hours
are *flagged*:

1. :func:`flag_written` / :func:`flag_hours` (called by :class:`ingest.writer.TelemetryWriter` for every row older than
   :data:`LATE_FLAG_MS`; call it yourself if you write ``telemetry`` another way) records the hours in
   ``telemetry_rollup_dirty`` **in the writing transaction**. From the commit on, the buckets query
   reads those hours from raw rows (``ingest/timeseries.py``): exact at once.
2. :func:`refresh_written` (the ``ingest.rollups`` job every minute; call it after a large write to
   materialize at once) redoes the flagged hours and clears exactly the flags it redid. With
   continuous aggregates that is ``CALL refresh_continuous_aggregate`` per merged range, which
   PostgreSQL refuses inside a transaction block: it runs on an autocommit connection of its own,
   never inside the caller's transaction.

A flag is cleared only if nobody flagged the hour again while it was being refreshed (``gen``,
migration 0011), so rows committed during a refresh are never left unflagged. ``docs/ingest.md``
"Rollups" tells the whole story.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

import psycopg

log = logging.getLogger(__name__)

#: Rows older than this at write time flag their hour (must stay below :data:`ROLLUP_LAG_S`).
LATE_FLAG_MS = 5 * 60_000
#: How far behind now the rollups are trusted: readers take younger buckets from raw rows, the table
#: job re-aggregates from this far before its previous run, and flagged hours are refreshed once they
#: ended at least this long ago. Must exceed LATE_FLAG_MS plus clock skew between hosts.
ROLLUP_LAG_S = 600
_MS_PER_HOUR = 3_600_000
_HOUR = timedelta(hours=1)
#: Same key as fw_refresh_rollups() (migration 0004): one refresh at a time, whoever starts it.
_REFRESH = (
    "CALL refresh_continuous_aggregate('telemetry_1m', %s::timestamptz, %s::timestamptz)",
    "CALL refresh_continuous_aggregate('telemetry_1h', %s::timestamptz, %s::timestamptz)",
)
_LOCK = "SELECT pg_advisory_lock(hashtext('fw_refresh_rollups'))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtext('fw_refresh_rollups'))"


def late_hours(times_ms: Iterable[int], now_ms: int) -> list[int]:
    """Sorted epoch hour numbers of the times older than :data:`LATE_FLAG_MS` before ``now_ms`` (pure)."""
    cutoff = now_ms - LATE_FLAG_MS
    return sorted({t // _MS_PER_HOUR for t in times_ms if t < cutoff})


def hour_ranges(hours: Iterable[datetime]) -> list[tuple[datetime, datetime]]:
    """Flagged hour starts merged into ``[start, end)`` ranges of consecutive hours, oldest first (pure).

    One ``refresh_continuous_aggregate`` per range instead of per hour: a year of imported history
    is one call, not 8,760.
    """
    out: list[tuple[datetime, datetime]] = []
    for h in sorted(set(hours)):
        if out and out[-1][1] == h:
            out[-1] = (out[-1][0], h + _HOUR)
        else:
            out.append((h, h + _HOUR))
    return out


def flag_written(conn: psycopg.Connection, times_ms: Iterable[int], now_ms: int) -> int:
    """Flag the hours of rows older than :data:`LATE_FLAG_MS` written in ``conn``'s open transaction.

    Call it inside the transaction that writes the rows (the writer does, last, after its row
    locks: hours are locked in order, so writers never deadlock on them). A no-op on a database
    without rollups. Returns the number of hours flagged.
    """
    return flag_hours(conn, late_hours(times_ms, now_ms))


def flag_hours(conn: psycopg.Connection, hours: Iterable[int]) -> int:
    """Flag epoch hour numbers for the next refresh, in ``conn``'s open transaction (both storages).

    For writers that know the hours already (held points stored on accept, a replay); the flag's
    generation moves on, so a refresh running meanwhile never clears a flag set after it read it.
    """
    ordered = sorted(set(hours))
    if ordered:
        conn.execute(
            """INSERT INTO telemetry_rollup_dirty AS d (hour)
               SELECT timestamptz 'epoch' + h * interval '1 hour' FROM unnest(%s::int8[]) AS h ORDER BY 1
               ON CONFLICT (hour) DO UPDATE SET gen = d.gen + 1""",
            (ordered,),
        )
    return len(ordered)


def rollup_mode(conn: psycopg.Connection) -> str | None:
    """``tables``, ``continuous`` or None (no rollups: a database from before migration 0004)."""
    row = conn.execute("SELECT value FROM fw_meta WHERE key = 'rollups'").fetchone()
    return row[0] if row else None


def refresh_written(db_url: str, lag_s: int = ROLLUP_LAG_S) -> int:
    """Redo the rollups of flagged hours (and, with tables, the recent window) and clear their flags.

    Opens its own autocommit connection: never call it inside a transaction that wrote the rows
    (they would not be visible yet, and continuous aggregates cannot refresh there). Returns the
    number of 1-minute rows written (tables) or of hours refreshed (continuous aggregates).
    """
    with psycopg.connect(db_url, autocommit=True) as conn:
        mode = rollup_mode(conn)
        if mode == "tables":
            row = conn.execute("SELECT fw_refresh_rollups(make_interval(secs => %s))", (lag_s,)).fetchone()
            return int(row[0]) if row else 0
        if mode != "continuous":
            return 0
        return _refresh_continuous(conn, lag_s)


def _refresh_continuous(conn: psycopg.Connection, lag_s: int) -> int:
    conn.execute(_LOCK)
    try:
        # Only hours that ended a lag ago: younger ones are still inside the policies' reach and
        # readers take them raw anyway; they are refreshed on a later run.
        flags = conn.execute(
            """SELECT hour, gen FROM telemetry_rollup_dirty
               WHERE hour + interval '1 hour' <= now() - make_interval(secs => %s) ORDER BY hour""",
            (lag_s,),
        ).fetchall()
        done = 0
        gens: dict[datetime, int] = dict(flags)
        for lo, hi in hour_ranges(gens):
            for refresh in _REFRESH:
                conn.execute(refresh, (lo, hi))
            hours = [h for h in gens if lo <= h < hi]
            conn.execute(
                """DELETE FROM telemetry_rollup_dirty d USING unnest(%s::timestamptz[], %s::int8[]) AS x(hour, gen)
                   WHERE d.hour = x.hour AND d.gen = x.gen""",
                (hours, [gens[h] for h in hours]),
            )
            done += len(hours)
        if done:
            log.info("rollups: refreshed %d flagged hour(s) of continuous aggregates", done)
        return done
    finally:
        conn.execute(_UNLOCK)
