"""Ticketing's own exceptions; psycopg errors are translated into these at the boundary.

::

    TicketingError
    ├── UnknownSkill        a skill code that is not in ``skills``
    ├── DuplicateTechnician another technician has this email
    └── NotFound            no row with that id
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
