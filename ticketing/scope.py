"""What the permission policy needs to know about ticketing's objects (:class:`fwcore.policy.Facts`).

The policy is pure; these functions load, for one ticket or technician, the technicians and clients
it belongs to, so the API can ask :func:`fwcore.policy.decide` about that object. Lists are
narrowed in their own queries (``visible=`` of :func:`ticketing.tickets.list_ticket_summaries` and
:func:`ticketing.technicians.find_technicians`), with the same notion of ownership.
"""

from __future__ import annotations

import psycopg

from fwcore.policy import Facts
from ticketing.errors import NotFound
from ticketing.tickets import OWNER_SQL


def ticket_facts(conn: psycopg.Connection, ticket_id: int) -> Facts:
    """Who holds (or, once ended, last held) the ticket, and its client; raises :class:`NotFound`."""
    row = conn.execute(
        "SELECT "
        + OWNER_SQL
        + """, s.client_id FROM tickets t
           JOIN devices d ON d.id = t.device_id JOIN sites s ON s.id = d.site_id WHERE t.id = %s""",
        (ticket_id,),
    ).fetchone()
    if row is None:
        raise NotFound("ticket", ticket_id)
    owner, client = row
    return Facts("ticket", ticket_id, frozenset() if owner is None else frozenset({owner}), frozenset({client}))


def technician_facts(conn: psycopg.Connection, technician_id: int) -> Facts:
    """A technician belongs to themself; raises :class:`NotFound`."""
    if conn.execute("SELECT 1 FROM technicians WHERE id = %s", (technician_id,)).fetchone() is None:
        raise NotFound("technician", technician_id)
    return Facts("technician", technician_id, frozenset({technician_id}))
