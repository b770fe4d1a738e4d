"""Backtest: replay history through the live state machine, summarise it, score it against incidents.

The replay is :func:`rules.replay.replay_arrays` — exactly :func:`rules.engine.evaluate` folded over
the readings, the function live evaluation uses, with numpy skipping in bulk the readings that
cannot change anything — starting from the normal state, so a backtest on the readings live
evaluation saw gives the same episodes. Nothing here writes alarms; the database is only read.

* :func:`replay` (pure): readings → per-reading :class:`Trace` (time, value, signal, phase,
  severity; iterating gives :class:`Row`) and events;
* :func:`episodes` (pure): events → alarm episodes (start, end, peak severity);
* :func:`summarize` (pure): alerts per week, time in alarm, tickets it would open;
* :func:`score` (pure, :mod:`rules.scoring`): episodes and per-reading alarm states vs. known
  incidents → per-reading precision, recall, F1, false-alarm and missed-alarm rates; per-incident
  recall, detection delay, false alarms per week;
* :func:`load_history`, :func:`load_labels`, :func:`labels_from_tickets`: the I/O.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from rules.compile import CompiledRule
from rules.engine import NORMAL, AlarmCleared, AlarmOpened, RuleEvent, RuleState, SeverityChanged
from rules.model import SEVERITY_RANK
from rules.replay import History, Row, Trace, replay_arrays
from rules.scoring import WEEK_MS, Incident, LabelScore, PointScore, Score, incidents_from_labels, score

__all__ = [
    "WEEK_MS",
    "BacktestError",
    "Episode",
    "History",
    "Incident",
    "LabelScore",
    "PointScore",
    "Replay",
    "Row",
    "Score",
    "Summary",
    "Trace",
    "episode_dict",
    "episodes",
    "iso",
    "labels_from_tickets",
    "load_history",
    "load_labels",
    "parse_time",
    "pool_summaries",
    "replay",
    "score",
    "summarize",
    "write_rows_csv",
]


class BacktestError(ValueError):
    """A backtest cannot run as asked (unknown device, empty window, unreadable labels)."""


@dataclass(frozen=True, slots=True)
class Episode:
    start_ms: int  # alarm opened (source time)
    end_ms: int | None  # alarm cleared; None: still active at the end of the window
    since_ms: int  # when the condition began holding
    peak_severity: str
    peak: float | None


@dataclass(frozen=True, slots=True)
class Replay:
    rows: Trace  # per reading, time order (empty when asked for no rows)
    events: list[RuleEvent]
    state: RuleState


def replay(
    rule: CompiledRule,
    readings: Iterable[tuple[int, float, int]] | History,
    *,
    state: RuleState = NORMAL,
    rows: bool = True,
) -> Replay:
    """Evaluate ``(ts_ms, value, quality)`` readings in time order, exactly as live evaluation would."""
    h = readings if isinstance(readings, History) else History.of(readings)
    trace, events, final = replay_arrays(rule, h.ts, h.value, h.quality, state)
    return Replay(trace if rows else Trace.empty(), events, final)


def episodes(events: Iterable[RuleEvent]) -> list[Episode]:
    """Fold opened / severity-changed / cleared events into episodes."""
    done: list[Episode] = []
    current: dict[str, Any] | None = None
    for ev in events:
        if isinstance(ev, AlarmOpened):
            current = {"start_ms": ev.ts_ms, "since_ms": ev.since_ms, "peak_severity": ev.severity, "peak": ev.peak}
        elif isinstance(ev, SeverityChanged) and current is not None:
            if SEVERITY_RANK[ev.severity] < SEVERITY_RANK[current["peak_severity"]]:
                current["peak_severity"] = ev.severity
        elif isinstance(ev, AlarmCleared) and current is not None:
            done.append(Episode(end_ms=ev.ts_ms, **{**current, "peak": ev.peak}))
            current = None
    if current is not None:
        done.append(Episode(end_ms=None, **current))
    return done


@dataclass(frozen=True)
class Summary:
    episodes: int
    alerts_per_week: float
    time_in_alarm_s: float
    fraction_in_alarm: float
    tickets: int  # each episode opens (or attaches to) a ticket; assumes tickets close between episodes
    by_severity: dict[str, int]


def summarize(eps: list[Episode], start_ms: int, end_ms: int) -> Summary:
    span = max(1, end_ms - start_ms)
    in_alarm = sum(min(e.end_ms or end_ms, end_ms) - max(e.start_ms, start_ms) for e in eps)
    by_sev: dict[str, int] = {}
    for e in eps:
        by_sev[e.peak_severity] = by_sev.get(e.peak_severity, 0) + 1
    return Summary(
        episodes=len(eps),
        alerts_per_week=round(len(eps) / (span / WEEK_MS), 3),
        time_in_alarm_s=in_alarm / 1000,
        fraction_in_alarm=round(in_alarm / span, 6),
        tickets=len(eps),
        by_severity=by_sev,
    )


def pool_summaries(parts: list[tuple[Summary, int]]) -> Summary:
    """Summaries of several windows (or devices), each with its window's length in ms, as one."""
    span = max(1, sum(ms for _, ms in parts))
    by_sev: dict[str, int] = {}
    for s, _ in parts:
        for k, v in s.by_severity.items():
            by_sev[k] = by_sev.get(k, 0) + v
    in_alarm = sum(s.time_in_alarm_s for s, _ in parts)
    n = sum(s.episodes for s, _ in parts)
    return Summary(
        episodes=n,
        alerts_per_week=round(n / (span / WEEK_MS), 3),
        time_in_alarm_s=in_alarm,
        fraction_in_alarm=round(in_alarm * 1000 / span, 6),
        tickets=sum(s.tickets for s, _ in parts),
        by_severity=by_sev,
    )


# --- I/O ----------------------------------------------------------------------------------------


def parse_time(text: str) -> int:
    """ISO-8601 (naive means UTC) or epoch milliseconds → epoch milliseconds."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BacktestError(f"{text!r} is not a time: use ISO-8601 (2024-05-01T12:00:00Z) or epoch ms") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


#: Column names a labels file may use (case-insensitive), first match wins.
TIME_COLUMNS = ("time", "timestamp", "datetime", "date", "ts")
LABEL_COLUMNS = ("label", "anomaly", "is_anomaly", "fault", "kind")
_NORMAL = {"", "0", "0.0", "false", "no", "none", "normal", "ok"}
_UNNAMED = {"1", "1.0", "true", "yes"}


def _row_label(text: str) -> str | None:
    """A per-row label cell → None (normal), "" (anomalous, unnamed) or the fault's name."""
    t = text.strip()
    if t.lower() in _NORMAL:
        return None
    if t.lower() in _UNNAMED:
        return ""
    try:
        return "" if float(t) != 0 else None
    except ValueError:
        return t


def load_labels(path: Path, device: str | None = None) -> list[Incident]:
    """Incidents from a labels file: windows, or per-row labels turned into windows.

    * windows: ``start,end`` columns (optional ``device``, ``label``), one incident per line;
    * per row: a time column (``time``, ``timestamp``, ``datetime``…) and a label column (``label``,
      ``anomaly``…): 0/1, true/false, or a fault name (``normal``/empty = no fault). Each run of rows
      with one label is an incident from its first to its last row.

    The separator (``,``, ``;`` or tab) is detected; times are ISO-8601 (naive means UTC) or epoch ms.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise BacktestError(f"cannot read labels file {path}: {exc}") from None
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    header = [h.strip().lower() for h in next(reader, [])]
    col = {name: i for i, name in reversed(list(enumerate(header)))}
    time_col = next((col[c] for c in TIME_COLUMNS if c in col), None)
    label_col = next((col[c] for c in LABEL_COLUMNS if c in col), None)
    windows = "start" in col and "end" in col
    if not windows and (time_col is None or label_col is None):
        raise BacktestError(
            f"{path}: the labels file needs a header with 'start' and 'end' columns, or a time column and a label "
            f"column ({'/'.join(TIME_COLUMNS)}; {'/'.join(LABEL_COLUMNS)}); it has: {', '.join(header) or 'none'}"
        )
    dev_col = col.get("device")
    out: list[Incident] = []
    times: list[int] = []
    labels: list[str | None] = []
    for n, row in enumerate(reader, start=2):
        if not row or not any(cell.strip() for cell in row):
            continue

        def cell(i: int | None, row: list[str] = row) -> str:
            return row[i] if i is not None and i < len(row) else ""

        if device is not None and cell(dev_col) and cell(dev_col) != device:
            continue
        try:
            if windows:
                start, end = parse_time(cell(col["start"])), parse_time(cell(col["end"]))
                if end < start:
                    raise BacktestError("end is before start")
                out.append(Incident(start, end, cell(col.get("label"))))
            else:
                times.append(parse_time(cell(time_col)))
                labels.append(_row_label(cell(label_col)))
        except BacktestError as exc:
            raise BacktestError(f"{path} line {n}: {exc}") from None
    return out if windows else incidents_from_labels(times, labels)


def labels_from_tickets(conn: psycopg.Connection, device_id: int, problem_code: str) -> list[Incident]:
    """Closed/resolved tickets of this device and problem code as incidents (created → last update)."""
    rows = conn.execute(
        """SELECT created_at, updated_at FROM tickets
           WHERE device_id = %s AND problem_code = %s AND status IN ('resolved', 'closed')""",
        (device_id, problem_code),
    ).fetchall()
    return [Incident(int(a.timestamp() * 1000), int(b.timestamp() * 1000), "ticket") for a, b in rows]


def load_history(conn: psycopg.Connection, device_id: int, tag: str, start_ms: int, end_ms: int) -> History:
    """Stored readings of one series in ``[start, end)``, oldest first, as columns."""
    rows = conn.execute(
        """SELECT (extract(epoch FROM t.time) * 1000)::bigint, t.value, t.quality
           FROM telemetry t JOIN series s ON s.id = t.series_id
           WHERE s.device_id = %s AND s.tag = %s AND t.time >= %s AND t.time < %s
           ORDER BY t.time""",
        (device_id, tag, datetime.fromtimestamp(start_ms / 1000, UTC), datetime.fromtimestamp(end_ms / 1000, UTC)),
    ).fetchall()
    return History.of(rows)


def write_rows_csv(rows: Iterable[Row], out: io.TextIOBase | Any) -> None:
    w = csv.writer(out)
    w.writerow(["time", "value", "score", "state", "severity"])
    for r in rows:
        w.writerow([iso(r.ts_ms), r.value, "" if r.signal is None else r.signal, r.phase, r.severity or ""])


def episode_dict(e: Episode) -> dict[str, Any]:
    d = asdict(e)
    d["start"], d["end"], d["since"] = iso(e.start_ms), iso(e.end_ms), iso(e.since_ms)
    return d
