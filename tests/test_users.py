"""Console users against a real database: accounts, argon2 passwords, server-side sessions with idle and
absolute expiry, sign-out, throttling of failed sign-ins, and the `fieldwatch users` command."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from fwcore.errors import Conflict, Invalid
from fwcore.users import (
    SessionPolicy,
    Throttle,
    create_user,
    disable_user,
    end_session,
    list_users,
    reset_password,
    session_of,
    sign_in,
)

FIELDWATCH = str(Path(sys.executable).with_name("fieldwatch"))
PASSWORD = "correct horse battery"


@pytest.fixture
def conn(db_url: str):
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def test_a_password_is_stored_as_an_argon2_hash_and_signs_in(conn: psycopg.Connection) -> None:
    """The stored password is an argon2id hash, never the password, and the right password opens a session."""
    create_user(conn, "Ada", "dispatcher", PASSWORD, display_name="Ada Lovelace")
    stored = conn.execute("SELECT password_hash FROM users WHERE username = 'ada'").fetchone()
    assert stored is not None and stored[0].startswith("$argon2id$") and PASSWORD not in stored[0]
    result = sign_in(conn, "ada", PASSWORD, address="10.0.0.1")
    assert result.cookie and result.session is not None
    assert result.session.user.principal.role == "dispatcher"
    found = session_of(conn, result.cookie)
    assert found is not None and found.user.display_name == "Ada Lovelace"
    cookie_hash = conn.execute("SELECT token_hash FROM user_sessions").fetchone()
    assert cookie_hash is not None and result.cookie.encode() not in bytes(cookie_hash[0])


def test_a_wrong_password_and_an_unknown_user_are_refused_alike(conn: psycopg.Connection) -> None:
    """A wrong password and an unknown username get the same answer and no session."""
    create_user(conn, "ada", "viewer", PASSWORD)
    wrong = sign_in(conn, "ada", "not the password", address="10.0.0.1")
    unknown = sign_in(conn, "nobody", PASSWORD, address="10.0.0.1")
    assert wrong.cookie is None and unknown.cookie is None
    assert wrong.refused == unknown.refused == "Wrong username or password."


def test_sessions_end_when_idle_at_their_absolute_expiry_and_at_sign_out(conn: psycopg.Connection) -> None:
    """A session ends after the idle time without requests (server-side checks do not count), after the absolute
    lifetime, and at sign-out."""
    create_user(conn, "ada", "viewer", PASSWORD)
    idle = sign_in(conn, "ada", PASSWORD, address="a").cookie
    conn.execute("UPDATE user_sessions SET last_seen_at = now() - interval '31 minutes'")
    assert session_of(conn, idle) is None
    assert session_of(conn, idle, policy=SessionPolicy(idle=timedelta(hours=1))) is not None

    old = sign_in(conn, "ada", PASSWORD, address="a", policy=SessionPolicy(absolute=timedelta(hours=1))).cookie
    assert session_of(conn, old) is not None
    conn.execute("UPDATE user_sessions SET expires_at = now() - interval '1 second' WHERE ended_at IS NULL")
    assert session_of(conn, old) is None  # though it was just used

    quiet = sign_in(conn, "ada", PASSWORD, address="a").cookie
    conn.execute("UPDATE user_sessions SET last_seen_at = now() - interval '20 minutes' WHERE ended_at IS NULL")
    assert session_of(conn, quiet, touch=False) is not None  # a server-side check does not count as use
    conn.execute("UPDATE user_sessions SET last_seen_at = last_seen_at - interval '11 minutes' WHERE ended_at IS NULL")
    assert session_of(conn, quiet) is None  # 31 minutes idle

    live = sign_in(conn, "ada", PASSWORD, address="a").cookie
    assert end_session(conn, live) is True
    assert session_of(conn, live) is None
    assert session_of(conn, "made-up") is None


def test_failed_sign_ins_are_throttled_per_account_and_per_address(conn: psycopg.Connection) -> None:
    """After too many failures for one account, or from one address, even the right password is refused."""
    create_user(conn, "ada", "viewer", PASSWORD)
    create_user(conn, "bob", "viewer", PASSWORD)
    throttle = Throttle(per_account=3, per_address=5)
    for _ in range(3):
        assert sign_in(conn, "ada", "guess", address="10.0.0.1", throttle=throttle).throttled is False
    locked = sign_in(conn, "ada", PASSWORD, address="10.0.0.2", throttle=throttle)
    assert locked.cookie is None and locked.throttled
    assert sign_in(conn, "bob", PASSWORD, address="10.0.0.2", throttle=throttle).cookie  # other accounts are not

    for name in ("x1", "x2"):
        sign_in(conn, name, "guess", address="10.0.0.1", throttle=throttle)
    from_there = sign_in(conn, "bob", PASSWORD, address="10.0.0.1", throttle=throttle)
    assert from_there.throttled and from_there.cookie is None  # five failures from 10.0.0.1

    reset_password(conn, "ada", "a brand new password")
    assert sign_in(conn, "ada", "a brand new password", address="10.0.0.3", throttle=throttle).cookie


def test_disabling_or_resetting_ends_the_users_sessions(conn: psycopg.Connection) -> None:
    """A disabled user cannot sign in and loses their sessions; a password reset ends sessions too."""
    create_user(conn, "ada", "viewer", PASSWORD)
    cookie = sign_in(conn, "ada", PASSWORD, address="a").cookie
    reset_password(conn, "ada", "another long password")
    assert session_of(conn, cookie) is None
    cookie = sign_in(conn, "ada", "another long password", address="a").cookie
    disable_user(conn, "ada")
    assert session_of(conn, cookie) is None
    assert sign_in(conn, "ada", "another long password", address="a").cookie is None
    assert [u.active for u in list_users(conn)] == [False]
    actions = [r[0] for r in conn.execute("SELECT action FROM audit_log ORDER BY id").fetchall()]
    assert actions == ["user.create", "user.reset_password", "user.disable"]


def test_accounts_are_validated_with_messages_that_say_what_to_change(conn: psycopg.Connection) -> None:
    """Unknown roles, short passwords, bad or taken usernames and unbound technicians are refused."""
    create_user(conn, "ada", "viewer", PASSWORD)
    with pytest.raises(Conflict, match="already exists"):
        create_user(conn, "ADA", "viewer", PASSWORD)
    with pytest.raises(Invalid, match="accepted roles"):
        create_user(conn, "bob", "boss", PASSWORD)
    with pytest.raises(Invalid, match="at least 10"):
        create_user(conn, "bob", "viewer", "short")
    with pytest.raises(Invalid, match="lower-case"):
        create_user(conn, "bob smith", "viewer", PASSWORD)
    with pytest.raises(Invalid, match="technician"):
        create_user(conn, "tess", "technician", PASSWORD)


def _cli(*args: str, db_url: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FIELDWATCH, "users", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FIELDWATCH_DATABASE_URL": db_url, "COLUMNS": "200"},
    )


def test_the_users_command_creates_lists_resets_and_disables(db_url: str) -> None:
    """`fieldwatch users create|list|reset-password|disable` work, and errors are one line saying what to do."""
    made = _cli(
        "create", "ada", "--role", "dispatcher", "--name", "Ada L", "--password-stdin", db_url=db_url, stdin=PASSWORD
    )
    assert made.returncode == 0, made.stderr
    listed = _cli("list", db_url=db_url)
    assert "ada" in listed.stdout and "dispatcher" in listed.stdout and "never" in listed.stdout
    again = _cli("create", "ada", "--role", "viewer", "--password-stdin", db_url=db_url, stdin=PASSWORD)
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        "user 'ada' already exists; pick another username"
    ]
    assert _cli("reset-password", "ada", "--password-stdin", db_url=db_url, stdin="new long password").returncode == 0
    assert _cli("disable", "ada", db_url=db_url).returncode == 0
    missing = _cli("disable", "nobody", db_url=db_url)
    assert missing.returncode == 2 and "user nobody does not exist" in missing.stderr
    with psycopg.connect(db_url) as c:
        assert sign_in(c, "ada", "new long password", address="a").cookie is None  # disabled
