"""Technicians and skills: data functions for the API, seeding and dispatch.

Functions take an open connection and run in the caller's transaction; the caller commits.
:func:`create_technician` is the one way a technician is added (the API, the demo seed and
tools all call it), so every technician passes the same checks. Adding a technician and
replacing their skills matrix are audited (:mod:`fwcore.audit`) with the ``actor`` who did it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg import errors, sql
from psycopg.rows import dict_row
from pydantic import BaseModel

from fwcore import audit
from fwcore.errors import Conflict, Invalid
from fwcore.paging import Page, fetch_page
from fwcore.policy import EVERYTHING, SYSTEM, Principal, Visible
from ticketing.dispatch import TechnicianView
from ticketing.errors import DuplicateTechnician, NotFound, UnknownSkill


class Technician(BaseModel):
    """A technician as the API shows them."""

    id: int
    name: str
    email: str
    phone: str
    home_lat: float
    home_lon: float
    current_lat: float | None
    current_lon: float | None
    available: bool
    busy: bool  # has an active assignment
    skills: dict[str, int]
    created_at: datetime
    retired_at: datetime | None = None  # retired: off duty for good, kept for history

    def view(self) -> TechnicianView:
        """The dispatch view of this technician."""
        current = (self.current_lat, self.current_lon) if self.current_lat is not None else None
        return TechnicianView(
            id=self.id,
            name=self.name,
            home=(self.home_lat, self.home_lon),
            current=current,  # type: ignore[arg-type]
            available=self.available,
            busy=self.busy,
            skills=dict(self.skills),
        )


_SELECT: LiteralString = """
SELECT t.id, t.name, t.email, t.phone, t.home_lat, t.home_lon, t.current_lat, t.current_lon, t.available,
       EXISTS (SELECT 1 FROM assignments a WHERE a.technician_id = t.id AND a.active) AS busy,
       COALESCE((SELECT jsonb_object_agg(s.code, ts.level) FROM technician_skills ts
                 JOIN skills s ON s.id = ts.skill_id WHERE ts.technician_id = t.id), '{}'::jsonb) AS skills,
       t.created_at, t.retired_at
FROM technicians t
"""


def ensure_skill(conn: psycopg.Connection, code: str, name: str = "") -> None:
    """Create skill ``code`` if it does not exist yet."""
    conn.execute("INSERT INTO skills (code, name) VALUES (%s, %s) ON CONFLICT (code) DO NOTHING", (code, name))


def skill_ids(conn: psycopg.Connection, codes: Iterable[str], *, held: Iterable[str] = ()) -> dict[str, int]:
    """``{code: id}`` of the skill ``codes``; :class:`UnknownSkill`, naming every known code, if one is missing
    or retired (a retired skill is given to nobody new; codes in ``held``, which the technician already has,
    may stay)."""
    wanted = set(codes)
    if not wanted:
        return {}
    rows = conn.execute(
        "SELECT code, id, retired_at IS NOT NULL FROM skills WHERE code = ANY(%s)", (list(wanted),)
    ).fetchall()
    known: dict[str, int] = {code: ident for code, ident, _ in rows}
    unknown = sorted(wanted - known.keys())
    if unknown:
        all_codes = [r[0] for r in conn.execute("SELECT code FROM skills WHERE retired_at IS NULL ORDER BY code")]
        raise UnknownSkill(
            f"unknown skill code(s): {', '.join(unknown)}; known codes: {', '.join(all_codes) or '(none)'}"
        )
    retired = sorted(code for code, _, gone in rows if gone and code not in set(held))
    if retired:
        raise UnknownSkill(
            f"skill(s) {', '.join(retired)} are retired and cannot be given to anyone new; "
            "restore them first (fieldwatch skills restore CODE)"
        )
    return known


def create_technician(
    conn: psycopg.Connection,
    *,
    name: str,
    email: str,
    home_lat: float,
    home_lon: float,
    phone: str = "",
    available: bool = True,
    skills: Mapping[str, int] | None = None,
    actor: Principal | str = SYSTEM,
) -> Technician:
    """Insert a technician with ``skills`` ({code: level 1..5}), in one transaction.

    Name and email are stripped. Skill codes must exist (a typo must not mint a new skill):
    :class:`UnknownSkill` otherwise, before anything is written. An email another technician
    has is :class:`DuplicateTechnician`.
    """
    skills = dict(skills or {})
    name, email = name.strip(), email.strip()
    try:
        with conn.transaction():
            ids = skill_ids(conn, skills)
            (tech_id,) = conn.execute(
                """INSERT INTO technicians (name, email, phone, home_lat, home_lon, available)
                   VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""",
                (name, email, phone, home_lat, home_lon, available),
            ).fetchone()  # type: ignore[misc]
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO technician_skills (technician_id, skill_id, level) VALUES (%s, %s, %s)",
                    [(tech_id, ids[code], level) for code, level in skills.items()],
                )
            after = {"name": name, "email": email, "phone": phone, "available": available, "skills": skills}
            audit.record(conn, actor, "technician.create", "technician", tech_id, before=None, after=after)
    except errors.UniqueViolation:
        raise DuplicateTechnician(f"a technician with email {email!r} already exists") from None
    except errors.CheckViolation as exc:
        raise ValueError(f"technician {name!r}: {exc.diag.constraint_name} violated") from None
    return get_technician(conn, tech_id)


def get_technician(conn: psycopg.Connection, tech_id: int) -> Technician:
    """The technician with ``tech_id``; raises :class:`NotFound`."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_SELECT + " WHERE t.id = %s", (tech_id,))
        row = cur.fetchone()
    if row is None:
        raise NotFound("technician", tech_id)
    return Technician(**row)


def list_technicians(conn: psycopg.Connection) -> list[Technician]:
    """Every technician, by id, with skills and whether they are busy."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_SELECT + " ORDER BY t.id")
        return [Technician(**row) for row in cur.fetchall()]


def find_technicians(
    conn: psycopg.Connection,
    *,
    skill: str | None = None,
    available: bool | None = None,
    visible: Visible = EVERYTHING,
    limit: int | None = None,
    offset: int = 0,
) -> Page[Technician]:
    """Technicians by id, one page: those with skill ``skill`` (any level) and/or this ``available`` when given.

    ``visible`` with a technician narrows the roster to that technician (a technician sees only themself).
    """
    conditions: list[LiteralString] = []
    if visible.technician_id is not None:
        conditions.append("t.id = %(self)s")
    if skill is not None:
        conditions.append(
            """EXISTS (SELECT 1 FROM technician_skills ts JOIN skills sk ON sk.id = ts.skill_id
                       WHERE ts.technician_id = t.id AND sk.code = %(skill)s)"""
        )
    if available is not None:
        conditions.append("t.available = %(available)s")
    return fetch_page(
        conn,
        _SELECT,
        " technicians t",
        conditions,
        "t.id",
        {"skill": skill, "available": available, "self": visible.technician_id},
        lambda r: Technician(**r),
        limit=limit,
        offset=offset,
    )


def dispatch_candidates(conn: psycopg.Connection) -> list[TechnicianView]:
    """Every technician as dispatch sees them (availability, busy flag, skills, position)."""
    return [t.view() for t in list_technicians(conn)]


def set_technician_location(conn: psycopg.Connection, tech_id: int, lat: float, lon: float) -> None:
    """Record a technician's current position (used by dispatch instead of home)."""
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"({lat}, {lon}) is not a latitude/longitude")
    cur = conn.execute("UPDATE technicians SET current_lat = %s, current_lon = %s WHERE id = %s", (lat, lon, tech_id))
    if cur.rowcount != 1:
        raise NotFound("technician", tech_id)


def set_technician_available(conn: psycopg.Connection, tech_id: int, available: bool) -> None:
    """Mark a technician on or off duty. The next ticketing sweep retries unassigned tickets.

    A retired technician cannot be put back on duty (:class:`fwcore.errors.Conflict`)."""
    row = conn.execute("SELECT retired_at IS NOT NULL FROM technicians WHERE id = %s", (tech_id,)).fetchone()
    if row is None:
        raise NotFound("technician", tech_id)
    if row[0] and available:
        raise Conflict(f"technician {tech_id} is retired; add them again to bring them back")
    conn.execute("UPDATE technicians SET available = %s WHERE id = %s", (available, tech_id))


#: What :func:`change_technician` may change.
CHANGEABLE = frozenset({"name", "email", "phone", "home_lat", "home_lon", "available"})


def change_technician(
    conn: psycopg.Connection, tech_id: int, fields: Mapping[str, Any], *, actor: Principal | str = SYSTEM
) -> Technician:
    """Change a technician's name, email, phone, home or availability (audited as ``technician.change``)."""
    bad = sorted(set(fields) - CHANGEABLE)
    if bad:
        raise Invalid(f"cannot change {', '.join(bad)}; changeable: {', '.join(sorted(CHANGEABLE))}")
    before = get_technician(conn, tech_id)
    if not fields:
        return before
    if fields.get("available") and before.retired_at is not None:
        raise Conflict(f"technician {tech_id} is retired; add them again to bring them back")
    values = {k: v.strip() if isinstance(v, str) else v for k, v in fields.items()}
    sets = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in values)
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("UPDATE technicians SET {} WHERE id = %(__id)s").format(sets), {**values, "__id": tech_id}
            )
            audit.record(
                conn,
                actor,
                "technician.change",
                "technician",
                tech_id,
                before={k: getattr(before, k) for k in values},
                after=dict(values),
            )
    except errors.UniqueViolation:
        raise DuplicateTechnician(f"a technician with email {values.get('email')!r} already exists") from None
    except errors.CheckViolation as exc:
        raise Invalid(
            f"technician {tech_id}: {exc.diag.constraint_name} violated (latitude -90..90, longitude -180..180)"
        ) from None
    return get_technician(conn, tech_id)


def retire_technician(conn: psycopg.Connection, tech_id: int, *, actor: Principal | str = SYSTEM) -> Technician:
    """Retire a technician: off duty for good, never dispatched again; their past work stays.

    Refused (:class:`fwcore.errors.Conflict`) while they hold an active assignment: reassign it first.
    Retiring twice changes nothing."""
    with conn.transaction():
        before = get_technician(conn, tech_id)
        if before.retired_at is not None:
            return before
        if before.busy:
            raise Conflict(f"technician {tech_id} still has an active assignment; reassign or finish it first")
        conn.execute("UPDATE technicians SET retired_at = now(), available = false WHERE id = %s", (tech_id,))
        audit.record(
            conn, actor, "technician.retire", "technician", tech_id, before={"retired": False}, after={"retired": True}
        )
    return get_technician(conn, tech_id)


# -- the skills matrix: general levels and levels per equipment model ---------------------------------
class ModelSkill(BaseModel):
    """A level on one equipment model; it replaces the general level for tickets on that model."""

    skill: str
    model: str
    level: int


class SkillMatrix(BaseModel):
    """A technician's skills: ``{skill: level}`` in general, plus per-model levels."""

    technician_id: int
    skills: dict[str, int]
    models: list[ModelSkill]


def get_skill_matrix(conn: psycopg.Connection, tech_id: int) -> SkillMatrix:
    """The technician's general and per-model levels; raises :class:`NotFound`."""
    if conn.execute("SELECT 1 FROM technicians WHERE id = %s", (tech_id,)).fetchone() is None:
        raise NotFound("technician", tech_id)
    general = conn.execute(
        "SELECT s.code, ts.level FROM technician_skills ts JOIN skills s ON s.id = ts.skill_id"
        " WHERE ts.technician_id = %s ORDER BY s.code",
        (tech_id,),
    ).fetchall()
    per_model = conn.execute(
        "SELECT s.code, ms.equipment_model, ms.level FROM technician_model_skills ms"
        " JOIN skills s ON s.id = ms.skill_id WHERE ms.technician_id = %s ORDER BY s.code, ms.equipment_model",
        (tech_id,),
    ).fetchall()
    return SkillMatrix(
        technician_id=tech_id,
        skills=dict(general),
        models=[ModelSkill(skill=c, model=m, level=lv) for c, m, lv in per_model],
    )


def set_skill_matrix(
    conn: psycopg.Connection,
    tech_id: int,
    skills: Mapping[str, int],
    models: list[ModelSkill],
    *,
    actor: Principal | str = SYSTEM,
) -> SkillMatrix:
    """Replace the technician's whole skills matrix (general and per-model levels) in one transaction.

    Skill codes must exist (a typo must not silently mint a skill nobody requires: :class:`UnknownSkill`);
    levels are 1..5 and a (skill, model) pair may appear once (:class:`fwcore.errors.Invalid`, naming
    every bad entry). Plans already made are not re-checked here — the next
    re-optimisation, insertion or dispatcher change applies the new levels.
    """
    problems: list[str] = []
    for where, level in [
        *((f"skills.{c}", lv) for c, lv in skills.items()),
        *((f"models[{i}] ({m.skill}@{m.model})", m.level) for i, m in enumerate(models)),
    ]:
        if not 1 <= level <= 5:
            problems.append(f"{where}: level {level} is not 1..5")
    seen: set[tuple[str, str]] = set()
    for i, m in enumerate(models):
        if not m.model.strip():
            problems.append(f"models[{i}]: equipment model is empty")
        if (m.skill, m.model) in seen:
            problems.append(f"models[{i}]: {m.skill} on {m.model} is listed twice")
        seen.add((m.skill, m.model))
    if problems:
        raise Invalid("; ".join(problems))  # a ValueError
    with conn.transaction():
        if conn.execute("SELECT 1 FROM technicians WHERE id = %s FOR UPDATE", (tech_id,)).fetchone() is None:
            raise NotFound("technician", tech_id)
        before = get_skill_matrix(conn, tech_id)
        known = skill_ids(
            conn, [*skills, *(m.skill for m in models)], held=[*before.skills, *(m.skill for m in before.models)]
        )
        conn.execute("DELETE FROM technician_skills WHERE technician_id = %s", (tech_id,))
        conn.execute("DELETE FROM technician_model_skills WHERE technician_id = %s", (tech_id,))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO technician_skills (technician_id, skill_id, level) VALUES (%s, %s, %s)",
                [(tech_id, known[c], lv) for c, lv in skills.items()],
            )
            cur.executemany(
                "INSERT INTO technician_model_skills (technician_id, skill_id, equipment_model, level)"
                " VALUES (%s, %s, %s, %s)",
                [(tech_id, known[m.skill], m.model.strip(), m.level) for m in models],
            )
        after = get_skill_matrix(conn, tech_id)
        audit.record(
            conn,
            actor,
            "technician.skills",
            "technician",
            tech_id,
            before=before.model_dump(exclude={"technician_id"}),
            after=after.model_dump(exclude={"technician_id"}),
        )
    return after
