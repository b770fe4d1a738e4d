"""The console's HTTP side, without a browser: sign-in sets a hardened session cookie, sign-out ends it,
and every console action is checked like an API call — signed in, CSRF token, permission policy — for
every role, against a real database."""

from __future__ import annotations

import warnings

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
#: Every console action endpoint must be listed here with a way to call it on the seeded fleet.
ACTIONS = {"alarm.acknowledge": "/console/actions/alarms/{alarm}/acknowledge"}


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
        for action, path in ACTIONS.items():
            r = client.post(path.format(alarm=alarm), headers={console.CSRF_HEADER: csrf})
            allowed = policy.decide(policy.Principal(role, role, technician_id=1), action).allowed
            with psycopg.connect(db_url) as conn:
                state = conn.execute("SELECT state, acknowledged_by FROM alarms WHERE id = %s", (alarm,)).fetchone()
            if allowed:
                assert r.status_code == 200, r.text
                assert state == ("acknowledged", role.replace("_", "-"))
            else:
                assert r.status_code == 403 and "may not" in r.json()["detail"]
                assert state == ("active", None)


def test_an_action_without_the_csrf_token_or_session_is_refused(db_url: str) -> None:
    """No CSRF header, a wrong one, or no session: refused (403, 403, 401) and the alarm stays active."""
    fleet = seed(db_url)
    _users(db_url, fleet.technicians[next(iter(fleet.technicians))])
    path = ACTIONS["alarm.acknowledge"].format(alarm=fleet.alarms["active"])
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
