"""The console's HTTP side, without a browser: sign-in sets a hardened session cookie, sign-out ends it,
and every console action is checked like an API call — signed in, CSRF token, permission policy — for
every role, against a real database."""

from __future__ import annotations

import warnings
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI

from fieldwatch.api import create_app
from fieldwatch.console import session as console
from fwcore import policy
from fwcore.policy import ROLES
from fwcore.users import SESSION_COOKIE, create_user
from tests.support.api import seed, settings_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # Starlette's TestClient asks for httpx2 (tests/support/api.py)
    from fastapi.testclient import TestClient

PASSWORD = "a long enough password"
#: Every console action endpoint must be listed here with a way to call it on the seeded fleet: its path,
#: its JSON body (``{alarm}`` is the alarm's id) and a query of what it changed (by the user ``%(user)s``).
ACTIONS: dict[str, tuple[str, dict[str, object] | None, str]] = {
    "alarm.acknowledge": (
        "/console/actions/alarms/{alarm}/acknowledge",
        None,
        "SELECT count(*) FROM alarms WHERE state = 'acknowledged' AND acknowledged_by = %(user)s",
    ),
    "alarm.comment": (
        "/console/actions/alarms/{alarm}/comments",
        {"body": "fan blocked, cleared it"},
        "SELECT count(*) FROM alarm_comments WHERE author = %(user)s AND body = 'fan blocked, cleared it'",
    ),
    "silence.write": (
        "/console/actions/silences",
        {"kind": "silence", "alarm_id": "{alarm}", "on": "rule_device", "ends_at": "2999-01-01T00:00:00Z"},
        "SELECT count(*) FROM silences WHERE created_by = %(user)s",
    ),
}


def _call(client: TestClient, action: str, alarm: int, headers: dict[str, str]) -> Any:
    path, body, _ = ACTIONS[action]
    filled = None if body is None else {k: alarm if v == "{alarm}" else v for k, v in body.items()}
    return client.post(path.format(alarm=alarm), json=filled, headers=headers)


def _done(db_url: str, action: str, user: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(ACTIONS[action][2], {"user": user}).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])


def _app(db_url: str) -> FastAPI:
    app = create_app(settings_for(db_url))
    app.include_router(console.router)  # the console's HTTP endpoints, without NiceGUI's pages
    return app


def _users(db_url: str, technician_id: int) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for role in ROLES:
            create_user(conn, role.replace("_", "-"), role, PASSWORD, technician_id=technician_id)


def _signed_in(client: TestClient, role: str) -> str:
    """Sign ``client`` in as the user of ``role``; returns the session's CSRF token."""
    r = client.post(
        console.SIGNIN,
        data={"username": role.replace("_", "-"), "password": PASSWORD, "next": "/alarms"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/alarms", r.text
    with psycopg.connect(client.app.state.settings.database_url) as conn:  # type: ignore[attr-defined]
        row = conn.execute(
            "SELECT s.csrf_token FROM user_sessions s JOIN users u ON u.id = s.user_id"
            " WHERE u.username = %s AND s.ended_at IS NULL ORDER BY s.id DESC LIMIT 1",
            (role.replace("_", "-"),),
        ).fetchone()
    assert row is not None
    return row[0]


def test_every_console_action_is_listed_here() -> None:
    """A new console endpoint fails here until this test calls it for every role."""
    assert sorted(action for _, _, action in console.console_actions()) == sorted(ACTIONS)


@pytest.mark.parametrize("role", ROLES)
def test_each_role_may_do_exactly_what_the_policy_allows(db_url: str, role: str) -> None:
    """For each role and console action, the server answers as fwcore.policy decides, and a refusal changes nothing."""
    fleet = seed(db_url)
    _users(db_url, fleet.technicians[next(iter(fleet.technicians))])
    alarm = fleet.alarms["active"]
    with TestClient(_app(db_url)) as client:
        csrf = _signed_in(client, role)
        for action in ACTIONS:
            r = _call(client, action, alarm, {console.CSRF_HEADER: csrf})
            allowed = policy.decide(policy.Principal(role, role, technician_id=1), action).allowed
            if allowed:
                assert r.status_code == 200, r.text
                assert _done(db_url, action, role.replace("_", "-")) == 1, action
            else:
                assert r.status_code == 403 and "may not" in r.json()["detail"], (action, r.text)
                assert _done(db_url, action, role.replace("_", "-")) == 0, action


def test_an_action_without_the_csrf_token_or_session_is_refused(db_url: str) -> None:
    """No CSRF header, a wrong one, or no session: refused (403, 403, 401) and the alarm stays active."""
    fleet = seed(db_url)
    _users(db_url, fleet.technicians[next(iter(fleet.technicians))])
    path = ACTIONS["alarm.acknowledge"][0].format(alarm=fleet.alarms["active"])
    with TestClient(_app(db_url)) as client:
        assert client.post(path).status_code == 401
        _signed_in(client, "dispatcher")
        missing = client.post(path)
        assert missing.status_code == 403 and "CSRF" in missing.json()["detail"]
        assert client.post(path, headers={console.CSRF_HEADER: "guessed"}).status_code == 403
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT state FROM alarms WHERE id = %s", (fleet.alarms["active"],)).fetchone() == (
            "active",
        )


def test_the_session_cookie_is_hardened_and_sign_out_ends_the_session(db_url: str) -> None:
    """The cookie is HttpOnly and SameSite=Lax (Secure over https); sign-out needs the CSRF token and ends it."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        create_user(conn, "ada", "dispatcher", PASSWORD)
    with TestClient(_app(db_url), base_url="https://console.test") as client:
        r = client.post(console.SIGNIN, data={"username": "ada", "password": PASSWORD}, follow_redirects=False)
        cookie = r.headers["set-cookie"]
        assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Secure" in cookie and "Max-Age=43200" in cookie
        refused = client.post(console.SIGNOUT, data={"csrf": "forged"}, follow_redirects=False)
        assert refused.status_code == 403
        with psycopg.connect(db_url) as conn:
            (csrf,) = conn.execute("SELECT csrf_token FROM user_sessions").fetchone()  # type: ignore[misc]
        out = client.post(console.SIGNOUT, data={"csrf": csrf}, follow_redirects=False)
        assert out.status_code == 303 and out.headers["location"] == "/signin?signed_out=1"
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM user_sessions WHERE ended_at IS NULL").fetchone() == (0,)


def test_sign_in_refuses_other_sites_open_redirects_and_says_when_throttled(db_url: str) -> None:
    """A sign-in posted from another site is refused, ``next`` never leaves the site, and throttling is said."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        create_user(conn, "ada", "viewer", PASSWORD)
    with TestClient(_app(db_url)) as client:
        form = {"username": "ada", "password": PASSWORD}
        foreign = client.post(console.SIGNIN, data=form, headers={"origin": "https://evil.example"})
        assert foreign.status_code == 403
        away = client.post(console.SIGNIN, data={**form, "next": "//evil.example/x"}, follow_redirects=False)
        assert away.headers["location"] == "/"
        for _ in range(5):
            wrong = client.post(console.SIGNIN, data={"username": "ada", "password": "nope"}, follow_redirects=False)
            assert wrong.headers["location"].startswith("/signin?error=wrong")
        locked = client.post(console.SIGNIN, data=form, follow_redirects=False)
        assert locked.headers["location"].startswith("/signin?error=throttled")


def test_a_console_comment_is_stored_with_the_alarm_and_audited(db_url: str) -> None:
    """A comment from the console is the signed-in user's: stored on the alarm (the API lists it) and one
    `alarm.comment` audit entry in the same transaction; an empty one is refused (422) and leaves nothing."""
    fleet = seed(db_url)
    _users(db_url, fleet.technicians[next(iter(fleet.technicians))])
    alarm = fleet.alarms["active"]
    with TestClient(_app(db_url)) as client:
        csrf = _signed_in(client, "field_engineer")
        r = client.post(
            f"/console/actions/alarms/{alarm}/comments",
            json={"body": "bearing greased"},
            headers={console.CSRF_HEADER: csrf},
        )
        assert r.status_code == 200 and r.json()["author"] == "field-engineer", r.text
        empty = client.post(
            f"/console/actions/alarms/{alarm}/comments", json={"body": " "}, headers={console.CSRF_HEADER: csrf}
        )
        assert empty.status_code == 422
        missing = client.post(
            "/console/actions/alarms/31337/comments", json={"body": "x"}, headers={console.CSRF_HEADER: csrf}
        )
        assert missing.status_code == 404
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT author, body FROM alarm_comments WHERE alarm_id = %s", (alarm,)).fetchall() == [
            ("field-engineer", "bearing greased")
        ]
        entries = conn.execute(
            "SELECT actor, actor_role, object_type, object_id, after->>'body' FROM audit_log"
            " WHERE action = 'alarm.comment'"
        ).fetchall()
    assert entries == [("field-engineer", "field_engineer", "alarm", str(alarm), "bearing greased")]


@pytest.mark.parametrize(
    ("kind", "on", "target"),
    [
        ("silence", "rule_device", ("rule", "device")),
        ("maintenance", "device", ("device",)),
        ("maintenance", "site", ("site",)),
    ],
)
def test_a_window_from_the_console_targets_the_alarms_rule_device_or_site(
    db_url: str, kind: str, on: str, target: tuple[str, ...]
) -> None:
    """A silence is the alarm's rule on its device; a maintenance window its device or its whole site; each
    ends when asked, is audited as `silence.create` by the user, and an end in the past is refused (422)."""
    fleet = seed(db_url)
    _users(db_url, fleet.technicians[next(iter(fleet.technicians))])
    alarm = fleet.alarms["active"]
    body = {"kind": kind, "alarm_id": alarm, "on": on, "ends_at": "2999-01-01T10:00:00+00:00", "reason": "pump swap"}
    with TestClient(_app(db_url)) as client:
        csrf = _signed_in(client, "dispatcher")
        r = client.post("/console/actions/silences", json=body, headers={console.CSRF_HEADER: csrf})
        assert r.status_code == 200, r.text
        past = client.post(
            "/console/actions/silences",
            json={**body, "ends_at": "2001-01-01T00:00:00Z"},
            headers={console.CSRF_HEADER: csrf},
        )
        assert past.status_code == 422 and "must end after it starts" in past.text
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT s.kind, s.rule_id = a.rule_id, s.device_id = a.device_id,"
            " s.site_id = (SELECT site_id FROM devices WHERE id = a.device_id), s.ends_at, s.created_by, s.reason"
            " FROM silences s, alarms a WHERE a.id = %s",
            (alarm,),
        ).fetchone()
        audited = conn.execute("SELECT actor FROM audit_log WHERE action = 'silence.create'").fetchall()
    assert row is not None
    got, rule, device, site, ends, by, reason = row
    assert (got, by, reason, ends.year) == (kind, "dispatcher", "pump swap", 2999)
    assert {"rule": bool(rule), "device": bool(device), "site": bool(site)} == {
        t: t in target for t in ("rule", "device", "site")
    }
    assert audited == [("dispatcher",)]
