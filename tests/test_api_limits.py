"""Limits before work: the token is checked before any body is read, bodies are limited while they
stream in, uploads stream in constant memory, rate limits answer 429, every response carries the
security headers, /metrics and the docs need a token, one access-log line per request, and secrets
never reach logs or error messages."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psutil
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from fieldwatch.api import create_app
from fwcore.ratelimit import RateLimiter
from fwcore.redact import RedactingFilter, redact_text
from fwcore.settings import SettingsError, load_settings
from tests.support.api import BASE, TestClient, auth, seed, settings_for, token
from tests.support.api_server import api_process
from tests.support.db import scalar
from tests.support.secrets import TEST_PASSWORD, leaks_in

MB = 1024 * 1024


# --- a request driven through the app's ASGI interface, counting what the app reads ---------


class CountingBody:
    """An ASGI ``receive`` that hands out ``total`` bytes in ``chunk``-sized messages and counts them."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total, self.chunk, self.read = total, chunk, 0

    async def __call__(self) -> dict[str, Any]:
        if self.read >= self.total:
            await asyncio.Event().wait()  # the client has nothing more: wait like a socket would
        n = min(self.chunk, self.total - self.read)
        self.read += n
        return {"type": "http.request", "body": b"x" * n, "more_body": self.read < self.total}


def asgi_post(app: Any, path: str, body: CountingBody, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` to ``app`` at the ASGI level (chunked unless a content-length header is given)."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    asyncio.run(asyncio.wait_for(app(scope, body, send), timeout=30))
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, payload


@pytest.fixture
def pooled_app(db_url: str) -> Iterator[Any]:
    """The app with its pool open, without a client in between (the lifespan's work, done here)."""
    app = create_app(settings_for(db_url))
    with ConnectionPool(db_url, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        app.state.pool = pool
        yield app


def test_no_token_is_401_without_reading_the_body(pooled_app: Any) -> None:
    """A 100 MB upload without a token is refused 401 before one byte of its body is read."""
    body = CountingBody(100 * MB)
    status, headers, payload = asgi_post(pooled_app, f"{BASE}/workorders", body, {})
    assert status == 401 and b"missing bearer token" in payload
    assert headers["www-authenticate"] == "Bearer"
    assert body.read == 0


def test_wrong_token_is_401_without_reading_the_body(pooled_app: Any) -> None:
    """A chunked upload with a token that does not exist is refused 401 with its body unread."""
    body = CountingBody(50 * MB)
    status, _, payload = asgi_post(pooled_app, f"{BASE}/workorders", body, auth("fw_" + "A" * 43))
    assert status == 401 and b"invalid or revoked token" in payload
    assert body.read == 0


def test_oversized_chunked_body_is_413_as_soon_as_it_passes_the_limit(db_url: str, pooled_app: Any) -> None:
    """A chunked JSON body past 1 MB is refused 413 after at most one chunk beyond the limit is read."""
    body = CountingBody(64 * MB)
    status, _, payload = asgi_post(pooled_app, f"{BASE}/workorders", body, auth(token(db_url, "admin")))
    assert status == 413, payload
    assert b"at most 1048576 bytes" in payload and b"FIELDWATCH_API_MAX_BODY_BYTES" in payload
    assert MB < body.read <= MB + body.chunk


def test_oversized_content_length_is_413_before_reading(db_url: str, pooled_app: Any) -> None:
    """A Content-Length above the route's limit is refused 413 without reading the body."""
    body = CountingBody(5 * MB)
    headers = {**auth(token(db_url, "admin")), "content-length": str(5 * MB), "content-type": "application/json"}
    status, headers_out, payload = asgi_post(pooled_app, f"{BASE}/workorders", body, headers)
    assert (status, body.read) == (413, 0)
    assert headers_out["content-type"] == "application/json" and b"detail" in payload


def test_oversized_body_through_http_is_a_json_413(db_url: str) -> None:
    """Over HTTP, a too-large JSON body with and without Content-Length is answered 413 with a detail."""
    headers = auth(token(db_url, "admin"))
    with TestClient(create_app(settings_for(db_url, api_max_body_bytes=4096))) as api:
        sized = api.post(f"{BASE}/workorders", content=b"[" + b"1," * 5000 + b"1]", headers=headers)
        chunked = api.post(f"{BASE}/workorders", content=iter([b"[", b"1," * 5000, b"1]"]), headers=headers)
        small = api.post(f"{BASE}/workorders", json={"nonsense": True}, headers=headers)
    for r in (sized, chunked):
        assert r.status_code == 413 and "at most 4096 bytes" in r.json()["detail"]
    assert small.status_code == 422  # under the limit, the route sees it


def test_photo_over_the_limit_is_413_and_nothing_is_stored(db_url: str) -> None:
    """A photo past FIELDWATCH_API_MAX_PHOTO_BYTES is refused 413 and no photo row is written."""
    fleet = seed(db_url)
    ticket = fleet.tickets["assigned"]
    headers = {**auth(token(db_url, "admin")), "content-type": "image/jpeg"}
    with TestClient(create_app(settings_for(db_url, api_max_photo_bytes=64 * 1024))) as api:
        big = api.post(f"{BASE}/tickets/{ticket}/photos", content=b"\xff" * (200 * 1024), headers=headers)
        streamed = api.post(f"{BASE}/tickets/{ticket}/photos", content=iter([b"\xff" * 50_000] * 4), headers=headers)
        ok = api.post(f"{BASE}/tickets/{ticket}/photos", content=b"\xff\xd8" + b"\x00" * 1000, headers=headers)
    assert big.status_code == 413 and "a photo may be at most 65536 bytes" in big.json()["detail"]
    assert streamed.status_code == 413
    assert ok.status_code == 201, ok.text
    assert scalar(db_url, "SELECT count(*) FROM ticket_photos") == 1


def _sample_peak_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        stop.wait(0.05)  # a sampling period, not a wait for a condition


def test_large_history_import_streams_in_constant_memory(db_url: str) -> None:
    """A 300 MB chunked history CSV is imported by a real server whose RSS grows by less than 100 MB."""
    fleet = seed(db_url)
    device = fleet.devices["pump-1"]
    when = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    row = (when + "," + " " * 10_000 + "\n").encode()  # a reading-less row: parsed, nothing to store
    rows = 300 * MB // len(row)

    def body() -> Iterator[bytes]:
        yield b"time,flow\n"
        for _ in range(rows // 10):
            yield row * 10

    with api_process(db_url, api_max_import_bytes=400 * MB) as server:
        headers = auth(token(db_url, "admin"))
        before = psutil.Process(server.pid).memory_info().rss
        stop, peak = threading.Event(), [before]
        sampler = threading.Thread(target=_sample_peak_rss, args=(server.pid, stop, peak), daemon=True)
        sampler.start()
        try:
            r = httpx.post(
                f"{server.base}/api/v1/devices/{device}/history", content=body(), headers=headers, timeout=300
            )
        finally:
            stop.set()
            sampler.join()
        healthz = httpx.get(f"{server.base}/healthz", timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == rows - rows % 10 and healthz.status_code == 200
    growth_mb = (peak[0] - before) / MB
    assert growth_mb < 100, f"the server grew by {growth_mb:.0f} MB importing 300 MB"


def test_import_keeps_bad_rows_as_dead_letters_and_reports_the_first_hundred(db_url: str) -> None:
    """Every bad row of an import is a dead letter and counted, while the answer lists only the first 100."""
    fleet = seed(db_url)
    device = fleet.devices["pump-1"]
    text = "time,flow\n" + "".join(f"not-a-time-{i},1\n" for i in range(250))
    with TestClient(create_app(settings_for(db_url))) as api:
        r = api.post(f"{BASE}/devices/{device}/history", content=text, headers=auth(token(db_url, "admin")))
    assert r.status_code == 200, r.text
    assert (r.json()["bad_rows"], len(r.json()["bad"])) == (250, 100)
    assert scalar(db_url, "SELECT count(*) FROM dead_letters WHERE reason = 'history_bad_row'") == 250


def test_import_refuses_a_body_that_is_not_utf8(db_url: str) -> None:
    """A history body that is not UTF-8 is a 422 naming the byte, not a server error."""
    fleet = seed(db_url)
    with TestClient(create_app(settings_for(db_url))) as api:
        r = api.post(
            f"{BASE}/devices/{fleet.devices['pump-1']}/history",
            content=b"time,flow\n\xff\xfe,1\n",
            headers=auth(token(db_url, "admin")),
        )
    assert r.status_code == 422 and "not UTF-8" in str(r.json()["detail"])


def test_import_refuses_a_line_without_end(db_url: str) -> None:
    """A history body whose line runs past the line limit is a 422 saying so, not held in memory or a 500."""
    fleet = seed(db_url)
    with TestClient(create_app(settings_for(db_url))) as api:
        r = api.post(
            f"{BASE}/devices/{fleet.devices['pump-1']}/history",
            content=iter([b"time,flow\n"] + [b"9" * 65536] * 40),
            headers=auth(token(db_url, "admin")),
        )
    assert r.status_code == 422 and "longer than" in str(r.json()["detail"])


# --- rate limits ------------------------------------------------------------------------------


def test_token_bucket_refills_at_its_rate() -> None:
    """A bucket gives its burst, then one token per 1/rate seconds, and says how long to wait."""
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0.0  # other keys have their own bucket
    now[0] = 0.5
    assert limiter.take("a") == 0.0


def test_failed_authentications_are_rate_limited_per_address(db_url: str) -> None:
    """After the burst of wrong tokens from one address, even a right token from it gets 429 with Retry-After."""
    good = auth(token(db_url, "viewer"))
    settings = settings_for(db_url, api_auth_failures_burst=3, api_auth_failures_per_min=1)
    with TestClient(create_app(settings)) as api:
        wrong = [api.get(f"{BASE}/devices", headers=auth("fw_" + "B" * 43)).status_code for _ in range(3)]
        limited = api.get(f"{BASE}/devices", headers=good)
        missing = api.get(f"{BASE}/devices")
    assert wrong == [401, 401, 401]
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert "too many failed authentications" in limited.json()["detail"]
    assert missing.status_code == 401  # no token at all costs nothing and is not counted


def test_expensive_requests_are_rate_limited_per_token(db_url: str) -> None:
    """CSV exports past the per-token burst are answered 429 with Retry-After; other routes still answer."""
    fleet = seed(db_url)
    headers = auth(token(db_url, "viewer"))
    series = fleet.series["pump-1/bearing_temp"]
    with TestClient(create_app(settings_for(db_url, api_expensive_burst=2))) as api:
        codes = [api.get(f"{BASE}/series/{series}/export.csv", headers=headers).status_code for _ in range(3)]
        third = api.get(f"{BASE}/series/{series}/export.csv", headers=headers)
        other = api.get(f"{BASE}/devices", headers=headers)
    assert codes == [200, 200, 429]
    assert third.status_code == 429 and int(third.headers["retry-after"]) >= 1
    assert other.status_code == 200


def test_requests_per_token_are_rate_limited(db_url: str) -> None:
    """A token past its request burst is answered 429 with Retry-After."""
    headers = auth(token(db_url, "viewer"))
    with TestClient(create_app(settings_for(db_url, api_requests_burst=3, api_requests_per_s=0.1))) as api:
        codes = [api.get(f"{BASE}/devices", headers=headers).status_code for _ in range(4)]
        last = api.get(f"{BASE}/devices", headers=headers)
    assert codes == [200, 200, 200, 429] and last.headers["retry-after"] == "10"


# --- headers, gated endpoints, access log -------------------------------------------------------


def test_every_response_carries_the_security_headers(db_url: str) -> None:
    """API answers, refusals and probes carry nosniff, frame denial, referrer policy and no-store; HSTS over HTTPS."""
    headers = auth(token(db_url, "viewer"))
    with TestClient(create_app(settings_for(db_url))) as api:
        responses = [api.get(f"{BASE}/devices", headers=headers), api.get(f"{BASE}/devices"), api.get("/healthz")]
        assert all("strict-transport-security" not in r.headers for r in responses)
    with TestClient(create_app(settings_for(db_url)), base_url="https://testserver") as api:
        secure = api.get(f"{BASE}/devices", headers=headers)
    for r in (*responses, secure):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["cache-control"] == "no-store"
    assert secure.headers["strict-transport-security"].startswith("max-age=")


def test_metrics_and_docs_need_a_token_unless_opened(db_url: str) -> None:
    """/metrics, /openapi.json and /docs answer 401 without a token by default, open by setting, or are off."""
    viewer = auth(token(db_url, "viewer"))
    with TestClient(create_app(settings_for(db_url))) as api:
        closed = {p: api.get(p).status_code for p in ("/metrics", "/api/v1/metrics", "/openapi.json", "/docs")}
        with_token = {p: api.get(p, headers=viewer).status_code for p in ("/metrics", "/openapi.json", "/docs")}
    settings = settings_for(db_url, api_metrics_public=True, api_docs="public")
    with TestClient(create_app(settings)) as api:
        opened = {p: api.get(p).status_code for p in ("/metrics", "/openapi.json", "/docs")}
        still_closed = api.get(f"{BASE}/devices").status_code
    with TestClient(create_app(settings_for(db_url, api_docs="off"))) as api:
        off = {p: api.get(p, headers=viewer).status_code for p in ("/openapi.json", "/docs")}
    assert set(closed.values()) == {401}
    assert set(with_token.values()) == {200}
    assert set(opened.values()) == {200} and still_closed == 401
    assert set(off.values()) == {404}


def test_access_log_has_one_line_per_request_without_query_or_token(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each request logs method, path without its query string, status, duration, bytes, client, token id and role."""
    tok = token(db_url, "viewer")
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT id FROM api_tokens WHERE role = 'viewer'").fetchone()
    assert row is not None
    with TestClient(create_app(settings_for(db_url))) as api, caplog.at_level(logging.INFO, "fieldwatch.access"):
        api.get(f"{BASE}/devices", params={"api_key": TEST_PASSWORD}, headers=auth(tok))
        api.get(f"{BASE}/devices")
    lines = [r for r in caplog.records if r.name == "fieldwatch.access"]
    assert len(lines) == 2
    ok, refused = (r.access for r in lines)  # type: ignore[attr-defined]
    assert ok["method"] == "GET" and ok["path"] == f"{BASE}/devices" and ok["status"] == 200
    assert ok["token_id"] == row[0] and ok["role"] == "viewer" and ok["bytes"] > 0 and ok["duration_ms"] >= 0
    assert ok["client"] == "testclient"
    assert (refused["status"], refused["token_id"], refused["role"]) == (401, None, None)
    text = "\n".join(r.getMessage() for r in lines)
    assert tok not in text and TEST_PASSWORD not in text and f"{BASE}/devices 200" in text


# --- redaction --------------------------------------------------------------------------------


def test_settings_error_does_not_print_the_mqtt_password() -> None:
    """A bad MQTT URL is named in the settings error with its password masked."""
    with pytest.raises(SettingsError) as err:
        load_settings(mqtt_url=f"mqtt://gw:{TEST_PASSWORD}@broker:notaport")
    assert "FIELDWATCH_MQTT_URL" in str(err.value) and "mqtt://gw:***@broker:notaport" in str(err.value)
    assert not leaks_in(str(err.value))


def test_logs_are_redacted_by_the_filter() -> None:
    """The log filter masks URL passwords and API tokens, in the message and its arguments."""
    record = logging.LogRecord(
        "x",
        logging.WARNING,
        __file__,
        1,
        "cannot connect to %s with %s",
        (f"mqtt://u:{TEST_PASSWORD}@h", "fw_" + "C" * 43),
        None,
    )
    RedactingFilter().filter(record)
    assert record.getMessage() == "cannot connect to mqtt://u:***@h with fw_***"
    assert redact_text(f"postgresql://app:{TEST_PASSWORD}@db/x") == "postgresql://app:***@db/x"


def test_the_leak_checker_catches_a_secret_in_a_log_record() -> None:
    """The suite's log checker would fail a test that logs a registered secret (the checker can fail)."""
    from tests.support.secrets import LeakCatcher

    catcher = LeakCatcher()
    catcher.handle(logging.LogRecord("x", logging.ERROR, __file__, 1, "password is %s", (TEST_PASSWORD,), None))
    catcher.handle(logging.LogRecord("x", logging.ERROR, __file__, 1, "nothing here", (), None))
    assert len(catcher.leaks) == 1 and TEST_PASSWORD not in catcher.leaks[0]


def test_values_named_like_secrets_are_masked_whole() -> None:
    """A value under a secret's name is masked whole, nested ones too; names of files holding secrets are not."""
    from fwcore.redact import is_secret_name, redact_value

    assert redact_value("hmac_secret", TEST_PASSWORD) == "***"
    assert redact_value("body", {"password": TEST_PASSWORD, "url": f"mqtt://u:{TEST_PASSWORD}@h"}) == {
        "password": "***",
        "url": "mqtt://u:***@h",
    }
    assert not is_secret_name("api_tls_key_file") and not is_secret_name("broker_password_file")


@pytest.mark.parametrize(
    ("path", "api"),
    [
        (f"{BASE}/tickets", True),
        (BASE, True),
        ("/metrics", True),
        ("/openapi.json", True),
        ("/docs-assets/swagger-ui.css", True),
        ("/", False),
        ("/signin", False),
        ("/alarms", False),
        ("/_nicegui/3.18.0/static/quasar.css", False),
        ("/api/v10", False),
    ],
)
def test_the_guard_asks_a_bearer_token_of_the_api_only(path: str, api: bool) -> None:
    """API paths need a bearer token at the guard; the console's pages authenticate with their session."""
    from fieldwatch.api.guard import needs_token

    assert needs_token(path) is api
