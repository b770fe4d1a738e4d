"""Outbound webhooks: endpoints (CRUD; the secret is write-only), deliveries, dead letters and
re-delivery. Endpoint changes are for admins (the secret signs what we send); dispatchers and
admins may read deliveries and re-deliver dead letters.

An endpoint's URL must reach a public address unless the settings allow-list it
(``FIELDWATCH_WEBHOOK_ALLOWED_TARGETS``); a URL's password is shown as ``***``. The secret's length
is checked by the domain, not by the request model, so a refused secret is not echoed back in the
422 (the request model's errors repeat their input)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response, status
from pydantic import ConfigDict, Field

from fwcore.egress import EgressPolicy
from fwcore.inputs import Input
from ticketing import webhook_admin as wh
from ticketing.errors import NotFound as TicketNotFound

from ..deps import Access, ConnDep, PageDep, SettingsDep, allow
from ..errors import Conflict, Invalid, NotFound
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/webhooks", tags=["webhooks"])
Admin = Annotated[Access, allow("webhook.write")]
Reader = Annotated[Access, allow("webhook.read")]


class EndpointCreate(Input):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        description="http:// or https:// receiver at a public address (or one allow-listed in the settings); "
        "a password in it (https://user:password@host/) is sent as Basic auth and shown as ***"
    )
    secret: str = Field(
        description="HMAC key for X-Fieldwatch-Signature; never returned",
        json_schema_extra={"minLength": wh.MIN_SECRET},
    )
    events: list[str] = Field(default_factory=list, description=f"filter, empty = all: {', '.join(wh.EVENT_TYPES)}")
    enabled: bool = True
    max_attempts: int = Field(8, ge=1, le=100, description="dead-lettered after this many failed attempts")


class EndpointUpdate(Input):
    """Only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, description="a password shown as *** keeps the stored one")
    secret: str | None = Field(
        None, description="rotate the signing key", json_schema_extra={"minLength": wh.MIN_SECRET}
    )
    events: list[str] | None = None
    enabled: bool | None = None
    max_attempts: int | None = Field(None, ge=1, le=100)


def _call(fn, *args, **kw):
    """Translate ticketing's errors into the API's (404, 409 or 422)."""
    try:
        return fn(*args, **kw)
    except TicketNotFound as exc:
        raise NotFound("webhook", str(exc).removeprefix("no webhook ")) from None
    except wh.NotDeadLetter as exc:
        raise Conflict(str(exc)) from None
    except ValueError as exc:
        raise Invalid(str(exc)) from None


@router.get("/endpoints", response_model=list[wh.Endpoint], summary="Webhook endpoints")
def list_endpoints(conn: ConnDep, _: Reader) -> list[wh.Endpoint]:
    return wh.list_endpoints(conn)


@router.post(
    "/endpoints", response_model=wh.Endpoint, status_code=status.HTTP_201_CREATED, summary="Add a webhook endpoint"
)
def create_endpoint(body: EndpointCreate, conn: ConnDep, _: Admin, settings: SettingsDep) -> wh.Endpoint:
    return _call(
        wh.create_endpoint,
        conn,
        url=body.url,
        secret=body.secret,
        events=body.events,
        enabled=body.enabled,
        max_attempts=body.max_attempts,
        allow=EgressPolicy.parse(settings.webhook_allowed_targets),
    )


@router.get("/endpoints/{endpoint_id}", response_model=wh.Endpoint, summary="One webhook endpoint")
def get_endpoint(endpoint_id: int, conn: ConnDep, _: Reader) -> wh.Endpoint:
    return _call(wh.get_endpoint, conn, endpoint_id)


@router.patch("/endpoints/{endpoint_id}", response_model=wh.Endpoint, summary="Change a webhook endpoint")
def update_endpoint(
    endpoint_id: int, body: EndpointUpdate, conn: ConnDep, _: Admin, settings: SettingsDep
) -> wh.Endpoint:
    allow = EgressPolicy.parse(settings.webhook_allowed_targets)
    return _call(wh.update_endpoint, conn, endpoint_id, allow=allow, **body.model_dump(exclude_unset=True))


@router.delete(
    "/endpoints/{endpoint_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a webhook endpoint and its delivery history",
)
def delete_endpoint(endpoint_id: int, conn: ConnDep, _: Admin) -> Response:
    _call(wh.delete_endpoint, conn, endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/deliveries", response_model=list[wh.Delivery], summary="Deliveries, newest first")
def list_deliveries(
    conn: ConnDep,
    _: Reader,
    page: PageDep,
    endpoint_id: int | None = None,
    status: wh.DeliveryStatus | None = None,
) -> list[wh.Delivery]:
    return wh.list_deliveries(conn, endpoint_id=endpoint_id, status=status, limit=page.limit, offset=page.offset)


@router.get("/dead-letters", response_model=list[wh.Delivery], summary="Deliveries that gave up")
def list_dead_letters(conn: ConnDep, _: Reader, page: PageDep, endpoint_id: int | None = None) -> list[wh.Delivery]:
    return wh.list_deliveries(conn, endpoint_id=endpoint_id, status="dead", limit=page.limit, offset=page.offset)


@router.post(
    "/dead-letters/{delivery_id}/redeliver",
    response_model=wh.Delivery,
    summary="Send a dead letter again (same idempotency key)",
    responses={409: {"description": "the delivery is not dead"}},
)
def redeliver(delivery_id: int, conn: ConnDep, _: Annotated[Access, allow("webhook.redeliver")]) -> wh.Delivery:
    with conn.transaction():
        return _call(wh.redeliver, conn, delivery_id)
