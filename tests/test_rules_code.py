"""Rules as code: validation naming rule and field, diff against live, versioned apply, CLI."""

from __future__ import annotations

import psycopg
import pytest
from typer.testing import CliRunner

from rules import find_rule, list_rules, rule_versions
from rules.cli import app
from rules.rulesfile import RulesFileError, apply_plan, load_rules_file, plan

FILE_V1 = """
rules:
  - name: hot bearing
    tag: bearing_temp
    condition: {kind: above, threshold: 80, clear: 75}
    for_s: 30
    scope: {equipment_models: [P100]}
    problem_code: BEARING_OVERHEAT
  - name: low pressure
    tag: discharge_pressure
    condition:
      kind: below
      levels:
        - {severity: critical, threshold: 2}
        - {severity: warning, threshold: {attribute: min_pressure, default: 4}}
    count: 3
    problem_code: HYDRAULIC
"""


def test_every_problem_names_the_file_line_and_field_in_our_words() -> None:
    """A bad file reports all problems at once, each with the file, the line, the field path and what to fix (not
    the validation library's wording)."""
    bad = """
- name: a
  tag: t
  condition: {kind: above, threshold: 80, clear: 90}
  problem_code: P
- name: b
  tag: t
  condition: {kind: above, threshold: 1}
- tag: t
  condition: {kind: nope}
  problem_code: P
- name: a
  tag: t
  condition: {kind: below, threshold: 1}
  problem_code: P
  for_s: -1
"""
    with pytest.raises(RulesFileError) as err:
        load_rules_file(bad, "r.yaml")
    text = "\n".join(err.value.problems)
    assert "r.yaml line 4, rules[0].condition: levels.0.clear (90) must not be above threshold (80)" in text
    assert "r.yaml line 6, rules[1].problem_code: problem_code is missing; add it" in text
    assert "r.yaml line 9, rules[2].name: name is missing; add it" in text
    assert "r.yaml line 10, rules[2].condition: kind 'nope' is not known; use one of 'above', 'below'" in text
    assert "r.yaml line 16, rules[3].for_s: for_s must be at least 0.0 (it is -1)" in text
    assert "Field required" not in text and "Input should" not in text


def test_too_few_items_and_wrong_types_are_said_in_our_words() -> None:
    """A list with too few items says how many to give; a value of the wrong type says which type, with its line."""
    from pydantic import BaseModel, Field, ValidationError

    from fwcore.filecheck import FileProblems, load_yaml, problems

    class Spec(BaseModel):
        tags: list[str] = Field(min_length=2)
        limit: float

    data, lines = load_yaml("rules:\n  - tags: [a]\n    limit: high\n", "rules.yaml")
    with pytest.raises(ValidationError) as err:
        Spec.model_validate(data["rules"][0])
    assert problems(err.value, "rules.yaml", lines, ("rules", 0)) == [
        "rules.yaml line 2, rules[0].tags: give at least 2 tags",
        "rules.yaml line 3, rules[0].limit: limit must be a number (it is 'high')",
    ]
    with pytest.raises(FileProblems, match=r"rules\.yaml line \d, column"):
        load_yaml("a: 1\n b: [\n", "rules.yaml")


def test_bad_yaml_is_reported_with_its_line() -> None:
    """YAML syntax errors say so and where."""
    with pytest.raises(RulesFileError, match=r"(?s)not valid YAML.*line 2"):
        load_rules_file("- name: a\n  tag: [unclosed\n", "r.yaml")


def test_apply_diffs_and_keeps_every_version(db_url: str) -> None:
    """Applying creates rules; re-applying is a no-op; an edit shows field diffs and becomes version 2 by its author."""
    specs = load_rules_file(FILE_V1)
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert [c.action for c in plan(conn, specs)] == ["create", "create"]
        assert apply_plan(conn, plan(conn, specs), author="ann") == [("hot bearing", 1), ("low pressure", 1)]
        assert [c.action for c in plan(conn, specs)] == ["unchanged", "unchanged"]
        edited = load_rules_file(FILE_V1.replace("threshold: 80", "threshold: 85").replace("for_s: 30", "for_s: 60"))
        changes = plan(conn, edited[:1])
        assert [(c.name, c.action) for c in changes] == [("hot bearing", "update"), ("low pressure", "only_live")]
        assert changes[0].fields == {"condition.levels.0.threshold": (80.0, 85.0), "for_s": (30.0, 60.0)}
        assert apply_plan(conn, changes, author="bob") == [("hot bearing", 2)]
        rule = find_rule(conn, "hot bearing")
        history = rule_versions(conn, rule.id)
        assert [(v.version, v.author, v.spec.for_s) for v in history] == [(1, "ann", 30.0), (2, "bob", 60.0)]
        # The original columns still summarise the rule for older readers.
        row = conn.execute(
            "SELECT operator, threshold, duration_s, severity, equipment_model FROM rules WHERE name = 'hot bearing'"
        ).fetchone()
        assert row == (">", 85.0, 60.0, "major", "P100")
        assert [r.name for r in list_rules(conn)] == ["hot bearing", "low pressure"]


def test_cli_apply_list_show(db_url: str, tmp_path, monkeypatch) -> None:
    """`rules apply` shows the diff and applies; `--dry-run` changes nothing; `list` and `show` display the rules."""
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    path = tmp_path / "rules.yaml"
    path.write_text(FILE_V1)
    runner = CliRunner()
    dry = runner.invoke(app, ["apply", str(path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "+ create hot bearing" in dry.output and "Dry run: 2 rule(s)" in dry.output
    with psycopg.connect(db_url) as conn:
        assert list_rules(conn) == []
    done = runner.invoke(app, ["apply", str(path), "--yes", "--author", "ann"])
    assert done.exit_code == 0 and "applied hot bearing v1" in done.output
    path.write_text(FILE_V1.replace("threshold: 80", "threshold: 82"))
    diff = runner.invoke(app, ["apply", str(path), "--yes", "--author", "bob"])
    assert "~ update hot bearing (live v1)" in diff.output
    assert "condition.levels.0.threshold: 80.0 → 82.0" in diff.output
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0 and "hot bearing" in listed.output and "low pressure" in listed.output
    as_json = runner.invoke(app, ["list", "--json"])
    assert '"threshold": 82.0' in as_json.output
    shown = runner.invoke(app, ["show", "hot bearing"])
    assert shown.exit_code == 0 and "threshold: 82.0" in shown.output and "bob" in shown.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: x, tag: t, problem_code: P, condition: {kind: above}}\n")
    refused = runner.invoke(app, ["apply", str(bad), "--yes"])
    assert refused.exit_code == 2
    assert "bad.yaml line 1, rules[0].condition.levels: levels is missing; add it" in " ".join(refused.output.split())
    assert runner.invoke(app, ["show", "nope"]).exit_code == 1
