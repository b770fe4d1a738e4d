"""Ticketing: alarms, work orders and maintenance plans become tickets; the dispatch optimizer
places each one in today's plan (:mod:`ticketing.planning`) and explains why.

Modules: :mod:`.planning` (load/store the plan), :mod:`.reoptimize` (periodic re-solve and the
package's scheduled jobs), :mod:`.controls` (dispatcher assign/pin/override, lifecycle),
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
    get_ticket,
    list_tickets,
    ticket_priority,
)

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
    "TicketOutcome",
    "TicketingError",
    "TicketingService",
    "TravelModel",
    "UnknownSkill",
    "choose_technician",
    "create_technician",
    "ensure_skill",
    "get_technician",
    "get_ticket",
    "haversine_km",
    "list_technicians",
    "list_tickets",
    "set_technician_available",
    "set_technician_location",
    "ticket_priority",
]
