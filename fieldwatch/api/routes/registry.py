"""The asset registry: create, read, update and delete clients, sites, gateways, devices and series.

Writes need an ``admin`` token; reads accept any role. ``GET /gateways`` and ``GET /devices`` (with
site and client embedded) live in :mod:`.gateways` and :mod:`.devices`; the writes here answer with
the flat ``*Record`` bodies (ids, not embedded objects). Errors: 404 unknown id, 409 duplicate or
still referenced, 422 naming the bad field (see :mod:`ingest.assets`, which owns the rows and the rules).
"""

# No ``from __future__ import annotations``: the route factory below annotates with runtime variables.

from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Path, Query, Response, status
from pydantic import BaseModel

from fwcore.auth import TokenInfo
from ingest import assets as reg

from .. import registry_models as m
from ..deps import AnyRole, ConnDep, PageDep, require_roles
from ..schemas import Page
from ._prefix import API_PREFIX

Admin = Annotated[TokenInfo, Depends(require_roles("admin"))]

router = APIRouter(prefix=API_PREFIX, tags=["registry"])


def _crud(
    res: reg.Resource,
    path: str,
    create_model: type[BaseModel],
    update_model: type[BaseModel],
    record: type[BaseModel],
    *,
    with_get: bool = True,
) -> None:
    """Register POST ``path``, and GET/PATCH/DELETE ``path/{id}`` for ``res``."""
    what = res.what
    param = f"{what}_id"
    Ident = Annotated[int, Path(alias=param, description=f"the {what}'s id")]

    def create(body: create_model, conn: ConnDep, token: Admin) -> Any:  # type: ignore[valid-type]
        return reg.create(conn, res, cast(BaseModel, body).model_dump())

    def read(ident: Ident, conn: ConnDep, token: AnyRole) -> Any:
        return reg.get(conn, res, ident)

    def patch(ident: Ident, body: update_model, conn: ConnDep, token: Admin) -> Any:  # type: ignore[valid-type]
        return reg.update(conn, res, ident, cast(BaseModel, body).model_dump(exclude_unset=True))  # only named fields

    def remove(ident: Ident, conn: ConnDep, token: Admin) -> Response:
        reg.delete(conn, res, ident)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    one = f"{path}/{{{param}}}"
    router.add_api_route(
        path, create, methods=["POST"], response_model=record, status_code=201, summary=f"Create a {what}"
    )
    if with_get:
        router.add_api_route(one, read, methods=["GET"], response_model=record, summary=f"One {what}")
    router.add_api_route(one, patch, methods=["PATCH"], response_model=record, summary=f"Change a {what}")
    router.add_api_route(one, remove, methods=["DELETE"], status_code=204, summary=f"Delete a {what}")


_crud(reg.CLIENTS, "/clients", m.ClientCreate, m.ClientUpdate, m.ClientRecord)
_crud(reg.SITES, "/sites", m.SiteCreate, m.SiteUpdate, m.SiteRecord)
_crud(reg.GATEWAYS, "/gateways", m.GatewayCreate, m.GatewayUpdate, m.GatewayRecord)
_crud(reg.DEVICES, "/devices", m.DeviceCreate, m.DeviceUpdate, m.DeviceRecord, with_get=False)
_crud(reg.SERIES, "/series", m.SeriesCreate, m.SeriesUpdate, m.SeriesRecord)


@router.get("/clients", response_model=Page[m.ClientRecord], summary="List clients")
def list_clients(conn: ConnDep, token: AnyRole, page: PageDep) -> Any:
    return reg.list_(conn, reg.CLIENTS, limit=page.limit, offset=page.offset)


@router.get("/sites", response_model=Page[m.SiteRecord], summary="List sites")
def list_sites(conn: ConnDep, token: AnyRole, page: PageDep, client_id: Annotated[int | None, Query()] = None) -> Any:
    return reg.list_(conn, reg.SITES, limit=page.limit, offset=page.offset, filters={"client_id": client_id})


@router.get("/devices/{device_id}/record", response_model=m.DeviceRecord, summary="One device as stored (flat)")
def device_record(device_id: int, conn: ConnDep, token: AnyRole) -> Any:
    return reg.get(conn, reg.DEVICES, device_id)


@router.get("/series", response_model=Page[m.SeriesRecord], summary="List series")
def list_series(conn: ConnDep, token: AnyRole, page: PageDep, device_id: Annotated[int | None, Query()] = None) -> Any:
    return reg.list_(conn, reg.SERIES, limit=page.limit, offset=page.offset, filters={"device_id": device_id})
