"""Ticketing: alarms, work orders and maintenance plans become tickets; the dispatch optimizer
places each one in today's plan (:mod:`ticketing.planning`) and explains why.

Modules: :mod:`.planning` (load/store the plan), :mod:`.reoptimize` (periodic re-solve and the
package's scheduled jobs), :mod:`.controls` (dispatcher assign/pin/override, lifecycle),
:mod:`.tickets` / :mod:`.timeline` / :mod:`.technicians` (what the API and the demo read, and the
one ``create_technician``),
:mod:`.sla` / :mod:`.sla_checks` (SLA clocks, breaches, escalation), :mod:`.workorders`,
:mod:`.webhooks`, :mod:`.evidence` (photos), :mod:`.maintenance`, :mod:`.kpis`, :mod:`.export`.

Run it next to the rule evaluator::

    service = TicketingService(db_url)   # travel=GreatCircleTravel(speed_kmh=..., detour_factor=...)
    service.start()                      # LISTEN fw_events + periodic sweep, in a thread
    ...
    service.close()
"""

from ticketing.dispatch import Decision, Option, TechnicianView, choose_technician
from ticketing.errors import DuplicateTechnician, NotFound, TicketingError, UnknownSkill
from ticketing.geo import GreatCircleTravel, LatLon, TravelModel, haversine_km
from ticketing.service import TicketingService, TicketOutcome
from ticketing.technicians import (
    Technician,
    create_technician,
    ensure_skill,
    find_technicians,
    get_technician,
    list_technicians,
    set_technician_available,
    set_technician_location,
)
from ticketing.tickets import (
    OPEN_STATUSES,
    Assignment,
    Ticket,
    TicketDetail,
    TicketExplanation,
    TicketSummary,
    get_ticket,
    get_ticket_summary,
    list_ticket_summaries,
    list_tickets,
    ticket_explanation,
    ticket_priority,
)
from ticketing.timeline import Timeline, ticket_timeline

__all__ = [
    "OPEN_STATUSES",
    "Assignment",
    "Decision",
    "DuplicateTechnician",
    "GreatCircleTravel",
    "LatLon",
    "NotFound",
    "Option",
    "Technician",
    "TechnicianView",
    "Ticket",
    "TicketDetail",
    "TicketExplanation",
    "TicketOutcome",
    "TicketSummary",
    "TicketingError",
    "TicketingService",
    "Timeline",
    "TravelModel",
    "UnknownSkill",
    "choose_technician",
    "create_technician",
    "ensure_skill",
    "find_technicians",
    "get_technician",
    "get_ticket",
    "get_ticket_summary",
    "haversine_km",
    "list_technicians",
    "list_ticket_summaries",
    "list_tickets",
    "set_technician_available",
    "set_technician_location",
    "ticket_explanation",
    "ticket_priority",
    "ticket_timeline",
]
