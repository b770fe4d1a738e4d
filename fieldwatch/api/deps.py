"""Every dependency the routers use, as ``Annotated`` aliases, in one place.

``ConnDep`` lends a pooled connection (autocommit) for the request. The role
aliases authenticate the bearer token and check its role; ``admin`` passes
every check. Reads accept any valid token (:data:`AnyRole`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

import psycopg
from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool

from fwcore.auth import TokenInfo, check_role, verify_token
from fwcore.settings import Settings


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

_bearer = HTTPBearer(auto_error=False, description="an API token (`fieldwatch tokens create --role ROLE`)")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def current_token(
    conn: ConnDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> TokenInfo:
    """The caller's token, or 401 with a ``WWW-Authenticate: Bearer`` challenge."""
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
    return info


def require_roles(*roles: str) -> Callable[[TokenInfo], TokenInfo]:
    """A dependency admitting tokens whose role is one of ``roles`` (or ``admin``); else 403."""
    for role in roles:
        check_role(role)
    allowed = ("admin", *(r for r in roles if r != "admin"))

    def check(token: Annotated[TokenInfo, Depends(current_token)]) -> TokenInfo:
        if token.role not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {token.role!r} may not do this; allowed roles: {', '.join(allowed)}",
            )
        return token

    return check


#: Any valid token: what every read needs.
AnyRole = Annotated[TokenInfo, Depends(current_token)]
#: Who may acknowledge alarms.
AlarmHandler = Annotated[TokenInfo, Depends(require_roles("reliability_engineer", "dispatcher"))]
#: Who may manage technicians.
Dispatcher = Annotated[TokenInfo, Depends(require_roles("dispatcher"))]
#: Who may report a technician's position.
LocationReporter = Annotated[TokenInfo, Depends(require_roles("dispatcher", "field_engineer"))]
#: Who may accept or reject a device a gateway announced: the engineer commissioning it on site (docs/api.md).
Commissioner = Annotated[TokenInfo, Depends(require_roles("field_engineer"))]
#: Admin only: replaying and purging dead letters, forgetting discovered devices.
AdminOnly = Annotated[TokenInfo, Depends(require_roles("admin"))]


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
