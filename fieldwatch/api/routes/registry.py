"""The asset registry: create, read, update and delete clients, sites, gateways, devices and series.

Writes are the policy's ``registry.write`` (admins); reads are each kind's ``*.read`` action.
``GET /gateways`` and ``GET /devices`` (with site and client embedded) live in :mod:`.gateways`
and :mod:`.devices`; the writes here answer with
the flat ``*Record`` bodies (ids, not embedded objects). Errors: 404 unknown id, 409 duplicate or
still referenced, 422 naming the bad field (see :mod:`ingest.assets`, which owns the rows and the rules).
"""

# No ``from __future__ import annotations``: the route factory below annotates with runtime variables.

from typing import Annotated, Any, cast

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel

from ingest import assets as reg

from .. import registry_models as m
from ..deps import DEVICE, REGISTRY_SUBJECTS, Access, ConnDep, DevicePathDep, PageDep, allow
from ..devicepath import DEVICE_PATH_HELP
from ..schemas import Page
from ._prefix import API_PREFIX

Writer = Annotated[Access, allow("registry.write")]

router = APIRouter(prefix=API_PREFIX, tags=["registry"])


def _crud(
    res: reg.Resource,
    path: str,
    create_model: type[BaseModel],
    update_model: type[BaseModel],
    record: type[BaseModel],
    *,
    with_get: bool = True,
    read_action: str | None = None,
) -> None:
    """Register POST ``path``, and GET/PATCH/DELETE ``path/{id}`` for ``res`` (GET is ``read_action``,
    by default ``<what>.read``)."""
    what = res.what
    param = f"{what}_id"
    Ident: Any = Annotated[int, Path(alias=param, description=f"the {what}'s id")]
    one = f"{path}/{{{param}}}"
    if res is reg.DEVICES:  # a device is named as everywhere: id, SITE/KEY, GATEWAY/KEY or a unique key
        Ident, one = DevicePathDep, f"{path}/{{{param}:device}}"
    Reader = Annotated[Access, allow(read_action or f"{what}.read", on=REGISTRY_SUBJECTS.get(what))]

    def create(body: create_model, conn: ConnDep, _: Writer) -> Any:  # type: ignore[valid-type]
        return reg.create(conn, res, cast(BaseModel, body).model_dump())

    def read(ident: Ident, conn: ConnDep, _: Reader) -> Any:
        return reg.get(conn, res, ident)

    def patch(ident: Ident, body: update_model, conn: ConnDep, _: Writer) -> Any:  # type: ignore[valid-type]
        return reg.update(conn, res, ident, cast(BaseModel, body).model_dump(exclude_unset=True))  # only named fields

    def remove(ident: Ident, conn: ConnDep, _: Writer) -> Response:
        reg.delete(conn, res, ident)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

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
_crud(reg.SERIES, "/series", m.SeriesCreate, m.SeriesUpdate, m.SeriesRecord, read_action="telemetry.read")


@router.get("/clients", response_model=Page[m.ClientRecord], summary="List clients")
def list_clients(conn: ConnDep, access: Annotated[Access, allow("client.read")], page: PageDep) -> Any:
    return reg.list_(conn, reg.CLIENTS, limit=page.limit, offset=page.offset, visible=access.visible)


@router.get("/sites", response_model=Page[m.SiteRecord], summary="List sites")
def list_sites(
    conn: ConnDep,
    access: Annotated[Access, allow("site.read")],
    page: PageDep,
    client_id: Annotated[int | None, Query()] = None,
) -> Any:
    return reg.list_(
        conn, reg.SITES, limit=page.limit, offset=page.offset, filters={"client_id": client_id}, visible=access.visible
    )


@router.get(
    "/devices/{device_id:device}/record",
    response_model=m.DeviceRecord,
    summary="One device as stored (flat)",
    description=f"`device_id`: {DEVICE_PATH_HELP}.",
)
def device_record(conn: ConnDep, device: DevicePathDep, _: Annotated[Access, allow("device.read", on=DEVICE)]) -> Any:
    return reg.get(conn, reg.DEVICES, device)


@router.get("/series", response_model=Page[m.SeriesRecord], summary="List series")
def list_series(
    conn: ConnDep,
    _: Annotated[Access, allow("telemetry.read")],
    page: PageDep,
    device_id: Annotated[int | None, Query()] = None,
) -> Any:
    return reg.list_(conn, reg.SERIES, limit=page.limit, offset=page.offset, filters={"device_id": device_id})
