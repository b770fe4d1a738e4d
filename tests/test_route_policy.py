"""Every route of the app declares one action of the permission policy, and the server enforces what
the policy decides: each route × each role (and, for routes on a ticket or technician, on the
caller's own object and on someone else's), with real tokens against a real database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from fieldwatch.api import create_app, docs
from fieldwatch.api.deps import POLICY_MARK, Subject
from fwcore import policy
from fwcore.auth import ROLES, verify_token
from fwcore.policy import POLICY, Principal
from tests.support.api import BASE, Fleet, api_client, auth, seed, settings_for, token


def _declarations(dependant: Dependant) -> list[tuple[str, Subject | None]]:
    """Every policy declaration in a route's dependency tree."""
    found = []
    if dependant.call is not None and hasattr(dependant.call, POLICY_MARK):
        found.append(getattr(dependant.call, POLICY_MARK))
    for sub in dependant.dependencies:
        found.extend(_declarations(sub))
    return found


def _routes(app: FastAPI) -> list[tuple[str, str, Dependant]]:
    """(method, path, dependency tree) of every API route of ``app.routes``, included routers unfolded."""
    found = []
    for ctx in iter_route_contexts(app.routes):
        if isinstance(ctx.original_route, APIRoute):
            dependant = getattr(ctx, "dependant", None) or ctx.original_route.dependant
            path = re.sub(r"{(\w+):\w+}", r"{\1}", ctx.path)  # a convertor ({device_id:device}) takes an id too
            found.extend((method, path, dependant) for method in ctx.methods or ())
    return sorted(found, key=lambda r: (r[1], r[0]))


def _others(app: FastAPI) -> list[str]:
    """Paths of the routes that are not API routes (FastAPI's own documentation pages)."""
    return [str(ctx.path) for ctx in iter_route_contexts(app.routes) if not isinstance(ctx.original_route, APIRoute)]


def _docs_paths(app: FastAPI) -> set[str | None]:
    return {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url, *docs.PATHS}


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(settings_for("postgresql://unused@127.0.0.1:1/unused"))


def test_every_route_declares_exactly_one_policy_action(app: FastAPI) -> None:
    """A route without allow(...) or public(...) (or with two) fails here, naming the route and the fix."""
    problems = []
    for method, path, dependant in _routes(app):
        found = _declarations(dependant)
        if len(found) != 1:
            problems.append(f"{method} {path}: {len(found)} policy declarations")
    problems.extend(
        f"{path}: not an API route, so it cannot declare a policy"
        for path in _others(app)
        if path not in _docs_paths(app)
    )
    assert not problems, (
        "every route declares one action of fwcore/policy.py: add a parameter "
        '`access: Annotated[Access, allow("kind.verb", on=SUBJECT)]` (or `public(...)`), and a line in '
        "POLICY if the route does something new.\n" + "\n".join(problems)
    )


def test_every_action_of_the_policy_is_used_by_a_route(app: FastAPI) -> None:
    """The table has no row that no route declares (so it documents what the server does)."""
    used = {action for _, _, dependant in _routes(app) for action, _ in _declarations(dependant)}
    used.add("technician.read_contact")  # asked per technician shown, inside the technician routes
    assert set(POLICY) - used == set()


def test_actions_on_some_objects_only_have_routes_that_load_the_object(app: FastAPI) -> None:
    """An action granted as own or client is declared with the subject whose facts decide it, or on a list route."""
    for method, path, dependant in _routes(app):
        ((action, subject),) = _declarations(dependant)
        scoped = POLICY[action].scopes - {policy.Scope.ALL}
        params = set(re.findall(r"{(\w+)}", path))
        if scoped and params:
            assert subject is not None and subject.param in params, f"{method} {path}: {action} needs on=<subject>"


# --- what the server enforces ---------------------------------------------------------------------


@dataclass
class World:
    url: str
    fleet: Fleet
    tokens: dict[str, str]  # role -> token; field_engineer and technician are Ana's
    principals: dict[str, Principal]
    ids: dict[str, int | str]  # path parameter -> a representative object
    others: dict[str, int]  # path parameter -> someone else's object (for own-scoped subjects)


@pytest.fixture(scope="module")
def world(admin_db_url: str, template_db: str) -> Iterator[World]:
    from tests.support.db import fresh_database

    with fresh_database(admin_db_url, template_db, prefix="fwt_policy_") as url:
        fleet = seed(url)
        ana, ben = fleet.technicians["ana"], fleet.technicians["ben"]
        with psycopg.connect(url, autocommit=True) as conn:
            bens_ticket = conn.execute(
                "INSERT INTO tickets (device_id, problem_code, title, status) "
                "VALUES (%s, 'LEAK', 'Leak', 'assigned') RETURNING id",
                (fleet.devices["pump-2"],),
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO assignments (ticket_id, technician_id, reason) VALUES (%s, %s, 'x')", (bens_ticket, ben)
            )
        tokens = {r: token(url, r, technician=ana if r in ("field_engineer", "technician") else None) for r in ROLES}
        spare = token(url, "viewer", "spare")
        with psycopg.connect(url, autocommit=True) as conn:
            principals = {r: verify_token(conn, t).principal for r, t in tokens.items()}  # type: ignore[union-attr]
            spare_id = verify_token(conn, spare).id  # type: ignore[union-attr]
        ids: dict[str, int | str] = {
            "ticket_id": fleet.tickets["assigned"],  # Ana's
            "technician_id": ana,
            "client_id": fleet.client,
            "site_id": fleet.sites["plant-a"],
            "gateway_id": fleet.gateways["gw-a"],
            "device_id": fleet.devices["pump-1"],
            "series_id": fleet.series["pump-1/bearing_temp"],  # has telemetry: a delete is refused (409)
            "alarm_id": fleet.alarms["active"],
            "rule": str(fleet.rules["bearing hot"]),
            "silence_id": 424242,  # these need not exist: no scope depends on them
            "endpoint_id": 424242,
            "delivery_id": 424242,
            "photo_id": 424242,
            "letter_id": 424242,
            "discovered_id": 424242,
            "token_id": spare_id,
            "skill_code": "pump_mech",
        }
        yield World(url, fleet, tokens, principals, ids, {"ticket_id": bens_ticket, "technician_id": ben})


def _expected(w: World, conn: psycopg.Connection, role: str, action: str, subject: Subject | None, ident: int) -> bool:
    principal = w.principals[role]
    decision = policy.decide(principal, action)
    if decision.allowed and subject is not None and decision.scope is not policy.Scope.ALL:
        decision = policy.decide(principal, action, subject.facts(conn, ident))
    return decision.allowed


def test_the_server_enforces_the_policy_for_every_route_and_role(world: World) -> None:
    """Denied by the policy → 403 before the body is looked at; allowed → neither 401, 403 nor a server
    error; no token → 401 (public routes: no 401)."""
    mismatches = []
    app = create_app(settings_for(world.url))
    with api_client(world.url) as api, psycopg.connect(world.url, autocommit=True) as conn:
        for method, path, dependant in _routes(app):
            ((action, subject),) = _declarations(dependant)
            params = re.findall(r"{(\w+)}", path)
            missing = [p for p in params if p not in world.ids]
            assert not missing, f"{method} {path}: add a representative object for {missing} to the world fixture"
            variants = [dict(world.ids)]
            if subject is not None and subject.param in world.others:
                variants.append({**world.ids, subject.param: world.others[subject.param]})
            for ids in variants:
                url = path.format(**ids)
                kw = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
                anonymous = api.request(method, url, **kw).status_code
                if POLICY[action].public:
                    if anonymous in (401, 403):
                        mismatches.append(f"{method} {url} is public but answered {anonymous} without a token")
                elif anonymous != 401:
                    mismatches.append(f"{method} {url} answered {anonymous} without a token")
                for role in ROLES:
                    ident = int(ids[subject.param]) if subject is not None else 0
                    allowed = _expected(world, conn, role, action, subject, ident)
                    got = api.request(method, url, headers=auth(world.tokens[role]), **kw).status_code
                    if (got == 403) == allowed or got == 401 or got >= 500:
                        mismatches.append(
                            f"{method} {url} as {role}: policy {'allows' if allowed else 'denies'}, got {got}"
                        )
    assert not mismatches, "\n".join(mismatches)


def test_the_matrix_covered_every_route(world: World) -> None:
    """The app's routes are the ones under /api/v1 and the probes: nothing escapes the matrix above."""
    app = create_app(settings_for(world.url))
    assert all(path.startswith(BASE) or path in ("/healthz", "/readyz", "/metrics") for _, path, _ in _routes(app))
