"""The web console in a real browser (Debian's chromium, driven by Playwright) against `fieldwatch serve`
with real ingest, rules, PostgreSQL and Mosquitto: sign-in per role, a live alarm, acknowledging it, and
the server refusing what a page does not offer. Each page test saves a screenshot in tests/screenshots/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from playwright.sync_api import expect

from fieldwatch.seed import Fleet, SiteSpec, seed
from fwcore.contract import Batch, Point, topic
from fwcore.policy import ROLES
from fwcore.users import create_user, disable_user
from rules.alarms import acknowledge
from tests.support.db import fresh_database
from tests.support.hot_bearing import CONSOLE_RULE
from tests.support.mqtt import forget_session, publisher
from tests.support.names import new_uid
from tests.support.ports import free_port
from tests.support.waits import wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).parent / "screenshots"
PASSWORD = "console test password"
TIMEOUT_MS = 20_000

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs chromium (apt-get install chromium; .ci/run does)"),
]

RULE = dict(
    CONSOLE_RULE,
    required_skill="pump_mechanical",  # nobody has it: tickets stay unassigned, no technician owns one
)


class Console:
    """A running `fieldwatch serve` (console on) with a seeded fleet and one user per role."""

    def __init__(self, url: str, db_url: str, site: SiteSpec, *others: SiteSpec) -> None:
        self.url, self.db_url, self.site = url, db_url, site
        self.site_of = {device: s for s in (site, *others) for device in s.devices}
        self.seq = 0

    def user(self, role: str) -> str:
        return role.replace("_", "-")

    def reading(self, device: str, tag: str, value: float) -> None:
        """Publish one reading of ``device`` over MQTT, as its gateway would (the real ingest stores it)."""
        self.seq += 1
        now = int(time.time() * 1000)
        site = self.site_of[device]
        batch = Batch(gateway=site.gateway, site=site.slug, seq=self.seq, points=[Point(device, tag, now, value)])
        with publisher(os.environ.get("FIELDWATCH_MQTT_URL", "mqtt://127.0.0.1:1883"), f"pub-{new_uid()}") as pub:
            pub(topic(site.slug, site.gateway, "telemetry"), batch)

    def hot_reading(self, device: str) -> int:
        """Publish a bearing temperature over the alarm threshold for ``device``; returns the alarm's id."""
        self.reading(device, "bearing_temp", 95.0)

        def alarm_id() -> int | None:
            with psycopg.connect(self.db_url) as conn:
                row = conn.execute(
                    "SELECT a.id FROM alarms a JOIN devices d ON d.id = a.device_id"
                    " WHERE d.key = %s AND a.state = 'active'",
                    (device,),
                ).fetchone()
            return row[0] if row else None

        found = wait_until(alarm_id, 30, what=f"an alarm on {device} raised through ingest and the rules")
        assert found is not None
        return found

    def alarm_state(self, alarm: int) -> tuple[str, str | None]:
        with psycopg.connect(self.db_url) as conn:
            row = conn.execute("SELECT state, acknowledged_by FROM alarms WHERE id = %s", (alarm,)).fetchone()
        assert row is not None
        return row[0], row[1]


@pytest.fixture(scope="module")
def console(admin_db_url: str, template_db: str, mqtt_url: str, tmp_path_factory) -> Iterator[Console]:  # type: ignore[no-untyped-def]
    uid = new_uid()
    site = SiteSpec(
        f"c-{uid}", "Riverside pumping station", "Acme Water", "Riverside", 48.14, 11.58, ("P-1", "P-2", "P-3", "P-4")
    )
    other = SiteSpec(f"d-{uid}", "Hilltop reservoir", "Acme Water", "Hilltop", 48.37, 10.90, ("P-9",))
    with fresh_database(admin_db_url, template_db) as db_url:
        with psycopg.connect(db_url, autocommit=True) as conn:
            seed(
                conn,
                Fleet(
                    clients={"Acme Water": "gold"},
                    sites=(site, other),
                    skills={"pump_mechanical": "pumps"},
                    technicians=(),
                ),
                rules=(RULE,),
            )
            (tech,) = conn.execute(
                "INSERT INTO technicians (name, email, home_lat, home_lon)"
                " VALUES ('Tess', %s, 48.1, 11.5) RETURNING id",
                (f"tess-{uid}@x.example",),
            ).fetchone()  # type: ignore[misc]
            for role in ROLES:
                create_user(
                    conn,
                    role.replace("_", "-"),
                    role,
                    PASSWORD,
                    display_name=role.replace("_", " ").title(),
                    technician_id=tech,
                )
        port = free_port()
        client_id = f"console-ingest-{uid}"
        env = {
            **os.environ,
            "FIELDWATCH_DATABASE_URL": db_url,
            "FIELDWATCH_MQTT_URL": mqtt_url,
            "FIELDWATCH_MQTT_PROTOCOL": "5",
            "FIELDWATCH_API_PORT": str(port),
            "FIELDWATCH_INGEST_CLIENT_ID": client_id,
            "FIELDWATCH_INGEST_SHARE_GROUP": f"console-{uid}",
            "FIELDWATCH_INGEST_BATCH_MAX_WAIT_MS": "20",
            "FIELDWATCH_CONSOLE_ENABLED": "true",
            "FIELDWATCH_CONSOLE_TILE_URL": "",  # no tile server in tests: the map's plain background
        }
        log_path = tmp_path_factory.mktemp("console") / "serve.log"
        log = log_path.open("w")
        server = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("fieldwatch")),
                "serve",
                "--no-scheduler",
                "--no-migrate",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:

            def up() -> bool:
                if server.poll() is not None:
                    raise AssertionError(f"fieldwatch serve exited: {log_path.read_text()}")
                try:
                    return httpx.get(f"{url}/signin", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(up, 60, what="the console to answer")
            yield Console(url, db_url, site, other)
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)
            log.close()
            forget_session(mqtt_url, client_id)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def new_page(browser):  # type: ignore[no-untyped-def]
    contexts = []

    def make(width: int = 1366, height: int = 768):  # type: ignore[no-untyped-def]
        ctx = browser.new_context(viewport={"width": width, "height": height})
        ctx.set_default_timeout(TIMEOUT_MS)
        contexts.append(ctx)
        return ctx.new_page()

    yield make
    for ctx in contexts:
        ctx.close()


def _sign_in(page, console: Console, role: str, password: str = PASSWORD, path: str = "/") -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{console.url}{path}")
    page.wait_for_url("**/signin**")
    page.locator("input[name=username]").fill(console.user(role))
    page.locator("input[name=password]").fill(password)
    page.get_by_test_id("sign-in").click()


def _shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("role", ROLES)
def test_each_role_signs_in_and_sees_the_layout(console: Console, new_page, role: str) -> None:  # type: ignore[no-untyped-def]
    """Every role signs in, lands on the overview with the header, its name and role, and can sign out."""
    page = new_page()
    _sign_in(page, console, role)
    page.wait_for_url(f"{console.url}/")
    page.get_by_test_id("user-menu").wait_for()
    assert page.get_by_text("fieldwatch", exact=True).first.is_visible()
    _shot(page, f"overview-{role}")
    page.get_by_test_id("user-menu").click()
    assert role.replace("_", " ").lower() in page.get_by_test_id("user-role").inner_text().lower()
    page.get_by_test_id("sign-out").click()
    page.get_by_test_id("signed-out").wait_for()
    page.goto(f"{console.url}/alarms")
    page.wait_for_url("**/signin?next=**")


def test_a_wrong_password_says_so_and_stays_on_sign_in(console: Console, new_page) -> None:  # type: ignore[no-untyped-def]
    """A wrong password shows the wrong-password message on the sign-in page and opens no session."""
    page = new_page()
    _sign_in(page, console, "dispatcher", password="not the password")
    page.get_by_test_id("signin-error").wait_for()
    assert "Wrong username or password" in page.get_by_test_id("signin-error").inner_text()
    assert "/signin" in page.url
    _shot(page, "signin-wrong-password")


def test_an_alarm_appears_live_and_is_acknowledged(console: Console, new_page) -> None:  # type: ignore[no-untyped-def]
    """A reading over MQTT raises an alarm that appears on the open page without reload; acknowledging it sticks."""
    page = new_page()
    _sign_in(page, console, "dispatcher", path="/alarms")
    page.wait_for_url(f"{console.url}/alarms")
    page.get_by_test_id("alarm-list").wait_for()
    page.evaluate("window.__notReloaded = true")
    alarm = console.hot_reading("P-1")
    row = page.get_by_test_id(f"alarm-{alarm}")
    row.wait_for()
    assert page.evaluate("window.__notReloaded") is True  # it came over the websocket, no reload
    assert "Bearing overheating" in row.inner_text() or "bearing" in row.inner_text().lower()
    _shot(page, "alarms-live")
    page.get_by_test_id(f"ack-{alarm}").click()
    page.locator(f"[data-testid=alarm-{alarm}][data-state=acknowledged]").wait_for()
    assert console.alarm_state(alarm) == ("acknowledged", "dispatcher")
    assert page.get_by_test_id(f"ack-{alarm}").count() == 0
    _shot(page, "alarms-acknowledged")


def test_a_viewer_gets_no_acknowledge_button_and_a_forged_one_is_refused(console: Console, new_page) -> None:  # type: ignore[no-untyped-def]
    """A viewer sees the alarm without an acknowledge button; a forged acknowledge is refused (403), nothing changes."""
    alarm = console.hot_reading("P-2")
    page = new_page()
    _sign_in(page, console, "viewer", path="/alarms")
    page.get_by_test_id(f"alarm-{alarm}").wait_for()
    assert page.get_by_test_id(f"ack-{alarm}").count() == 0
    status = page.evaluate(
        """async (path) => {
            const token = document.querySelector('meta[name="fw-csrf"]').content;
            const r = await fetch(path, {method: 'POST', headers: {'X-CSRF-Token': token}});
            return r.status;
        }""",
        f"/console/actions/alarms/{alarm}/acknowledge",
    )
    assert status == 403
    assert console.alarm_state(alarm) == ("active", None)
    _shot(page, "alarms-viewer")


def test_an_acknowledge_without_the_csrf_token_is_refused(console: Console, new_page) -> None:  # type: ignore[no-untyped-def]
    """A signed-in dispatcher's acknowledge without the CSRF token is refused (403) and the alarm stays active."""
    alarm = console.hot_reading("P-9")
    page = new_page()
    _sign_in(page, console, "dispatcher", path="/alarms")
    page.get_by_test_id(f"alarm-{alarm}").wait_for()
    status = page.evaluate(
        "async (path) => (await fetch(path, {method: 'POST'})).status",
        f"/console/actions/alarms/{alarm}/acknowledge",
    )
    assert status == 403
    assert console.alarm_state(alarm) == ("active", None)


def test_the_overview_counts_and_maps_open_alarms_on_a_tablet(console: Console, new_page) -> None:  # type: ignore[no-untyped-def]
    """On a tablet-sized screen the overview counts open alarms, lists each site with its worst one, and turns dark."""
    console.hot_reading("P-9")  # open already, or opened now
    console.hot_reading("P-2")  # and one on the main site, whatever ran before this test
    page = new_page(width=820, height=1180)
    _sign_in(page, console, "reliability_engineer")
    page.wait_for_url(f"{console.url}/")
    critical = page.get_by_test_id("open-critical")
    critical.wait_for()
    assert int(critical.inner_text().split()[0]) >= 1
    assert "worst: critical" in page.get_by_test_id(f"site-{console.site.slug}").inner_text()
    page.get_by_test_id("site-map").wait_for()
    expect(page.get_by_test_id("site-map").locator("path.leaflet-interactive")).to_have_count(2)  # one per site
    _shot(page, "overview-tablet")
    page.get_by_test_id("theme-toggle").click()
    page.locator("body.body--dark").wait_for()
    _shot(page, "overview-tablet-dark")


def test_the_overview_numbers_and_markers_open_the_lists_behind_them(console: Console, new_page) -> None:  # type: ignore[no-untyped-def]
    """A severity count opens the alarms of that severity, a site's marker that site's alarms, the open-alarm
    total all of them and the gateways count the Gateways page."""
    console.hot_reading("P-9")
    page = new_page()
    _sign_in(page, console, "dispatcher")
    page.wait_for_url(f"{console.url}/")
    page.get_by_test_id("open-critical").click()
    page.wait_for_url("**/alarms?severity=critical")
    expect(page.get_by_test_id("filter-severity")).to_contain_text("critical")
    page.go_back()
    marker = page.get_by_test_id("site-map").locator("path.leaflet-interactive").first
    marker.wait_for()
    page.wait_for_timeout(500)  # the map fits its sites once it has its size
    marker.click()
    page.wait_for_url("**/alarms?site=*")
    slug = page.url.split("site=")[1]
    assert slug in {s.slug for s in console.site_of.values()}
    page.go_back()
    page.get_by_test_id("kpi-gateways-offline").click()
    page.wait_for_url("**/gateways")
    page.go_back()
    page.get_by_test_id("kpi-open-alarms").click()
    page.wait_for_url("**/alarms")


def test_tickets_appear_live_and_a_technician_sees_only_their_own(console: Console, new_page) -> None:  # type: ignore[no-untyped-def]
    """The ticket an alarm opens appears on a dispatcher's open tickets page; a technician's list shows only theirs."""
    page = new_page()
    _sign_in(page, console, "dispatcher", path="/tickets")
    page.wait_for_url(f"{console.url}/tickets")
    page.get_by_test_id("ticket-list").wait_for()
    page.evaluate("window.__notReloaded = true")
    alarm = console.hot_reading("P-3")

    def ticket() -> int | None:
        with psycopg.connect(console.db_url) as conn:
            row = conn.execute("SELECT ticket_id FROM alarms WHERE id = %s", (alarm,)).fetchone()
        return row[0] if row else None

    ticket_id = wait_until(ticket, 30, what="ticketing to open a ticket for the alarm")
    page.get_by_test_id(f"ticket-{ticket_id}").wait_for()
    assert page.evaluate("window.__notReloaded") is True
    _shot(page, "tickets-dispatcher")

    tech = new_page()
    _sign_in(tech, console, "technician", path="/tickets")
    tech.get_by_test_id("empty-tickets").wait_for()
    assert tech.get_by_test_id(f"ticket-{ticket_id}").count() == 0
    assert "only your own" in tech.get_by_text("shown of").inner_text()


def test_the_api_still_answers_beside_the_console(console: Console) -> None:
    """With the console at /, the API, its probes and its documentation answer as before (the docs and the API
    to a bearer token only: the console's session is not one); no token gets 401."""
    assert httpx.get(f"{console.url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{console.url}/docs", timeout=10).status_code == 401
    assert httpx.get(f"{console.url}/api/v1/alarms", timeout=10).status_code == 401
    page = httpx.get(f"{console.url}/alarms", timeout=10, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/signin?next=/alarms"


def test_the_alarm_filters_narrow_the_list_by_site_and_severity(console: Console, new_page) -> None:  # type: ignore[no-untyped-def]
    """Choosing a site shows only its alarms; choosing a severity with none open shows the empty-filter state."""
    here, there = console.hot_reading("P-2"), console.hot_reading("P-9")
    page = new_page()
    _sign_in(page, console, "field_engineer", path="/alarms")
    page.get_by_test_id(f"alarm-{here}").wait_for()
    page.get_by_test_id("filter-site").click()
    page.get_by_role("option", name="Hilltop reservoir").click()
    page.get_by_test_id(f"alarm-{here}").wait_for(state="detached")
    assert page.get_by_test_id(f"alarm-{there}").is_visible()
    page.keyboard.press("Escape")
    page.get_by_role("option", name="Hilltop reservoir").wait_for(state="hidden")
    _shot(page, "alarms-filtered")
    page.get_by_test_id("filter-severity").click()
    page.get_by_role("option", name="warning").click()
    page.get_by_test_id("empty-filter").wait_for()


def test_an_open_page_goes_back_to_sign_in_once_its_session_ends(console: Console, new_page) -> None:  # type: ignore[no-untyped-def]
    """A disabled user's open alarms page goes back to sign-in at its next live update."""
    with psycopg.connect(console.db_url, autocommit=True) as conn:
        create_user(conn, "leaver", "viewer", PASSWORD)
    alarm = console.hot_reading("P-4")
    page = new_page()
    _sign_in(page, console, "leaver", path="/alarms")
    page.get_by_test_id(f"alarm-{alarm}").wait_for()
    with psycopg.connect(console.db_url, autocommit=True) as conn:
        disable_user(conn, "leaver")
        acknowledge(conn, alarm, by="someone")  # an alarm event: the page updates, finds no session
    page.wait_for_url("**/signin**")
