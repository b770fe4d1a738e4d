"""Devices with their site and client, and the latest value of each of their series."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fwcore import paging
from ingest import queries

from ..deps import DEVICE, Access, ConnDep, DevicePathDep, PageDep, allow
from ..devicepath import DEVICE_PATH_HELP
from ..schemas import DeviceLatest, DevicePublic, Page
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/devices", tags=["devices"])


@router.get(
    "",
    response_model=Page[DevicePublic],
    summary="List devices",
    responses={404: {"description": "no device matches `ref`"}},
)
def list_devices(
    conn: ConnDep,
    access: Annotated[Access, allow("device.read")],
    page: PageDep,
    site: Annotated[str | None, Query(description="site slug")] = None,
    site_id: Annotated[int | None, Query(description="site id")] = None,
    ref: Annotated[
        str | None,
        Query(description="the one device named by its id, SITE/KEY, GATEWAY/KEY or a key unique in the fleet"),
    ] = None,
) -> paging.Page[queries.Device]:
    # an unknown reference is 404, an ambiguous one 422 naming the candidates
    return queries.list_devices(
        conn, site=site, site_id=site_id, ref=ref, visible=access.visible, limit=page.limit, offset=page.offset
    )


@router.get(
    "/{device_id:device}/latest",
    response_model=DeviceLatest,
    summary="Newest value of each series",
    description=f"`device_id`: {DEVICE_PATH_HELP}.",
)
def device_latest(
    conn: ConnDep, device: DevicePathDep, _: Annotated[Access, allow("device.read", on=DEVICE)]
) -> queries.DeviceLatest:
    return queries.device_latest(conn, device)


@router.get(
    "/{device_id:device}",
    response_model=DevicePublic,
    summary="One device",
    description=f"`device_id`: {DEVICE_PATH_HELP}.",
)
def get_device(
    conn: ConnDep, device: DevicePathDep, _: Annotated[Access, allow("device.read", on=DEVICE)]
) -> queries.Device:
    return queries.get_device(conn, device)
