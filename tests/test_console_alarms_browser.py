"""The Alarms page in a real browser (Debian's chromium via Playwright) against `fieldwatch serve` with real
ingest, rules, ticketing, PostgreSQL and Mosquitto: a rule error appears and clears live as an alarm of its
own kind. Uses the fixtures of tests/test_console_browser.py (its own server for this module); screenshots
go to tests/screenshots/."""

from __future__ import annotations

import os
import time

import psycopg
import pytest

from fwcore.contract import Batch, Point, topic
from rules import save_rule
from rules.rulesfile import load_rules_file
from tests.support.mqtt import publisher
from tests.support.names import new_uid
from tests.support.waits import WaitTimeout, wait_until
from tests.test_console_browser import (  # noqa: F401  (fixtures: pytest finds them by name here)
    CHROMIUM,
    Console,
    _shot,
    _sign_in,
    browser,
    console,
    new_page,
)

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs chromium (apt-get install chromium)"),
]


def _reading(c: Console, device: str, value: float) -> None:
    """Publish one bearing temperature of ``device`` through MQTT, as its gateway would."""
    c.seq += 1
    site = c.site_of[device]
    batch = Batch(
        gateway=site.gateway,
        site=site.slug,
        seq=c.seq,
        points=[Point(device, "bearing_temp", int(time.time() * 1000), value)],
    )
    with publisher(os.environ.get("FIELDWATCH_MQTT_URL", "mqtt://127.0.0.1:1883"), f"pub-{new_uid()}") as pub:
        pub(topic(site.slug, site.gateway, "telemetry"), batch)


def _open_rule_error(c: Console, device: str) -> int | None:
    with psycopg.connect(c.db_url) as conn:
        row = conn.execute(
            "SELECT e.id FROM rule_errors e JOIN devices d ON d.id = e.device_id"
            " WHERE d.key = %s AND e.cleared_at IS NULL",
            (device,),
        ).fetchone()
    return row[0] if row else None


def test_a_rule_error_appears_live_on_the_alarms_page_and_clears_when_the_attribute_is_fixed(
    console: Console,  # noqa: F811  (the fixture imported above)
    new_page,  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    """A rule whose threshold is a device attribute the device lacks raises a rule error that appears on the
    open Alarms page without reload — for the rule's owner, with the reason and what to fix, filterable by
    kind, counted on the overview, never ticketed — and leaves the page once the attribute is set."""
    page = new_page()
    _sign_in(page, console, "reliability_engineer", path="/alarms")
    page.wait_for_url(f"{console.url}/alarms")
    page.get_by_test_id("alarm-list").wait_for()
    page.evaluate("window.__notReloaded = true")
    with psycopg.connect(console.db_url, autocommit=True) as conn:
        (spec,) = load_rules_file(
            "- {name: own limit, tag: bearing_temp, problem_code: HOT_OWN,"
            f" scope: {{devices: [{console.site.slug}/P-4]}},"
            " condition: {kind: above, threshold: {attribute: limit}}}"
        )
        save_rule(conn, spec, author="rita")

    def raised() -> int | None:
        _reading(console, "P-4", 50.0)  # under the fixed rule's 80: no equipment alarm
        return wait_until(lambda: _open_rule_error(console, "P-4"), 2, ignore=(WaitTimeout,))

    error = wait_until(raised, 40, what="the evaluator to raise a rule error for P-4", ignore=(WaitTimeout,))
    row = page.get_by_test_id(f"rule-error-{error}")
    row.wait_for()
    assert page.evaluate("window.__notReloaded") is True  # pushed over the websocket
    assert row.get_attribute("data-kind") == "rule_error"
    assert "for rita" in row.get_by_test_id("owner").inner_text()
    assert "'limit'" in row.get_by_test_id("reason").inner_text()
    assert "set the attribute 'limit' of device P-4" in row.get_by_test_id("hint").inner_text()
    assert row.get_by_role("button").count() == 0  # nothing to acknowledge: the owner fixes the rule or device
    _shot(page, "alarms-rule-error")

    page.get_by_test_id("filter-kind").click()
    page.get_by_role("option", name="Equipment alarms").click()
    row.wait_for(state="detached")
    page.get_by_test_id("filter-kind").click()
    page.get_by_role("option", name="Rule errors").click()
    row.wait_for()
    page.keyboard.press("Escape")
    _shot(page, "alarms-rule-errors-only")

    overview = new_page()
    _sign_in(overview, console, "reliability_engineer")
    badge = overview.get_by_test_id("open-rule-error")
    badge.wait_for()
    assert int(badge.inner_text().split()[0]) >= 1
    with psycopg.connect(console.db_url) as conn:
        assert conn.execute("SELECT count(*) FROM tickets WHERE problem_code = 'HOT_OWN'").fetchone() == (0,)

    with psycopg.connect(console.db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE devices SET attributes = attributes || '{\"limit\": 70}' WHERE key = 'P-4' AND site_id ="
            " (SELECT id FROM sites WHERE slug = %s)",
            (console.site.slug,),
        )

    def cleared() -> bool:
        _reading(console, "P-4", 50.0)  # the evaluator re-reads devices every few seconds
        return wait_until(lambda: _open_rule_error(console, "P-4") is None, 2, ignore=(WaitTimeout,))

    wait_until(cleared, 40, what="the rule error of P-4 to clear once its limit is set", ignore=(WaitTimeout,))
    row.wait_for(state="detached")
    assert page.evaluate("window.__notReloaded") is True
    _shot(page, "alarms-rule-error-cleared")
