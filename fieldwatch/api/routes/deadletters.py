"""Dead letters: what ingest refused, with the reason — list, read, replay after a fix, purge.

Who may is the permission policy's (``deadletter.*`` in :mod:`fwcore.policy`): reads for every
reader; replaying and purging are ``admin`` only (a replay writes telemetry, a purge deletes
evidence). Filters: ``reason``, ``gateway``, ``site``, ``device``, ``from``/``to``
(when it was received).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from fwcore import paging
from fwcore.inputs import Instant
from ingest import deadletters as dl
from ingest.hold import HoldLimits
from ingest.validate import Limits

from ..deps import Access, ConnDep, PageDep, SettingsDep, allow
from ..intake_models import DeadLetterDetail, DeadLetterPublic, Purged, ReplayPublic
from ..schemas import Page
from ..timerange import as_utc
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/dead-letters", tags=["dead letters"])

Reader = Annotated[Access, allow("deadletter.read")]
Manager = Annotated[Access, allow("deadletter.manage")]


def letter_filter(
    reason: Annotated[str | None, Query(description="e.g. unknown_device, hold_full, invalid_json")] = None,
    gateway: Annotated[str | None, Query(description="gateway slug (from the topic)")] = None,
    site: Annotated[str | None, Query(description="site slug (from the topic)")] = None,
    device: Annotated[str | None, Query(description="a device key among the points kept")] = None,
    start: Annotated[Instant | None, Query(alias="from", description="received at or after (ISO 8601)")] = None,
    end: Annotated[Instant | None, Query(alias="to", description="received before (ISO 8601)")] = None,
) -> dl.DeadLetterFilter:
    return dl.DeadLetterFilter(
        reason=reason,
        gateway=gateway,
        site=site,
        device=device,
        since=as_utc(start) if start is not None else None,
        until=as_utc(end) if end is not None else None,
    )


FilterDep = Annotated[dl.DeadLetterFilter, Depends(letter_filter)]


@router.get("", response_model=Page[DeadLetterPublic], summary="List dead letters, newest first")
def list_dead_letters(conn: ConnDep, access: Reader, page: PageDep, f: FilterDep) -> paging.Page[dl.DeadLetterSummary]:
    return dl.list_dead_letters(conn, f, limit=page.limit, offset=page.offset)


@router.get("/{letter_id}", response_model=DeadLetterDetail, summary="One dead letter with its payload")
def get_dead_letter(letter_id: int, conn: ConnDep, access: Reader) -> DeadLetterDetail:
    return DeadLetterDetail.of(dl.get_dead_letter(conn, letter_id))


async def _replay(settings: SettingsDep, f: dl.DeadLetterFilter) -> ReplayPublic:
    report = await asyncio.to_thread(
        dl.replay,
        settings.database_url,
        f,
        limits=Limits.from_settings(settings),
        hold=HoldLimits.from_settings(settings),
    )
    return ReplayPublic(**asdict(report))


@router.post("/replay", response_model=ReplayPublic, summary="Replay the dead letters matching the filters")
async def replay(access: Manager, settings: SettingsDep, f: FilterDep) -> ReplayPublic:
    return await _replay(settings, f)


@router.post("/{letter_id}/replay", response_model=ReplayPublic, summary="Replay one dead letter")
async def replay_one(letter_id: int, access: Manager, settings: SettingsDep, conn: ConnDep) -> ReplayPublic:
    dl.get_dead_letter(conn, letter_id)  # 404 for an unknown id
    return await _replay(settings, dl.DeadLetterFilter(id=letter_id))


@router.delete("", response_model=Purged, summary="Delete the dead letters matching the filters")
def purge(
    conn: ConnDep,
    access: Manager,
    f: FilterDep,
    everything: Annotated[bool, Query(alias="all", description="needed to purge without any filter")] = False,
) -> Purged:
    return Purged(purged=dl.purge(conn, f, everything=everything))
