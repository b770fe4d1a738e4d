# ruff: noqa: F811 - the browser fixtures are imported from test_console_browser and requested by name
"""The console's Gateways page in a real browser against `fieldwatch serve` (real ingest, PostgreSQL, Mosquitto)
and a real `fieldwatch gateway run` process: the gateway turns online, and offline without reload when its
process is killed; a field engineer pushes a configuration (checked, shown as a diff, confirmed) and watches
the gateway's answer arrive; a config that does not validate says why and changes nothing; a viewer gets no
push button and a forged push is refused (403)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from tests.support.mqtt import publisher
from tests.support.names import new_uid
from tests.support.ports import free_port
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

MQTT_URL = os.environ.get("FIELDWATCH_MQTT_URL", "mqtt://127.0.0.1:1883")


class GatewayProcess:
    """`fieldwatch gateway run` for the console's main site, polling a pump nobody serves (so it stays offline)."""

    def __init__(self, console: Console, state_dir: Path) -> None:
        self.site, self.slug = console.site.slug, console.site.gateway
        self.path = state_dir / "gw.yaml"
        self.config = {
            "site": self.site,
            "gateway": self.slug,
            "poll_interval": 0.5,
            "state_dir": str(state_dir),
            "health_interval": 1.0,
            "devices": [self.device("P-1")],
        }
        self.path.write_text(yaml.safe_dump(self.config))
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def device(name: str) -> dict[str, object]:
        return {"name": name, "host": "127.0.0.1", "port": free_port(), "profile": "pump-p100"}

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", str(self.path), "--mqtt-url", MQTT_URL],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def gateway(console: Console, tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(console, tmp_path)
    yield gw
    gw.kill()
    with publisher(MQTT_URL, f"clear-{new_uid()}") as pub:  # no retained config left for the next test
        pub(f"fw/v1/{gw.site}/{gw.slug}/config", b"", retain=True)


def _buffer(console: Console, slug: str) -> int | None:
    with psycopg.connect(console.db_url) as conn:
        row = conn.execute("SELECT buffer_depth FROM gateways WHERE slug = %s", (slug,)).fetchone()
    return row[0] if row else None


def _pushed(console: Console) -> list[tuple[str, str]]:
    with psycopg.connect(console.db_url) as conn:
        return [(r[0], r[1]) for r in conn.execute("SELECT version, pushed_by FROM gateway_configs ORDER BY id")]


def test_a_gateway_whose_process_is_killed_turns_offline_on_the_gateways_page(  # type: ignore[no-untyped-def]
    console: Console, new_page, gateway: GatewayProcess
) -> None:
    """A running gateway shows online with its devices; killed (SIGKILL), its row turns offline without reload."""
    page = new_page()
    _sign_in(page, console, "field_engineer", path="/gateways")
    page.wait_for_url(f"{console.url}/gateways")
    row = page.get_by_test_id(f"gateway-{gateway.slug}")
    row.wait_for()
    page.evaluate("window.__notReloaded = true")
    gateway.start()
    page.locator(f"[data-testid=gateway-{gateway.slug}][data-status=online]").wait_for()
    row.get_by_test_id("devices").click()
    row.get_by_test_id("device-P-1").wait_for()
    assert row.get_by_test_id("device-P-1").get_by_test_id("device-state").inner_text() in ("online", "offline")
    _shot(page, "gateways-online")

    wait_until(lambda: _buffer(console, gateway.slug) is not None, 30, what="ingest to store the gateway's buffer")
    gateway.kill()
    page.locator(f"[data-testid=gateway-{gateway.slug}][data-status=offline]").wait_for()
    assert page.evaluate("window.__notReloaded") is True
    assert "connection lost" in row.get_by_test_id("since").inner_text()
    assert "batch" in row.get_by_test_id("buffer-depth").inner_text()  # from its last health message
    _shot(page, "gateways-offline")


def test_a_field_engineer_pushes_a_config_and_sees_the_outcome_arrive(  # type: ignore[no-untyped-def]
    console: Console, new_page, gateway: GatewayProcess
) -> None:
    """An invalid config says why and changes nothing; a valid one shows its diff, is sent on confirm, and the
    gateway's answer (applied, or rolled back with the error) appears on the page without reload."""
    gateway.start()
    page = new_page()
    _sign_in(page, console, "field_engineer", path="/gateways")
    page.locator(f"[data-testid=gateway-{gateway.slug}][data-status=online]").wait_for()
    page.evaluate("window.__notReloaded = true")
    before = _pushed(console)

    page.get_by_test_id(f"push-{gateway.slug}").click()
    editor = page.get_by_test_id("config-editor")
    bad = {**gateway.config, "config_version": "2", "devices": [{"name": "P-1", "host": "127.0.0.1"}]}
    editor.fill(yaml.safe_dump(bad))
    page.get_by_test_id("config-check").click()
    problem = page.get_by_test_id("config-problem")
    problem.wait_for()
    assert "Not sent" in problem.inner_text() and "P-1" in problem.inner_text()
    assert page.get_by_test_id("config-send").count() == 0
    _shot(page, "gateways-push-invalid")

    # remote_apply_timeout null: applied without waiting for P-2 to answer (nobody serves it)
    good = {
        **gateway.config,
        "config_version": "2",
        "remote_apply_timeout": None,
        "devices": [*gateway.config["devices"], gateway.device("P-2")],
    }
    editor.fill(yaml.safe_dump(good))
    page.get_by_test_id("config-check").click()
    diff = page.get_by_test_id("config-diff")
    diff.wait_for()
    assert "P-2" in diff.inner_text()
    _shot(page, "gateways-push-diff")
    assert _pushed(console) == before  # checking changed nothing
    page.get_by_test_id("config-send").click()
    outcome = page.locator(
        f"[data-testid=gateway-{gateway.slug}] [data-testid=config-outcome][data-version='2'][data-outcome=applied]"
    )
    outcome.wait_for()
    assert "added P-2" in outcome.inner_text()
    assert _pushed(console) == [*before, ("2", "field-engineer")]

    # The new device must answer within 1 s, and nobody serves it: the gateway rolls back and says why.
    failing = {
        **good,
        "config_version": "3",
        "remote_apply_timeout": 1.0,
        "devices": [*good["devices"], gateway.device("P-3")],
    }
    page.get_by_test_id(f"push-{gateway.slug}").click()
    editor.fill(yaml.safe_dump(failing))
    page.get_by_test_id("config-check").click()
    page.get_by_test_id("config-diff").wait_for()
    page.get_by_test_id("config-send").click()
    rolled = page.locator(
        f"[data-testid=gateway-{gateway.slug}] [data-testid=config-outcome][data-version='3'][data-outcome=rolled_back]"
    )
    rolled.wait_for()
    assert "P-3" in rolled.get_by_test_id("config-error").inner_text()
    assert page.evaluate("window.__notReloaded") is True
    _shot(page, "gateways-push-rolled-back")


def test_a_viewer_gets_no_push_button_and_a_forged_push_is_refused(console: Console, new_page) -> None:  # type: ignore[no-untyped-def]
    """A viewer sees the gateways but no push button; a forged push with the page's CSRF token is refused (403)."""
    page = new_page(width=820, height=1180)
    _sign_in(page, console, "viewer", path="/gateways")
    row = page.get_by_test_id(f"gateway-{console.site.gateway}")
    row.wait_for()
    assert page.get_by_test_id(f"push-{console.site.gateway}").count() == 0
    before = _pushed(console)
    status = page.evaluate(
        """async (path) => {
            const token = document.querySelector('meta[name="fw-csrf"]').content;
            const r = await fetch(path, {method: 'POST', headers: {'X-CSRF-Token': token,
                'Content-Type': 'application/json'}, body: JSON.stringify({document: 'config_version: 9'})});
            return r.status;
        }""",
        f"/console/actions/gateways/{row.get_attribute('data-id')}/config",
    )
    assert status == 403
    assert _pushed(console) == before
    _shot(page, "gateways-viewer-tablet")


def test_a_push_without_the_csrf_token_is_refused(console: Console, new_page) -> None:  # type: ignore[no-untyped-def]
    """A field engineer's push without the CSRF token is refused (403) and nothing is recorded."""
    page = new_page()
    _sign_in(page, console, "field_engineer", path="/gateways")
    row = page.get_by_test_id(f"gateway-{console.site.gateway}")
    row.wait_for()
    before = _pushed(console)
    status = page.evaluate(
        """async (path) => (await fetch(path, {method: 'POST', headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({document: 'config_version: 9'})})).status""",
        f"/console/actions/gateways/{row.get_attribute('data-id')}/config",
    )
    assert status == 403
    assert _pushed(console) == before
