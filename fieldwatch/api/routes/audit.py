"""The audit log: who changed what and when, with the state before and after. Read-only: the log
is append-only (the table refuses updates and deletes) and no route changes it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from fwcore import audit
from fwcore.inputs import Instant

from ..deps import Access, ConnDep, PageDep, allow
from ..errors import Invalid
from ..schemas import Page
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/audit", tags=["audit"])


class AuditEntryPublic(BaseModel):
    id: int
    at: datetime = Field(description="when the change was made (its transaction's time)")
    actor: str = Field(description="the token's name, or the CLI user or job that made the change")
    actor_role: str = Field(description="the token's role; empty for a CLI user, 'system' for a job")
    actor_token_id: int | None
    action: str = Field(description=f"one of: {', '.join(audit.ACTIONS)}")
    object_type: str
    object_id: str
    before: dict[str, Any] | None = Field(description="the fields the change is about, before it; null for a creation")
    after: dict[str, Any] | None


@router.get("", response_model=Page[AuditEntryPublic], summary="Audit entries, newest first")
def list_audit(
    conn: ConnDep,
    _: Annotated[Access, allow("audit.read")],
    page: PageDep,
    object_type: Annotated[str | None, Query(max_length=64, description="ticket, rule, silence, token, ...")] = None,
    object_id: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=200, description="the actor's name")] = None,
    action: Annotated[str | None, Query(max_length=64, description="e.g. ticket.status")] = None,
    since: Annotated[Instant | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[Instant | None, Query(description="ISO 8601, exclusive")] = None,
) -> Any:
    if since is not None and until is not None and since >= until:
        raise Invalid("since must be before until", ("query", "since"))
    return audit.entries(
        conn,
        object_type=object_type,
        object_id=object_id,
        actor=actor,
        action=action,
        since=since,
        until=until,
        limit=page.limit,
        offset=page.offset,
    )
