"""Errors the data-access layer raises, mapped to HTTP statuses in one place (:mod:`.app`).

::

    ApiError                 (base; never raised itself)
    ├── NotFound             -> 404  an id names no row
    ├── Conflict             -> 409  the request contradicts the row's current state
    └── Invalid              -> 422  well-formed, but refers to things that do not exist

Database outages (psycopg ``OperationalError``, pool timeouts) become 503 there too.
"""

from __future__ import annotations


class ApiError(Exception):
    """Base of errors that carry a message meant for the API client."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ApiError):
    status_code = 404

    def __init__(self, what: str, ident: object) -> None:
        super().__init__(f"{what} {ident} does not exist")


class Conflict(ApiError):
    status_code = 409


class Invalid(ApiError):
    """Reported like pydantic's own 422s: ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``."""

    status_code = 422

    def __init__(self, message: str, loc: tuple[str, ...] = ("body",)) -> None:
        super().__init__(message)
        self.loc = loc
