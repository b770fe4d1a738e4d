"""API tokens (fwcore.auth) and how the HTTP API authenticates and authorizes with them."""

from __future__ import annotations

import hashlib

import psycopg
import pytest

from fieldwatch.api.deps import allow
from fwcore.auth import ROLES, create_token, list_tokens, revoke_token, verify_token
from fwcore.policy import UnknownAction
from tests.support.api import BASE, api_client, auth, seed, token


@pytest.fixture
def conn(db_url: str):
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def test_token_is_high_entropy_and_stored_only_as_its_hash(conn: psycopg.Connection) -> None:
    """The plaintext token appears nowhere in the table; its SHA-256 and a short prefix do."""
    tok = create_token(conn, "ops laptop", "dispatcher")
    assert tok.startswith("fw_") and len(tok) >= 40
    (dump,) = conn.execute("SELECT string_agg(t::text, '|') FROM api_tokens t").fetchone()
    assert tok not in dump and tok[3:] not in dump
    token_hash, prefix = conn.execute("SELECT token_hash, prefix FROM api_tokens").fetchone()
    assert bytes(token_hash) == hashlib.sha256(tok.encode()).digest()
    assert tok.startswith(prefix) and len(prefix) < 16


def test_two_tokens_differ(conn: psycopg.Connection) -> None:
    """Each call mints a new random token."""
    assert create_token(conn, "a", "admin") != create_token(conn, "a", "admin")


def test_unknown_role_is_refused_naming_the_accepted_roles(conn: psycopg.Connection) -> None:
    """A typo in the role fails before anything is stored, and says what would have worked."""
    with pytest.raises(ValueError, match="accepted roles: admin, dispatcher, reliability_engineer, field_engineer"):
        create_token(conn, "x", "dispatch")
    assert conn.execute("SELECT count(*) FROM api_tokens").fetchone()[0] == 0


def test_verify_returns_the_token_info_or_none(conn: psycopg.Connection) -> None:
    """A valid token yields its name and role; a wrong or malformed one yields None."""
    tok = create_token(conn, "rel eng", "reliability_engineer")
    info = verify_token(conn, tok)
    assert info is not None and (info.name, info.role, info.revoked) == ("rel eng", "reliability_engineer", False)
    assert verify_token(conn, tok[:-1] + ("A" if tok[-1] != "A" else "B")) is None
    assert verify_token(conn, "not-a-token") is None
    assert verify_token(conn, "") is None


def test_revoked_token_no_longer_verifies(conn: psycopg.Connection) -> None:
    """Revoking is immediate and reported once; listings keep the revoked token."""
    tok = create_token(conn, "temp", "field_engineer")
    info = verify_token(conn, tok)
    assert info is not None
    assert revoke_token(conn, info.id) is True
    assert revoke_token(conn, info.id) is False
    assert revoke_token(conn, 999_999) is False
    assert verify_token(conn, tok) is None
    assert [t.revoked for t in list_tokens(conn)] == [True]
    assert list_tokens(conn, include_revoked=False) == []


def test_last_used_is_written_at_most_once_a_minute(conn: psycopg.Connection) -> None:
    """Use within a minute of the last recorded use does not write; later use does."""
    tok = create_token(conn, "poller", "admin")
    assert list_tokens(conn)[0].last_used_at is None
    verify_token(conn, tok)
    first = list_tokens(conn)[0].last_used_at
    assert first is not None
    conn.execute("UPDATE api_tokens SET last_used_at = now() - interval '30 seconds'")
    recent = list_tokens(conn)[0].last_used_at
    verify_token(conn, tok)
    assert list_tokens(conn)[0].last_used_at == recent
    conn.execute("UPDATE api_tokens SET last_used_at = now() - interval '2 minutes'")
    old = list_tokens(conn)[0].last_used_at
    verify_token(conn, tok)
    assert list_tokens(conn)[0].last_used_at > old


def test_allow_rejects_unknown_actions_at_definition() -> None:
    """A misspelt action in a route definition fails at import, not at request time, naming the close ones."""
    with pytest.raises(UnknownAction, match=r"known: ticket\.read, ticket\.create"):
        allow("ticket.raed")


# --- over HTTP --------------------------------------------------------------------------------


def test_missing_token_is_401_with_bearer_challenge(db_url: str) -> None:
    """No Authorization header (or a non-Bearer one) is 401 and says how to authenticate."""
    with api_client(db_url) as api:
        for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}):
            r = api.get(f"{BASE}/devices", headers=headers)
            assert r.status_code == 401
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "Authorization: Bearer" in r.json()["detail"]


def test_wrong_token_is_401(db_url: str) -> None:
    """A token the database does not know is 401 with an invalid_token challenge."""
    token(db_url, "admin")
    with api_client(db_url) as api:
        r = api.get(f"{BASE}/devices", headers=auth("fw_" + "x" * 43))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_revoked_token_is_401(db_url: str) -> None:
    """A token that worked stops working as soon as it is revoked."""
    tok = token(db_url, "dispatcher")
    with api_client(db_url) as api:
        assert api.get(f"{BASE}/devices", headers=auth(tok)).status_code == 200
        with psycopg.connect(db_url, autocommit=True) as conn:
            assert revoke_token(conn, list_tokens(conn)[0].id)
        r = api.get(f"{BASE}/devices", headers=auth(tok))
    assert r.status_code == 401


@pytest.mark.parametrize("role", [r for r in ROLES if r != "technician"])
def test_every_role_may_read(db_url: str, role: str) -> None:
    """GET endpoints accept a token of any role but technician (whose token reads only its own work)."""
    tok = token(db_url, role)
    with api_client(db_url) as api:
        for path in ("/devices", "/alarms", "/tickets", "/technicians", "/gateways"):
            assert api.get(BASE + path, headers=auth(tok)).status_code == 200, path


@pytest.mark.parametrize(
    ("role", "status"),
    [("field_engineer", 403), ("reliability_engineer", 200), ("dispatcher", 200), ("admin", 200)],
)
def test_acknowledging_needs_an_alarm_handling_role(db_url: str, role: str, status: int) -> None:
    """field_engineer may not acknowledge alarms (403 naming the allowed roles); admin passes every check."""
    fleet = seed(db_url)
    tok = token(db_url, role)
    with api_client(db_url) as api:
        r = api.post(f"{BASE}/alarms/{fleet.alarms['active']}/acknowledge", headers=auth(tok))
    assert r.status_code == status
    if status == 403:
        assert r.json()["detail"] == (
            "role 'field_engineer' may not do this; allowed roles: admin, reliability_engineer, dispatcher"
        )
