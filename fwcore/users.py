"""People who sign in to the web console: accounts, server-side sessions and sign-in throttling.

* **Accounts** (``users``): a username, a display name, a role of :mod:`fwcore.policy`, an active flag
  and an argon2 password hash (:mod:`pwdlib`; salt and parameters live inside the hash). A
  ``technician`` user names the technician they are, like a technician token.
* **Sessions** (``user_sessions``): the browser's cookie holds a random 256-bit value; only its SHA-256
  is stored, so a leaked table cannot be replayed. A session ends after :attr:`SessionPolicy.idle`
  without a request, at :attr:`SessionPolicy.absolute` after sign-in whatever the activity, at sign-out,
  and when its user is disabled or their password is reset. Each session carries a CSRF token that
  every state-changing console request must echo (``X-CSRF-Token`` or a form field).
* **Throttling** (``signin_failures``): after :attr:`Throttle.per_account` failed sign-ins for one
  username, or :attr:`Throttle.per_address` from one address, within :attr:`Throttle.window`, sign-in
  is refused without checking the password until the window has moved on.

Every function takes an open :class:`psycopg.Connection` and writes inside ``conn.transaction()``.
Creating, disabling and resetting an account are audited (:mod:`fwcore.audit`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import psycopg
from psycopg import errors
from psycopg.rows import tuple_row
from pwdlib import PasswordHash

from fwcore import audit
from fwcore.errors import Conflict, Invalid, NotFound
from fwcore.policy import BOUND_ROLES, ROLES, SYSTEM, Principal

__all__ = [
    "SESSION_COOKIE",
    "SessionPolicy",
    "SignIn",
    "Throttle",
    "User",
    "UserSession",
    "create_user",
    "disable_user",
    "end_session",
    "list_users",
    "reset_password",
    "session_of",
    "sign_in",
]

#: The console's session cookie.
SESSION_COOKIE: Final = "fw_session"
#: The shortest password accepted.
MIN_PASSWORD: Final = 10

_hasher = PasswordHash.recommended()  # argon2id with the library's current parameters
#: Verified when the username is unknown, so the answer takes as long as for a known one.
_DUMMY_HASH: Final = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long a session lasts: ``idle`` without a request, ``absolute`` after sign-in at most."""

    idle: timedelta = timedelta(minutes=30)
    absolute: timedelta = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class Throttle:
    """How many failed sign-ins per username and per address are allowed within ``window``."""

    per_account: int = 5
    per_address: int = 20
    window: timedelta = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class User:
    """An account (never its password hash)."""

    id: int
    username: str
    display_name: str
    role: str
    active: bool
    technician_id: int | None
    created_at: datetime
    last_signin_at: datetime | None

    @property
    def principal(self) -> Principal:
        """Who this user acts as, for the policy and the audit log."""
        return Principal(self.username, self.role, None, self.technician_id)

    @property
    def label(self) -> str:
        return self.display_name or self.username


@dataclass(frozen=True, slots=True)
class UserSession:
    """A live session: its user and the CSRF token its state-changing requests must carry."""

    id: int
    user: User
    csrf_token: str
    expires_at: datetime

    def csrf_ok(self, presented: str | None) -> bool:
        """Whether ``presented`` is this session's CSRF token (constant-time)."""
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf_token.encode())


@dataclass(frozen=True, slots=True)
class SignIn:
    """The outcome of a sign-in: the cookie value and session, or why not (said to the person)."""

    cookie: str | None = None
    session: UserSession | None = None
    refused: str | None = None
    throttled: bool = False


_USER_COLUMNS = "u.id, u.username, u.display_name, u.role, u.active, u.technician_id, u.created_at, u.last_signin_at"
_WRONG = "Wrong username or password."
_THROTTLED = "Too many failed sign-ins. Wait a few minutes, then try again (or ask an admin to reset your password)."


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"a password needs at least {MIN_PASSWORD} characters", ("body", "password"))


def create_user(
    conn: psycopg.Connection,
    username: str,
    role: str,
    password: str,
    *,
    display_name: str = "",
    technician_id: int | None = None,
    actor: Principal | str = SYSTEM,
) -> User:
    """Create an account; :class:`Invalid` names what to change, :class:`Conflict` if the username is taken."""
    username = username.strip().lower()
    if role not in ROLES:
        raise Invalid(f"unknown role {role!r}; accepted roles: {', '.join(ROLES)}", ("body", "role"))
    if role in BOUND_ROLES and technician_id is None:
        raise Invalid(f"a {role} user acts for one technician: name it (--technician ID)", ("body", "technician_id"))
    _check_password(password)
    try:
        with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
            row = cur.execute(
                f"""INSERT INTO users AS u (username, display_name, role, technician_id, password_hash)
                    VALUES (%s, %s, %s, %s, %s) RETURNING {_USER_COLUMNS}""",
                (username, display_name.strip(), role, technician_id, _hasher.hash(password)),
            ).fetchone()
            assert row is not None
            user = User(*row)
            after = {"username": username, "display_name": user.display_name, "role": role}
            audit.record(conn, actor, "user.create", "user", user.id, before=None, after=after)
    except errors.UniqueViolation:
        raise Conflict(f"user {username!r} already exists; pick another username") from None
    except errors.CheckViolation:
        raise Invalid(
            f"username {username!r}: use 1-64 lower-case letters, digits, '.', '_' or '-'", ("body", "username")
        ) from None
    except errors.ForeignKeyViolation:
        raise Invalid(f"no technician {technician_id}", ("body", "technician_id")) from None
    return user


def list_users(conn: psycopg.Connection) -> list[User]:
    """Every account, by username."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(f"SELECT {_USER_COLUMNS} FROM users u ORDER BY u.username").fetchall()
    return [User(*r) for r in rows]


def get_user(conn: psycopg.Connection, username: str) -> User:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(f"SELECT {_USER_COLUMNS} FROM users u WHERE u.username = %s", (username,)).fetchone()
    if row is None:
        raise NotFound("user", username)
    return User(*row)


def disable_user(conn: psycopg.Connection, username: str, *, actor: Principal | str = SYSTEM) -> User:
    """Disable an account and end its sessions (idempotent)."""
    with conn.transaction():
        user = get_user(conn, username)
        conn.execute("UPDATE users SET active = false WHERE id = %s", (user.id,))
        conn.execute("UPDATE user_sessions SET ended_at = now() WHERE user_id = %s AND ended_at IS NULL", (user.id,))
        if user.active:
            audit.record(conn, actor, "user.disable", "user", user.id, before={"active": True}, after={"active": False})
    return get_user(conn, username)


def reset_password(conn: psycopg.Connection, username: str, password: str, *, actor: Principal | str = SYSTEM) -> None:
    """Set a new password, end the account's sessions and forget its failed sign-ins."""
    _check_password(password)
    with conn.transaction():
        user = get_user(conn, username)
        conn.execute(
            "UPDATE users SET password_hash = %s, password_changed_at = now() WHERE id = %s",
            (_hasher.hash(password), user.id),
        )
        conn.execute("UPDATE user_sessions SET ended_at = now() WHERE user_id = %s AND ended_at IS NULL", (user.id,))
        conn.execute("DELETE FROM signin_failures WHERE username = %s", (user.username,))
        audit.record(conn, actor, "user.reset_password", "user", user.id, before=None, after=None)


def sign_in(
    conn: psycopg.Connection,
    username: str,
    password: str,
    *,
    address: str,
    user_agent: str = "",
    policy: SessionPolicy = SessionPolicy(),
    throttle: Throttle = Throttle(),
) -> SignIn:
    """Check the password and open a session; the refusal never says whether the username exists."""
    username = username.strip().lower()[:200]
    window = throttle.window
    with conn.cursor(row_factory=tuple_row) as cur:
        by_account, by_address = cur.execute(
            """SELECT count(*) FILTER (WHERE username = %(u)s), count(*) FILTER (WHERE address = %(a)s)
               FROM signin_failures WHERE at > now() - %(w)s AND (username = %(u)s OR address = %(a)s)""",
            {"u": username, "a": address, "w": window},
        ).fetchone() or (0, 0)
    if by_account >= throttle.per_account or by_address >= throttle.per_address:
        return SignIn(refused=_THROTTLED, throttled=True)
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            f"SELECT {_USER_COLUMNS}, u.password_hash FROM users u WHERE u.username = %s", (username,)
        ).fetchone()
    if row is None:
        _hasher.verify(password, _DUMMY_HASH)
        ok = False
    else:
        ok = _hasher.verify(password, row[-1]) and row[4]  # active
    if not ok:
        with conn.transaction():
            conn.execute(
                "DELETE FROM signin_failures WHERE at < now() - %s AND (username = %s OR address = %s)",
                (window, username, address),
            )
            conn.execute("INSERT INTO signin_failures (username, address) VALUES (%s, %s)", (username, address))
        return SignIn(refused=_WRONG)
    assert row is not None
    user = User(*row[:-1])
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        sid, expires = cur.execute(
            """INSERT INTO user_sessions (user_id, token_hash, csrf_token, address, user_agent, expires_at)
               VALUES (%s, %s, %s, %s, %s, now() + %s) RETURNING id, expires_at""",
            (user.id, _digest(cookie), csrf, address, user_agent[:300], policy.absolute),
        ).fetchone() or (0, None)
        cur.execute("UPDATE users SET last_signin_at = now() WHERE id = %s", (user.id,))
        cur.execute("DELETE FROM signin_failures WHERE username = %s", (username,))
    return SignIn(cookie=cookie, session=UserSession(sid, user, csrf, expires))


#: ``last_seen_at`` is written at most this often per session, so page loads do not all turn into writes.
SEEN_RESOLUTION: Final = timedelta(minutes=1)


def session_of(
    conn: psycopg.Connection,
    cookie: str | None,
    *,
    policy: SessionPolicy = SessionPolicy(),
    touch: bool = True,
) -> UserSession | None:
    """The live session a cookie names, or None if unknown, ended, idle or expired.

    ``touch`` marks it used (a request by the person, at most once per :data:`SEEN_RESOLUTION`); a check
    the server makes on its own (a live page's update) passes ``touch=False`` so it never keeps an idle
    session alive.
    """
    if not cookie or len(cookie) > 200:
        return None
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            f"""SELECT s.id, s.csrf_token, s.expires_at, s.last_seen_at < now() - %s, {_USER_COLUMNS}
                FROM user_sessions s JOIN users u ON u.id = s.user_id
                WHERE s.token_hash = %s AND u.active AND s.ended_at IS NULL
                  AND s.expires_at > now() AND s.last_seen_at > now() - %s""",
            (SEEN_RESOLUTION, _digest(cookie), policy.idle),
        ).fetchone()
        if row is None:
            return None
        sid, csrf, expires, stale, *user = row
        if touch and stale:
            with conn.transaction():
                cur.execute("UPDATE user_sessions SET last_seen_at = now() WHERE id = %s", (sid,))
    return UserSession(sid, User(*user), csrf, expires)


def end_session(conn: psycopg.Connection, cookie: str | None) -> bool:
    """Sign out: end the session the cookie names; True if one was live."""
    if not cookie:
        return False
    with conn.transaction():
        cur = conn.execute(
            "UPDATE user_sessions SET ended_at = now() WHERE token_hash = %s AND ended_at IS NULL", (_digest(cookie),)
        )
        return cur.rowcount > 0
