"""SLA clocks: business hours, holidays and paused states (pure), and due times, breaches and
escalation against the real database with a fixed clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import psycopg
import pytest

from ticketing.sla import BusinessCalendar, due_at, elapsed_minutes
from ticketing.sla_checks import check_slas

NINE_TO_FIVE = {d: (time(9), time(17)) for d in range(5)}  # Monday..Friday
CAL = BusinessCalendar("Europe/Berlin", NINE_TO_FIVE, frozenset({date(2026, 12, 25)}))
BERLIN = CAL._zone()


def at(y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("opened", "minutes", "expected"),
    [
        (at(2026, 12, 21, 10), 60, at(2026, 12, 21, 11)),  # Monday, inside hours
        (at(2026, 12, 21, 16), 120, at(2026, 12, 22, 10)),  # runs over the night
        (at(2026, 12, 21, 20), 30, at(2026, 12, 22, 9, 30)),  # opened after hours
        (at(2026, 12, 24, 16), 120, at(2026, 12, 28, 10)),  # Thu → Christmas holiday → weekend → Monday
        (at(2026, 12, 26, 12), 60, at(2026, 12, 28, 10)),  # opened on Saturday
    ],
)
def test_business_minutes_skip_nights_weekends_and_holidays(opened: datetime, minutes: int, expected: datetime) -> None:
    """Adding business minutes lands on the right instant across nights, weekends and a holiday."""
    assert CAL.add_minutes(opened, minutes) == expected
    assert CAL.minutes_between(opened, expected) == pytest.approx(minutes)


def test_around_the_clock_calendar_is_wall_time() -> None:
    """Without hours or holidays, business minutes are wall-clock minutes."""
    start = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
    assert BusinessCalendar().add_minutes(start, 90) == start + timedelta(minutes=90)


def test_paused_states_stop_the_clock() -> None:
    """Two business hours waiting in a paused status do not count and push the due time out."""
    history = [(at(2026, 12, 21, 9), "new"), (at(2026, 12, 21, 10), "waiting"), (at(2026, 12, 21, 12), "assigned")]
    now = at(2026, 12, 21, 13)
    assert elapsed_minutes(CAL, history, now, paused={"waiting"}) == pytest.approx(120)
    assert elapsed_minutes(CAL, history, now) == pytest.approx(240)
    assert due_at(CAL, history, 180, now, paused={"waiting"}) == at(2026, 12, 21, 14)
    assert due_at(CAL, history[:2], 180, at(2026, 12, 21, 11), paused={"waiting"}) is None  # paused now


def test_a_target_already_passed_is_due_when_it_passed() -> None:
    """A due time in the past is the instant the clock reached the target."""
    history = [(at(2026, 12, 21, 9), "new")]
    assert due_at(CAL, history, 60, at(2026, 12, 21, 15)) == at(2026, 12, 21, 10)


@pytest.fixture
def ticket(db_url: str) -> tuple[str, int]:
    """A gold client's ticket opened Monday 2026-12-21 09:00 Berlin; gold runs 9-17 Mon-Fri, 4 h response."""
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE sla_segments SET timezone = 'Europe/Berlin', warn_minutes = 30 WHERE name = 'gold'")
        for wd in range(5):
            conn.execute("INSERT INTO business_hours VALUES ('gold', %s, '09:00', '17:00')", (wd,))
        conn.execute("INSERT INTO sla_targets VALUES ('gold', 2, 240, 960)")
        client = conn.execute("INSERT INTO clients (name, segment) VALUES ('Acme', 'gold') RETURNING id").fetchone()[0]
        site = conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude) VALUES (%s, 's', 's', 48, 11) RETURNING id",
            (client,),
        ).fetchone()[0]
        dev = conn.execute(
            "INSERT INTO devices (site_id, key, equipment_model) VALUES (%s, 'p', 'P') RETURNING id", (site,)
        ).fetchone()[0]
        t = conn.execute(
            "INSERT INTO tickets (device_id, problem_code, title, priority, source) "
            "VALUES (%s, 'X', 'x', 2, 'api') RETURNING id",
            (dev,),
        ).fetchone()[0]
        conn.execute("UPDATE ticket_status_history SET at = %s WHERE ticket_id = %s", (at(2026, 12, 21, 9), t))
    return db_url, t


def test_due_times_breaches_and_escalation(ticket: tuple[str, int]) -> None:
    """Due at 13:00; unassigned at 12:40 it escalates once; at 13:05 a response breach is recorded once."""
    url, t = ticket
    first = check_slas(url, now=at(2026, 12, 21, 10))
    assert (first.checked, first.breaches, first.escalated) == (1, 0, 0)
    with psycopg.connect(url) as conn:
        due, res_due = conn.execute("SELECT due_at, resolution_due_at FROM tickets WHERE id = %s", (t,)).fetchone()
    assert due == at(2026, 12, 21, 13) and res_due == at(2026, 12, 22, 17)  # 16 business hours
    assert check_slas(url, now=at(2026, 12, 21, 12, 40)).escalated == 1
    assert check_slas(url, now=at(2026, 12, 21, 12, 45)).escalated == 0  # once
    assert check_slas(url, now=at(2026, 12, 21, 13, 5)).breaches == 1
    assert check_slas(url, now=at(2026, 12, 21, 13, 10)).breaches == 0
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT kind, due_at FROM sla_breaches WHERE ticket_id = %s", (t,)).fetchall()
    assert rows == [("response", at(2026, 12, 21, 13))]


def test_on_site_in_time_stops_the_response_clock(ticket: tuple[str, int]) -> None:
    """A technician on site at 11:00 meets the 13:00 response target: no breach later."""
    url, t = ticket
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO ticket_status_history (ticket_id, status, at) VALUES (%s, 'on_site', %s)",
            (t, at(2026, 12, 21, 11)),
        )
    assert check_slas(url, now=at(2026, 12, 21, 16)).breaches == 0
