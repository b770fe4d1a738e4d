"""One router per resource; :data:`api_router` gathers those served under ``/api/v1``."""

from fastapi import APIRouter

from . import (
    alarms,
    audit,
    deadletters,
    devices,
    discovered,
    dispatch,
    field,
    gateways,
    health,
    kpis,
    queries,
    registry,
    rules,
    series,
    silences,
    skills,
    technicians,
    tickets,
    tokens,
    webhooks,
    workorders,
)
from ._prefix import API_PREFIX

api_router = APIRouter()
# The order is the order of the OpenAPI document: assets and readings, alarms and rules, tickets and dispatch.
for _module in (
    devices,
    series,
    gateways,
    discovered,
    deadletters,
    alarms,
    tickets,
    technicians,
    skills,
    rules,
    silences,
    registry,
    queries,
    dispatch,
    field,
    workorders,
    kpis,
    webhooks,
    audit,
    tokens,
):
    api_router.include_router(_module.router)

__all__ = ["API_PREFIX", "api_router", "health"]
