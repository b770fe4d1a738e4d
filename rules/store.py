"""Create, list and fetch rules (used by the API and demo seeding).

Functions take an open psycopg connection and run in the caller's transaction; the
caller commits. psycopg errors that mean bad input become :class:`RuleError`s.
"""

from __future__ import annotations

import psycopg
from psycopg import errors
from psycopg.rows import dict_row

from rules.model import Operator, Severity, ThresholdRule

_COLUMNS = (
    "id, name, equipment_model, tag, operator, threshold, duration_s, severity, "
    "problem_code, required_skill, enabled, version"
)


class RuleError(ValueError):
    """A rule cannot be stored as given; the message says why."""


class DuplicateRuleName(RuleError):
    """Another rule already has this name."""


class UnknownSkill(RuleError):
    """``required_skill`` names a skill code that is not in the ``skills`` table."""


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
) -> ThresholdRule:
    """Insert a threshold rule and return it with its id."""
    # Validate through the model first so bad operators/severities fail with a clear message.
    ThresholdRule(
        id=0,
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
    try:
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"""INSERT INTO rules (name, equipment_model, tag, operator, threshold, duration_s, severity,
                                       problem_code, required_skill, enabled)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}""",
                (
                    name,
                    equipment_model,
                    tag,
                    operator,
                    threshold,
                    duration_s,
                    severity,
                    problem_code,
                    required_skill,
                    enabled,
                ),
            )
            row = cur.fetchone()
    except errors.UniqueViolation:
        raise DuplicateRuleName(f"a rule named {name!r} already exists") from None
    except errors.ForeignKeyViolation:
        raise UnknownSkill(f"required_skill {required_skill!r} is not a known skill code") from None
    assert row is not None
    return ThresholdRule(**row)


def list_rules(conn: psycopg.Connection, *, enabled_only: bool = False) -> list[ThresholdRule]:
    """Every rule (or only enabled ones), by id."""
    where = "WHERE enabled" if enabled_only else ""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM rules {where} ORDER BY id")
        return [ThresholdRule(**row) for row in cur.fetchall()]


def get_rule(conn: psycopg.Connection, rule_id: int) -> ThresholdRule | None:
    """The rule with ``rule_id``, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM rules WHERE id = %s", (rule_id,))
        row = cur.fetchone()
    return ThresholdRule(**row) if row else None


def set_rule_enabled(conn: psycopg.Connection, rule_id: int, enabled: bool) -> bool:
    """Enable or disable a rule (bumping its version); False when there is no such rule."""
    cur = conn.execute(
        "UPDATE rules SET enabled = %s, version = version + 1, updated_at = now() WHERE id = %s",
        (enabled, rule_id),
    )
    return cur.rowcount == 1
