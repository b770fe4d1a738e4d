"""Operations endpoints (health, readiness, metrics, OpenAPI) and hosting the API with uvicorn."""

from __future__ import annotations

import asyncio
import socket
import time
from html.parser import HTMLParser

import httpx
import pytest

from fieldwatch.api import create_app, run_api
from fieldwatch.api.server import ApiStartError
from tests.support.api import BASE, TestClient, api_client, auth, seed, settings_for, token
from tests.support.ports import free_port

DOWN_URL = "postgresql://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1


def test_healthz_and_readyz_need_no_token(db_url: str) -> None:
    """Probes answer without authentication; readiness checks the migrated database."""
    with api_client(db_url) as api:
        assert api.get("/healthz").json() == {"status": "ok"}
        r = api.get("/readyz")
        assert r.status_code == 200 and r.json() == {"status": "ready", "database": "ok", "storage": "ok"}
        assert api.get(f"{BASE}/readyz").status_code == 200  # also under the API prefix


class _Assets(HTMLParser):
    """Every address a page makes the browser fetch: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        self.urls.extend(v for k, v in attrs if k == wanted and v)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_load_nothing_from_another_server(page: str) -> None:
    """/docs and /redoc fetch every script, style and icon from this server, so they work offline."""
    # public docs: a browser opening /docs sends no token, and neither do the page's asset requests
    with TestClient(create_app(settings_for(DOWN_URL, api_docs="public"), pool_timeout_s=0.3)) as api:
        r = api.get(page)
        assert r.status_code == 200
        parser = _Assets()
        parser.feed(r.text)
        assert len(parser.urls) >= 2, parser.urls  # the UI's script and its icon (and Swagger's style)
        for url in parser.urls:
            assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from elsewhere"
            asset = api.get(url)
            assert asset.status_code == 200 and len(asset.content) > 1000, url
        assert "cdn" not in r.text.lower() and "fonts.googleapis" not in r.text


def test_unreachable_database_is_503_not_a_crash() -> None:
    """With the database down the app still starts: /healthz is 200, /readyz and data endpoints 503."""
    app = create_app(settings_for(DOWN_URL), pool_timeout_s=0.3)
    with TestClient(app) as api:
        assert api.get("/healthz").status_code == 200
        r = api.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "unavailable"
        r = api.get(f"{BASE}/devices", headers=auth("fw_" + "a" * 43))
        assert r.status_code == 503 and r.json()["detail"].startswith("database unavailable")
        assert r.headers["retry-after"] == "5"


def test_metrics_count_requests_by_route_template(db_url: str) -> None:
    """/metrics is Prometheus text and labels requests by route template, not by raw path."""
    fleet = seed(db_url)
    headers = auth(token(db_url, "admin"))
    with api_client(db_url) as api:
        api.get(f"{BASE}/devices/{fleet.devices['pump-1']}", headers=headers)
        api.get("/no/such/path", headers=headers)
        r = api.get("/metrics", headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'fieldwatch_api_requests_total{method="GET",route="/api/v1/devices/{device_id}",status="200"}' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "fieldwatch_api_request_duration_seconds_bucket" in text
    assert f"/api/v1/devices/{fleet.devices['pump-1']}" not in text


def test_openapi_lists_every_route_and_the_bearer_scheme(db_url: str) -> None:
    """/openapi.json documents all routes with bearer security; /docs serves the UI."""
    headers = auth(token(db_url, "viewer"))
    with api_client(db_url) as api:
        spec = api.get("/openapi.json", headers=headers).json()
        assert api.get("/docs", headers=headers).status_code == 200
    paths = spec["paths"]
    expected = {
        "/healthz": {"get"},
        "/readyz": {"get"},
        "/metrics": {"get"},
        f"{BASE}/devices": {"get", "post"},
        f"{BASE}/devices/{{device_id}}": {"get", "patch", "delete"},
        f"{BASE}/devices/{{device_id}}/record": {"get"},
        f"{BASE}/devices/{{device_id}}/history": {"post"},
        f"{BASE}/devices/{{device_id}}/latest": {"get"},
        f"{BASE}/series/{{series_id}}/points": {"get"},
        f"{BASE}/series/{{series_id}}/buckets": {"get"},
        f"{BASE}/series/{{series_id}}/gaps": {"get"},
        f"{BASE}/series/{{series_id}}/export.csv": {"get"},
        f"{BASE}/series": {"get", "post"},
        f"{BASE}/series/{{series_id}}": {"get", "patch", "delete"},
        f"{BASE}/clients": {"get", "post"},
        f"{BASE}/clients/{{client_id}}": {"get", "patch", "delete"},
        f"{BASE}/sites": {"get", "post"},
        f"{BASE}/sites/{{site_id}}": {"get", "patch", "delete"},
        f"{BASE}/alarms": {"get"},
        f"{BASE}/alarms/{{alarm_id}}": {"get"},
        f"{BASE}/alarms/{{alarm_id}}/acknowledge": {"post"},
        f"{BASE}/alarms/{{alarm_id}}/comments": {"get", "post"},
        f"{BASE}/silences": {"get", "post"},
        f"{BASE}/silences/{{silence_id}}/end": {"post"},
        f"{BASE}/tickets": {"get"},
        f"{BASE}/tickets/{{ticket_id}}": {"get"},
        f"{BASE}/tickets/{{ticket_id}}/assign": {"post"},
        f"{BASE}/tickets/{{ticket_id}}/pin": {"put", "delete"},
        f"{BASE}/tickets/{{ticket_id}}/explanation": {"get"},
        f"{BASE}/tickets/{{ticket_id}}/status": {"post"},
        f"{BASE}/tickets/{{ticket_id}}/timeline": {"get"},
        f"{BASE}/tickets/{{ticket_id}}/photos": {"get", "post"},
        f"{BASE}/tickets/{{ticket_id}}/photos/{{photo_id}}": {"get"},
        f"{BASE}/workorders": {"post"},
        f"{BASE}/kpis": {"get"},
        f"{BASE}/technicians": {"get", "post"},
        f"{BASE}/technicians/{{technician_id}}": {"get", "patch"},
        f"{BASE}/technicians/{{technician_id}}/retire": {"post"},
        f"{BASE}/skills": {"get", "post"},
        f"{BASE}/skills/{{skill_code}}": {"get", "patch"},
        f"{BASE}/skills/{{skill_code}}/retire": {"post"},
        f"{BASE}/skills/{{skill_code}}/restore": {"post"},
        f"{BASE}/technicians/{{technician_id}}/location": {"put"},
        f"{BASE}/technicians/{{technician_id}}/skills": {"get", "put"},
        f"{BASE}/webhooks/endpoints": {"get", "post"},
        f"{BASE}/webhooks/endpoints/{{endpoint_id}}": {"get", "patch", "delete"},
        f"{BASE}/webhooks/deliveries": {"get"},
        f"{BASE}/webhooks/dead-letters": {"get"},
        f"{BASE}/webhooks/dead-letters/{{delivery_id}}/redeliver": {"post"},
        f"{BASE}/gateways": {"get", "post"},
        f"{BASE}/gateways/{{gateway_id}}": {"get", "patch", "delete"},
        f"{BASE}/gateways/{{gateway_id}}/config": {"post"},
        f"{BASE}/discovered": {"get"},
        f"{BASE}/discovered/{{discovered_id}}": {"get", "delete"},
        f"{BASE}/discovered/{{discovered_id}}/accept": {"post"},
        f"{BASE}/discovered/{{discovered_id}}/reject": {"post"},
        f"{BASE}/dead-letters": {"get", "delete"},
        f"{BASE}/dead-letters/replay": {"post"},
        f"{BASE}/dead-letters/{{letter_id}}": {"get"},
        f"{BASE}/dead-letters/{{letter_id}}/replay": {"post"},
        f"{BASE}/rules": {"get"},
        f"{BASE}/rules/apply": {"post"},
        f"{BASE}/rules/{{rule}}": {"get"},
        f"{BASE}/rules/{{rule}}/health": {"get"},
        f"{BASE}/rules/{{rule}}/backtest": {"post"},
        f"{BASE}/rules/{{rule}}/train": {"post"},
        f"{BASE}/rules/{{rule}}/models": {"get"},
        f"{BASE}/rules/{{rule}}/rollback": {"post"},
        f"{BASE}/rules/{{rule}}/validate": {"post"},
        f"{BASE}/audit": {"get"},
        f"{BASE}/tokens": {"get", "post"},
        f"{BASE}/tokens/{{token_id}}": {"delete"},
    }
    assert {p: set(ops) for p, ops in paths.items()} == expected
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert paths[f"{BASE}/alarms"]["get"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in paths["/healthz"]["get"]


async def test_run_api_serves_over_tcp_and_stops_cleanly(db_url: str) -> None:
    """run_api listens on the configured port, serves real HTTP, and returns promptly once `stop` is set,
    even with a client still holding a keep-alive connection; the port is free again afterwards."""
    fleet = seed(db_url)
    tok = token(db_url, "reliability_engineer")
    port = free_port()
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_api(settings_for(db_url, api_port=port), ready=ready, stop=stop))
    await asyncio.wait_for(ready.wait(), 10)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        r = await client.get(f"{BASE}/devices/{fleet.devices['pump-1']}/latest", headers=auth(tok))
        assert r.status_code == 200 and len(r.json()["values"]) == 3
        r = await client.post(f"{BASE}/alarms/{fleet.alarms['active']}/acknowledge", headers=auth(tok))
        assert r.json()["state"] == "acknowledged"
        started = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, 10)
        assert time.monotonic() - started < 3
    assert task.exception() is None
    socket.create_server(("127.0.0.1", port)).close()  # released


async def test_run_api_on_a_busy_port_raises_our_error(db_url: str) -> None:
    """A port already in use is reported as ApiStartError, not as a SystemExit that would end the host loop."""
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(ApiStartError, match=f"127.0.0.1:{port}"):
            await run_api(settings_for(db_url, api_port=port), stop=asyncio.Event())
