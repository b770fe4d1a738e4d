"""Backtest: replay history through the live state machine, summarise it, score it against incidents.

The replay calls :func:`rules.engine.evaluate` — the very function live evaluation uses —
starting from the normal state, so a backtest on the readings live evaluation saw gives
the same episodes. Nothing here writes alarms; the database is only read.

* :func:`replay` (pure): readings → per-reading rows (time, value, signal, phase,
  severity) and events;
* :func:`episodes` (pure): events → alarm episodes (start, end, peak severity);
* :func:`summarize` (pure): alerts per week, time in alarm, tickets it would open;
* :func:`score` (pure): episodes vs. known incident intervals → precision, recall, F1,
  false-alarm rate, missed-alarm rate, mean detection delay;
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
from rules.engine import NORMAL, AlarmCleared, AlarmOpened, RuleEvent, RuleState, SeverityChanged, evaluate, signal
from rules.model import SEVERITY_RANK

WEEK_MS = 7 * 24 * 3600 * 1000


class BacktestError(ValueError):
    """A backtest cannot run as asked (unknown device, empty window, unreadable labels)."""


@dataclass(frozen=True, slots=True)
class Row:
    ts_ms: int
    value: float
    signal: float | None  # what the rule compared: the value, or the rate of change
    phase: str
    severity: str | None


@dataclass(frozen=True, slots=True)
class Episode:
    start_ms: int  # alarm opened (source time)
    end_ms: int | None  # alarm cleared; None: still active at the end of the window
    since_ms: int  # when the condition began holding
    peak_severity: str
    peak: float | None


@dataclass(frozen=True, slots=True)
class Replay:
    rows: list[Row]
    events: list[RuleEvent]
    state: RuleState


def replay(
    rule: CompiledRule, readings: Iterable[tuple[int, float, int]], *, state: RuleState = NORMAL, rows: bool = True
) -> Replay:
    """Evaluate ``(ts_ms, value, quality)`` readings in time order, exactly as live evaluation would."""
    out: list[Row] = []
    events: list[RuleEvent] = []
    for ts_ms, value, quality in sorted(readings, key=lambda r: r[0]):
        sig = signal(rule, state, ts_ms, value) if rows and quality == 0 else None
        state, new = evaluate(rule, state, ts_ms, value, quality)
        events.extend(new)
        if rows:
            out.append(Row(ts_ms, value, sig, state.phase, state.severity if state.phase == "active" else None))
    return Replay(out, events, state)


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


@dataclass(frozen=True, slots=True)
class Incident:
    start_ms: int
    end_ms: int
    label: str = ""


@dataclass(frozen=True)
class Score:
    incidents: int
    detected: int
    true_episodes: int
    false_episodes: int
    precision: float | None  # true episodes / episodes (None without episodes)
    recall: float | None  # detected incidents / incidents (None without incidents)
    f1: float | None
    false_alarm_rate: float  # share of incident-free time spent in alarm
    missed_alarm_rate: float | None  # 1 - recall
    mean_detection_delay_s: float | None  # incident start → first alarm (0 if already alarming)
    false_alarms_per_week: float


def _overlaps(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 <= b1 and b0 <= a1


def score(eps: list[Episode], incidents: list[Incident], start_ms: int, end_ms: int) -> Score:
    """Score episodes against known incidents inside ``[start_ms, end_ms]``."""
    incs = [i for i in incidents if _overlaps(i.start_ms, i.end_ms, start_ms, end_ms)]
    spans = [(e.start_ms, e.end_ms if e.end_ms is not None else end_ms) for e in eps]
    true_eps = sum(1 for a, b in spans if any(_overlaps(a, b, i.start_ms, i.end_ms) for i in incs))
    delays: list[float] = []
    for inc in incs:
        hits = [a for a, b in spans if _overlaps(a, b, inc.start_ms, inc.end_ms)]
        if hits:
            delays.append(max(0, min(hits) - inc.start_ms) / 1000)
    precision = true_eps / len(eps) if eps else None
    recall = len(delays) / len(incs) if incs else None
    f1 = None
    if precision is not None and recall is not None:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    quiet = _minus(start_ms, end_ms, [(i.start_ms, i.end_ms) for i in incs])
    quiet_ms = sum(b - a for a, b in quiet)
    false_ms = sum(_overlap_len(s, q) for s in spans for q in quiet)
    span = max(1, end_ms - start_ms)
    return Score(
        incidents=len(incs),
        detected=len(delays),
        true_episodes=true_eps,
        false_episodes=len(eps) - true_eps,
        precision=_r(precision),
        recall=_r(recall),
        f1=_r(f1),
        false_alarm_rate=round(false_ms / quiet_ms, 6) if quiet_ms else 0.0,
        missed_alarm_rate=_r(None if recall is None else 1 - recall),
        mean_detection_delay_s=_r(sum(delays) / len(delays) if delays else None),
        false_alarms_per_week=round((len(eps) - true_eps) / (span / WEEK_MS), 3),
    )


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _overlap_len(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def _minus(start: int, end: int, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``[start, end]`` without the ``holes``."""
    out, cur = [], start
    for a, b in sorted(holes):
        if a > cur:
            out.append((cur, min(a, end)))
        cur = max(cur, b)
    if cur < end:
        out.append((cur, end))
    return [(a, b) for a, b in out if b > a]


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


def load_labels(path: Path, device: str | None = None) -> list[Incident]:
    """Incident intervals from a CSV with ``start,end`` columns (optional ``device``, ``label``)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise BacktestError(f"cannot read labels file {path}: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"start", "end"} <= set(reader.fieldnames):
        raise BacktestError(f"{path}: the labels file needs a header with 'start' and 'end' columns")
    out: list[Incident] = []
    for n, row in enumerate(reader, start=2):
        if device is not None and row.get("device") and row["device"] != device:
            continue
        try:
            start, end = parse_time(row["start"]), parse_time(row["end"])
        except BacktestError as exc:
            raise BacktestError(f"{path} line {n}: {exc}") from None
        if end < start:
            raise BacktestError(f"{path} line {n}: end is before start")
        out.append(Incident(start, end, row.get("label") or ""))
    return out


def labels_from_tickets(conn: psycopg.Connection, device_id: int, problem_code: str) -> list[Incident]:
    """Closed/resolved tickets of this device and problem code as incidents (created → last update)."""
    rows = conn.execute(
        """SELECT created_at, updated_at FROM tickets
           WHERE device_id = %s AND problem_code = %s AND status IN ('resolved', 'closed')""",
        (device_id, problem_code),
    ).fetchall()
    return [Incident(int(a.timestamp() * 1000), int(b.timestamp() * 1000), "ticket") for a, b in rows]


def load_history(
    conn: psycopg.Connection, device_id: int, tag: str, start_ms: int, end_ms: int
) -> list[tuple[int, float, int]]:
    """Stored readings of one series in ``[start, end)``, oldest first."""
    rows = conn.execute(
        """SELECT (extract(epoch FROM t.time) * 1000)::bigint, t.value, t.quality
           FROM telemetry t JOIN series s ON s.id = t.series_id
           WHERE s.device_id = %s AND s.tag = %s AND t.time >= %s AND t.time < %s
           ORDER BY t.time""",
        (device_id, tag, datetime.fromtimestamp(start_ms / 1000, UTC), datetime.fromtimestamp(end_ms / 1000, UTC)),
    ).fetchall()
    return [(int(ts), float(v), int(q)) for ts, v, q in rows]


def write_rows_csv(rows: list[Row], out: io.TextIOBase | Any) -> None:
    w = csv.writer(out)
    w.writerow(["time", "value", "score", "state", "severity"])
    for r in rows:
        w.writerow([iso(r.ts_ms), r.value, "" if r.signal is None else r.signal, r.phase, r.severity or ""])


def episode_dict(e: Episode) -> dict[str, Any]:
    d = asdict(e)
    d["start"], d["end"], d["since"] = iso(e.start_ms), iso(e.end_ms), iso(e.since_ms)
    return d
