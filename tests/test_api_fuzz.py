"""The HTTP API fuzzed from its own OpenAPI document (schemathesis): no input makes a server error,
and every status it answers is one the document lists.

It runs in-process against the ASGI app on a real, seeded database, with a token of every role (the
technician's bound to a technician), chosen per generated case. Bounded: ``FUZZ_EXAMPLES`` cases
per operation (environment ``FIELDWATCH_FUZZ_EXAMPLES``), no deadline. Select it with ``-m fuzz``.
Settings of the app under test come from :func:`fuzz_settings` (rate limits, body limits).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import psycopg_pool.base
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from fieldwatch.api import create_app
from fwcore.policy import ROLES
from fwcore.settings import Settings, load_settings
from tests.support.api import auth, seed, settings_for, token
from tests.support.db import fresh_database

pytestmark = pytest.mark.fuzz

FUZZ_EXAMPLES = int(os.environ.get("FIELDWATCH_FUZZ_EXAMPLES", "15"))


def fuzz_settings(db_url: str) -> Settings:
    """The app's settings under the fuzzer: generous limits, so throttling does not hide answers."""
    high = 10**6
    return settings_for(
        db_url,
        api_auth_failures_burst=high,
        api_auth_failures_per_min=float(high),
        api_requests_burst=high,
        api_requests_per_s=float(high),
        api_expensive_burst=high,
        api_expensive_per_min=float(high),
        api_refusal_delay_max_s=0.0,  # thousands of 4xx from one address: no tarpit holds
    )


class _Target:
    """The ASGI app the fuzzer calls: the schema is read at import, the app on its database is made
    by :func:`role_tokens` (schemathesis starts its lifespan, the connection pool, on first use)."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


TARGET = _Target()
schema = schemathesis.openapi.from_dict(create_app(load_settings()).openapi())
schema.app = TARGET


@pytest.fixture(scope="module")
def role_tokens(admin_db_url: str, template_db: str) -> Iterator[dict[str | None, dict[str, str]]]:
    """A seeded database, the app on it (the fuzzer's target) and each role's Authorization header."""
    with fresh_database(admin_db_url, template_db, prefix="fwt_fuzz_") as url, pytest.MonkeyPatch.context() as mp:
        # The app's connection pool jitters connection lifetimes with the global `random` from its
        # worker thread, at moments of its own; Hypothesis sees the global state move while it draws
        # a case and fails the case as flaky. A private generator keeps the pool's jitter its own.
        mp.setattr(psycopg_pool.base, "random", random.Random(0).random)
        fleet = seed(url)
        headers: dict[str | None, dict[str, str]] = {
            role: auth(token(url, role, technician=fleet.technicians["ana"] if role == "technician" else None))
            for role in ROLES
        }
        headers[None] = {}
        TARGET.app = create_app(fuzz_settings(url))
        try:
            yield headers
        finally:
            shutdown_lifespans()  # closes the app's pool before its database is dropped
            TARGET.app = None


@schema.parametrize()
@schema.given(role=st.sampled_from((*ROLES, None)))
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_answers_every_generated_request_with_a_documented_non_server_status(
    case: schemathesis.Case, role: str | None, role_tokens: dict[str | None, dict[str, str]]
) -> None:
    """Every generated request, with any role's token or none, gets a documented status below 500."""
    case.call_and_validate(
        headers=dict(role_tokens[role]),  # a copy: the call adds its own headers to the dict it gets
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
    )
