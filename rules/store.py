"""Rules in PostgreSQL: save (a new version only when something changed), list, fetch, history.

``rules.definition`` holds the validated :class:`~rules.model.RuleSpec` as JSON; the
original columns (``tag``, ``operator``, ``threshold``, ``severity``, …) are kept filled with
a summary so older readers keep working. Every saved version is also written to
``rule_versions`` with its author, so any version can be shown, diffed or backtested.

Every new version is audited (:mod:`fwcore.audit`, ``rule.apply`` or ``rule.rollback``) with the
definition before and after, in the transaction that writes it.

Functions take an open psycopg connection; writes run in their own (nested) transaction.
psycopg errors that mean bad input become :class:`RuleError`\\ s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from fwcore import audit
from fwcore.policy import Principal, principal_of
from rules.model import Operator, Rule, RuleSpec, Severity, legacy_spec

_COLUMNS = (
    "id, name, equipment_model, tag, operator, threshold, duration_s, severity, problem_code, "
    "required_skill, enabled, version, definition, updated_by, updated_at"
)


class RuleError(ValueError):
    """A rule cannot be stored as given; the message says why."""


class DuplicateRuleName(RuleError):
    """Another rule already has this name."""


class UnknownSkill(RuleError):
    """``required_skill`` names a skill code that is not in the ``skills`` table."""


class UnknownRule(RuleError):
    """No rule (or rule version) has this id or name."""


@dataclass(frozen=True, slots=True)
class RuleVersion:
    rule_id: int
    version: int
    spec: RuleSpec
    author: str
    created_at: datetime


def spec_json(spec: RuleSpec) -> dict[str, Any]:
    """The stored (and diffed) form of a spec."""
    return spec.model_dump(mode="json")


def _row_spec(row: dict[str, Any]) -> RuleSpec:
    if row.get("definition"):
        return RuleSpec.model_validate(row["definition"])
    return legacy_spec(
        name=row["name"],
        tag=row["tag"],
        operator=row["operator"],
        threshold=row["threshold"],
        problem_code=row["problem_code"],
        duration_s=row["duration_s"],
        severity=row["severity"],
        equipment_model=row["equipment_model"],
        required_skill=row["required_skill"],
        enabled=row["enabled"],
    )


def _rule(row: dict[str, Any]) -> Rule:
    return Rule(
        id=row["id"],
        version=row["version"],
        spec=_row_spec(row),
        updated_by=row.get("updated_by") or "",
        updated_at=row.get("updated_at"),
    )


def _legacy_columns(spec: RuleSpec) -> dict[str, Any]:
    """The summary written to the original columns."""
    c = spec.condition
    operator = threshold = None
    if c.kind in ("above", "below"):
        operator = (">" if c.kind == "above" else "<") + ("=" if c.inclusive else "")
        least = c.levels[-1].threshold
        threshold = least if isinstance(least, float) else None
    models = spec.scope.equipment_models
    return {
        "name": spec.name,
        "kind": c.kind,
        "equipment_model": models[0] if len(models) == 1 else None,
        "tag": spec.tag,
        "operator": operator,
        "threshold": threshold,
        "duration_s": spec.for_s,
        "severity": spec.severity,
        "problem_code": spec.problem_code,
        "required_skill": spec.required_skill,
        "enabled": spec.enabled,
        "definition": Jsonb(spec_json(spec)),
    }


Change = Literal["created", "updated", "unchanged"]


def check_required_skills(conn: psycopg.Connection, specs: list[RuleSpec]) -> None:
    """Every ``required_skill`` of ``specs`` exists and is not retired (unless the live rule of that name already
    requires it): :class:`UnknownSkill` naming each rule at fault otherwise. ``rules apply`` and its dry run both
    call this, so a dry run that passes is an apply that passes."""
    wanted = sorted({s.required_skill for s in specs if s.required_skill})
    if not wanted:
        return
    retired: dict[str, bool] = dict(
        conn.execute("SELECT code, retired_at IS NOT NULL FROM skills WHERE code = ANY(%s)", (wanted,)).fetchall()
    )
    live: dict[str, str | None] = dict(
        conn.execute("SELECT name, required_skill FROM rules WHERE name = ANY(%s)", ([s.name for s in specs],))
    )
    known = [r[0] for r in conn.execute("SELECT code FROM skills WHERE retired_at IS NULL ORDER BY code")]
    problems = []
    for s in specs:
        code = s.required_skill
        if not code:
            continue
        if code not in retired:
            problems.append(
                f"rule {s.name!r}: required_skill {code!r} is not a known skill code; add it with "
                f"`fieldwatch skills add {code}` or use one of: {', '.join(known) or '(none yet)'}"
            )
        elif retired[code] and live.get(s.name) != code:
            problems.append(
                f"rule {s.name!r}: required_skill {code!r} is retired; pick another skill or restore it with "
                f"`fieldwatch skills restore {code}`"
            )
    if problems:
        raise UnknownSkill("\n".join(problems))


def save_rule(
    conn: psycopg.Connection, spec: RuleSpec, *, author: Principal | str, audit_action: str = "rule.apply"
) -> tuple[Rule, Change]:
    """Create the rule named ``spec.name`` or update it; a new version only when the spec differs.

    ``author`` is recorded with the version and, with ``audit_action``, in the audit log.
    """
    actor = principal_of(author)
    author = actor.name
    cols = _legacy_columns(spec)
    check_required_skills(conn, [spec])
    try:
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(f"SELECT {_COLUMNS} FROM rules WHERE name = %s FOR UPDATE", (spec.name,))
            old = cur.fetchone()
            if old is not None and spec_json(_row_spec(old)) == spec_json(spec):
                return _rule(old), "unchanged"
            names = list(cols)
            if old is None:
                cur.execute(
                    f"INSERT INTO rules ({', '.join(names)}, updated_by) VALUES "
                    f"({', '.join(['%s'] * len(names))}, %s) RETURNING {_COLUMNS}",
                    (*cols.values(), author),
                )
            else:
                sets = ", ".join(f"{n} = %s" for n in names)
                cur.execute(
                    f"UPDATE rules SET {sets}, version = version + 1, updated_by = %s, updated_at = now() "
                    f"WHERE id = %s RETURNING {_COLUMNS}",
                    (*cols.values(), author, old["id"]),
                )
            row = cur.fetchone()
            assert row is not None
            cur.execute(
                "INSERT INTO rule_versions (rule_id, version, definition, author) VALUES (%s, %s, %s, %s)",
                (row["id"], row["version"], Jsonb(spec_json(spec)), author),
            )
            audit.record(
                conn,
                actor,
                audit_action,
                "rule",
                row["id"],
                before=None if old is None else {"version": old["version"], "definition": spec_json(_row_spec(old))},
                after={"version": row["version"], "definition": spec_json(spec)},
            )
    except errors.ForeignKeyViolation:
        raise UnknownSkill(
            f"rule {spec.name!r}: required_skill {spec.required_skill!r} is not a known skill code; "
            f"add it with `fieldwatch skills add {spec.required_skill}`"
        ) from None
    return _rule(row), "created" if old is None else "updated"


def create_rule(
    conn: psycopg.Connection,
    *,
    name: str,
    tag: str,
    operator: Operator,
    threshold: float,
    problem_code: str,
    duration_s: float = 0.0,
    severity: Severity = "major",
    equipment_model: str | None = None,
    required_skill: str | None = None,
    enabled: bool = True,
    author: str = "api",
) -> Rule:
    """Insert a one-level threshold rule (``tag operator threshold for duration_s``); refuse an existing name."""
    try:
        spec = legacy_spec(
            name=name,
            tag=tag,
            operator=operator,
            threshold=threshold,
            problem_code=problem_code,
            duration_s=duration_s,
            severity=severity,
            equipment_model=equipment_model,
            required_skill=required_skill,
            enabled=enabled,
        )
    except ValidationError as exc:
        raise RuleError(f"rule {name!r}: {exc}") from None
    if get_rule_by_name(conn, name) is not None:
        raise DuplicateRuleName(f"a rule named {name!r} already exists")
    try:
        rule, _ = save_rule(conn, spec, author=author)
    except errors.UniqueViolation:
        raise DuplicateRuleName(f"a rule named {name!r} already exists") from None
    return rule


def list_rules(conn: psycopg.Connection, *, enabled_only: bool = False) -> list[Rule]:
    """Every rule (or only enabled ones), by id."""
    where = "WHERE enabled" if enabled_only else ""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM rules {where} ORDER BY id")
        return [_rule(row) for row in cur.fetchall()]


def get_rule(conn: psycopg.Connection, rule_id: int) -> Rule | None:
    """The rule with ``rule_id``, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM rules WHERE id = %s", (rule_id,))
        row = cur.fetchone()
    return _rule(row) if row else None


def get_rule_by_name(conn: psycopg.Connection, name: str) -> Rule | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM rules WHERE name = %s", (name,))
        row = cur.fetchone()
    return _rule(row) if row else None


def find_rule(conn: psycopg.Connection, ref: str | int) -> Rule:
    """A rule by id (digits) or name; :class:`UnknownRule` says how to list them."""
    rule = get_rule(conn, int(ref)) if str(ref).isdigit() else None
    rule = rule or get_rule_by_name(conn, str(ref))
    if rule is None:
        raise UnknownRule(f"no rule {ref!r}; `fieldwatch rules list` shows the rules")
    return rule


def rule_versions(conn: psycopg.Connection, rule_id: int) -> list[RuleVersion]:
    """Every stored version of a rule, oldest first."""
    rows = conn.execute(
        "SELECT rule_id, version, definition, author, created_at FROM rule_versions"
        " WHERE rule_id = %s ORDER BY version",
        (rule_id,),
    ).fetchall()
    return [RuleVersion(r[0], r[1], RuleSpec.model_validate(r[2]), r[3], r[4]) for r in rows]


def get_rule_version(conn: psycopg.Connection, rule_id: int, version: int) -> RuleSpec:
    row = conn.execute(
        "SELECT definition FROM rule_versions WHERE rule_id = %s AND version = %s", (rule_id, version)
    ).fetchone()
    if row is None:
        raise UnknownRule(f"rule {rule_id} has no version {version}; `fieldwatch rules show` lists its versions")
    return RuleSpec.model_validate(row[0])


def set_rule_enabled(conn: psycopg.Connection, rule_id: int, enabled: bool, *, author: str = "api") -> bool:
    """Enable or disable a rule (a new version); False when there is no such rule."""
    rule = get_rule(conn, rule_id)
    if rule is None:
        return False
    save_rule(conn, rule.spec.model_copy(update={"enabled": enabled}), author=author)
    return True


def set_rule_validated(conn: psycopg.Connection, rule_id: int, validated: bool, *, author: str) -> tuple[Rule, bool]:
    """Mark whether a rule's alarms may dispatch on their own: a new version (so who and when is in its
    history), or none when it already says so. Returns (the rule, whether a version was written)."""
    rule = get_rule(conn, rule_id)
    if rule is None:
        raise UnknownRule(f"no rule {rule_id!r}; `fieldwatch rules list` shows the rules")
    if rule.spec.validated is validated:
        return rule, False
    new, change = save_rule(conn, rule.spec.model_copy(update={"validated": validated}), author=author)
    return new, change != "unchanged"
