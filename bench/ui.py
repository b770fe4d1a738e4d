"""The web console in a real browser: how fast do people see what happens, and what does an open page cost?

    python bench/ui.py                    # ~1-2 minutes
    python bench/ui.py --alarms 50 --sessions 50

Runs the real server with the console (uvicorn in its own process, ``tests.support.api_server``) on a
throwaway database on FIELDWATCH_DATABASE_URL's server, seeded with 1,000 devices at 100 sites, and drives
Debian's chromium headless with Playwright (``executable_path``; never a downloaded browser):

* ``alarm_visible_p95_ms`` (goal < 1,000): an open Alarms page; each alarm is committed the way the rules
  service commits one (the row and its ``alarm_opened`` event in one transaction); a MutationObserver in
  the page stamps ``Date.now()`` at the next animation frame after the alarm's row enters the DOM; the
  latency is that stamp minus the wall-clock time the commit returned (browser and bench share the clock).
* ``device_chart_ms`` (goal < 1,000): 7 days of a 1 s series (604,800 points, loaded with COPY, rollups
  refreshed) on the Device page's 7-day chart: ``performance.now()`` at ECharts' first ``finished`` event,
  i.e. from the start of the navigation to the chart drawn. Median of ``--repeat`` warm loads.
* ``overview_ms`` (goal < 1,500): the Overview with 1,000 devices at 100 sites, from the navigation to
  the counts shown and one map marker per site. Median of ``--repeat`` warm loads.
* ``rss_50_sessions_mb``: the server's RSS with ``--sessions`` signed-in Overview pages open (each its
  own session and websocket), beside ``rss_idle_mb`` before they opened.

The last stdout line is one JSON object with these numbers (and the p50s, counts and load average).
"""

from __future__ import annotations

import os
import sys

# Run as a script, bench/ comes first on sys.path and bench/ingest.py would shadow the ``ingest``
# package (same fix as bench/ingest.py).
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # for tests.support

import argparse
import json
import shutil
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import psycopg

from fieldwatch.seed import Fleet, SiteSpec, seed
from fwcore.db import create_database, drop_database
from fwcore.events import AlarmOpenedEvent, publish
from fwcore.settings import load_settings
from fwcore.users import SESSION_COOKIE, create_user, sign_in
from ingest.rollups import flag_hours, refresh_written
from ingest.schema import migrate
from tests.support.api_server import api_process
from tests.support.hot_bearing import CONSOLE_RULE

MB = 1024 * 1024
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "bench console password"
RULE = CONSOLE_RULE  # the browser tests' rule (tests/support/hot_bearing.py)
WEEK_S = 7 * 86400
#: Records, per alarm row, the wall-clock time of the first frame after it entered the DOM.
OBSERVE_JS = """() => {
  window.__seen = {};
  const stamp = (id) => { if (!(id in window.__seen)) { window.__seen[id] = -1;
      requestAnimationFrame(() => { window.__seen[id] = Date.now(); }); } };
  new MutationObserver((mutations) => {
    for (const m of mutations) for (const n of m.addedNodes) {
      if (n.nodeType !== 1) continue;
      const rows = n.matches('[data-testid^="alarm-"]') ? [n] : [];
      rows.push(...n.querySelectorAll('[data-testid^="alarm-"]'));
      for (const r of rows) stamp(r.dataset.testid);
    }
  }).observe(document.body, {childList: true, subtree: true});
}"""


def _fleet() -> Fleet:
    sites = tuple(
        SiteSpec(
            f"s{i:03d}",
            f"Station {i:03d}",
            "Bench Water",
            f"{i} Bench Road",
            47.0 + (i // 10) * 0.2,
            9.0 + (i % 10) * 0.3,
            tuple(f"P-{i:03d}-{j}" for j in range(10)),
        )
        for i in range(100)
    )
    return Fleet(clients={"Bench Water": "gold"}, sites=sites, skills={}, technicians=())


def _prepare(url: str) -> tuple[int, list[int], int, int]:
    """Seed the fleet, a dispatcher and a week of a 1 s series; returns (rule, device ids, chart device, series)."""
    with psycopg.connect(url, autocommit=True) as conn:
        seed(conn, _fleet(), rules=(RULE,))
        create_user(conn, "bench", "dispatcher", PASSWORD, display_name="Bench Dispatcher")
        (rule,) = conn.execute("SELECT id FROM rules").fetchone()  # type: ignore[misc]
        devices = [r[0] for r in conn.execute("SELECT id FROM devices ORDER BY id")]
        (series,) = conn.execute(  # type: ignore[misc]
            "SELECT id FROM series WHERE device_id = %s AND tag = 'flow'", (devices[0],)
        ).fetchone()
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(seconds=WEEK_S)
    with psycopg.connect(url) as conn:
        for day in range(9):  # plain storage keeps a partition per day (a no-op on TimescaleDB)
            conn.execute("SELECT fw_ensure_telemetry_partition(%s)", ((start + timedelta(days=day)).date(),))
        with conn.cursor().copy("COPY telemetry (series_id, time, value, quality) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "timestamptz", "float8", "int2"])
            for s in range(WEEK_S):
                copy.write_row((series, start + timedelta(seconds=s), 40.0 + (s % 3600) / 360.0, 0))
        flag_hours(conn, range(int(start.timestamp()) // 3600, int(end.timestamp()) // 3600 + 1))
    refresh_written(url, lag_s=0)
    return rule, devices, devices[0], series


def _cookie(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        result = sign_in(conn, "bench", PASSWORD, address="127.0.0.1", user_agent="bench/ui.py")
    assert result.cookie is not None, result.refused
    return result.cookie


def _page(browser: Any, base: str, url: str, width: int = 1366, height: int = 768) -> Any:
    ctx = browser.new_context(viewport={"width": width, "height": height})
    ctx.set_default_timeout(60_000)
    ctx.add_cookies([{"name": SESSION_COOKIE, "value": _cookie(url), "url": base}])
    return ctx.new_page()


def _overview_ms(page: Any, base: str, sites: int) -> float:
    page.goto(f"{base}/", wait_until="commit")
    page.wait_for_function(
        """(sites) => {
            const ok = document.querySelector('[data-testid=kpi-open-alarms] [data-testid=value]')
              && document.querySelectorAll('[data-testid=site-map] path.leaflet-interactive').length >= sites;
            if (ok && !window.__done) window.__done = performance.now();
            return ok;
        }""",
        arg=sites,
        polling="raf",
    )
    return float(page.evaluate("window.__done"))


def _chart_ms(page: Any, base: str, device: int) -> tuple[float, int]:
    page.goto(f"{base}/devices/{device}?range=7d&tags=flow", wait_until="commit")
    page.wait_for_function("() => document.body.dataset.fwChartDrawn", polling="raf")
    drawn = float(page.evaluate("document.body.dataset.fwChartDrawn"))
    return drawn, int(page.locator("[data-tag=flow]").get_attribute("data-points") or 0)


def _alarm_latencies(page: Any, base: str, url: str, rule: int, devices: list[int], n: int) -> list[float]:
    page.goto(f"{base}/alarms")
    page.get_by_test_id("alarm-list").wait_for()
    page.evaluate(OBSERVE_JS)
    latencies = []
    with psycopg.connect(url) as conn:
        for device in devices[:n]:
            with conn.transaction():
                (alarm,) = conn.execute(  # type: ignore[misc]
                    """INSERT INTO alarms (rule_id, device_id, severity, peak_severity, state, message,
                                           trigger_value, triggered_at)
                       VALUES (%s, %s, 'critical', 'critical', 'active', 'bearing_temp > 80 (bench)', 95, now())
                       RETURNING id""",
                    (rule, device),
                ).fetchone()
                publish(conn, AlarmOpenedEvent(alarm_id=alarm, device_id=device, rule_id=rule))
            committed = time.time() * 1000
            page.wait_for_function("(id) => (window.__seen[id] || 0) > 0", arg=f"alarm-{alarm}", polling=20)
            latencies.append(float(page.evaluate("(id) => window.__seen[id]", f"alarm-{alarm}")) - committed)
            time.sleep(0.2)  # alarms one after another, not a burst
    return latencies


def _say(what: str) -> None:
    """Progress on stderr (stdout's last line is the result)."""
    print(what, file=sys.stderr, flush=True)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alarms", type=int, default=30, help="alarms committed one by one (default 30)")
    ap.add_argument("--sessions", type=int, default=50, help="open signed-in pages for the RSS (default 50)")
    ap.add_argument("--repeat", type=int, default=3, help="warm loads of the overview and the chart (default 3)")
    args = ap.parse_args()
    if not os.path.exists(CHROMIUM):
        sys.exit("bench/ui.py needs Debian's chromium: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    admin_url = load_settings().database_url
    name = f"fw_bench_ui_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_url, name)
    began = time.monotonic()
    try:
        migrate(url)
        rule, devices, chart_device, _ = _prepare(url)
        prepared_s = time.monotonic() - began
        _say(f"prepared: 1,000 devices, a week of a 1 s series ({prepared_s:.0f} s)")
        with (
            api_process(url, console_enabled="true", console_tile_url="", log_level="WARNING") as server,
            sync_playwright() as p,
        ):
            browser = p.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--renderer-process-limit=8"]
            )
            page = _page(browser, server.base, url)
            _overview_ms(page, server.base, 100)  # warm up: the JS bundles, the server's first queries
            overview = [_overview_ms(page, server.base, 100) for _ in range(args.repeat)]
            _chart_ms(page, server.base, chart_device)
            charts = [_chart_ms(page, server.base, chart_device) for _ in range(args.repeat)]
            _say(f"overview {overview} ms, chart {[c for c, _ in charts]} ms")
            latencies = _alarm_latencies(page, server.base, url, rule, devices[1:], args.alarms)
            _say(f"alarm rows visible after {sorted(round(x) for x in latencies)} ms")
            page.context.close()

            proc = psutil.Process(server.pid)
            idle = proc.memory_info().rss
            pages = [_page(browser, server.base, url, 1280, 720) for _ in range(args.sessions)]
            for i in range(0, len(pages), 5):  # five loading at a time: faster than one by one, and no stampede
                for pg in pages[i : i + 5]:
                    pg.goto(f"{server.base}/", wait_until="commit")
                for pg in pages[i : i + 5]:
                    pg.get_by_test_id("kpi-open-alarms").wait_for()
                _say(f"{i + len(pages[i : i + 5])} sessions open")
            time.sleep(2.0)  # let the websockets settle
            loaded = proc.memory_info().rss
            for pg in pages:
                pg.context.close()
            browser.close()
        result = {
            "alarm_visible_p95_ms": _p(latencies, 0.95),
            "alarm_visible_p50_ms": _p(latencies, 0.5),
            "alarms": len(latencies),
            "device_chart_ms": round(statistics.median(c for c, _ in charts), 1),
            "device_chart_points": 7 * 86400,
            "device_chart_buckets": charts[0][1],
            "overview_ms": round(statistics.median(overview), 1),
            "overview_devices": len(devices),
            "overview_sites": 100,
            "rss_50_sessions_mb": round(loaded / MB, 1),
            "rss_idle_mb": round(idle / MB, 1),
            "sessions": args.sessions,
            "prepare_s": round(prepared_s, 1),
            "total_s": round(time.monotonic() - began, 1),
            "load_average_1m": round(os.getloadavg()[0], 1),
        }
    finally:
        drop_database(admin_url, name)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
