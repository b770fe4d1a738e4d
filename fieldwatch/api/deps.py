"""Every dependency the routers use, as ``Annotated`` aliases, in one place.

``ConnDep`` lends a pooled connection (autocommit) for the request. :func:`allow` is the one
way a route is authorized: it authenticates the bearer token and asks the permission policy
(:mod:`fwcore.policy`) whether the token may do the route's action — on the route's object, for
actions some roles may do only on their own tickets or position. :func:`public` declares the
few routes that need no token. tests/test_route_policy.py fails on a route that declares neither.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Final

import psycopg
from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool

from fwcore import policy
from fwcore.auth import verify_token
from fwcore.devices import resolve_device_ref
from fwcore.errors import Invalid
from fwcore.inputs import check_text
from fwcore.policy import Principal
from fwcore.settings import Settings
from ingest import assets
from ticketing.scope import technician_facts, ticket_facts


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_pool(request: Request) -> ConnectionPool:
    return request.app.state.pool


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[ConnectionPool, Depends(get_pool)]


def get_conn(pool: PoolDep) -> Iterator[psycopg.Connection]:
    """A connection from the pool for this request, returned to it afterwards."""
    with pool.connection() as conn:
        yield conn


ConnDep = Annotated[psycopg.Connection, Depends(get_conn)]

#: Keys of ``request.state`` that :class:`fieldwatch.api.guard.RequestGuard` fills once it has checked
#: the token (before the body is read): the principal, and ``(token id, role)`` for the access log.
PRINCIPAL_KEY: Final = "fw_principal"
TOKEN_KEY: Final = "fw_token"

_bearer = HTTPBearer(auto_error=False, description="an API token (`fieldwatch tokens create --role ROLE`)")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def current_principal(
    request: Request, conn: ConnDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """Who the caller's token acts as (as the guard found it), or 401 with a ``WWW-Authenticate: Bearer`` challenge."""
    known: Principal | None = request.scope.get("state", {}).get(PRINCIPAL_KEY)
    if known is not None:
        return known
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send the header `Authorization: Bearer <token>`",
            headers=_CHALLENGE,
        )
    info = verify_token(conn, credentials.credentials)
    if info is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return info.principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


# --- the permission policy: every route declares one action ------------------------------------


@dataclass(frozen=True, slots=True)
class Subject:
    """The object a route acts on: the path parameter naming it, and the domain function that loads
    the facts the policy's ``own`` and ``client`` scopes need (who holds it, whose it is)."""

    kind: str
    param: str
    facts: Callable[[psycopg.Connection, int], policy.Facts]
    #: How the path parameter names the object, if not only by id (a device: ``SITE/KEY`` too).
    ident: Callable[[psycopg.Connection, str], int] | None = None

    def id_of(self, request: Request, conn: psycopg.Connection) -> int:
        """The id of the object the request's path names (404 if none, 422 if ambiguous or malformed)."""
        if self.ident is not None:
            return self.ident(conn, str(request.path_params.get(self.param)))
        return _path_int(request, self.param)


def _registry(res: assets.Resource, ident: Callable[[psycopg.Connection, str], int] | None = None) -> Subject:
    return Subject(res.what, f"{res.what}_id", lambda conn, i: assets.client_facts(conn, res, i), ident)


TICKET = Subject("ticket", "ticket_id", ticket_facts)
TECHNICIAN = Subject("technician", "technician_id", technician_facts)
CLIENT = _registry(assets.CLIENTS)
SITE = _registry(assets.SITES)
DEVICE = _registry(assets.DEVICES, resolve_device_ref)
#: The subject of each registry resource's ``/{what}_id`` routes.
REGISTRY_SUBJECTS: dict[str, Subject] = {s.kind: s for s in (CLIENT, SITE, DEVICE)}


@dataclass(frozen=True, slots=True)
class Access:
    """What :func:`allow` admitted: the principal, and how far the decision reaches.

    A list route passes :attr:`visible` to its domain query, which shows only those rows.
    """

    principal: Principal
    decision: policy.Decision

    @property
    def visible(self) -> policy.Visible:
        return policy.visible(self.principal, self.decision)

    def may(self, action: str, facts: policy.Facts | None = None) -> bool:
        """Whether the same principal may also do ``action`` (on ``facts``' object): for what a
        response shows, e.g. contact details (``technician.read_contact``)."""
        return policy.decide(self.principal, action, facts).allowed


#: The attribute :func:`allow` and :func:`public` set on their dependency: ``(action, subject)``.
#: The route-policy test finds every route's declaration through it.
POLICY_MARK = "__fieldwatch_policy__"


def _path_int(request: Request, param: str) -> int:
    raw = request.path_params.get(param)
    try:
        return int(raw)  # type: ignore[arg-type]  # a missing parameter is a route bug: TypeError
    except ValueError:
        raise Invalid(f"{param} must be an integer, not {raw!r}", ("path", param)) from None


def allow(action: str, *, on: Subject | None = None) -> Any:
    """The dependency every authenticated route declares: may the caller do ``action``?

    Without ``on`` the role decides (403 if it may not); a list route then narrows its query by
    ``Access.visible``. With ``on``, a grant that reaches only some objects (``own``, ``client``)
    loads the object's facts through its domain and decides on them (403 naming why). An unknown
    action fails here, at import. Use: ``access: Annotated[Access, allow("ticket.read", on=TICKET)]``.
    """
    act = policy.action(action)
    if act.public:
        raise ValueError(f"{action} is public: declare it with public({action!r})")

    def check(request: Request, conn: ConnDep, principal: PrincipalDep) -> Access:
        decision = policy.decide(principal, action)
        if decision.allowed and on is not None and decision.scope is not policy.Scope.ALL:
            decision = policy.decide(principal, action, on.facts(conn, on.id_of(request, conn)))
        if not decision.allowed:
            raise HTTPException(status.HTTP_403_FORBIDDEN, decision.reason)
        return Access(principal, decision)

    setattr(check, POLICY_MARK, (action, on))
    return Depends(check)


def allow_unless_open(action: str, setting: str) -> Any:
    """:func:`allow` (role-wide), except that when the boolean setting ``setting`` is true anyone may
    (``/metrics`` with ``FIELDWATCH_API_METRICS_PUBLIC``)."""
    act = policy.action(action)
    if act.public:
        raise ValueError(f"{action} is public: declare it with public({action!r})")

    def check(
        request: Request,
        conn: ConnDep,
        settings: SettingsDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Access | None:
        if getattr(settings, setting):
            return None
        principal = current_principal(request, conn, credentials)
        decision = policy.decide(principal, action)
        if not decision.allowed:
            raise HTTPException(status.HTTP_403_FORBIDDEN, decision.reason)
        return Access(principal, decision)

    setattr(check, POLICY_MARK, (action, None))
    return Depends(check)


def public(action: str) -> Any:
    """The declaration of a route anyone may call, without a token (probes): ``_: Annotated[None, public(...)]``."""
    if not policy.action(action).public:
        raise ValueError(f"{action} is not public in the policy: declare it with allow({action!r})")

    def open_to_all() -> None:
        return None

    setattr(open_to_all, POLICY_MARK, (action, None))
    return Depends(open_to_all)


@dataclass(frozen=True, slots=True)
class Pagination:
    limit: int
    offset: int


def pagination(
    limit: Annotated[int, Query(ge=1, le=1000, description="page size")] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1, description="rows to skip")] = 0,
) -> Pagination:
    return Pagination(limit=limit, offset=offset)


PageDep = Annotated[Pagination, Depends(pagination)]


def checked_parameters(request: Request) -> None:
    """Every route's guard on its query and path parameters: no NUL characters or unpaired surrogates
    (PostgreSQL cannot store them); the body's texts are checked by its model (``fwcore.inputs.Input``)."""
    for where, params in (("query", request.query_params.multi_items()), ("path", request.path_params.items())):
        for name, value in params:
            if isinstance(value, str):
                try:
                    check_text(value)
                except ValueError as exc:
                    raise Invalid(f"{name} {exc}", (where, name)) from None


def device_in_path(
    device_id: Annotated[
        str, Path(description="the device: its id, SITE/KEY, GATEWAY/KEY, or a key unique in the fleet")
    ],
    conn: ConnDep,
) -> int:
    """The id of the device a route's ``{device_id:device}`` names: an id, ``SITE/KEY``, ``GATEWAY/KEY``
    or a key unique in the fleet, as everywhere else a device is named (:mod:`fwcore.devices`;
    the path convertor: :mod:`fieldwatch.api.devicepath`). 404 if none, 422 if ambiguous."""
    return resolve_device_ref(conn, device_id)


#: A route's device, resolved from its ``{device_id:device}`` path parameter.
DevicePathDep = Annotated[int, Depends(device_in_path)]
