"""What a refusal costs the server: a refused upload's body is never read (the connection is closed
instead of drained), and a token flooding past its rate limit is answered 429 without a database
lookup — the cheap answers that keep legitimate imports going while the API is abused
(``bench/abuse.py``)."""

from __future__ import annotations

import asyncio
import select
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from psycopg_pool import ConnectionPool

from fieldwatch.api import create_app
from fieldwatch.api.early_policy import EarlyPolicy
from fwcore.policy import Principal
from tests.support.api import BASE, auth, seed, settings_for, token
from tests.support.api_server import api_process

MB = 1024 * 1024
CHUNK = 64 * 1024


@dataclass
class Upload:
    """What happened to one upload: the answer's status line and headers, bytes of body sent, and
    whether the server closed the connection (rather than reading on)."""

    status: int | None
    headers: dict[str, str]
    sent: int
    closed: bool


def upload(base: str, path: str, headers: dict[str, str], total: int, *, chunked: bool) -> Upload:
    """POST ``total`` bytes of body over a raw socket, reading any early answer between chunks, until
    the body is sent or the server closes the connection."""
    url = urlsplit(base)
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {url.hostname}\r\n{head}{framing}\r\n\r\n".encode())
    frame = (b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n") if chunked else b"x" * CHUNK
    answer, sent, closed = b"", 0, False

    def read_available(wait: float) -> None:
        nonlocal answer, closed
        while not closed and select.select([sock], [], [], wait)[0]:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            answer += data
            closed = not data

    try:
        while sent < total and not closed:
            read_available(0)
            if closed:
                break
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sent += CHUNK
        if not closed:
            if chunked:
                sock.sendall(b"0\r\n\r\n")
            read_available(2)  # an answer after the whole body; then the server keeps the connection
        else:
            read_available(0.5)  # what arrived before the close
    finally:
        sock.close()
    status_line, _, rest = answer.partition(b"\r\n")
    fields = dict(
        (k.strip().lower(), v.strip())
        for k, _, v in (line.decode().partition(":") for line in rest.split(b"\r\n"))
        if v
    )
    status = int(status_line.split()[1]) if status_line.startswith(b"HTTP/1.1") else None
    return Upload(status, fields, sent, closed)


@pytest.fixture
def server(db_url: str) -> Any:
    fleet = seed(db_url)
    with api_process(db_url) as api:
        yield api, fleet, {role: auth(token(db_url, role)) for role in ("admin", "viewer")}


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("no token, a Content-Length of 100 MB", 401),
        ("no token, chunked", 401),
        ("a role that may not import, chunked", 403),
        ("a chunked JSON body past its limit", 413),
    ],
)
def test_a_refused_upload_is_answered_and_closed_not_drained(server: Any, case: str, status: int) -> None:
    """A 100 MB upload refused before its end (by the guard or by the route) gets its answer with
    `Connection: close` and the server closes the connection: it does not read the rest of the body."""
    api, fleet, tokens = server
    pump = fleet.devices["pump-1"]
    path, headers, chunked = {
        "no token, a Content-Length of 100 MB": (f"{BASE}/workorders", {}, False),
        "no token, chunked": (f"{BASE}/devices/{pump}/history", {}, True),
        "a role that may not import, chunked": (f"{BASE}/devices/{pump}/history", tokens["viewer"], True),
        "a chunked JSON body past its limit": (
            f"{BASE}/workorders",
            {**tokens["admin"], "Content-Type": "application/json"},
            True,
        ),
    }[case]
    started = time.monotonic()
    result = upload(api.base, path, headers, 100 * MB, chunked=chunked)
    seconds = time.monotonic() - started
    assert result.closed, f"the server kept the connection after {result.sent / MB:.0f} MB: it read the body"
    assert result.sent < 40 * MB, f"{result.sent / MB:.0f} MB of the 100 MB body were taken before the close"
    assert seconds < 10
    if result.status is not None:  # the answer can be lost to the close's reset; the close is the point
        assert result.status == status and result.headers.get("connection") == "close"


def test_an_answer_after_the_whole_body_keeps_the_connection(server: Any) -> None:
    """Requests whose body was read (or that have none) keep their connection: only early refusals close it."""
    api, _, tokens = server
    with httpx.Client(base_url=api.base, headers=tokens["admin"]) as client:
        invalid = client.post(f"{BASE}/workorders", json={"nonsense": True})
        listed = client.get(f"{BASE}/devices")
    assert invalid.status_code == 422 and listed.status_code == 200
    assert "close" not in (invalid.headers.get("connection", ""), listed.headers.get("connection", ""))


def test_a_token_past_its_rate_limit_is_refused_without_a_lookup(db_url: str) -> None:
    """Past its burst, a token's requests are answered 429 without looking the token up: they are
    answered at once even while the database connection the lookup would need is taken."""
    headers = [(b"authorization", f"Bearer {token(db_url, 'viewer')}".encode())]
    app = create_app(settings_for(db_url, api_requests_burst=2, api_requests_per_s=0.01))
    with ConnectionPool(db_url, min_size=1, max_size=1, timeout=2, kwargs={"autocommit": True}) as pool:
        app.state.pool = pool
        first = [_get(app, f"{BASE}/devices", headers) for _ in range(2)]
        with pool.connection():  # the lookup's connection is taken: a lookup would wait, then 503
            started = time.monotonic()
            limited = _get(app, f"{BASE}/devices", headers)
            waited = time.monotonic() - started
    assert first == [200, 200]
    assert limited == 429 and waited < 1


def test_a_role_that_may_not_call_the_route_is_refused_before_its_body(db_url: str) -> None:
    """A viewer's chunked JSON to a route no viewer may call is answered 403 with none of its body
    read (FastAPI would read it, up to the 1 MB limit, before the route's policy check)."""
    headers = [
        (b"authorization", f"Bearer {token(db_url, 'viewer')}".encode()),
        (b"content-type", b"application/json"),
        (b"transfer-encoding", b"chunked"),
    ]
    read = [0]

    async def receive() -> dict[str, Any]:
        read[0] += CHUNK
        return {"type": "http.request", "body": b" " * CHUNK, "more_body": read[0] < 50 * MB}

    app = create_app(settings_for(db_url))
    with ConnectionPool(db_url, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        app.state.pool = pool
        status, body = _request(app, "POST", f"{BASE}/workorders", headers, receive)
    assert status == 403 and b"role 'viewer' may not do this" in body
    assert read[0] == 0


@pytest.mark.parametrize(
    ("role", "technician", "method", "path", "refused"),
    [
        ("viewer", None, "POST", f"{BASE}/workorders", True),
        ("dispatcher", None, "POST", f"{BASE}/workorders", False),
        ("admin", None, "POST", f"{BASE}/devices/7/history", False),
        ("dispatcher", None, "POST", f"{BASE}/devices/7/history", True),
        ("field_engineer", 3, "POST", f"{BASE}/tickets/9/status", False),  # own tickets: the route decides
        ("field_engineer", None, "POST", f"{BASE}/tickets/9/status", True),  # own, but no technician bound
        ("viewer", None, "GET", f"{BASE}/workorders", False),  # no body: the route decides
        ("viewer", None, "POST", f"{BASE}/no-such-route", False),  # unknown: the app answers 404
    ],
)
def test_the_early_check_refuses_only_what_the_role_alone_refuses(
    role: str, technician: int | None, method: str, path: str, refused: bool
) -> None:
    """Before the body, a request is refused only when its role has no grant of the route's action;
    grants that depend on the object, and paths it does not know, are left to the route."""
    app = create_app(settings_for("postgresql://unused@127.0.0.1:1/unused"))
    who = Principal(f"{role}-token", role, technician_id=technician)
    assert (EarlyPolicy().refusal(app, method, path, who) is not None) is refused


def _get(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    """The status of a GET driven through the app's ASGI interface."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    return _request(app, "GET", path, headers, receive)[0]


def _request(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], receive: Any) -> tuple[int, bytes]:
    """The status and body of a request driven through the app's ASGI interface."""
    statuses: list[int] = []
    body: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "app": app,
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=30))
    return statuses[0], b"".join(body)
