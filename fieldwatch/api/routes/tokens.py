"""API tokens for admins: list, create (the plaintext is answered once), revoke. A token may be bound
to a technician, so a phone carries only its owner's rights; creating and revoking are audited."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field

from fwcore.auth import ROLES, TokenInfo, issue_token, list_tokens, revoke_token
from fwcore.inputs import Input

from ..deps import Access, ConnDep, allow
from ..errors import Invalid, NotFound
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/tokens", tags=["tokens"])
Admin = Annotated[Access, allow("token.manage")]


class TokenCreate(Input):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="who or what holds it, for listings and audit")
    role: str = Field(description=f"one of: {', '.join(ROLES)}")
    technician_id: int | None = Field(
        None, description="bind the token to this technician (required for the technician role)"
    )


class TokenPublic(BaseModel):
    id: int
    name: str
    role: str
    prefix: str = Field(description="the token's first characters, to tell tokens apart")
    technician_id: int | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(BaseModel):
    token: str = Field(description="the token itself: shown this once, only its hash is stored")
    info: TokenPublic


@router.get("", response_model=list[TokenPublic], summary="Every token, oldest first (never the tokens themselves)")
def tokens(conn: ConnDep, _: Admin, include_revoked: bool = True) -> list[TokenInfo]:
    return list_tokens(conn, include_revoked=include_revoked)


@router.post("", response_model=TokenCreated, status_code=status.HTTP_201_CREATED, summary="Create a token")
def create(body: TokenCreate, conn: ConnDep, access: Admin) -> TokenCreated:
    try:
        plaintext, info = issue_token(
            conn, body.name, body.role, technician_id=body.technician_id, actor=access.principal
        )
    except ValueError as exc:  # unknown role, unbound technician token, unknown technician
        raise Invalid(str(exc)) from None
    return TokenCreated(token=plaintext, info=TokenPublic.model_validate(info, from_attributes=True))


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke a token (at once)")
def revoke(token_id: int, conn: ConnDep, access: Admin) -> Response:
    if not revoke_token(conn, token_id, actor=access.principal):
        raise NotFound("active token", token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
