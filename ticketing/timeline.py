"""A ticket's timeline: its status history (with GPS positions), notes, parts used and time on site.

The writes happen in :mod:`ticketing.controls` (``transition``); this module reads them back in
the order they happened. :func:`time_on_site` is pure, so it is testable on a made-up history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

import psycopg

from ticketing.errors import NotFound


@dataclass(frozen=True, slots=True)
class StatusEntry:
    status: str
    at: datetime
    actor: str
    lat: float | None
    lon: float | None


class Note(TypedDict):
    at: datetime
    author: str
    body: str


class PartUsed(TypedDict):
    part: str
    quantity: int
    at: datetime


@dataclass(frozen=True, slots=True)
class Timeline:
    ticket_id: int
    status: str
    failure_code: str | None
    history: list[StatusEntry]
    notes: list[Note]
    parts_used: list[PartUsed]
    time_on_site_minutes: float | None


def ticket_timeline(conn: psycopg.Connection, ticket_id: int) -> Timeline:
    """Status history (oldest first), notes, parts and time on site of a ticket; raises :class:`NotFound`."""
    row = conn.execute("SELECT status, failure_code FROM tickets WHERE id = %s", (ticket_id,)).fetchone()
    if row is None:
        raise NotFound("ticket", ticket_id)
    history = [
        StatusEntry(status=s, at=at, actor=a, lat=la, lon=lo)
        for s, at, a, la, lo in conn.execute(
            "SELECT status, at, actor, lat, lon FROM ticket_status_history WHERE ticket_id = %s ORDER BY at, id",
            (ticket_id,),
        )
    ]
    notes = [
        Note(at=at, author=a, body=b)
        for at, a, b in conn.execute(
            "SELECT at, author, body FROM ticket_notes WHERE ticket_id = %s ORDER BY id", (ticket_id,)
        )
    ]
    parts = [
        PartUsed(part=p, quantity=q, at=at)
        for p, q, at in conn.execute(
            "SELECT part_code, quantity, at FROM ticket_parts_used WHERE ticket_id = %s ORDER BY id", (ticket_id,)
        )
    ]
    return Timeline(
        ticket_id=ticket_id,
        status=row[0],
        failure_code=row[1],
        history=history,
        notes=notes,
        parts_used=parts,
        time_on_site_minutes=time_on_site(history),
    )


def time_on_site(history: list[StatusEntry]) -> float | None:
    """Minutes spent on site, summed over finished visits; None if the technician never arrived."""
    total, since = 0.0, None
    for e in history:
        if e.status == "on_site" and since is None:
            since = e.at
        elif e.status != "on_site" and since is not None:
            total += (e.at - since).total_seconds() / 60
            since = None
    return total if any(e.status == "on_site" for e in history) else None
