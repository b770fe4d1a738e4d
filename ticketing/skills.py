"""Skills: the codes rules require and technicians hold, created, renamed and retired here.

A skill's ``code`` is its identity (rules and tickets name it); its ``name`` is what people read
and may change. Retiring is soft: a retired skill cannot be newly required by a rule or newly
given to a technician, but rules, tickets and technicians that already have it keep it, so history
stays readable. A retired skill can be restored.

Functions take an open connection and run in their own transaction (a savepoint inside the caller's);
changes are audited (:mod:`fwcore.audit`) with the ``actor``.
"""

from __future__ import annotations

import re
from datetime import datetime

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

from fwcore import audit
from fwcore.errors import Conflict, Invalid
from fwcore.policy import SYSTEM, Principal
from ticketing.errors import NotFound

#: A skill code: lower case letters, digits and ``_`` (``pump_mech``), as rules files write it.
CODE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class Skill(BaseModel):
    """A skill as the API and the CLI show it."""

    id: int
    code: str
    name: str
    retired_at: datetime | None
    technicians: int  # how many technicians hold it


_SELECT = """SELECT s.id, s.code, s.name, s.retired_at,
                    (SELECT count(*) FROM technician_skills ts WHERE ts.skill_id = s.id)::int AS technicians
             FROM skills s"""


def _check_code(code: str) -> str:
    code = code.strip()
    if not CODE.match(code):
        raise Invalid(
            f"skill code {code!r}: use lower-case letters, digits and _ (start with a letter, at most 40), "
            "e.g. pump_mech",
            loc=("body", "code"),
        )
    return code


def get_skill(conn: psycopg.Connection, code: str) -> Skill:
    """The skill ``code``; :class:`NotFound` if there is none."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_SELECT + " WHERE s.code = %s", (code,)).fetchone()
    if row is None:
        raise NotFound("skill", code)
    return Skill(**row)


def list_skills(conn: psycopg.Connection, *, include_retired: bool = True) -> list[Skill]:
    """Every skill by code (retired ones too unless ``include_retired`` is false)."""
    where = "" if include_retired else " WHERE s.retired_at IS NULL"
    with conn.cursor(row_factory=dict_row) as cur:
        return [Skill(**r) for r in cur.execute(_SELECT + where + " ORDER BY s.code").fetchall()]


def create_skill(conn: psycopg.Connection, code: str, name: str = "", *, actor: Principal | str = SYSTEM) -> Skill:
    """Add skill ``code`` (:class:`Conflict` if it exists, retired or not)."""
    code = _check_code(code)
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO skills (code, name) VALUES (%s, %s) ON CONFLICT (code) DO NOTHING RETURNING id",
            (code, name.strip()),
        ).fetchone()
        if row is None:
            existing = get_skill(conn, code)
            hint = " (retired: restore it instead)" if existing.retired_at else ""
            raise Conflict(f"skill {code!r} already exists{hint}")
        audit.record(conn, actor, "skill.create", "skill", row[0], before=None, after={"code": code, "name": name})
    return get_skill(conn, code)


def rename_skill(conn: psycopg.Connection, code: str, name: str, *, actor: Principal | str = SYSTEM) -> Skill:
    """Change the readable name of skill ``code`` (the code, which rules name, stays)."""
    with conn.transaction():
        before = get_skill(conn, code)
        conn.execute("UPDATE skills SET name = %s WHERE code = %s", (name.strip(), code))
        audit.record(
            conn, actor, "skill.rename", "skill", before.id, before={"name": before.name}, after={"name": name.strip()}
        )
    return get_skill(conn, code)


def retire_skill(
    conn: psycopg.Connection, code: str, *, restore: bool = False, actor: Principal | str = SYSTEM
) -> Skill:
    """Retire skill ``code`` (or restore it with ``restore``); doing it twice changes nothing."""
    with conn.transaction():
        before = get_skill(conn, code)
        if (before.retired_at is None) == restore:
            return before
        conn.execute(
            "UPDATE skills SET retired_at = CASE WHEN %s THEN NULL ELSE now() END WHERE code = %s", (restore, code)
        )
        audit.record(
            conn,
            actor,
            "skill.restore" if restore else "skill.retire",
            "skill",
            before.id,
            before={"retired": before.retired_at is not None},
            after={"retired": not restore},
        )
    return get_skill(conn, code)


def retired_codes(conn: psycopg.Connection, codes: list[str]) -> list[str]:
    """Which of ``codes`` are retired skills, sorted."""
    rows = conn.execute(
        "SELECT code FROM skills WHERE code = ANY(%s) AND retired_at IS NOT NULL ORDER BY code", (codes,)
    ).fetchall()
    return [r[0] for r in rows]
