"""The Alarms page in a real browser (Debian's chromium via Playwright) against `fieldwatch serve` with real
ingest, rules, ticketing, PostgreSQL and Mosquitto: a rule error appears and clears live as an alarm of its
own kind; comments, silences and maintenance windows are added from the page, and refused to a viewer.
Uses the fixtures of tests/test_console_browser.py (its own server for this module); screenshots go to
tests/screenshots/."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from fwcore.contract import Batch, Point, topic
from rules import save_rule
from rules.rulesfile import load_rules_file
from tests import test_console_browser as console_tests
from tests.support.mqtt import publisher
from tests.support.names import new_uid
from tests.support.waits import WaitTimeout, wait_until
from tests.test_console_browser import CHROMIUM, Console, _shot, _sign_in

# The running `fieldwatch serve` with a seeded fleet and a user per role, and the browser (module fixtures).
console, browser, new_page = console_tests.console, console_tests.browser, console_tests.new_page

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
    console: Console,
    new_page,  # type: ignore[no-untyped-def]
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
    _shot(overview, "overview-rule-error")
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


def _until(hours: float) -> tuple[str, datetime]:
    """An end time as the page's datetime-local field takes it (UTC, to the minute), and as a datetime."""
    end = (datetime.now(UTC) + timedelta(hours=hours)).replace(second=0, microsecond=0)
    return end.strftime("%Y-%m-%dT%H:%M"), end


def test_a_comment_and_a_silence_with_an_end_time_are_added_from_the_alarms_page(
    console: Console,
    new_page,  # type: ignore[no-untyped-def]
) -> None:
    """A dispatcher comments on an alarm (shown on it, stored, audited) and silences its rule on its device
    until a chosen time (shown on it, stored with that end); the next alarm of that pair is held, unticketed."""
    alarm = console.hot_reading("P-1")
    page = new_page()
    _sign_in(page, console, "dispatcher", path="/alarms")
    row = page.get_by_test_id(f"alarm-{alarm}")
    row.wait_for()

    page.get_by_test_id(f"comment-{alarm}").click()
    page.get_by_test_id("comment-text").fill("Checked on site: fan blocked, cleared it.")
    page.get_by_test_id("comment-save").click()
    row.get_by_text("Checked on site: fan blocked, cleared it.").wait_for()
    assert "dispatcher" in row.inner_text()
    with psycopg.connect(console.db_url) as conn:
        (author, cid) = conn.execute("SELECT author, id FROM alarm_comments WHERE alarm_id = %s", (alarm,)).fetchone()  # type: ignore[misc]
        audited = conn.execute(
            "SELECT actor, after->>'comment_id' FROM audit_log WHERE action = 'alarm.comment' AND object_id = %s",
            (str(alarm),),
        ).fetchall()
    assert author == "dispatcher" and audited == [("dispatcher", str(cid))]
    assert row.get_by_test_id(f"alarm-comment-{cid}").is_visible()

    typed, end = _until(3)
    page.get_by_test_id(f"silence-{alarm}").click()
    page.get_by_test_id("window-until").fill(typed)
    page.get_by_test_id("window-reason").fill("fan being replaced")
    _shot(page, "alarms-silence-dialog")
    page.get_by_test_id("window-save").click()
    shown = row.locator(f"[data-testid^=window-{alarm}-]")
    shown.wait_for()
    assert f"until {end:%Y-%m-%d %H:%M} UTC by dispatcher: fan being replaced" in shown.inner_text()
    with psycopg.connect(console.db_url) as conn:
        silence = conn.execute(
            "SELECT s.id, s.kind, s.ends_at, s.rule_id = a.rule_id AND s.device_id = a.device_id AND s.site_id IS NULL"
            " FROM silences s, alarms a WHERE a.id = %s AND s.created_by = 'dispatcher'",
            (alarm,),
        ).fetchone()
    assert silence is not None
    sid, kind, ends_at, on_pair = silence
    assert (kind, ends_at, on_pair) == ("silence", end, True)
    _shot(page, "alarms-comment-and-silence")

    # The silence holds what opens next on the pair: the alarm clears, the pump runs hot again.
    _reading(console, "P-1", 40.0)
    wait_until(lambda: _state(console, alarm) == "cleared", 30, what="the alarm to clear on a cool reading")
    held = console.hot_reading("P-1")
    assert _suppressed_by(console, held) == f"silence:{sid}"
    time.sleep(2)  # ticketing had time to act on it: it must not have
    with psycopg.connect(console.db_url) as conn:
        assert conn.execute("SELECT ticket_id FROM alarms WHERE id = %s", (held,)).fetchone() == (None,)
    assert page.get_by_test_id(f"alarm-{held}").count() == 0  # suppressed: nobody's queue


def test_a_maintenance_window_holds_a_sites_alarms_and_a_viewer_can_neither_see_nor_forge_actions(
    console: Console,
    new_page,  # type: ignore[no-untyped-def]
) -> None:
    """A reliability engineer puts the alarm's whole site in maintenance until a chosen time: a new alarm on
    another device of the site is held (no ticket, nobody dispatched). A viewer gets no comment, silence or
    maintenance button, and forged requests with the page's own CSRF token are refused (403), storing nothing."""
    alarm = console.hot_reading("P-2")
    page = new_page()
    _sign_in(page, console, "reliability_engineer", path="/alarms")
    row = page.get_by_test_id(f"alarm-{alarm}")
    row.wait_for()
    typed, end = _until(1.5)
    page.get_by_test_id(f"maintenance-{alarm}").click()
    page.get_by_text(f"The whole site {console.site.slug}").click()
    page.get_by_test_id("window-until").fill(typed)
    page.get_by_test_id("window-reason").fill("annual overhaul")
    page.get_by_test_id("window-save").click()
    shown = row.locator(f"[data-testid^=window-{alarm}-]")
    shown.wait_for()
    assert f"Maintenance (site {console.site.slug}) until {end:%Y-%m-%d %H:%M} UTC" in shown.inner_text()
    _shot(page, "alarms-maintenance")
    with psycopg.connect(console.db_url) as conn:
        (mid,) = conn.execute(
            "SELECT id FROM silences WHERE kind = 'maintenance' AND created_by = 'reliability-engineer'"
            " AND device_id IS NULL AND rule_id IS NULL AND ends_at = %s",
            (end,),
        ).fetchone()  # type: ignore[misc]
    held = console.hot_reading("P-3")
    assert _suppressed_by(console, held) == f"maintenance:{mid}"
    time.sleep(2)
    with psycopg.connect(console.db_url) as conn:
        assert conn.execute("SELECT ticket_id FROM alarms WHERE id = %s", (held,)).fetchone() == (None,)

    viewer = new_page()
    _sign_in(viewer, console, "viewer", path="/alarms")
    viewer.get_by_test_id(f"alarm-{alarm}").wait_for()
    for button in ("ack", "comment", "silence", "maintenance"):
        assert viewer.get_by_test_id(f"{button}-{alarm}").count() == 0, button
    forged = viewer.evaluate(
        """async ([alarm, until]) => {
            const token = document.querySelector('meta[name="fw-csrf"]').content;
            const headers = {'X-CSRF-Token': token, 'Content-Type': 'application/json'};
            const post = async (path, body) =>
                (await fetch(path, {method: 'POST', headers: headers, body: JSON.stringify(body)})).status;
            return [
                await post(`/console/actions/alarms/${alarm}/comments`, {body: 'forged'}),
                await post('/console/actions/silences', {kind: 'silence', alarm_id: alarm, on: 'rule_device',
                                                         ends_at: until}),
            ];
        }""",
        [alarm, f"{typed}:00Z"],
    )
    assert forged == [403, 403]
    with psycopg.connect(console.db_url) as conn:
        assert conn.execute("SELECT count(*) FROM alarm_comments WHERE author = 'viewer'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM silences WHERE created_by = 'viewer'").fetchone() == (0,)
    _shot(viewer, "alarms-viewer-no-actions")


def _state(c: Console, alarm: int) -> str:
    return c.alarm_state(alarm)[0]


def _suppressed_by(c: Console, alarm: int) -> str | None:
    with psycopg.connect(c.db_url) as conn:
        row = conn.execute("SELECT suppressed_by FROM alarms WHERE id = %s", (alarm,)).fetchone()
    return row[0] if row else None
