"""Import wide CSV exports from historians: a timestamp column and one column per tag.

::

    time,flow,bearing_temp          <- header: the time column, then tag names
    2026-03-01T00:00:00Z,5.1,61.2
    2026-03-01T00:01:00Z,,61.4      <- an empty cell is "no reading", not an error

:func:`parse_wide_csv` is pure (lines in, rows and bad rows out). :func:`import_history` writes the
good rows through :class:`ingest.writer.TelemetryWriter` — the same COPY + ``ON CONFLICT DO NOTHING``
path as live ingest, so importing a file twice stores every point once — and keeps every bad row in
``dead_letters`` (topic ``history/<device id>``, the original line as payload, the line number in
``detail``) in the same transaction. Nothing is dropped silently.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg

from ingest.rollups import refresh_written
from ingest.writer import BatchWrite, DeadLetter, TelemetryWriter

log = logging.getLogger(__name__)

CHUNK_ROWS = 2_000
#: A batch is also written once it holds this many points (wide files: many tags per row).
CHUNK_POINTS = 20_000
#: ... and once it holds this many bad rows (each keeps its line, up to MAX_LINE_CHARS).
CHUNK_BAD_ROWS = 100
#: Longest line accepted (characters): a "line" without end is not a CSV row, and must not fill memory.
MAX_LINE_CHARS = 1024 * 1024


class HistoryError(ValueError):
    """The file or the options cannot be used at all (not one bad row: those are reported and kept)."""


@dataclass(frozen=True, slots=True)
class CsvOptions:
    """How to read the file. ``time_format``: None (ISO 8601), ``epoch_s``, ``epoch_ms`` or a strptime format."""

    separator: str = ","
    time_column: str | None = None  # default: the first column
    time_format: str | None = None
    timezone: str = "UTC"  # for times without an offset
    decimal: str = "."


@dataclass(frozen=True, slots=True)
class GoodRow:
    line: int
    ts_ms: int
    values: dict[str, float]
    text: str


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    reason: str
    text: str


@dataclass(slots=True)
class ImportReport:
    rows: int = 0
    points: int = 0
    inserted: int = 0
    duplicates: int = 0  # already stored with the same value
    conflicts: int = 0  # already stored with another value: kept aside as conflicting_value dead letters
    tags: list[str] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)  # the first ``keep_bad`` bad rows (all are dead letters)
    bad_rows: int = 0  # every bad row


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise HistoryError(f"unknown time zone {name!r}; use an IANA name such as UTC or Europe/Berlin") from None


def _time_parser(opts: CsvOptions) -> Callable[[str], int]:
    """A function from a time cell to epoch milliseconds; raises ValueError on a bad cell."""
    zone = _zone(opts.timezone)

    def aware(t: datetime) -> int:
        if t.tzinfo is None:
            t = t.replace(tzinfo=zone)
        return round(t.timestamp() * 1000)

    if opts.time_format == "epoch_s":
        return lambda cell: round(float(cell) * 1000)
    if opts.time_format == "epoch_ms":
        return lambda cell: int(cell)
    if opts.time_format:
        fmt = opts.time_format
        return lambda cell: aware(datetime.strptime(cell, fmt))
    return lambda cell: aware(datetime.fromisoformat(cell.replace("Z", "+00:00")))


def parse_wide_csv(lines: Iterable[str], opts: CsvOptions) -> tuple[list[str], Iterator[GoodRow | BadRow]]:
    """The tag names and a stream of rows. Raises :class:`HistoryError` when the header is unusable."""
    if len(opts.separator) != 1:
        raise HistoryError(f"separator must be one character, got {opts.separator!r}")
    source = iter(lines)
    raw: list[str] = []

    def remember() -> Iterator[str]:
        for text in source:
            raw.append(text.rstrip("\r\n"))
            yield text

    reader = csv.reader(remember(), delimiter=opts.separator)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise HistoryError("the file is empty; expected a header line: time column, then one column per tag") from None
    time_col = opts.time_column or header[0]
    if time_col not in header:
        raise HistoryError(f"no time column {time_col!r}; the header has: {', '.join(header)}")
    t_index = header.index(time_col)
    tags = [h for i, h in enumerate(header) if i != t_index]
    if not tags or any(not t for t in tags):
        raise HistoryError("every column besides the time column needs a tag name in the header")
    dupes = sorted({t for t in tags if tags.count(t) > 1})
    if dupes:
        raise HistoryError(f"tag column(s) {', '.join(dupes)} appear twice in the header")
    parse_time = _time_parser(opts)

    def cells_of() -> Iterator[list[str]]:
        try:
            yield from reader
        except csv.Error as exc:  # a field beyond csv's size limit, a NUL byte …
            raise HistoryError(f"line {reader.line_num + 1} cannot be read as CSV: {exc}") from None

    def rows() -> Iterator[GoodRow | BadRow]:
        for cells in cells_of():
            line = reader.line_num
            text = "\n".join(raw)
            raw.clear()
            if not any(c.strip() for c in cells):
                continue  # a blank line
            if len(cells) != len(header):
                yield BadRow(line, f"{len(cells)} cells, the header has {len(header)}", text)
                continue
            try:
                ts = parse_time(cells[t_index].strip())
            except (ValueError, OverflowError) as exc:
                yield BadRow(line, f"bad time {cells[t_index]!r} in column {time_col!r}: {exc}", text)
                continue
            values: dict[str, float] = {}
            problem = None
            for i, cell in enumerate(cells):
                cell = cell.strip()
                if i == t_index or not cell:
                    continue
                tag = header[i]
                try:
                    v = float(cell.replace(opts.decimal, ".") if opts.decimal != "." else cell)
                except ValueError:
                    problem = f"column {tag!r}: {cell!r} is not a number"
                    break
                if not math.isfinite(v):
                    problem = f"column {tag!r}: {cell!r} is not finite"
                    break
                values[tag] = v
            yield BadRow(line, problem, text) if problem else GoodRow(line, ts, values, text)

    return tags, rows()


def resolve_device(conn: psycopg.Connection, ref: str) -> tuple[int, int | None, str]:
    """(id, gateway id, key) of a device given as its id, ``gateway-slug/key`` or a key unique in the fleet."""
    if ref.isdigit():
        rows = conn.execute("SELECT id, gateway_id, key FROM devices WHERE id = %s", (int(ref),)).fetchall()
    elif "/" in ref:
        gw, key = ref.split("/", 1)
        rows = conn.execute(
            "SELECT d.id, d.gateway_id, d.key FROM devices d JOIN gateways g ON g.id = d.gateway_id "
            "WHERE g.slug = %s AND d.key = %s",
            (gw, key),
        ).fetchall()
    else:
        rows = conn.execute("SELECT id, gateway_id, key FROM devices WHERE key = %s", (ref,)).fetchall()
    if not rows:
        raise HistoryError(f"no device {ref!r}; give its id, `gateway/key`, or a key (fieldwatch API: GET /devices)")
    if len(rows) > 1:
        raise HistoryError(f"{len(rows)} devices have key {ref!r}; give `gateway/key` or the device id")
    return rows[0]


def import_history(
    db_url: str,
    lines: Iterable[str],
    device: str,
    opts: CsvOptions = CsvOptions(),
    *,
    retention_days: int = 3650,
    max_future_s: float = 300,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    keep_bad: int | None = None,
) -> ImportReport:
    """Store a wide CSV for ``device``; returns what happened. ``progress(n)`` is told about every n rows read.

    Memory stays bounded whatever the file's size: rows are written in batches (``CHUNK_ROWS`` rows or
    ``CHUNK_POINTS`` points), bad rows go to the dead letters with their batch, and the report keeps only
    the first ``keep_bad`` of them (None: all, for the CLI's rejects file) besides their count.
    """
    now = now or datetime.now(UTC)
    oldest = round((now - timedelta(days=retention_days)).timestamp() * 1000)
    newest = round((now + timedelta(seconds=max_future_s)).timestamp() * 1000)
    with psycopg.connect(db_url, autocommit=True) as conn:
        device_id, gateway_id, key = resolve_device(conn, device)
    tags, rows = parse_wide_csv(lines, opts)
    report = ImportReport(tags=tags)
    topic = f"history/{device_id}"
    writer = TelemetryWriter(db_url)
    try:
        good: list[tuple[int, str, str, int, float, int]] = []
        bad: list[BadRow] = []
        seen = reported = 0

        def flush() -> None:
            batch = BatchWrite("", "", gateway_id or 0, None, True, good, topic=topic)
            letters = [DeadLetter(topic, b.text.encode(), "history_bad_row", f"line {b.line}: {b.reason}") for b in bad]
            result = writer.write([batch] if good else [], letters)
            report.inserted += result.inserted
            report.duplicates += result.duplicates
            report.conflicts += result.conflicts
            report.bad_rows += len(bad)
            room = len(bad) if keep_bad is None else max(0, keep_bad - len(report.bad))
            report.bad.extend(bad[:room])
            good.clear()
            bad.clear()

        for row in rows:
            seen += 1
            if isinstance(row, GoodRow) and not oldest <= row.ts_ms <= newest:
                which = "older than retention" if row.ts_ms < oldest else "in the future"
                row = BadRow(row.line, f"time is {which} ({retention_days} days / {max_future_s:.0f} s)", row.text)
            if isinstance(row, BadRow):
                bad.append(row)
            else:
                report.rows += 1
                good.extend((device_id, key, tag, row.ts_ms, v, 0) for tag, v in row.values.items())
                report.points += len(row.values)
            if seen - reported >= CHUNK_ROWS or len(good) >= CHUNK_POINTS or len(bad) >= CHUNK_BAD_ROWS:
                flush()
                if progress:
                    progress(seen - reported)
                reported = seen
        flush()
        if progress:
            progress(seen - reported)
    finally:
        writer.close()
    if report.inserted:
        # Outside the import's transactions (continuous aggregates refresh only there): the imported hours
        # were flagged as they were written, so buckets were exact already; this makes them fast too.
        try:
            refresh_written(db_url)
        except psycopg.Error as exc:
            log.warning("history stored; its rollups follow at the next ingest.rollups run (refresh failed: %s)", exc)
    return report
