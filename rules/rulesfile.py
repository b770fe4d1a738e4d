"""Rules as code: parse a rules file, diff it against what is live, apply it as new versions.

A rules file is YAML: either a list of rules or ``{rules: [...]}``; each entry is a
:class:`~rules.model.RuleSpec`. Validation reports *every* problem at once, each naming
the rule and the field (``rule 'hot bearing' (#2): condition.levels.0.clear: …``), so a
reviewer fixes the file in one pass.

:func:`plan` is pure apart from reading live rules; :func:`apply_plan` writes the changes
in one transaction (all or nothing), each as a new version with its author.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
import yaml
from pydantic import ValidationError

from fwcore import filecheck
from fwcore.filecheck import Path
from fwcore.policy import Principal, principal_of
from rules.model import RuleSpec
from rules.store import check_required_skills, list_rules, save_rule, spec_json


class RulesFileError(ValueError):
    """The rules file cannot be used; ``problems`` lists each one with its rule and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_rules(data: Any, *, source: str | None = None, lines: Mapping[Path, int] | None = None) -> list[RuleSpec]:
    """Validate already-loaded YAML/JSON data; raises :class:`RulesFileError` listing every problem.

    With the ``lines`` of a file (:func:`fwcore.filecheck.load_yaml`) each problem reads
    ``SOURCE line N, rules[i].field: what to fix``; without (an API body) ``rule 'name' (#n): field: what to fix``.
    """
    base: Path = ()
    if isinstance(data, dict) and "rules" in data:
        data, base = data["rules"], ("rules",)
    if not isinstance(data, list):
        raise RulesFileError(
            [f"{source or 'the rules'}: a rules file is a list of rules (or a mapping with a 'rules' list)"]
        )
    specs: list[RuleSpec] = []
    problems: list[str] = []
    seen: dict[str, int] = {}

    def at(i: int, field: str | None = None) -> str:
        if lines is None:
            name = data[i].get("name") if isinstance(data[i], dict) else None
            who = f"rule {name!r} (#{i + 1})" if name else f"rule #{i + 1}"
            return f"{who}: {field}" if field else who
        line, path = filecheck.locate(lines, [field] if field else [], (*base, i))
        return f"{source} line {line}, {filecheck.render(path, 'rules')}"

    for i, item in enumerate(data):
        if not isinstance(item, dict):
            problems.append(f"{at(i)}: a rule is a mapping of fields (`name: value` lines), not {type(item).__name__}")
            continue
        try:
            spec = RuleSpec.model_validate(item)
        except ValidationError as exc:
            if lines is not None:
                problems.extend(filecheck.problems(exc, source or "rules file", lines, (*base, i), root="rules"))
            else:
                problems.extend(f"{at(i)}: {filecheck.render(e['loc'])}: {filecheck.words(e)}" for e in exc.errors())
            continue
        if spec.name in seen:
            problems.append(f"{at(i, 'name')}: the name {spec.name!r} is already used by rule #{seen[spec.name]}")
            continue
        seen[spec.name] = i + 1
        specs.append(spec)
    if problems:
        raise RulesFileError(problems)
    return specs


def load_rules_file(text: str, source: str = "rules file") -> list[RuleSpec]:
    """Parse YAML text; every problem names the file, the line and the field."""
    try:
        data, lines = filecheck.load_yaml(text, source)
    except filecheck.FileProblems as exc:
        raise RulesFileError(exc.problems) from None
    return parse_rules(data, source=source, lines=lines)


Action = Literal["create", "update", "unchanged", "only_live"]


@dataclass(frozen=True)
class RuleChange:
    name: str
    action: Action
    #: field path → (live value, file value), for updates
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    spec: RuleSpec | None = None
    live_version: int | None = None


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        out = {}
        for i, v in enumerate(d):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): d}


def diff_specs(old: RuleSpec, new: RuleSpec) -> dict[str, tuple[Any, Any]]:
    """Changed fields, flattened to paths (``condition.levels.0.threshold``)."""
    a, b = _flatten(spec_json(old)), _flatten(spec_json(new))
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def plan(conn: psycopg.Connection, specs: list[RuleSpec]) -> list[RuleChange]:
    """What applying ``specs`` would change, rule by rule (live rules absent from the file: ``only_live``).

    Runs every check :func:`apply_plan` runs that the file alone cannot (skills exist and are not retired):
    :class:`~rules.store.UnknownSkill` otherwise, so a dry run fails exactly where the apply would."""
    check_required_skills(conn, specs)
    live = {r.name: r for r in list_rules(conn)}
    changes: list[RuleChange] = []
    for spec in specs:
        old = live.pop(spec.name, None)
        if old is None:
            changes.append(RuleChange(spec.name, "create", spec=spec))
            continue
        fields = diff_specs(old.spec, spec)
        changes.append(
            RuleChange(spec.name, "update" if fields else "unchanged", fields, spec=spec, live_version=old.version)
        )
    changes.extend(RuleChange(r.name, "only_live", live_version=r.version) for r in live.values())
    return changes


def apply_plan(
    conn: psycopg.Connection,
    changes: list[RuleChange],
    *,
    author: Principal | str,
    audit_action: str = "rule.apply",
) -> list[tuple[str, int]]:
    """Write every create/update in one transaction; returns (name, new version) per written rule.

    Each written version is one audit entry (``audit_action``) with ``author`` as the actor.

    An update that changes what an anomaly model was trained on (:data:`~rules.anomaly_rules.TRAINING_FIELDS`)
    marks the rule's models stale in the same transaction: from the commit on they score nothing, and the
    rule waits for a model of the new definition (:func:`retrain_changed`, or the ``rules.anomaly_retrain``
    job, which trains every rule without a live model).
    """
    from rules.anomaly_rules import mark_stale, training_changes

    written: list[tuple[str, int]] = []
    with conn.transaction():
        for ch in changes:
            if ch.action in ("create", "update") and ch.spec is not None:
                rule, _ = save_rule(conn, ch.spec, author=author, audit_action=audit_action)
                written.append((rule.name, rule.version))
                changed = training_changes(ch.fields) if ch.action == "update" else []
                if changed:
                    mark_stale(conn, rule.id, f"v{rule.version} changed {', '.join(changed)}")
    return written


def needs_training(changes: list[RuleChange]) -> list[str]:
    """Names of anomaly rules that ``changes`` create, or update in a field their models depend on."""
    from rules.anomaly_rules import training_changes
    from rules.model import Anomaly

    return [
        ch.name
        for ch in changes
        if ch.spec is not None
        and isinstance(ch.spec.condition, Anomaly)
        and (ch.action == "create" or (ch.action == "update" and training_changes(ch.fields)))
    ]


def rollback(conn: psycopg.Connection, ref: str | int, version: int, *, author: Principal | str) -> RuleChange:
    """Make stored ``version`` of rule ``ref`` live again, as a new version (audited as ``rule.rollback``).

    The change goes through :func:`apply_plan`, so an anomaly rule's models are marked stale as for
    any edit. Returns the change (``unchanged`` when that version's definition is already live).
    """
    from rules.store import find_rule, get_rule_version

    with conn.transaction():
        rule = find_rule(conn, ref)
        spec = get_rule_version(conn, rule.id, version)
        change = next(ch for ch in plan(conn, [spec]) if ch.name == spec.name)
        apply_plan(conn, [change], author=author, audit_action="rule.rollback")
    return change


def retrain_changed(conn: psycopg.Connection, changes: list[RuleChange], *, author: Principal | str) -> dict[str, Any]:
    """After :func:`apply_plan`: train each rule of :func:`needs_training` now, as a new model version linked to
    the rule's new version. Returns name → :class:`~rules.anomaly_rules.TrainingReport`; subjects that could
    not be trained are in its ``failed`` (the scheduled job tries again), never raised."""
    from rules.anomaly import AnomalyTrainingError
    from rules.anomaly_rules import TrainingReport, train_rule
    from rules.store import find_rule

    reports: dict[str, Any] = {}
    for name in needs_training(changes):
        try:
            reports[name] = train_rule(conn, find_rule(conn, name), author=principal_of(author).name)
        except AnomalyTrainingError as exc:
            reports[name] = TrainingReport(failed={"*": str(exc)})
    return reports


def dump_rules(specs: list[RuleSpec]) -> str:
    """Specs as a rules file (what ``rules export`` writes), defaults left out."""
    items = [s.model_dump(mode="json", exclude_defaults=True) for s in specs]
    for item, s in zip(items, specs, strict=True):
        item["condition"] = s.condition.model_dump(mode="json", exclude_defaults=True) | {"kind": s.condition.kind}
    return yaml.safe_dump({"rules": items}, sort_keys=False, allow_unicode=True)
