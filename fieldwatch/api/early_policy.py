"""The role check of a request's route, made by the guard before the request's body is read.

FastAPI reads and parses a route's body *before* it resolves the route's dependencies, so
``allow(...)`` (:mod:`fieldwatch.api.deps`) refuses a role only after the body has been read: a
viewer's 1 MB JSON to a route it may not call costs the server a megabyte of reading (and a
chunked 100 MB one, the read up to the body limit) before the 403. :class:`EarlyPolicy` decides
what the role alone decides — a role without any grant of the route's action — from the method and
path, before the body; everything that needs the object (``own`` and ``client`` scopes) is still
decided by the route's ``allow`` on the loaded object, and so is every route it cannot tell apart.

Conservative by construction: it refuses only when *every* route the method and path can reach
declares an action the role may not do at all, so it never refuses what the route would allow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import compile_path

from fwcore import policy
from fwcore.policy import Principal

from .deps import POLICY_MARK

#: The methods whose requests carry a body worth not reading.
BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True)
class _Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    actions: tuple[str, ...]


def declared_actions(dependant: Dependant) -> list[str]:
    """The policy actions in a route's dependency tree (``allow``/``public`` declarations)."""
    found: list[str] = []
    if dependant.call is not None and hasattr(dependant.call, POLICY_MARK):
        found.append(getattr(dependant.call, POLICY_MARK)[0])
    for sub in dependant.dependencies:
        found.extend(declared_actions(sub))
    return found


class EarlyPolicy:
    """The body-carrying API routes of an app (found on first use) and the role check on them."""

    def __init__(self) -> None:
        self._routes: list[_Route] | None = None

    def _table(self, app: Any) -> list[_Route]:
        if self._routes is None:
            routes = []
            for ctx in iter_route_contexts(app.routes):
                if not isinstance(ctx.original_route, APIRoute):
                    continue
                methods = frozenset(ctx.methods or ()) & BODY_METHODS
                dependant = getattr(ctx, "dependant", None) or ctx.original_route.dependant
                actions = tuple(declared_actions(dependant))
                if methods and actions:
                    routes.append(_Route(methods, compile_path(str(ctx.path))[0], actions))
            self._routes = routes
        return self._routes

    def refusal(self, app: Any, method: str, path: str, principal: Principal) -> str | None:
        """Why ``principal`` may not ``method path`` whatever the object (the policy's words), or
        None when it may, when it depends on the object, or when no known route matches."""
        if method not in BODY_METHODS:
            return None
        reason = None
        for route in self._table(app):
            if method not in route.methods or not route.pattern.match(path):
                continue
            denied = next((d for a in route.actions if not (d := policy.decide(principal, a)).allowed), None)
            if denied is None:
                return None  # this route may admit it: let the route decide
            reason = reason or denied.reason
        return reason
