"""Limits before work: what a request must pass before any route reads or parses its body.

Two pure-ASGI middlewares (no body buffering, so they work on streams):

:class:`RequestGuard`
    1. every route but the probes (and ``/metrics`` or the documentation when the settings open
       them) needs a valid bearer token, checked here — *before* the body is read: a request
       without one is answered 401 and its body is never read. The principal is left in
       ``scope["state"]`` for :func:`fieldwatch.api.deps.current_principal`;
    2. a client address with too many failed authentications (a wrong or revoked token: each costs
       a lookup) is answered 429 (``Retry-After``) without looking the token up;
    3. requests per token, and expensive ones (history imports, backtests, CSV exports), are
       rate-limited per token (429, ``Retry-After``) — also before the lookup: the buckets are keyed
       by the token's digest, so a flood with one token costs no database work past its burst;
    4. a role that may not call the route at all (:mod:`fieldwatch.api.early_policy`) is answered
       403 before the body is read — FastAPI would read and parse it before the route's ``allow``;
    5. the body is limited per route (JSON 1 MB, history import and photos larger; settings):
       a ``Content-Length`` above the limit is refused 413 at once, and a chunked body is counted
       as it streams in and refused 413 as soon as it passes the limit;
    6. every refusal sent before the body was read to its end — the guard's own, and the app's
       (a 403 from the policy, a 413 from the limit) — says ``Connection: close``: keeping the
       connection would mean reading the rest of the body first (uvicorn drains it whole), so the
       server closes it instead and an unread 100 MB upload costs it what one request costs;
    7. an address that keeps being refused has its refusals held before they are sent
       (:mod:`fieldwatch.api.tarpit`): a flood of bad requests is slowed to a few a second.

:class:`SecurityHeaders`
    every response gets the security headers (``X-Content-Type-Options``, ``X-Frame-Options``,
    ``Content-Security-Policy: frame-ancestors 'none'``, ``Referrer-Policy``,
    ``Cache-Control: no-store``, and HSTS when served over HTTPS), and every request one line on
    the ``fieldwatch.access`` logger: method, path (never the query string), status, duration,
    response bytes, client, and the token's id and role (never the token).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Final

import anyio
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fwcore.auth import TokenInfo, hash_token, verify_token
from fwcore.ratelimit import RateLimiter, retry_after_header
from fwcore.settings import Settings

from .deps import PRINCIPAL_KEY, TOKEN_KEY
from .early_policy import EarlyPolicy
from .routes._prefix import API_PREFIX
from .tarpit import Tarpit

log = logging.getLogger(__name__)
access_log = logging.getLogger("fieldwatch.access")

PROBES: Final = frozenset(p + q for p in ("", API_PREFIX) for q in ("/healthz", "/readyz"))
METRICS: Final = frozenset({"/metrics", API_PREFIX + "/metrics"})
DOCS: Final = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
DOCS_ASSETS: Final = "/docs-assets"  # fieldwatch.api.docs.ASSETS_URL

_IMPORT = re.compile(rf"^{API_PREFIX}/devices/[^/]+/history/?$")
_PHOTO = re.compile(rf"^{API_PREFIX}/tickets/[^/]+/photos/?$")
_BACKTEST = re.compile(rf"^{API_PREFIX}/rules/[^/]+/backtest/?$")
_EXPORT = re.compile(r"/export\.csv/?$")


@dataclass(frozen=True, slots=True)
class RouteClass:
    """What the guard needs to know of a request's route before routing: its body limit and cost."""

    max_body: int
    what: str  # for the 413 message
    setting: str
    expensive: bool = False


def needs_token(path: str) -> bool:
    """Whether ``path`` belongs to the API (a bearer token, checked here) rather than the web console,
    whose pages and actions authenticate with their session cookie and CSRF token
    (``fieldwatch.console.session``) — both under the same body limits (pure)."""
    return (
        path == API_PREFIX
        or path.startswith(API_PREFIX + "/")
        or path in METRICS
        or path in DOCS
        or path.startswith(DOCS_ASSETS + "/")
    )


def classify(method: str, path: str, settings: Settings) -> RouteClass:
    """The body limit and cost of ``method path`` (pure)."""
    if method == "POST" and _IMPORT.match(path):
        return RouteClass(settings.api_max_import_bytes, "a history import", "api_max_import_bytes", True)
    if method == "POST" and _PHOTO.match(path):
        return RouteClass(settings.api_max_photo_bytes, "a photo", "api_max_photo_bytes")
    expensive = (method == "POST" and bool(_BACKTEST.match(path))) or (method == "GET" and bool(_EXPORT.search(path)))
    return RouteClass(settings.api_max_body_bytes, "a request body", "api_max_body_bytes", expensive)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes its limit; FastAPI passes HTTP exceptions through
    its body parsing, so it ends as the same 413 wherever the body was being read."""

    def __init__(self, route: RouteClass) -> None:
        super().__init__(413, too_large_message(route))


def too_large_message(route: RouteClass) -> str:
    mb = route.max_body / 1024 / 1024
    return (
        f"{route.what} may be at most {route.max_body} bytes ({mb:.1f} MB); send less, "
        f"or raise FIELDWATCH_{route.setting.upper()} on the server"
    )


async def send_json(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """A complete JSON response ``{"detail": ...}``."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status >= 400:  # the request body may be unread: do not make the server read it to keep the connection
        raw.append((b"connection", b"close"))
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def has_body(scope: Scope) -> bool:
    """Whether the request announces a body (a non-zero ``Content-Length`` or a ``Transfer-Encoding``)."""
    length = _header(scope, b"content-length")
    return _header(scope, b"transfer-encoding") is not None or (length is not None and length.strip() not in ("", "0"))


def closing(start: Message) -> Message:
    """``start`` (an ``http.response.start``) with ``Connection: close``.

    For an answer sent before the request's body was read to its end (a 403, a 413, a 422 on a path
    parameter): to keep the connection, the server would have to read and throw away the rest of the
    body first — uvicorn does, all of it (100 MB of an attacker's upload) — so the connection is
    closed after the answer instead, and the unread rest is never received.
    """
    headers = list(start.get("headers", ()))
    if any(bytes(k).lower() == b"connection" for k, _ in headers):
        headers = [(k, v) for k, v in headers if bytes(k).lower() != b"connection"]
    return {**start, "headers": [*headers, (b"connection", b"close")]}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RequestGuard:
    """Rate limits, authentication and body limits, before the app sees the request (module docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.failures = RateLimiter(settings.api_auth_failures_per_min / 60, settings.api_auth_failures_burst)
        self.requests = RateLimiter(settings.api_requests_per_s, settings.api_requests_burst)
        self.expensive = RateLimiter(settings.api_expensive_per_min / 60, settings.api_expensive_burst)
        self.early = EarlyPolicy()
        self.tarpit = Tarpit.from_settings(settings)
        self.open_paths = set(PROBES)
        if settings.api_metrics_public:
            self.open_paths |= METRICS
        self.open_prefix: str | None = None
        if settings.api_docs == "public":
            self.open_paths |= DOCS
            self.open_prefix = DOCS_ASSETS + "/"  # Swagger UI's and ReDoc's scripts (fieldwatch.api.docs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # An address past its refusal budget has its refusals held (fieldwatch.api.tarpit).
        send = self.tarpit.wrap(send, client_address(scope))
        path: str = scope["path"]
        route = classify(scope["method"], path, self.settings)
        if (
            needs_token(path)
            and path not in self.open_paths
            and not (self.open_prefix and path.startswith(self.open_prefix))
        ):
            state = scope.setdefault("state", {})
            info = await self._authenticate(scope, route, send)
            if info is None:
                return
            state[PRINCIPAL_KEY] = info.principal
            state[TOKEN_KEY] = (info.id, info.role)
            app = scope.get("app")
            if app is not None and has_body(scope):
                refused = self.early.refusal(app, scope["method"], path, info.principal)
                if refused is not None:
                    await send_json(send, 403, refused)
                    return
        await self._limited(route, scope, receive, send)

    async def _authenticate(self, scope: Scope, route: RouteClass, send: Send) -> TokenInfo | None:
        """The token's info, or None once the refusal (401, 429, 503) has been sent.

        Every refusal that can be decided without the database is decided first: a missing token, an
        address with too many failed attempts, a token over its rate limit (its buckets are keyed by
        the token's digest, so a flood with one token is answered 429 without one lookup each).
        """
        header = _header(scope, b"authorization") or ""
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            # Costs nothing (no lookup, the body unread), so it is not counted as a failed attempt.
            await send_json(
                send,
                401,
                "missing bearer token: send the header `Authorization: Bearer <token>`",
                {"WWW-Authenticate": "Bearer"},
            )
            return None
        client = client_address(scope)
        wait = self.failures.retry_after(client)
        if wait:
            await send_json(
                send,
                429,
                f"too many failed authentications from {client}; retry in {retry_after_header(wait)} s",
                {"Retry-After": retry_after_header(wait)},
            )
            return None
        key = ("token", hash_token(token))
        wait = self.requests.take(key)
        if not wait and route.expensive:
            wait = self.expensive.take(key)
        if wait:
            what = "expensive requests (imports, backtests, exports)" if route.expensive else "requests"
            await send_json(
                send,
                429,
                f"too many {what} with this token; retry in {retry_after_header(wait)} s",
                {"Retry-After": retry_after_header(wait)},
            )
            return None
        pool: ConnectionPool = scope["app"].state.pool
        try:
            info = await anyio.to_thread.run_sync(_verify, pool, token)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            log.warning("cannot check a token, database unavailable: %s", exc)
            await send_json(send, 503, "database unavailable: cannot check the token", {"Retry-After": "5"})
            return None
        if info is None:
            self.failures.charge(client)
            await send_json(send, 401, "invalid or revoked token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return info

    async def _limited(self, route: RouteClass, scope: Scope, receive: Receive, send: Send) -> None:
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await send_json(send, 400, f"Content-Length {length!r} is not a number of bytes")
                return
            if declared > route.max_body:
                await send_json(send, 413, too_large_message(route))
                return
        received = 0
        started = False
        # Whether the whole body has been read: trivially so without one.
        complete = not has_body(scope)

        async def counting_receive() -> Message:
            nonlocal received, complete
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > route.max_body:
                    raise BodyTooLarge(route)
                complete = complete or not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not complete:
                    message = closing(message)
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as exc:  # raised where nothing turned it into a response
            if not started:
                await send_json(send, 413, str(exc.detail))


def _verify(pool: ConnectionPool, token: str) -> TokenInfo | None:
    with pool.connection() as conn:
        return verify_token(conn, token)


_HEADERS: Final = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make browsers send `Origin: null` on the console's forms
]
_HSTS: Final = (b"strict-transport-security", b"max-age=31536000")


class SecurityHeaders:
    """Security headers on every response and one access-log line per request (module docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.log_requests = settings.api_access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        start = time.perf_counter()
        status = 500
        sent = 0
        https = scope.get("scheme") == "https"

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                names = {bytes(k).lower() for k, _ in headers}
                headers += [h for h in _HEADERS if h[0] not in names]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                if https:
                    headers.append(_HSTS)
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if self.log_requests:
                self._log(scope, state, status, sent, time.perf_counter() - start)

    @staticmethod
    def _log(scope: Scope, state: dict[str, Any], status: int, sent: int, seconds: float) -> None:
        token = state.get(TOKEN_KEY)
        fields = {
            "method": scope["method"],
            "path": scope["path"],  # never the query string: it may carry secrets
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
            "bytes": sent,
            "client": client_address(scope),
            "token_id": token[0] if token else None,
            "role": token[1] if token else None,
        }
        access_log.info(
            "%s %s %s %.1fms %dB client=%s token=%s role=%s",
            fields["method"],
            fields["path"],
            status,
            fields["duration_ms"],
            sent,
            fields["client"],
            fields["token_id"] if token else "-",
            fields["role"] if token else "-",
            extra={"access": fields},
        )
