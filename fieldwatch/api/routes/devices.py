"""Devices with their site and client, and the latest value of each of their series."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fwcore import paging
from ingest import queries

from ..deps import DEVICE, Access, ConnDep, PageDep, allow
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


@router.get("/{device_id}", response_model=DevicePublic, summary="One device")
def get_device(device_id: int, conn: ConnDep, _: Annotated[Access, allow("device.read", on=DEVICE)]) -> queries.Device:
    return queries.get_device(conn, device_id)


@router.get("/{device_id}/latest", response_model=DeviceLatest, summary="Newest value of each series")
def device_latest(
    device_id: int, conn: ConnDep, _: Annotated[Access, allow("device.read", on=DEVICE)]
) -> queries.DeviceLatest:
    return queries.device_latest(conn, device_id)
