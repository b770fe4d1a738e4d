"""The errors the API reports, mapped to HTTP statuses in one place (:mod:`.app`).

They are the domains' own (:mod:`fwcore.errors`): a domain function raises them, a route may
too, and neither knows about status codes::

    ApiError = DomainError   (base; never raised itself)
    ├── NotFound             -> 404  an id names no row
    ├── Conflict             -> 409  the request contradicts the row's current state
    └── Invalid              -> 422  well-formed, but refers to things that do not exist

Domain exceptions that derive from these (``ticketing.errors.UnknownSkill`` is an ``Invalid``,
``rules.lifecycle.UnknownAlarm`` a ``NotFound``, ...) are reported the same way. Database outages
(psycopg ``OperationalError``, pool timeouts) become 503 there too.
"""

from __future__ import annotations

from fwcore.errors import Conflict, DomainError, Invalid, NotFound

ApiError = DomainError

#: The status of each kind, most specific first (an exception may be two kinds: the first wins).
STATUS: tuple[tuple[type[DomainError], int], ...] = ((NotFound, 404), (Conflict, 409), (Invalid, 422))

__all__ = ["STATUS", "ApiError", "Conflict", "Invalid", "NotFound", "status_of"]


def status_of(exc: DomainError) -> int:
    """The HTTP status of ``exc``: the first kind of :data:`STATUS` it is, else 500."""
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
