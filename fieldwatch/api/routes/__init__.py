"""One router per resource; :data:`api_router` gathers those served under ``/api/v1``."""

from fastapi import APIRouter

from . import alarms, devices, gateways, health, series, technicians, tickets
from ._prefix import API_PREFIX

api_router = APIRouter()
for _module in (devices, series, gateways, alarms, tickets, technicians):
    api_router.include_router(_module.router)
api_router.include_router(__import__(f"{__name__}.rules", fromlist=["router"]).router)  # issue 5: rules as code
api_router.include_router(__import__(f"{__name__}.silences", fromlist=["router"]).router)  # issue 5: silences
api_router.include_router(__import__(f"{__name__}.registry", fromlist=["router"]).router)  # issue 4: registry
api_router.include_router(__import__(f"{__name__}.queries", fromlist=["router"]).router)  # issue 4: queries
api_router.include_router(__import__(f"{__name__}.dispatch", fromlist=["router"]).router)  # issue 6: dispatcher
api_router.include_router(__import__(f"{__name__}.field", fromlist=["router"]).router)  # issue 6: field API
api_router.include_router(__import__(f"{__name__}.workorders", fromlist=["router"]).router)  # issue 6: work orders
api_router.include_router(__import__(f"{__name__}.kpis", fromlist=["router"]).router)  # issue 6: KPIs
api_router.include_router(__import__(f"{__name__}.webhooks", fromlist=["router"]).router)  # issue 6: webhooks

__all__ = ["API_PREFIX", "api_router", "health"]
