"""API tokens: create, verify, list and revoke bearer tokens with a role.

A token is ``fw_`` + 43 URL-safe characters (256 bits from :mod:`secrets`). Only
its SHA-256 is stored (``api_tokens.token_hash``), with a short ``prefix`` so a
listing can tell tokens apart; the plaintext is shown once, at creation. Since
the token carries 256 bits of entropy a fast unsalted hash is enough (there is
nothing to brute-force), and looking a token up *by its hash* means response
time does not depend on how many leading characters of a guess were right.

A token may be *bound* to a technician (its ``technician_id``): then it acts as
that person, and the policy (:mod:`fwcore.policy`) lets it do its ``own``-scoped
actions — the jobs assigned to that technician, their own position. A
``technician`` token must be bound. Creating and revoking a token is audited
(:mod:`fwcore.audit`) with the actor who did it.

Every function takes an open :class:`psycopg.Connection` and runs its writes in
``conn.transaction()``, so it commits on its own in autocommit mode and nests
as a savepoint inside a caller's transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

import psycopg
from psycopg import errors
from psycopg.rows import tuple_row

from fwcore import audit
from fwcore.policy import BOUND_ROLES, ROLES, SYSTEM, Principal

__all__ = [
    "ROLES",
    "TokenInfo",
    "check_role",
    "create_token",
    "issue_token",
    "list_tokens",
    "revoke_token",
    "verify_token",
]

Role = Literal["admin", "dispatcher", "reliability_engineer", "field_engineer", "technician", "viewer"]
TOKEN_PREFIX: Final = "fw_"
#: How many characters of the token are kept in clear for listings ("fw_" + 8).
PREFIX_CHARS: Final = 11
#: ``last_used_at`` is written at most this often per token, so reads do not turn into writes.
LAST_USED_RESOLUTION: Final = "1 minute"
# fw_ + token_urlsafe(32) is 46 characters; anything far off is not ours and skips the database.
_MIN_LEN, _MAX_LEN = 20, 200


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What the database knows about a token (never the token itself)."""

    id: int
    name: str
    role: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    technician_id: int | None = None
    client_id: int | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def principal(self) -> Principal:
        """Who this token acts as, for the policy and the audit log."""
        return Principal(self.name, self.role, self.id, self.technician_id, self.client_id)


_COLUMNS = "id, name, role, prefix, created_at, last_used_at, revoked_at, technician_id, client_id"


def check_role(role: str) -> str:
    """Return ``role`` if it is one we know, else raise ``ValueError`` naming the accepted roles."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; accepted roles: {', '.join(ROLES)}")
    return role


def hash_token(token: str) -> bytes:
    """The SHA-256 digest stored for ``token``."""
    return hashlib.sha256(token.encode()).digest()


def generate_token() -> str:
    """A new high-entropy token (pure; nothing stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_token(
    conn: psycopg.Connection,
    name: str,
    role: str,
    *,
    technician_id: int | None = None,
    client_id: int | None = None,
    actor: Principal | str = SYSTEM,
) -> str:
    """Store a new token for ``name`` with ``role`` and return its plaintext (shown only once).

    ``technician_id`` binds it to a technician (required for the ``technician`` role), ``client_id``
    to a client. ``actor`` is who creates it, for the audit log. A ``ValueError`` says what to change.
    """
    return issue_token(conn, name, role, technician_id=technician_id, client_id=client_id, actor=actor)[0]


def issue_token(
    conn: psycopg.Connection,
    name: str,
    role: str,
    *,
    technician_id: int | None = None,
    client_id: int | None = None,
    actor: Principal | str = SYSTEM,
) -> tuple[str, TokenInfo]:
    """:func:`create_token`, also returning what is stored about the new token."""
    check_role(role)
    name = name.strip()
    if not name:
        raise ValueError("a token needs a non-empty name (who or what uses it)")
    if role in BOUND_ROLES and technician_id is None:
        raise ValueError(f"a {role} token acts for one technician: name it (--technician ID)")
    token = generate_token()
    try:
        with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
            row = cur.execute(
                f"""INSERT INTO api_tokens (name, role, token_hash, prefix, technician_id, client_id)
                    VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}""",
                (name, role, hash_token(token), token[:PREFIX_CHARS], technician_id, client_id),
            ).fetchone()
            assert row is not None
            info = TokenInfo(*row)
            after = {
                "name": name,
                "role": role,
                "prefix": token[:PREFIX_CHARS],
                "technician_id": technician_id,
                "client_id": client_id,
            }
            audit.record(conn, actor, "token.create", "token", info.id, before=None, after=after)
    except errors.ForeignKeyViolation as exc:
        what = "technician" if "technician" in (exc.diag.constraint_name or "") else "client"
        ident = technician_id if what == "technician" else client_id
        raise ValueError(f"no {what} {ident}: bind the token to an existing {what}") from None
    return token, info


def verify_token(conn: psycopg.Connection, token: str) -> TokenInfo | None:
    """The token's info if it exists and is not revoked, else None.

    Marks the token used (``last_used_at``) at most once per minute.
    """
    if not token.startswith(TOKEN_PREFIX) or not _MIN_LEN <= len(token) <= _MAX_LEN:
        return None
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            f"""SELECT {_COLUMNS},
                       last_used_at IS NULL OR last_used_at < now() - interval '{LAST_USED_RESOLUTION}'
                FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL""",
            (hash_token(token),),
        ).fetchone()
        if row is None:
            return None
        *fields, stale = row
        info = TokenInfo(*fields)
        if stale:
            # Conditional again, so concurrent requests with one token write the row once.
            with conn.transaction():
                cur.execute(
                    f"""UPDATE api_tokens SET last_used_at = now()
                        WHERE id = %s AND (last_used_at IS NULL
                              OR last_used_at < now() - interval '{LAST_USED_RESOLUTION}')""",
                    (info.id,),
                )
    return info


def list_tokens(conn: psycopg.Connection, *, include_revoked: bool = True) -> list[TokenInfo]:
    """All tokens, oldest first (hashes are never returned)."""
    where = "" if include_revoked else "WHERE revoked_at IS NULL"
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(f"SELECT {_COLUMNS} FROM api_tokens {where} ORDER BY id").fetchall()
    return [TokenInfo(*r) for r in rows]


def revoke_token(conn: psycopg.Connection, token_id: int, *, actor: Principal | str = SYSTEM) -> bool:
    """Revoke token ``token_id``; True if it was active, False if unknown or already revoked.

    ``actor`` is who revokes it, for the audit log (only an actual revocation is recorded).
    """
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL RETURNING name, revoked_at",
            (token_id,),
        ).fetchone()
        if row is None:
            return False
        audit.record(
            conn,
            actor,
            "token.revoke",
            "token",
            token_id,
            before={"name": row[0], "revoked_at": None},
            after={"name": row[0], "revoked_at": row[1]},
        )
        return True
