"""Errors a domain function raises when the caller asked for something that cannot be done.

The domains cannot import the application, so they cannot raise HTTP errors; they raise these,
and each front end maps them once: the API to 404/409/422 (``fieldwatch/api/app.py``), a CLI
to its exit codes. The message is written for the person who made the request.

::

    DomainError              (base; never raised itself)
    ├── NotFound             an id or a name matches no row             (LookupError too)
    ├── Conflict             the request contradicts the current state of the data
    └── Invalid              well-formed, but wrong: ``loc`` names the input at fault (ValueError too)

A domain's own exception may derive from one of these to say how it is reported (e.g.
``ticketing.errors.UnknownSkill`` is an :class:`Invalid`). The constructors call
``Exception.__init__`` directly rather than ``super().__init__``, so an exception may derive
from two of them (an unknown alarm is a lifecycle error *and* a :class:`NotFound`) and the one
first in its MRO decides how it is built.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of the errors meant for whoever made the request; ``message`` is what they are told."""

    @property
    def message(self) -> str:
        return str(self)


class NotFound(DomainError, LookupError):
    """``NotFound("alarm", 7)``: "alarm 7 does not exist"."""

    def __init__(self, what: str, ident: object) -> None:
        Exception.__init__(self, f"{what} {ident} does not exist")
        self.what = what
        self.ident = ident


class Conflict(DomainError):
    """The request is valid but the data's current state forbids it (a duplicate, a cleared alarm, ...)."""


class Invalid(DomainError, ValueError):
    """The request names things that do not exist or breaks a rule; ``loc`` locates the bad input.

    ``loc`` follows pydantic's error locations (``("body", "skills")``, ``("query", "bucket")``) so
    the API reports it like its own validation errors; a subclass may set a default.
    """

    loc: tuple[str, ...] = ("body",)

    def __init__(self, message: str, loc: tuple[str, ...] | None = None) -> None:
        Exception.__init__(self, message)
        if loc is not None:
            self.loc = loc
