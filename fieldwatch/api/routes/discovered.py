"""Discovered devices: devices a gateway announced (or sent data for) that nobody registered; accept or reject them.

Who may do what is the permission policy's (``discovered.*`` in :mod:`fwcore.policy`). Accepting
and rejecting are for ``field_engineer`` (and ``admin``): the
engineer who wires a device on site is the one who sees it appear, and accepting can only register
a device its gateway already announces, at the gateway's own site, under the key it publishes.
Forgetting one (its held points go to the dead letters) is ``admin`` only.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fwcore import paging
from ingest import discovery

from ..deps import Access, ConnDep, PageDep, allow
from ..intake_models import AcceptBody, AcceptedPublic, DiscoveredPublic, DiscoveredState, Forgotten
from ..schemas import Page
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/discovered", tags=["discovered devices"])

Reader = Annotated[Access, allow("discovered.read")]
Decider = Annotated[Access, allow("discovered.decide")]
Forgetter = Annotated[Access, allow("discovered.forget")]


@router.get("", response_model=Page[DiscoveredPublic], summary="List discovered devices, newest first")
def list_discovered(
    conn: ConnDep,
    access: Reader,
    page: PageDep,
    gateway: Annotated[str | None, Query(description="gateway slug")] = None,
    gateway_id: int | None = None,
    state: DiscoveredState | None = None,
) -> paging.Page[discovery.Discovered]:
    return discovery.list_discovered(
        conn, gateway=gateway, gateway_id=gateway_id, state=state, limit=page.limit, offset=page.offset
    )


@router.get("/{discovered_id}", response_model=DiscoveredPublic, summary="One discovered device")
def get_discovered(discovered_id: int, conn: ConnDep, access: Reader) -> discovery.Discovered:
    return discovery.get_discovered(conn, discovered_id)


@router.post(
    "/{discovered_id}/accept",
    response_model=AcceptedPublic,
    summary="Register the device at its gateway's site and store its held points (idempotent)",
)
def accept(discovered_id: int, conn: ConnDep, access: Decider, body: AcceptBody | None = None) -> discovery.Accepted:
    fields = body.model_dump(exclude_none=True) if body is not None else {}
    return discovery.accept(conn, discovered_id, fields, by=access.principal.name)


@router.post(
    "/{discovered_id}/reject",
    response_model=DiscoveredPublic,
    summary="Refuse the device: its held and later points go to the dead letters",
    responses={409: {"description": "the device was accepted already"}},
)
def reject(discovered_id: int, conn: ConnDep, access: Decider) -> discovery.Discovered:
    return discovery.reject(conn, discovered_id, by=access.principal.name)


@router.delete(
    "/{discovered_id}", response_model=Forgotten, summary="Forget the device (its next announcement discovers it again)"
)
def forget(discovered_id: int, conn: ConnDep, access: Forgetter) -> Forgotten:
    return Forgotten(dead_lettered=discovery.forget(conn, discovered_id))
