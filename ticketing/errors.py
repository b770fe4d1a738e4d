"""Ticketing's own exceptions; psycopg errors are translated into these at the boundary.

::

    TicketingError
    ├── UnknownSkill        a skill code that is not in ``skills``
    ├── DuplicateTechnician another technician has this email
    ├── NotFound            no row with that id
    ├── HardConstraint      a dispatcher's choice breaks a hard constraint (needs override + reason)
    └── InvalidTransition   a ticket status change the lifecycle does not allow
"""

from __future__ import annotations


class TicketingError(RuntimeError):
    """Base class for ticketing failures."""


class UnknownSkill(TicketingError, ValueError):
    """A skill code that is not in the ``skills`` table."""


class DuplicateTechnician(TicketingError, ValueError):
    """Another technician already has this email."""


class NotFound(TicketingError, LookupError):
    """No row with that id."""


class HardConstraint(TicketingError):
    """A dispatcher's assignment breaks hard constraints; ``blockers`` lists them."""

    def __init__(self, message: str, blockers: list[str]) -> None:
        super().__init__(message)
        self.blockers = blockers


class InvalidTransition(TicketingError, ValueError):
    """The lifecycle does not allow this status change (e.g. new → resolved)."""
