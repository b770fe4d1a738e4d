"""Ticketing's own exceptions; psycopg errors are translated into these at the boundary.

::

    TicketingError
    ├── UnknownSkill        a skill code that is not in ``skills``                     (fwcore Invalid)
    ├── DuplicateTechnician another technician has this email                          (fwcore Conflict)
    ├── NotFound            no row with that id                                        (fwcore NotFound)
    ├── HardConstraint      a dispatcher's choice breaks a hard constraint (needs override + reason)
    └── InvalidTransition   a ticket status change the lifecycle does not allow        (fwcore Conflict)

The :mod:`fwcore.errors` bases say how a front end reports them (the API: 422, 409, 404), so a
route does not repeat the mapping. ``HardConstraint`` has none: the API adds its blockers to the
message.
"""

from __future__ import annotations

from fwcore import errors

_NO_IDENT = object()


class TicketingError(RuntimeError):
    """Base class for ticketing failures."""


class UnknownSkill(TicketingError, errors.Invalid):
    """A skill code that is not in the ``skills`` table (a typo must not mint a new skill)."""

    loc = ("body", "skills")


class DuplicateTechnician(TicketingError, errors.Conflict, ValueError):
    """Another technician already has this email."""


class NotFound(TicketingError, errors.NotFound):
    """No row with that id: ``NotFound("technician", 7)`` says "technician 7 does not exist".

    Called with one argument, that argument is the whole message (``NotFound("no ticket 7")``),
    the form older call sites use.
    """

    def __init__(self, what: str, ident: object = _NO_IDENT) -> None:
        if ident is _NO_IDENT:
            Exception.__init__(self, what)
        else:
            errors.NotFound.__init__(self, what, ident)


class HardConstraint(TicketingError):
    """A dispatcher's assignment breaks hard constraints; ``blockers`` lists them."""

    def __init__(self, message: str, blockers: list[str]) -> None:
        super().__init__(message)
        self.blockers = blockers


class InvalidTransition(TicketingError, errors.Conflict, ValueError):
    """The lifecycle does not allow this status change (e.g. new → resolved)."""
