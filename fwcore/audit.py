"""The audit log: who changed what and when, with the state before and after, append-only.

A domain function that makes an audited change (a ticket's status or assignment, a rule version,
a silence, a token, a technician) takes an ``actor`` (:class:`fwcore.policy.Principal`, or a bare
name for a CLI user or a job) and calls :func:`record` inside the transaction that makes the
change: the entry exists exactly when the change was committed. The table refuses UPDATE, DELETE
and TRUNCATE (a trigger, migration 0012), and nothing offers to change it; :func:`entries` reads it.

``before`` and ``after`` hold only the fields the change is about (``{"status": "assigned"}`` →
``{"status": "cancelled"}``); ``before`` is null for a creation. Values must be JSON-serialisable
(datetimes are stored as ISO 8601 text, sets as sorted lists).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final, LiteralString

import psycopg
from psycopg.types.json import Jsonb

from fwcore.paging import Page, Row, fetch_page
from fwcore.policy import Principal, principal_of

#: What the log records, by ``action``: the documentation lists them (docs/security).
ACTIONS: Final[tuple[str, ...]] = (
    "ticket.status",
    "ticket.assign",
    "ticket.pin",
    "ticket.unpin",
    "rule.apply",
    "rule.rollback",
    "silence.create",
    "silence.end",
    "alarm.comment",
    "token.create",
    "token.revoke",
    "technician.create",
    "technician.skills",
    "technician.change",
    "technician.retire",
    "skill.create",
    "skill.rename",
    "skill.retire",
    "skill.restore",
    "user.create",
    "user.disable",
    "user.reset_password",
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One audited change."""

    id: int
    at: datetime
    actor: str
    actor_role: str
    actor_token_id: int | None
    action: str
    object_type: str
    object_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def _plain(value: object) -> object:
    """What ``json`` cannot encode on its own, as JSON: times as ISO 8601, sets as sorted lists."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"an audit entry holds a {type(value).__name__}, which has no JSON form")


def _dumps(value: object) -> str:
    return json.dumps(value, default=_plain)


def _json(value: dict[str, Any] | None) -> Jsonb | None:
    return None if value is None else Jsonb(value, dumps=_dumps)


def record(
    conn: psycopg.Connection,
    actor: Principal | str,
    action: str,
    object_type: str,
    object_id: object,
    *,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> int:
    """Append one entry in the caller's transaction; returns its id."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; one of {', '.join(ACTIONS)}")
    who = principal_of(actor)
    row = conn.execute(
        """INSERT INTO audit_log (actor, actor_role, actor_token_id, action, object_type, object_id, before, after)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (who.name, who.role, who.token_id, action, object_type, str(object_id), _json(before), _json(after)),
    ).fetchone()
    assert row is not None
    return int(row[0])


_SELECT: LiteralString = """SELECT id, at, actor, actor_role, actor_token_id, action, object_type, object_id,
                                   before, after FROM audit_log"""
_FILTERS: dict[str, LiteralString] = {
    "object_type": "object_type = %(object_type)s",
    "object_id": "object_id = %(object_id)s",
    "actor": "actor = %(actor)s",
    "action": "action = %(action)s",
    "since": "at >= %(since)s",
    "until": "at < %(until)s",
}


def _entry(row: Row) -> Entry:
    return Entry(**row)


def entries(
    conn: psycopg.Connection,
    *,
    object_type: str | None = None,
    object_id: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = 100,
    offset: int = 0,
) -> Page[Entry]:
    """Entries newest first, narrowed by every filter given; one page and the total behind it."""
    given = {
        k: v
        for k, v in {
            "object_type": object_type,
            "object_id": object_id,
            "actor": actor,
            "action": action,
            "since": since,
            "until": until,
        }.items()
        if v is not None
    }
    return fetch_page(
        conn, _SELECT, "audit_log", [_FILTERS[k] for k in given], "id DESC", given, _entry, limit=limit, offset=offset
    )
