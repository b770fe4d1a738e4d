"""Service KPIs over a period, as flat rows (``kpi, dimension, value, unit, n``) — the long format
Excel pivots and Power BI read directly.

* ``mttr_hours`` — mean time from ticket opened to resolved, per equipment model and overall;
* ``mtbf_hours`` — per equipment model: device-hours in the period / alarm-opened tickets;
* ``sla_compliance`` — per segment: share of tickets with a due time (opened in the period) and no
  response breach recorded;
* ``first_time_fix`` — share of resolved tickets fixed in one visit (one ``on_site``, no reopen);
* ``utilization`` and ``travel_share`` — per technician: (travel + on-site) / available time, and
  travel / (travel + on-site), from the status history (en_route → on_site is travel);
* ``alarms_per_ticket`` — alarms opened / alarm tickets opened (how much noise one ticket absorbs).

All timestamps come from ``ticket_status_history``, so the numbers are the same however the
status changed (field API, dispatcher, re-optimisation).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal

import psycopg

#: Hours a technician without shift rows counts as available per day of the period.
DEFAULT_DAY_HOURS = 8.0


@dataclass(frozen=True, slots=True)
class KpiRow:
    kpi: str
    dimension: str
    value: float | None
    unit: str
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def _segments(history: list[tuple[datetime, str]], status: str) -> list[tuple[datetime, datetime]]:
    out, since = [], None
    for at, s in history:
        if s == status and since is None:
            since = at
        elif s != status and since is not None:
            out.append((since, at))
            since = None
    return out


def compute_kpis(conn: psycopg.Connection, start: datetime, end: datetime) -> list[KpiRow]:
    """Every KPI for tickets and alarms in [start, end)."""
    rows: list[KpiRow] = []
    hours = (end - start).total_seconds() / 3600
    tickets = conn.execute(
        """SELECT t.id, t.created_at, t.source, d.equipment_model, c.segment, t.due_at
           FROM tickets t JOIN devices d ON d.id = t.device_id JOIN sites s ON s.id = d.site_id
           JOIN clients c ON c.id = s.client_id
           WHERE t.created_at >= %s AND t.created_at < %s""",
        (start, end),
    ).fetchall()
    ids = [t[0] for t in tickets]
    history: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
    for tid, at, status in conn.execute(
        "SELECT ticket_id, at, status FROM ticket_status_history WHERE ticket_id = ANY(%s) ORDER BY at, id", (ids,)
    ):
        history[tid].append((at, status))
    tech_of: dict[int, str] = dict(
        conn.execute(
            """SELECT DISTINCT ON (a.ticket_id) a.ticket_id, tech.name FROM assignments a
           JOIN technicians tech ON tech.id = a.technician_id WHERE a.ticket_id = ANY(%s)
           ORDER BY a.ticket_id, a.active DESC, a.id DESC""",
            (ids,),
        ).fetchall()
    )

    # MTTR per model and overall
    ttr: dict[str, list[float]] = defaultdict(list)
    ftf_ok = ftf_n = 0
    for tid, created, _src, model, _seg, _due in tickets:
        h = history.get(tid, [])
        resolved = next((at for at, s in h if s == "resolved"), None)
        if resolved is None:
            continue
        r = (resolved - created).total_seconds() / 3600
        ttr[model].append(r)
        ttr["all"].append(r)
        visits = sum(1 for _, s in h if s == "on_site")
        reopened = any(a == "resolved" and b == "on_site" for (_, a), (_, b) in itertools.pairwise(h))
        ftf_n += 1
        ftf_ok += visits == 1 and not reopened
    for dim, vals in sorted(ttr.items()):
        rows.append(KpiRow("mttr_hours", dim, sum(vals) / len(vals), "h", len(vals)))
    rows.append(KpiRow("first_time_fix", "all", ftf_ok / ftf_n if ftf_n else None, "ratio", ftf_n))

    # MTBF per equipment model
    devices: dict[str, int] = dict(
        conn.execute(
            "SELECT equipment_model, count(*) FROM devices WHERE created_at < %s GROUP BY 1", (end,)
        ).fetchall()
    )
    failures: dict[str, int] = defaultdict(int)
    for _tid, _c, src, model, _seg, _due in tickets:
        if src == "alarm":
            failures[model] += 1
    for model, n_dev in sorted(devices.items()):
        f = failures.get(model, 0)
        rows.append(KpiRow("mtbf_hours", model, n_dev * hours / f if f else None, "h", f))

    # SLA compliance per segment
    breached = {
        r[0]
        for r in conn.execute(
            "SELECT ticket_id FROM sla_breaches WHERE kind = 'response' AND ticket_id = ANY(%s)", (ids,)
        )
    }
    seg_n: dict[str, int] = defaultdict(int)
    seg_ok: dict[str, int] = defaultdict(int)
    for tid, _c, _src, _model, seg, due in tickets:
        if due is None:
            continue
        seg_n[seg] += 1
        seg_ok[seg] += tid not in breached
    for seg in sorted(seg_n):
        rows.append(KpiRow("sla_compliance", seg, seg_ok[seg] / seg_n[seg], "ratio", seg_n[seg]))

    # Utilization and travel share per technician
    travel: dict[str, float] = defaultdict(float)
    onsite: dict[str, float] = defaultdict(float)
    jobs: dict[str, int] = defaultdict(int)
    for tid, h in history.items():
        name = tech_of.get(tid)
        if name is None:
            continue
        travel[name] += sum((b - a).total_seconds() / 3600 for a, b in _segments(h, "en_route"))
        onsite[name] += sum((b - a).total_seconds() / 3600 for a, b in _segments(h, "on_site"))
        jobs[name] += 1
    available: dict[str, Decimal | None] = dict(  # NULL: no shift recorded
        conn.execute(
            """SELECT t.name,
                  sum(EXTRACT(EPOCH FROM (LEAST(s.ends_at, %(end)s) - GREATEST(s.starts_at, %(start)s))) / 3600)
           FROM technicians t LEFT JOIN technician_shifts s
             ON s.technician_id = t.id AND s.ends_at > %(start)s AND s.starts_at < %(end)s
           GROUP BY t.name""",
            {"start": start, "end": end},
        ).fetchall()
    )
    for name in sorted(available):
        shift_h = available[name]
        avail = float(shift_h) if shift_h is not None else DEFAULT_DAY_HOURS * hours / 24
        worked = travel[name] + onsite[name]
        rows.append(KpiRow("utilization", name, worked / avail if avail else None, "ratio", jobs[name]))
        rows.append(KpiRow("travel_share", name, travel[name] / worked if worked else None, "ratio", jobs[name]))

    # Alarms per alarm ticket
    counted = conn.execute(
        "SELECT count(*) FROM alarms WHERE opened_at >= %s AND opened_at < %s", (start, end)
    ).fetchone()
    assert counted is not None  # an aggregate returns one row
    n_alarms = counted[0]
    n_alarm_tickets = sum(1 for t in tickets if t[2] == "alarm")
    rows.append(
        KpiRow("alarms_per_ticket", "all", n_alarms / n_alarm_tickets if n_alarm_tickets else None, "ratio", n_alarms)
    )
    return rows
