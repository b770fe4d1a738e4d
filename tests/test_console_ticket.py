"""The console's ticket page in a real browser against `fieldwatch serve` (real ingest, rules, ticketing,
PostgreSQL, Mosquitto): a ticket an alarm opened shows its timeline, its alarm, the dispatch explanation and a
photo uploaded through the API with where and when it was taken; it updates live; a technician may open only
their own tickets (the server answers 403 otherwise, 404 for no ticket)."""

# ruff: noqa: F811 - the browser fixtures are imported from test_console_browser and requested by name

from __future__ import annotations

import httpx
import psycopg

from fwcore.auth import create_token
from tests.support.waits import wait_until
from tests.test_console_browser import (  # noqa: F401 - fixtures, requested by name
    Console,
    _shot,
    _sign_in,
    browser,
    console,
    new_page,
    pytestmark,
)
from ticketing.controls import assign
from ticketing.geo import GreatCircleTravel

#: The smallest PNG (1×1 pixel): a real image the page can show.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a0d4e2c70000000049454e44ae426082"
)


def _ticket_of(console: Console, alarm: int) -> int:
    def ticket() -> int | None:
        with psycopg.connect(console.db_url) as conn:
            row = conn.execute("SELECT ticket_id FROM alarms WHERE id = %s", (alarm,)).fetchone()
        return row[0] if row else None

    found = wait_until(ticket, 30, what="ticketing to open a ticket for the alarm")
    assert found is not None
    return found


def _technician(console: Console) -> int:
    with psycopg.connect(console.db_url) as conn:
        row = conn.execute("SELECT technician_id FROM users WHERE username = 'technician'").fetchone()
    assert row is not None
    return row[0]


def _assign_to_tess(console: Console, ticket: int) -> None:
    """A dispatcher's override assigns ``ticket`` to the seeded technician (the ticket's events follow)."""
    with psycopg.connect(console.db_url, autocommit=True) as conn:
        assign(
            conn,
            ticket,
            _technician(console),
            GreatCircleTravel(),
            actor="dispatcher",
            override=True,
            reason="Tess agreed to look at it",
        )


def test_a_ticket_page_shows_timeline_alarm_explanation_and_a_photo_live(console: Console, new_page) -> None:  # type: ignore[no-untyped-def]
    """From the tickets list a dispatcher opens the ticket an alarm opened: its timeline, the alarm, why nobody
    holds it; a photo uploaded through the API meanwhile appears with its place and time, and an assignment,
    both without reload."""
    alarm = console.hot_reading("P-3")
    ticket = _ticket_of(console, alarm)
    with psycopg.connect(console.db_url, autocommit=True) as conn:
        token = create_token(conn, "field app", "dispatcher")

    page = new_page()
    _sign_in(page, console, "dispatcher", path="/tickets")
    page.get_by_test_id(f"open-ticket-{ticket}").click()
    page.wait_for_url(f"{console.url}/tickets/{ticket}")
    page.get_by_test_id("ticket-summary").wait_for()
    assert page.get_by_test_id("ticket-timeline").get_by_test_id("timeline-entry").count() >= 1
    assert page.get_by_test_id("ticket-alarms").get_by_test_id(f"alarm-{alarm}").is_visible()
    assert "Not assigned" in page.get_by_test_id("ticket-explanation").inner_text()
    assert "pump_mechanical" in page.get_by_test_id("ticket-explanation").inner_text()  # the missing skill
    page.evaluate("window.__notReloaded = true")
    r = httpx.post(
        f"{console.url}/api/v1/tickets/{ticket}/photos",
        params={"lat": 48.1402, "lon": 11.5801, "taken_at": "2026-12-01T09:30:00Z"},
        content=PNG,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "image/png"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    photo = r.json()["id"]
    card = page.get_by_test_id(f"photo-{photo}")
    card.wait_for()  # pushed by its ticket_photo_added event, no reload
    assert page.evaluate("window.__notReloaded") is True
    assert "2026-12-01 09:30" in card.get_by_test_id("taken").inner_text()
    assert "48.14020, 11.58010" in card.get_by_test_id("where").inner_text()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=ticket-photos] img')].every(i => i.naturalWidth > 0)"
    )  # the image itself loads, through the console's session
    _shot(page, "ticket-page")

    page.evaluate("window.__notReloaded = true")
    _assign_to_tess(console, ticket)
    page.get_by_test_id("ticket-explanation").get_by_text("Assigned to Tess").wait_for()
    assert page.evaluate("window.__notReloaded") is True
    _shot(page, "ticket-page-assigned")


def test_a_technician_opens_only_their_own_tickets(console: Console, new_page) -> None:  # type: ignore[no-untyped-def]
    """A technician gets 403 for a ticket they do not hold (its photo too), the page once it is theirs, 404 for none."""
    alarm = console.hot_reading("P-4")
    ticket = _ticket_of(console, alarm)
    tech = new_page(width=820, height=1180)
    _sign_in(tech, console, "technician", path="/tickets")
    tech.wait_for_url(f"{console.url}/tickets")
    refused = tech.goto(f"{console.url}/tickets/{ticket}")
    assert refused is not None and refused.status == 403
    assert "not yours" in tech.content()
    assert tech.request.get(f"{console.url}/console/tickets/{ticket}/photos/1").status == 403
    missing = tech.goto(f"{console.url}/tickets/999999")
    assert missing is not None and missing.status == 404

    _assign_to_tess(console, ticket)
    mine = tech.goto(f"{console.url}/tickets/{ticket}")
    assert mine is not None and mine.status == 200
    tech.get_by_test_id("ticket-summary").wait_for()
    _shot(tech, "ticket-page-technician-tablet")


def test_a_ticket_page_without_a_session_goes_to_sign_in(console: Console) -> None:
    """No session: the ticket page and its photos send the visitor to sign in (401 for the photo)."""
    page = httpx.get(f"{console.url}/tickets/1", timeout=10, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/signin?next=/tickets/1"
    assert httpx.get(f"{console.url}/console/tickets/1/photos/1", timeout=10).status_code == 401
