"""Skills and technicians managed from the CLI and the API: create, list, rename, retire; `rules apply
--dry-run` runs the checks `apply` runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from tests.support.api import BASE, api_client, auth, seed, token

FIELDWATCH = str(Path(sys.executable).with_name("fieldwatch"))


def fw(*args: str, db_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FIELDWATCH, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FIELDWATCH_DATABASE_URL": db_url, "COLUMNS": "200"},
    )


RULE = """rules:
  - name: hot bearing
    tag: bearing_temp
    condition: {kind: above, threshold: 80}
    problem_code: BEARING_HOT
    required_skill: {skill}
"""


def test_skills_cli_add_list_rename_retire_restore(db_url: str) -> None:
    """A skill added, renamed, retired and restored from the CLI shows each state in `skills list --json`."""
    assert fw("skills", "add", "pump_mech", "--name", "Pumps", db_url=db_url).returncode == 0
    dup = fw("skills", "add", "pump_mech", db_url=db_url)
    assert dup.returncode == 1 and "skill 'pump_mech' already exists" in dup.stderr
    bad = fw("skills", "add", "Pump Mech", db_url=db_url)
    assert bad.returncode == 1 and "use lower-case letters" in bad.stderr
    assert fw("skills", "rename", "pump_mech", "Pump mechanics", db_url=db_url).returncode == 0
    assert fw("skills", "retire", "pump_mech", db_url=db_url).returncode == 0
    (retired,) = json.loads(fw("skills", "list", "--json", db_url=db_url).stdout)
    assert (retired["code"], retired["name"]) == ("pump_mech", "Pump mechanics") and retired["retired_at"]
    assert json.loads(fw("skills", "list", "--json", "--active", db_url=db_url).stdout) == []
    assert fw("skills", "restore", "pump_mech", db_url=db_url).returncode == 0
    (restored,) = json.loads(fw("skills", "list", "--json", db_url=db_url).stdout)
    assert restored["retired_at"] is None


def test_a_retired_skill_is_given_to_nobody_new_but_kept_by_who_has_it(db_url: str) -> None:
    """After retiring a skill, a new technician cannot get it, one who has it keeps it through a skills edit."""
    fw("skills", "add", "pump_mech", db_url=db_url)
    fw("skills", "add", "electrical", db_url=db_url)
    add = fw(
        "technicians", "add", "Ana Ortiz", "--email", "ana@example.com", "--lat", "41.9", "--lon", "-87.6",
        "--skill", "pump_mech=4", db_url=db_url,
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    (ana,) = json.loads(fw("technicians", "list", "--json", db_url=db_url).stdout)
    fw("skills", "retire", "pump_mech", db_url=db_url)
    refused = fw(
        "technicians", "add", "Ben Bauer", "--email", "ben@example.com", "--lat", "41.9", "--lon", "-87.6",
        "--skill", "pump_mech=2", db_url=db_url,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "pump_mech are retired and cannot be given to anyone new" in refused.stderr
    kept = fw("technicians", "skills", str(ana["id"]), "--skill", "electrical=2", db_url=db_url)
    assert kept.returncode == 0, kept.stderr
    assert f"technician {ana['id']}: electrical=2, pump_mech=4" in kept.stdout
    removed = fw("technicians", "skills", str(ana["id"]), "--remove", "pump_mech", db_url=db_url)
    assert f"technician {ana['id']}: electrical=2" in removed.stdout
    again = fw("technicians", "skills", str(ana["id"]), "--skill", "pump_mech=4", db_url=db_url)
    assert again.returncode == 1 and "retired" in again.stderr


def test_technicians_cli_change_and_retire(db_url: str) -> None:
    """`technicians change` edits named fields only; `retire` takes them off duty for good."""
    fw("technicians", "add", "Ana", "--email", "ana@example.com", "--lat", "41.9", "--lon", "-87.6", db_url=db_url)
    (ana,) = json.loads(fw("technicians", "list", "--json", db_url=db_url).stdout)
    assert fw("technicians", "change", str(ana["id"]), "--name", "Ana Ortiz", db_url=db_url).returncode == 0
    assert fw("technicians", "retire", str(ana["id"]), db_url=db_url).returncode == 0
    back = fw("technicians", "change", str(ana["id"]), "--available", db_url=db_url)
    assert back.returncode == 1 and "is retired" in back.stderr
    (after,) = json.loads(fw("technicians", "list", "--json", db_url=db_url).stdout)
    assert (after["name"], after["email"], after["available"]) == ("Ana Ortiz", "ana@example.com", False)
    assert after["retired_at"]


def test_dry_run_fails_on_an_unknown_skill_like_apply(db_url: str, tmp_path: Path) -> None:
    """`rules apply --dry-run` and `rules apply` refuse an unknown skill with the same message; once the skill
    exists both pass, and a retired skill is refused for a new rule."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE.replace("{skill}", "pump_mech"))
    dry = fw("rules", "apply", str(rules), "--dry-run", db_url=db_url)
    real = fw("rules", "apply", str(rules), "--yes", db_url=db_url)
    assert dry.returncode == real.returncode == 1
    message = "rule 'hot bearing': required_skill 'pump_mech' is not a known skill code; add it with"
    assert message in dry.stderr.replace("\n", " ") and message in real.stderr.replace("\n", " ")
    fw("skills", "add", "pump_mech", db_url=db_url)
    assert fw("rules", "apply", str(rules), "--dry-run", db_url=db_url).returncode == 0
    fw("skills", "retire", "pump_mech", db_url=db_url)
    retired = fw("rules", "apply", str(rules), "--dry-run", db_url=db_url)
    assert retired.returncode == 1 and "required_skill 'pump_mech' is retired" in retired.stderr


def test_skills_api(db_url: str) -> None:
    """Dispatchers create, rename and retire skills over the API; viewers read them but cannot change them."""
    seed(db_url)
    d = auth(token(db_url, "dispatcher"))
    v = auth(token(db_url, "viewer"))
    with api_client(db_url) as api:
        created = api.post(f"{BASE}/skills", json={"code": "hydraulics", "name": "Hydraulics"}, headers=d)
        dup = api.post(f"{BASE}/skills", json={"code": "hydraulics"}, headers=d)
        renamed = api.patch(f"{BASE}/skills/hydraulics", json={"name": "Hydraulic systems"}, headers=d)
        retired = api.post(f"{BASE}/skills/hydraulics/retire", headers=d)
        listed = api.get(f"{BASE}/skills", params={"include_retired": False}, headers=v).json()
        denied = api.post(f"{BASE}/skills", json={"code": "x"}, headers=v)
        missing = api.get(f"{BASE}/skills/nope", headers=v)
        tech = api.post(
            f"{BASE}/technicians",
            json={"name": "C", "email": "c@example.com", "home_lat": 1, "home_lon": 1, "skills": {"hydraulics": 1}},
            headers=d,
        )
    assert created.status_code == 201 and created.headers["location"].endswith("/skills/hydraulics")
    assert dup.status_code == 409
    assert renamed.json()["name"] == "Hydraulic systems"
    assert retired.status_code == 200 and retired.json()["retired_at"]
    assert "hydraulics" not in [s["code"] for s in listed] and "pump_mech" in [s["code"] for s in listed]
    assert denied.status_code == 403 and missing.status_code == 404
    assert tech.status_code == 422 and "retired" in tech.json()["detail"][0]["msg"]


def test_technician_change_and_retire_api(db_url: str) -> None:
    """PATCH changes a technician; retiring one with an active assignment is 409, a free one 200."""
    fleet = seed(db_url)
    d = auth(token(db_url, "dispatcher"))
    with api_client(db_url) as api:
        changed = api.patch(f"{BASE}/technicians/{fleet.technicians['ben']}", json={"phone": "+1 555"}, headers=d)
        busy = api.post(f"{BASE}/technicians/{fleet.technicians['ana']}/retire", headers=d)
        free = api.post(f"{BASE}/technicians/{fleet.technicians['ben']}/retire", headers=d)
    assert changed.status_code == 200 and changed.json()["phone"] == "+1 555"
    assert busy.status_code == 409, busy.text
    assert free.status_code == 200 and free.json()["retired_at"] and free.json()["available"] is False
    with psycopg.connect(db_url) as conn:
        actions = [
            r[0] for r in conn.execute("SELECT action FROM audit_log WHERE object_type = 'technician' ORDER BY id")
        ]
    assert actions == ["technician.change", "technician.retire"]


def test_api_dry_run_refuses_an_unknown_skill_like_apply(db_url: str) -> None:
    """POST /rules/apply answers 422 with the same message for an unknown skill, dry run or not."""
    seed(db_url)
    h = auth(token(db_url, "reliability_engineer"))
    rule = {
        "name": "wet seal",
        "tag": "flow",
        "condition": {"kind": "above", "threshold": 9},
        "problem_code": "SEAL",
        "required_skill": "seals",
    }
    with api_client(db_url) as api:
        dry = api.post(f"{BASE}/rules/apply", json={"rules": [rule], "dry_run": True}, headers=h)
        real = api.post(f"{BASE}/rules/apply", json={"rules": [rule]}, headers=h)
    assert dry.status_code == real.status_code == 422
    assert dry.json()["detail"][0]["msg"] == real.json()["detail"][0]["msg"]
    assert (
        "required_skill 'seals' is not a known skill code; add it with `fieldwatch skills add seals`"
        in (dry.json()["detail"][0]["msg"])
    )
