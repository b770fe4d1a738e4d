"""Dead letters for the people who fix their causes: list (filtered, paged), show one, replay, purge.

Every refusal of ingest is a row of ``dead_letters`` (:mod:`ingest.letters`). Once the cause is
fixed — the device registered, the gateway's clock set — a **replay** puts each selected row
through the live path again: decode, validate against the registry as it is now, hold the points
of devices still unknown, store the rest through the same writer (``ON CONFLICT DO NOTHING``, so a
replay stores nothing twice), in one transaction per chunk of rows. A row whose points were all
stored (or held) is deleted; a row that still fails stays — the same row, updated with the new
reason and only the points that still fail, ``replays`` + 1. Replays do not touch the gateways'
sequence bookkeeping (the batch was counted when it first arrived).

Not replayable, and left as they are: rows whose topic is not a gateway's telemetry (a gateway's
status is republished by the gateway itself; ``history/…`` rows are lines of a CSV file: fix the
file and import it again).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row

from fwcore.contract import Batch, ContractError, decode_batch, parse_topic
from fwcore.errors import Invalid, NotFound
from fwcore.paging import Page, Row, fetch_page, where
from ingest.hold import HoldLimits, HoldWrite, holds_of
from ingest.letters import DeadLetter
from ingest.registry import RegistryCache
from ingest.validate import Limits, Verdict, validate_batch
from ingest.writer import BatchWrite, TelemetryWriter, rejection_dead_letters, rows_of

#: Dead letters replayed per transaction.
REPLAY_CHUNK = 200


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters: every given field must match (None: any). Times are ``received_at``, [since, until)."""

    reason: str | None = None
    gateway: str | None = None
    site: str | None = None
    device: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    id: int | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in dataclasses.fields(self))

    def sql(self) -> tuple[list[LiteralString], dict[str, Any]]:
        """The conditions (on ``dead_letters``, alias-free) and their parameters."""
        known: dict[str, LiteralString] = {
            "reason": "reason = %(reason)s",
            "gateway": "gateway = %(gateway)s",
            "site": "site = %(site)s",
            "device": "devices @> ARRAY[%(device)s]::text[]",
            "since": "received_at >= %(since)s",
            "until": "received_at < %(until)s",
            "id": "id = %(id)s",
        }
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        return [known[k] for k in given], given


@dataclass(frozen=True, slots=True)
class DeadLetterSummary:
    """A dead letter as listed (the payload's size, not the payload)."""

    id: int
    received_at: datetime
    topic: str
    site: str | None
    gateway: str | None
    reason: str
    detail: str
    devices: list[str]
    points: int
    replays: int
    replayed_at: datetime | None
    payload_bytes: int


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One dead letter with its payload."""

    id: int
    received_at: datetime
    topic: str
    site: str | None
    gateway: str | None
    reason: str
    detail: str
    devices: list[str]
    points: int
    replays: int
    replayed_at: datetime | None
    payload_bytes: int
    payload: bytes

    @property
    def payload_text(self) -> str | None:
        """The payload as text when it is UTF-8 (JSON telemetry, CSV lines), else None."""
        try:
            return self.payload.decode("utf-8")
        except UnicodeDecodeError:
            return None


_COLUMNS: LiteralString = """SELECT id, received_at, topic, site, gateway, reason, detail, devices, points, replays,
                                    replayed_at, length(payload) AS payload_bytes"""


def list_dead_letters(
    conn: psycopg.Connection, f: DeadLetterFilter | None = None, *, limit: int | None = None, offset: int = 0
) -> Page[DeadLetterSummary]:
    """Dead letters matching ``f``, newest first."""
    conditions, params = (f or DeadLetterFilter()).sql()

    def record(r: Row) -> DeadLetterSummary:
        return DeadLetterSummary(**r)

    select = _COLUMNS + " FROM dead_letters"
    return fetch_page(conn, select, "dead_letters", conditions, "id DESC", params, record, limit=limit, offset=offset)


def get_dead_letter(conn: psycopg.Connection, letter_id: int) -> DeadLetterRecord:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_COLUMNS + ", payload FROM dead_letters WHERE id = %s", (letter_id,)).fetchone()
    if row is None:
        raise NotFound("dead letter", letter_id)
    return DeadLetterRecord(**row)


def purge(conn: psycopg.Connection, f: DeadLetterFilter, *, everything: bool = False) -> int:
    """Delete the dead letters matching ``f``; returns how many. An empty filter needs ``everything``."""
    if f.is_empty() and not everything:
        raise Invalid(
            "purging needs a filter (reason, gateway, site, device, time); to delete every dead letter say so "
            "explicitly (all=true, --all)",
            loc=("query",),
        )
    conditions, params = f.sql()
    return conn.execute("DELETE FROM dead_letters" + where(conditions), params).rowcount


@dataclass(frozen=True, slots=True)
class ReasonCount:
    reason: str
    letters: int
    points: int


def counts_by_reason(conn: psycopg.Connection) -> list[ReasonCount]:
    """Dead letters stored now, and the points they keep, per reason."""
    rows = conn.execute(
        "SELECT reason, count(*), coalesce(sum(points), 0)::int8 FROM dead_letters GROUP BY reason ORDER BY reason"
    ).fetchall()
    return [ReasonCount(r, int(n), int(p)) for r, n, p in rows]


@dataclass(slots=True)
class ReplayReport:
    """What a replay did."""

    replayed: int = 0  # dead letters put through the live path
    resolved: int = 0  # of those, all points stored or held: deleted
    stored: int = 0  # points newly stored
    duplicates: int = 0  # points that were stored already
    held: int = 0  # points held for devices still not registered
    not_replayable: int = 0  # rows left as they are (not a gateway's telemetry)
    #: Dead letters left (or written) by the replay, per reason: what still fails.
    still_failing: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Chunk:
    batches: list[BatchWrite] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    holds: list[HoldWrite] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)


def _verdict(
    conn: psycopg.Connection, registry: RegistryCache, batch: Batch, site: str, gateway: str, limits: Limits
) -> Verdict:
    now_ms = int(time.time() * 1000)

    def check() -> Verdict:
        return validate_batch(batch, site=site, gateway=gateway, registry=registry, now_ms=now_ms, limits=limits)

    v = check()
    if v.missing_gateway and registry.lookup(conn, [v.missing_gateway]):
        v = check()
    if v.missing_devices and registry.lookup(conn, (), v.missing_devices):
        v = check()
    return v


def _replay_one(
    conn: psycopg.Connection,
    registry: RegistryCache,
    row: Row,
    chunk: _Chunk,
    report: ReplayReport,
    limits: Limits,
    hold: HoldLimits,
) -> None:
    letter_id, topic_name, payload = row["id"], row["topic"], bytes(row["payload"])
    try:
        site, gateway, kind = parse_topic(topic_name)
    except ContractError:
        kind = ""
    if kind != "telemetry":
        report.not_replayable += 1
        return
    report.replayed += 1
    try:
        batch = decode_batch(payload)
    except ContractError as exc:
        chunk.letters.append(DeadLetter(topic_name, payload, exc.reason, exc.detail, replaces=letter_id))
        return
    v = _verdict(conn, registry, batch, site, gateway, limits)
    rejections = v.rejections
    if v.gateway_id is not None:
        if hold.enabled:
            holds, rejections = holds_of(
                rejections,
                topic=topic_name,
                site=site,
                gateway=gateway,
                gateway_id=v.gateway_id,
                seq=batch.seq,
                historical=batch.historical,
                sent_at=batch.sent_at,
                now_ms=int(time.time() * 1000),
                limits=limits,
            )
            chunk.holds += holds
        chunk.batches.append(BatchWrite(site, gateway, v.gateway_id, None, batch.historical, rows_of(v.accepted)))
    letters = rejection_dead_letters(topic_name, payload, batch, rejections)
    if letters:
        chunk.letters.append(dataclasses.replace(letters[0], replaces=letter_id))
        chunk.letters += letters[1:]
    else:
        chunk.resolved.append(letter_id)


def replay(
    db_url: str,
    f: DeadLetterFilter | None = None,
    *,
    limits: Limits | None = None,
    hold: HoldLimits | None = None,
    chunk_size: int = REPLAY_CHUNK,
) -> ReplayReport:
    """Put the dead letters matching ``f`` through validation and storage again (see the module docstring).

    ``limits``/``hold`` default to the settings. Raises ``ingest.errors.DatabaseUnavailable`` when
    the database goes away (what was committed by then stays done; run it again for the rest).
    """
    if limits is None or hold is None:
        from fwcore.settings import load_settings

        s = load_settings(database_url=db_url)
        limits = limits or Limits.from_settings(s)
        hold = hold or HoldLimits.from_settings(s)
    report = ReplayReport()
    failing: Counter[str] = Counter()
    writer = TelemetryWriter(db_url, hold=hold)
    registry = RegistryCache(retry_s=0.0)
    conditions, params = (f or DeadLetterFilter()).sql()
    try:
        conn = writer.connection()
        top = conn.execute("SELECT max(id) FROM dead_letters").fetchone()
        last, newest = 0, (top[0] if top and top[0] is not None else 0)  # rows a replay writes are not replayed
        while True:
            with conn.cursor(row_factory=dict_row) as cur:
                rows = cur.execute(
                    "SELECT id, topic, payload FROM dead_letters"
                    + where([*conditions, "id > %(after)s", "id <= %(newest)s"])
                    + " ORDER BY id LIMIT %(chunk)s",
                    {**params, "after": last, "newest": newest, "chunk": chunk_size},
                ).fetchall()
            if not rows:
                break
            last = rows[-1]["id"]
            chunk = _Chunk()
            for row in rows:
                _replay_one(conn, registry, row, chunk, report, limits, hold)
            result = writer.write(chunk.batches, chunk.letters, holds=chunk.holds, resolved=chunk.resolved)
            report.resolved += result.resolved
            report.stored += result.inserted
            report.duplicates += result.duplicates
            report.held += result.held
            failing.update(result.dead_letters)
    finally:
        writer.close()
    report.still_failing = dict(failing)
    return report
