"""The skills matrix with levels per equipment model, end to end: set over HTTP, loaded by the live
plan, honoured by insertion, explanations and dispatcher validation."""

from __future__ import annotations

import psycopg

from tests.support import dispatch
from tests.support.api import BASE, api_client, auth, token
from tests.support.dispatch import World, assignment, new_ticket, service

world = dispatch.world  # two P100 pumps, Ana near Munich (pump 3), Bo near Augsburg (pump 3)


def _put_skills(world: World, tech: str, body: dict, role: str = "dispatcher"):
    with api_client(world.url) as api:
        return api.put(
            f"{BASE}/technicians/{world.techs[tech]}/skills", json=body, headers=auth(token(world.url, role))
        )


def test_matrix_is_replaced_and_read_back_over_http(world: World) -> None:
    """PUT replaces general and per-model levels; GET returns them; bad input names the entry."""
    body = {"skills": {"pump": 3}, "models": [{"skill": "pump", "model": "P100", "level": 1}]}
    r = _put_skills(world, "Ana", body)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "technician_id": world.techs["Ana"],
        "skills": {"pump": 3},
        "models": [{"skill": "pump", "model": "P100", "level": 1}],
    }
    with api_client(world.url) as api:
        h = auth(token(world.url, "field_engineer"))
        assert api.get(f"{BASE}/technicians/{world.techs['Ana']}/skills", headers=h).json() == r.json()
        assert api.get(f"{BASE}/technicians/4040/skills", headers=h).status_code == 404
    unknown = _put_skills(world, "Ana", {"models": [{"skill": "chiller", "model": "C200", "level": 2}]})
    assert unknown.status_code == 422 and "unknown skill code(s): chiller" in unknown.text
    twice = _put_skills(world, "Ana", {"models": [{"skill": "pump", "model": "P100", "level": 2}] * 2})
    assert twice.status_code == 422 and "pump on P100 is listed twice" in twice.text
    assert _put_skills(world, "Ana", {"skills": {"pump": 6}}).status_code == 422
    assert _put_skills(world, "Ana", body, role="field_engineer").status_code == 403
    with psycopg.connect(world.url) as conn:  # the refused requests changed nothing
        assert conn.execute("SELECT equipment_model, level FROM technician_model_skills").fetchall() == [("P100", 1)]


def test_model_level_decides_placement_explanation_and_validation(world: World) -> None:
    """Ana is nearer and level 3 on pumps but level 1 on the P100: the job needing level 2 goes to Bo,
    the explanation names the model level, and assigning Ana needs an override."""
    assert (
        _put_skills(
            world, "Ana", {"skills": {"pump": 3}, "models": [{"skill": "pump", "model": "P100", "level": 1}]}
        ).status_code
        == 200
    )
    t = new_ticket(world.url, world.devices["a"], "P1", required_level=2)
    with service(world) as svc:
        d = svc.dispatch_ticket(t)
    assert d is not None and d.technician is not None and d.technician.name == "Bo"
    a = assignment(world.url, t)
    assert a is not None and "level 1 on P100 < required 2" in a["reason"]
    h = auth(token(world.url, "dispatcher"))
    with api_client(world.url) as api:
        refused = api.post(f"{BASE}/tickets/{t}/assign", json={"technician_id": world.techs["Ana"]}, headers=h)
    assert refused.status_code == 409 and "level 1 on P100 < required 2" in refused.json()["detail"]


def test_a_ticket_whose_level_is_not_per_model_uses_the_general_level(world: World) -> None:
    """With level_per_model = false, Ana's general pump level 3 counts and the nearer Ana gets it."""
    _put_skills(world, "Ana", {"skills": {"pump": 3}, "models": [{"skill": "pump", "model": "P100", "level": 1}]})
    t = new_ticket(world.url, world.devices["a"], "P1", required_level=2, level_per_model=False)
    with service(world) as svc:
        d = svc.dispatch_ticket(t)
    assert d is not None and d.technician is not None and d.technician.name == "Ana"
