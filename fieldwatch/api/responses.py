"""The error statuses every route may answer, documented in its OpenAPI operation in one place.

A route declares only what is its own (``201``, a ``409`` with its reason); :func:`document_errors`
adds the statuses that follow from how the app is built, so the schema says every status a client
can get (``tests/test_api_fuzz.py`` checks it against what the app answers):

====  ==================================================  ==========================================
code  when                                                which routes
====  ==================================================  ==========================================
400   the body cannot be read (not UTF-8 JSON)            routes that take a body
401   no, an invalid or a revoked bearer token            every route that needs a token
403   the token's role may not, or not on this object     every route that needs a token
404   the path names no row                               routes with path parameters
409   the request contradicts the data (route's reason)   the routes that say so
413   the request body is larger than the limit           routes that take a body
422   invalid parameters or body; each problem located    every route that needs a token
429   too many requests; ``Retry-After`` says when        every route that needs a token
503   the database is unavailable; ``Retry-After``        every route that needs a token
====  ==================================================  ==========================================

A route's own entry for a code keeps its description; only a missing body schema is added.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from fwcore import policy

from .deps import POLICY_MARK

__all__ = ["Problem", "ValidationProblem", "document_errors"]


class Problem(BaseModel):
    """An error: ``detail`` says what went wrong and, where it can, what to do instead."""

    detail: str


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description='where: ["body", "name"], ["query", "from"], ["path", "ticket_id"]')
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """The request is well-formed HTTP but its parameters or body are not acceptable."""

    detail: list[ValidationIssue]


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}}
_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_VALIDATION = {"$ref": "#/components/schemas/ValidationProblem"}

#: What each common status means, and the schema of its body.
COMMON: dict[int, tuple[str, dict[str, Any], dict[str, Any]]] = {
    400: ("the body cannot be read: not UTF-8, or not the declared content type", _PROBLEM, {}),
    401: ("missing, invalid or revoked bearer token", _PROBLEM, {}),
    403: ("the token's role may not do this (or not on this object); says who may", _PROBLEM, {}),
    404: ("the path names something that does not exist", _PROBLEM, {}),
    409: ("the request contradicts the current state of the data", _PROBLEM, {}),
    413: ("the request body is larger than the server accepts", _PROBLEM, {}),
    422: ("invalid parameters or body; each problem names its input", _VALIDATION, {}),
    429: ("too many requests; wait as long as Retry-After says", _PROBLEM, _RETRY_AFTER),
    503: ("the database is unavailable; try again later", _PROBLEM, _RETRY_AFTER),
}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _actions(dependant: Dependant) -> list[str]:
    """The policy actions a route's dependencies declare (``allow``/``public``), depth first."""
    found: list[str] = []
    for dep in dependant.dependencies:
        mark = getattr(dep.call, POLICY_MARK, None)
        if mark is not None:
            found.append(mark[0])
        found.extend(_actions(dep))
    return found


def _has_path_params(dependant: Dependant) -> bool:
    """Whether the route or one of its dependencies (e.g. the device resolver) reads a path parameter."""
    return bool(dependant.path_params) or any(_has_path_params(d) for d in dependant.dependencies)


def statuses_of(dependant: Dependant, method: str) -> list[int]:
    """The common statuses a route answers (see the module's table), from its dependencies and method."""
    actions = _actions(dependant)
    if not actions or all(policy.action(a).public for a in actions):
        return []
    codes = [401, 403, 422, 429, 503]
    if _has_path_params(dependant):
        codes.append(404)
    if method in _BODY_METHODS:
        codes += [400, 413]
    return sorted(codes)


def _document(operation: dict[str, Any], code: int) -> None:
    description, body, headers = COMMON[code]
    entry = operation.setdefault("responses", {}).setdefault(str(code), {"description": description})
    entry.setdefault("content", {"application/json": {"schema": body}})
    if headers:
        entry.setdefault("headers", headers)


def _add_schemas(schema: dict[str, Any]) -> None:
    found = models_json_schema(
        [(Problem, "serialization"), (ValidationProblem, "serialization")],
        ref_template="#/components/schemas/{model}",
    )[1]
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in found.get("$defs", {}).items():
        components.setdefault(name, definition)


def document_errors(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI document list the common error statuses of every operation.

    FastAPI builds (and caches) the document; this adds the statuses to it, in place and idempotently.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        if schema.get("x-fieldwatch-errors"):
            return schema
        paths = schema.get("paths", {})
        for ctx in iter_route_contexts(app.routes):  # included routers unfolded
            route = ctx.original_route
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            dependant = getattr(ctx, "dependant", None) or route.dependant
            for method in ctx.methods or ():
                operation = paths.get(ctx.path_format or "", {}).get(method.lower())
                if operation is None:
                    continue
                for code in statuses_of(dependant, method):
                    _document(operation, code)
                for code in (404, 409, 422):  # a route's own entry for these gets the body schema too
                    if str(code) in operation.get("responses", {}):
                        _document(operation, code)
        _add_schemas(schema)
        schema["x-fieldwatch-errors"] = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema
