"""The console's sign-in, sign-out and actions over HTTP: sessions, CSRF and the permission policy.

Pages are rendered by NiceGUI (:mod:`.pages`); everything that changes state is a plain HTTP POST
here, so it is checked like an API call:

* **who**: the session cookie (:data:`fwcore.users.SESSION_COOKIE`, HttpOnly, SameSite=Lax, Secure
  over https) names a live server-side session (:func:`fwcore.users.session_of`), else 401;
* **CSRF**: the request carries the session's CSRF token (header ``X-CSRF-Token``, or the form field
  ``csrf`` for the sign-out form), else 403. A cross-site page can neither read the token nor set a
  custom header without a CORS preflight the server never grants. Sign-in has no session yet: it
  refuses a POST whose ``Origin`` is another site;
* **may they**: :func:`fwcore.policy.decide` on the action, exactly as the API's ``allow``, else 403
  with the policy's reason. Pages hide what a role cannot do; this is what enforces it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

import psycopg
from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import RedirectResponse
from pydantic import Field

from fwcore import policy
from fwcore.inputs import Input, Instant
from fwcore.settings import Settings
from fwcore.users import SESSION_COOKIE, SessionPolicy, Throttle, UserSession, end_session, session_of, sign_in
from rules import alarms

router = APIRouter(include_in_schema=False)


def _conn(request: Request) -> Iterator[psycopg.Connection]:
    """A pooled connection of the app the console is mounted on (the API's pool)."""
    with request.app.state.pool.connection() as conn:
        yield conn


ConnDep = Annotated[psycopg.Connection, Depends(_conn)]

#: Paths of the console's HTTP endpoints.
SIGNIN = "/auth/signin"
SIGNOUT = "/auth/signout"
ACTIONS = "/console/actions"
CSRF_HEADER = "X-CSRF-Token"


def session_policy(settings: Settings) -> SessionPolicy:
    return SessionPolicy(
        idle=timedelta(minutes=settings.console_session_idle_minutes),
        absolute=timedelta(hours=settings.console_session_max_hours),
    )


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _safe_next(target: str) -> str:
    """``target`` if it is a path of this site, else ``/`` (no open redirect after sign-in)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _same_origin(request: Request) -> bool:
    """False when the browser says the request comes from a page of another site."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


@router.post(SIGNIN)
def signin(
    request: Request,
    conn: ConnDep,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> RedirectResponse:
    """Check the password; on success set the session cookie and go where the person was going."""
    if not _same_origin(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "sign-in from another site refused")
    settings = _settings(request)
    target = _safe_next(next)
    result = sign_in(
        conn,
        username,
        password,
        address=_address(request),
        user_agent=request.headers.get("user-agent", ""),
        policy=session_policy(settings),
        throttle=Throttle(),
    )
    if result.cookie is None:
        error = "throttled" if result.throttled else "wrong"
        return RedirectResponse(f"/signin?error={error}&next={quote(target)}", status.HTTP_303_SEE_OTHER)
    response = RedirectResponse(target, status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        SESSION_COOKIE,
        result.cookie,
        max_age=int(session_policy(settings).absolute.total_seconds()),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="lax",
    )
    return response


def current_session(request: Request, conn: ConnDep) -> UserSession:
    """The caller's live session, or 401 saying to sign in."""
    found = session_of(conn, request.cookies.get(SESSION_COOKIE), policy=session_policy(_settings(request)))
    if found is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "not signed in, or the session ended: sign in again")
    return found


SessionDep = Annotated[UserSession, Depends(current_session)]


@router.post(SIGNOUT)
def signout(request: Request, conn: ConnDep, csrf: Annotated[str, Form(max_length=200)] = "") -> RedirectResponse:
    """End the session (the form carries its CSRF token) and go to the sign-in page."""
    cookie = request.cookies.get(SESSION_COOKIE)
    found = session_of(conn, cookie, policy=session_policy(_settings(request)))
    if found is not None:
        if not found.csrf_ok(csrf):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token: reload the page and try again")
        end_session(conn, cookie)
    response = RedirectResponse("/signin?signed_out=1", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=request.url.scheme == "https", httponly=True, samesite="lax"
    )
    return response


@dataclass(frozen=True, slots=True)
class ConsoleAccess:
    """What :func:`console_allow` admitted: the session and the policy's decision."""

    session: UserSession
    decision: policy.Decision


#: The attribute :func:`console_allow` sets on its dependency: the action (tests enumerate it).
CONSOLE_POLICY_MARK = "__fieldwatch_console_policy__"


def console_allow(action: str) -> Any:
    """The dependency of every state-changing console endpoint: signed in, CSRF token, policy allows."""
    policy.action(action)  # an unknown action fails at import

    def check(request: Request, session: SessionDep) -> ConsoleAccess:
        if not session.csrf_ok(request.headers.get(CSRF_HEADER)):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token: reload the page and try again")
        decision = policy.decide(session.user.principal, action)
        if not decision.allowed:
            raise HTTPException(status.HTTP_403_FORBIDDEN, decision.reason)
        return ConsoleAccess(session, decision)

    setattr(check, CONSOLE_POLICY_MARK, action)
    return Depends(check)


def _alarm_view(alarm: alarms.Alarm) -> dict[str, object]:
    return {"id": alarm.id, "state": alarm.state, "acknowledged_by": alarm.acknowledged_by}


@router.post(f"{ACTIONS}/alarms/{{alarm_id}}/acknowledge")
def acknowledge(
    alarm_id: int, conn: ConnDep, access: Annotated[ConsoleAccess, console_allow("alarm.acknowledge")]
) -> dict[str, object]:
    """Acknowledge an alarm as the signed-in person."""
    return _alarm_view(alarms.acknowledge(conn, alarm_id, by=access.session.user.username))


class CommentIn(Input):
    body: str = Field(min_length=1, max_length=10_000, description="the comment text")


@router.post(f"{ACTIONS}/alarms/{{alarm_id}}/comments")
def comment(
    alarm_id: int,
    comment: CommentIn,
    conn: ConnDep,
    access: Annotated[ConsoleAccess, console_allow("alarm.comment")],
) -> dict[str, object]:
    """Comment on an alarm as the signed-in person (stored with the alarm and audited)."""
    from rules.lifecycle import add_comment

    c = add_comment(conn, alarm_id, author=access.session.user.principal, body=comment.body)
    return {"id": c.id, "alarm_id": c.alarm_id, "author": c.author}


class WindowIn(Input):
    """A silence or maintenance window started from an alarm: its targets are the alarm's."""

    kind: Literal["silence", "maintenance"]
    alarm_id: int
    on: Literal["rule_device", "device", "site"] = Field(
        description="rule_device: the alarm's rule on its device; device: every rule on it; site: its whole site"
    )
    ends_at: Instant
    reason: str = Field("", max_length=1000)


@router.post(f"{ACTIONS}/silences")
def start_window(
    window: WindowIn, conn: ConnDep, access: Annotated[ConsoleAccess, console_allow("silence.write")]
) -> dict[str, object]:
    """Silence an alarm's rule on its device, or put its device or site in maintenance, until ``ends_at``.

    The same domain function as ``POST /api/v1/silences`` (audited). Alarms opening in the window are
    suppressed: visible to nobody's queue, never ticketed or dispatched; still open when it ends, they
    are released (ticketed then).
    """
    from ingest.queries import get_device
    from rules.lifecycle import create_silence

    alarm = alarms.get_alarm(conn, window.alarm_id)  # 404 for an unknown alarm
    site_id = get_device(conn, alarm.device_id).site.id if window.on == "site" else None
    s = create_silence(
        conn,
        created_by=access.session.user.principal,
        kind=window.kind,
        device_id=alarm.device_id if window.on in ("rule_device", "device") else None,
        rule_id=alarm.rule_id if window.on == "rule_device" else None,
        site_id=site_id if window.on == "site" else None,
        ends_at=window.ends_at,
        reason=window.reason,
    )
    return {"id": s.id, "kind": s.kind, "ends_at": s.ends_at.isoformat()}


#: Every console action endpoint: (method, path template, policy action), for docs and tests.
def console_actions() -> list[tuple[str, str, str]]:
    found: list[tuple[str, str, str]] = []
    for route in router.routes:
        call: Callable[..., Any] | None = getattr(route, "endpoint", None)
        dependant = getattr(route, "dependant", None)
        if call is None or dependant is None:
            continue
        for dep in dependant.dependencies:
            mark = getattr(dep.call, CONSOLE_POLICY_MARK, None)
            if mark is not None:
                found.extend((m, route.path, mark) for m in sorted(getattr(route, "methods", ())))  # type: ignore[attr-defined]
    return found
