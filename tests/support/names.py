"""Unique names for one test on shared services.

The broker and the database server are shared with every other test (and with other test
runs on the machine): every topic slug, client id and registry name carries a fresh ``uid``.
"""

from __future__ import annotations

import re
import uuid

#: A retained gateway status whose site slug has the shape tests give them (``site-<uid>`` or
#: ``s-<uid>``); the session clears these from the shared broker (see :func:`tests.support.mqtt.clear_test_retained`).
TEST_STATUS_TOPIC = re.compile(r"^fw/v1/(site|s)-[0-9a-f]{8}/[^/]+/status$")


def new_uid() -> str:
    """Eight hex digits, fresh per call."""
    return uuid.uuid4().hex[:8]


def site_and_gateway(uid: str | None = None) -> tuple[str, str]:
    """``("site-<uid>", "gw-<uid>")``: a test gateway's site and gateway slugs."""
    uid = uid or new_uid()
    return f"site-{uid}", f"gw-{uid}"
