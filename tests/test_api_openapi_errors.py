"""The OpenAPI document tells the truth about errors, and every request body checks its texts."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from fieldwatch.api import create_app
from fwcore.inputs import Input
from fwcore.settings import load_settings


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(load_settings())


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, ops in schema["paths"].items() for method, op in ops.items()]


def test_every_route_that_needs_a_token_documents_the_common_errors(app: FastAPI) -> None:
    """Each operation behind a token lists 401, 403, 422, 429 and 503; with path parameters 404; with a body
    400 and 413; each with a body schema, and 429/503 with Retry-After."""
    schema = app.openapi()
    secured = [(m, p, op) for m, p, op in _operations(schema) if p.startswith("/api/v1/")]
    assert len(secured) > 80
    for method, path, op in secured:
        codes = set(op["responses"])
        expected = {"401", "403", "422", "429", "503"}
        if "{" in path:
            expected.add("404")
        if method in ("POST", "PUT", "PATCH"):
            expected |= {"400", "413"}
        assert expected <= codes, (method, path, sorted(expected - codes))
        for code in expected - {"422"}:
            assert op["responses"][code]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }, (method, path, code)
        assert "Retry-After" in op["responses"]["429"]["headers"]
        assert "Retry-After" in op["responses"]["503"]["headers"]
    assert {"Problem", "ValidationProblem", "ValidationIssue"} <= set(schema["components"]["schemas"])


def test_a_routes_own_conflict_keeps_its_reason_and_gains_a_schema(app: FastAPI) -> None:
    """A 409 a route declares keeps its description and gets the Problem body schema."""
    op = app.openapi()["paths"]["/api/v1/alarms/{alarm_id}/acknowledge"]["post"]
    assert op["responses"]["409"]["description"] == "the alarm is cleared"
    assert op["responses"]["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/Problem")


def test_probes_document_no_token_errors(app: FastAPI) -> None:
    """/healthz needs no token, so it lists no 401 or 403."""
    assert set(app.openapi()["paths"]["/healthz"]["get"]["responses"]) == {"200"}


def _bodies(dependant: Dependant) -> list[Any]:
    found = [p.field_info.annotation for p in dependant.body_params]
    for sub in dependant.dependencies:
        found.extend(_bodies(sub))
    return found


def test_every_request_body_is_an_input_model(app: FastAPI) -> None:
    """Every JSON body a route takes is a ``fwcore.inputs.Input``, so no text in it can hold NUL or a lone
    surrogate (a new body model that forgets it fails here)."""
    seen = []
    for ctx in iter_route_contexts(app.routes):
        route = ctx.original_route
        if not isinstance(route, APIRoute):
            continue
        for annotation in _bodies(getattr(ctx, "dependant", None) or route.dependant):
            models = [a for a in getattr(annotation, "__args__", (annotation,)) if a is not type(None)]
            for model in models:
                seen.append(model)
                assert isinstance(model, type) and issubclass(model, Input), (ctx.path, model)
    assert len(seen) > 20
