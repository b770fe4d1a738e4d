"""The Device pages: the pure range → resolution choice and chart options, then the pages in Debian's
chromium against `fieldwatch serve` with real ingest and rules (the fixtures of test_console_browser):
latest values, an alarm episode shaded live, a week drawn from the rollups as a min/max band, the device
search, the link from an alarm row, and the layout at 1366×768, on a phone and in the dark theme."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from fieldwatch.console.charts import chart_option, episode_areas, with_view
from fieldwatch.console.device_page import MAX_WINDOW, WindowError, custom_window, zoom_view, zoom_window
from ingest.device_view import RAW_LIMIT, ChartData, Resolution, chart_data, choose_resolution
from ingest.queries import Point
from ingest.rollups import flag_hours, refresh_written
from ingest.timeseries import Bucket
from rules.device_alarms import Episode, device_open_alarms, episodes, rule_tags, score_thresholds
from tests import test_console_browser as console_tests
from tests.test_console_browser import CHROMIUM, Console, _shot, _sign_in

# The running `fieldwatch serve` with a seeded fleet and a user per role, and the browser (module fixtures).
console, browser, new_page = console_tests.console, console_tests.browser, console_tests.new_page

#: The browser tests need Debian's chromium (apt-get install chromium; .ci/run does); the pure ones do not.
browser_test = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs chromium (apt-get install chromium)")
S = timedelta(seconds=1)
MIN = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


# --- the pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "dense", "width", "rollup"),
    [
        (10 * MIN, False, None, None),  # short: raw points
        (2 * H, False, None, None),  # up to two hours: raw
        (2 * H, True, 10 * S, None),  # raw would pass RAW_LIMIT: 10 s buckets from raw rows
        (6 * H, False, 30 * S, None),
        (D, False, 5 * MIN, "telemetry_1m"),
        (7 * D, False, 15 * MIN, "telemetry_1m"),  # a week: 672 buckets from the minute rollup
        (30 * D, False, H, "telemetry_1h"),
        (365 * D, False, D, "telemetry_1h"),
        (50 * 365 * D, False, 7 * D, "telemetry_1h"),  # beyond the ladder: its widest step
    ],
)
def test_the_range_decides_raw_points_or_rollup_buckets(
    span: timedelta, dense: bool, width: timedelta | None, rollup: str | None
) -> None:
    """Short ranges read raw points; longer ones the finest bucket width giving at most ~720 buckets, from a
    rollup whenever the width is a multiple of one."""
    chosen = choose_resolution(span, raw_too_dense=dense)
    assert chosen == Resolution(width)
    assert chosen.rollup == rollup
    assert chosen.raw is (width is None)


def test_an_empty_range_is_refused() -> None:
    """A range that ends before it starts has no resolution: the caller is told, not given a default."""
    with pytest.raises(ValueError, match="must not be empty"):
        choose_resolution(timedelta(0))


def _episode(start: datetime, end: datetime | None, severity: str = "critical") -> Episode:
    return Episode(1, "Bearing overheating", "bearing_temp", severity, "active", start, end, 95.0)


def test_episodes_are_clipped_to_the_range_and_an_open_one_runs_to_its_end() -> None:
    """An episode begun before the range starts at the range; one still open ends at the range's end."""
    start, end = T0, T0 + H
    areas = episode_areas([_episode(T0 - H, T0 + 10 * MIN), _episode(T0 + 30 * MIN, None, "minor")], start, end)
    ms = lambda t: int(t.timestamp() * 1000)  # noqa: E731
    assert [(a["xAxis"], b["xAxis"]) for a, b in areas] == [(ms(T0), ms(T0 + 10 * MIN)), (ms(T0 + 30 * MIN), ms(end))]
    assert areas[1][0]["name"] == "minor · Bearing overheating"
    (just_opened,) = episode_areas([_episode(end - S, None)], start, end)  # a sliver would not show: 1% of the range
    assert (just_opened[0]["xAxis"], just_opened[1]["xAxis"]) == (ms(end - 36 * S), ms(end))


def test_buckets_draw_a_min_max_band_and_scores_their_threshold() -> None:
    """Bucketed data is an average line inside a band stacked from min and max - min; a threshold is a mark line."""
    data = ChartData(
        7,
        "anomaly_score:pump",
        "",
        T0,
        T0 + 7 * D,
        Resolution(15 * MIN),
        buckets=[Bucket(T0, 900, -1.0, 3.0, 1.0, 2.0), Bucket(T0 + 15 * MIN, 900, 0.5, 2.5, 1.5, 1.0)],
    )
    option = chart_option(data, [_episode(T0, T0 + H)], threshold=1.0)
    low, band, avg = option["series"]
    assert low["stack"] == band["stack"] == "band"
    assert [v for _, v in low["data"]] == [-1.0, 0.5] and [v for _, v in band["data"]] == [4.0, 2.0]
    assert band["areaStyle"] and "areaStyle" not in low
    assert [v for _, v in avg["data"]] == [1.0, 1.5]
    assert avg["markLine"]["data"] == [{"yAxis": 1.0}]
    assert len(avg["markArea"]["data"]) == 1
    assert {z["type"] for z in option["dataZoom"]} == {"inside", "slider"}


def test_raw_points_are_one_line_without_a_threshold() -> None:
    """Raw data is one line of [ms, value] pairs; no threshold, no mark line."""
    data = ChartData(7, "bearing_temp", "°C", T0, T0 + H, Resolution(None), points=[Point(T0, 70.0, 0)])
    (line,) = chart_option(data, [])["series"]
    assert line["data"] == [[int(T0.timestamp() * 1000), 70.0]]
    assert "markLine" not in line and line["markArea"]["data"] == []


@pytest.mark.parametrize(
    ("args", "window"),
    [
        ({"start": 90, "end": 100}, (T0 + 6.3 * D, T0 + 7 * D)),  # the slider: percentages of the range
        ({"batch": [{"start": 0, "end": 25}]}, (T0, T0 + 1.75 * D)),  # the mouse wheel: a batch
        ({"start": 10, "end": 90}, None),  # still most of the range: the loaded buckets do
        ({"start": "x"}, None),  # not a number: ignored, not an error
        ({"start": 60, "end": 40}, None),
    ],
)
def test_a_deep_zoom_names_the_window_to_read_again(
    args: dict[str, Any], window: tuple[datetime, datetime] | None
) -> None:
    """Zoomed in to under half of a chart's range, the zoom's percentages become the time window to read again."""
    assert zoom_window(T0, T0 + 7 * D, args) == window


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


@pytest.mark.parametrize(
    ("args", "view"),
    [
        ({"start": 30, "end": 100}, (_ms(T0 + 2.1 * D), None)),  # up to the range's end: keeps following "now"
        ({"start": 0, "end": 70}, (None, _ms(T0 + 4.9 * D))),
        ({"batch": [{"start": 10, "end": 90}]}, (_ms(T0 + 0.7 * D), _ms(T0 + 6.3 * D))),
        ({"start": 0, "end": 100}, None),  # the whole range: nothing to keep
        ({"start": "x"}, None),
    ],
)
def test_a_shallow_zoom_is_kept_as_times(args: dict[str, Any], view: tuple[int | None, int | None] | None) -> None:
    """A zoom or pan that does not read the data again is remembered as times, so a live redraw (a new alarm
    episode) draws the chart where the user left it; an open end follows new data."""
    assert zoom_view(T0, T0 + 7 * D, args) == view


@pytest.mark.parametrize(
    ("start", "end", "window"),
    [
        ("2026-01-05T10:00", "2026-01-05T14:00", (T0 - 2 * H, T0 + 2 * H)),  # no offset: UTC, as the console shows
        ("2026-01-05 10:00", "2026-01-06", (T0 - 2 * H, T0 + 12 * H)),  # a space, a bare date
        ("2026-01-05T11:00+01:00", "2026-01-05T12:00Z", (T0 - 2 * H, T0)),  # offsets are honoured
    ],
)
def test_a_window_by_dates(start: str, end: str, window: tuple[datetime, datetime]) -> None:
    assert custom_window(start, end, T0 + 30 * D) == window


@pytest.mark.parametrize(
    ("start", "end", "says"),
    [
        ("yesterday", "2026-01-05", "not a date and time: write it as"),
        ("2026-01-05T12:00", "2026-01-05T12:00", "To must be after From"),
        ("2026-01-06", "2026-01-05", "To must be after From"),
        ("2024-01-01", "2026-01-05", f"at most {MAX_WINDOW.days} days"),
        ("1926-01-01", "1926-01-02", "before 2000"),
        ("2026-03-01", "2026-03-02", "more than a day ahead"),
        ("", "", "not a date and time"),
    ],
)
def test_a_window_that_cannot_be_drawn_says_what_to_change(start: str, end: str, says: str) -> None:
    with pytest.raises(WindowError, match=says):
        custom_window(start, end, T0 + 30 * D)


def test_a_kept_view_replaces_the_percentages_of_both_zoom_controls() -> None:
    option = chart_option(ChartData(7, "flow", "", T0, T0 + H, Resolution(None), points=[Point(T0, 1.0, 0)]), [])
    kept = with_view(option, 1_000, None)
    assert [(z["startValue"], "start" in z, z["end"]) for z in kept["dataZoom"]] == [(1_000, False, 100)] * 2
    assert option["dataZoom"][0]["start"] == 0  # the option it came from is unchanged
    both = with_view(option, 1_000, 2_000)["dataZoom"][1]
    assert (both["startValue"], both["endValue"], "end" in both) == (1_000, 2_000, False)


def test_a_short_range_denser_than_the_raw_limit_falls_back_to_buckets(db_url: str) -> None:
    """An hour of a series with more than RAW_LIMIT points is drawn as buckets, not a truncated line."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        (sid,) = conn.execute(  # type: ignore[misc]
            """WITH c AS (INSERT INTO clients (name, segment)
                          SELECT 'Dense', name FROM sla_segments LIMIT 1 RETURNING id),
                    s AS (INSERT INTO sites (client_id, slug, name, latitude, longitude)
                          SELECT id, 'dense', 'Dense', 0, 0 FROM c RETURNING id),
                    d AS (INSERT INTO devices (site_id, key, equipment_model) SELECT id, 'D-1', 'm' FROM s RETURNING id)
               INSERT INTO series (device_id, tag, unit) SELECT id, 'v', 'bar' FROM d RETURNING id"""
        ).fetchone()
        n = RAW_LIMIT + 500
        conn.execute("SELECT fw_ensure_telemetry_partition(%s)", (T0.date(),))  # plain storage: days by partition
        conn.execute(
            """INSERT INTO telemetry (series_id, time, value, quality)
               SELECT %s, %s + g * interval '300 milliseconds', g, 0 FROM generate_series(0, %s - 1) g""",
            (sid, T0, n),
        )
        got = chart_data(conn, sid, T0, T0 + H)
    assert not got.resolution.raw and got.points == []
    assert sum(b.count for b in got.buckets) == n
    assert got.unit == "bar"


def test_episodes_open_alarms_and_score_thresholds_come_from_the_database(db_url: str) -> None:
    """Episodes overlapping a range (open ones too), the device's open alarms, a rule's tag, and an anomaly
    score's threshold (its least severe level; 1.0 when its levels say none) are read from the tables."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        (device,) = conn.execute(  # type: ignore[misc]
            """WITH c AS (INSERT INTO clients (name, segment)
                          SELECT 'Ep', name FROM sla_segments LIMIT 1 RETURNING id),
                    s AS (INSERT INTO sites (client_id, slug, name, latitude, longitude)
                          SELECT id, 'ep', 'Ep', 0, 0 FROM c RETURNING id)
               INSERT INTO devices (site_id, key, equipment_model) SELECT id, 'E-1', 'm' FROM s RETURNING id"""
        ).fetchone()
        rules = {}
        for name, kind, tag, levels in (
            ("hot", "above", "bearing_temp", [{"severity": "critical", "threshold": 80.0}]),
            (
                "odd",
                "anomaly",
                "anomaly_score:odd",
                [{"severity": "major", "threshold": 1.5}, {"severity": "minor", "threshold": 1.2}],
            ),
            ("odd2", "anomaly", "anomaly_score:odd2", None),
        ):
            definition = None if levels is None else Jsonb({"condition": {"kind": kind, "levels": levels}})
            (rules[name],) = conn.execute(  # type: ignore[misc]
                """INSERT INTO rules (name, kind, tag, problem_code, definition)
                   VALUES (%s, %s, %s, 'x', %s) RETURNING id""",
                (name, kind, tag, definition),
            ).fetchone()
        for rule, start, cleared in (
            ("hot", T0 - 2 * H, T0 - H),  # before the range
            ("hot", T0 + 10 * MIN, T0 + 20 * MIN),  # inside
            ("odd", T0 + 50 * MIN, None),  # still open
        ):
            conn.execute(
                """INSERT INTO alarms (rule_id, device_id, severity, state, triggered_at, cleared_at)
                   VALUES (%s, %s, 'critical', %s, %s, %s)""",
                (rules[rule], device, "cleared" if cleared else "active", start, cleared),
            )
        found = episodes(conn, device, T0, T0 + H)
        assert [(e.tag, e.start, e.end) for e in found] == [
            ("bearing_temp", T0 + 10 * MIN, T0 + 20 * MIN),
            ("anomaly_score:odd", T0 + 50 * MIN, None),
        ]
        assert [a.rule_name for a in device_open_alarms(conn, device)] == ["odd"]
        assert rule_tags(conn, [rules["hot"]]) == {rules["hot"]: "bearing_temp"}
        assert score_thresholds(conn, ["bearing_temp", "anomaly_score:odd", "anomaly_score:odd2"]) == {
            "anomaly_score:odd": 1.2,
            "anomaly_score:odd2": 1.0,
        }


# --- in the browser -------------------------------------------------------------------------------


def _device_id(console: Console, key: str) -> int:
    with psycopg.connect(console.db_url) as conn:
        row = conn.execute(
            "SELECT d.id FROM devices d JOIN sites s ON s.id = d.site_id WHERE d.key = %s AND s.slug = %s",
            (key, console.site_of[key].slug),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _option(page: Any, tag: str) -> dict[str, Any]:
    """The option ECharts holds for the chart of ``tag`` (its instance, through NiceGUI's getElement)."""
    return page.evaluate(
        """(tag) => {
            const el = document.querySelector(`[data-tag="${tag}"]`);
            const chart = getElement(el.id.replace(/^c/, '')).chart;
            const o = chart.getOption();
            return {series: o.series.map(s => ({name: s.name, stack: s.stack || null, n: s.data.length,
                                               areas: s.markArea ? s.markArea.data.length : 0,
                                               area: !!s.areaStyle})),
                    zoom: o.dataZoom.map(z => z.type)};
        }""",
        tag,
    )


@browser_test
def test_the_device_page_shows_latest_values_and_shades_a_live_alarm_episode(console: Console, new_page: Any) -> None:
    """A dispatcher's open device page shows the newest reading, and the alarm it raises appears in the open
    alarms and as a shaded episode on the tag's chart without a reload."""
    device = _device_id(console, "P-1")
    page = new_page()
    _sign_in(page, console, "dispatcher", path=f"/devices/{device}?range=1h&tags=bearing_temp")
    page.wait_for_url(f"**/devices/{device}**")
    page.get_by_test_id("empty-device-alarms").wait_for()
    page.evaluate("window.__notReloaded = true")
    alarm = console.hot_reading("P-1")
    page.get_by_test_id("device-alarms").get_by_test_id(f"alarm-{alarm}").wait_for()
    page.locator("[data-tag=bearing_temp][data-episodes='1']").wait_for()
    tile = page.get_by_test_id("latest-bearing_temp")
    tile.get_by_text("95", exact=True).wait_for()
    assert "good" in tile.get_by_test_id("quality").inner_text()
    assert page.evaluate("window.__notReloaded") is True
    chart = page.locator("[data-tag=bearing_temp]")
    assert chart.get_attribute("data-resolution") == "raw"
    page.wait_for_function("() => document.body.dataset.fwChartDrawn")
    option = _option(page, "bearing_temp")
    assert option["series"][0]["areas"] == 1 and option["series"][0]["n"] >= 1
    assert set(option["zoom"]) == {"inside", "slider"}
    _shot(page, "device-alarm-episode")


@browser_test
def test_a_live_redraw_keeps_where_the_user_zoomed(console: Console, new_page: Any) -> None:
    """Zoomed to the last 60 % of the hour (not deep enough to read finer data), the chart stays there when
    an alarm episode arrives and the chart is redrawn with it (it used to jump back to the whole hour)."""
    device = _device_id(console, "P-4")
    console.reading("P-4", "bearing_temp", 61.0)  # a reading below the threshold: a chart with a point
    page = new_page()
    _sign_in(page, console, "reliability_engineer", path=f"/devices/{device}?range=1h&tags=bearing_temp")
    chart = page.locator("[data-tag=bearing_temp]")
    chart.wait_for()
    page.wait_for_function("() => document.body.dataset.fwChartDrawn")
    assert _shown(page, "bearing_temp") == [0, 1]  # the whole hour at first
    episodes_before = int(chart.get_attribute("data-episodes") or 0)
    page.evaluate(
        """() => { const el = document.querySelector('[data-tag=bearing_temp]');
                   getElement(el.id.replace(/^c/, '')).chart
                     .dispatchAction({type: 'dataZoom', start: 40, end: 100}); }"""
    )
    page.wait_for_timeout(1_500)  # the zoom event reaches the server (throttled to one per 0.6 s)
    console.hot_reading("P-4")
    page.locator(f"[data-tag=bearing_temp][data-episodes='{episodes_before + 1}']").wait_for()
    page.wait_for_function(
        f"() => {{ const [s, e] = ({_SHOWN_JS})('bearing_temp'); return s > 0.35 && s < 0.45 && e > 0.99; }}",
        timeout=5_000,
    )
    assert chart.get_attribute("data-resolution") == "raw"  # the same data, not a narrowed read


#: Where the shown part of a chart's time axis starts and ends, as shares of its range: what the user sees.
_SHOWN_JS = """(tag) => {
    const el = document.querySelector(`[data-tag="${tag}"]`);
    const chart = getElement(el.id.replace(/^c/, '')).chart;
    const x = chart.getOption().xAxis[0];
    const [a, b] = chart.getModel().getComponent('xAxis', 0).axis.scale.getExtent();
    return [(a - x.min) / (x.max - x.min), (b - x.min) / (x.max - x.min)];
}"""


def _shown(page: Any, tag: str) -> list[float]:
    return list(page.evaluate(f"({_SHOWN_JS})({tag!r})"))


@browser_test
def test_a_chart_shows_a_window_chosen_by_dates_and_its_link_shows_it_again(console: Console, new_page: Any) -> None:
    """An incident two days ago: the engineer types its window in the Dates fields (UTC), the charts show
    exactly that window, the address names it, and the address opened again shows the same; a window that
    cannot be drawn says why and leaves the charts as they were."""
    device = _device_id(console, "P-1")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first, last = now - 2 * D - 3 * H, now - 2 * D
    page = new_page()
    _sign_in(page, console, "reliability_engineer", path=f"/devices/{device}?range=1h&tags=flow")
    page.locator("[data-tag=flow]").wait_for()
    page.wait_for_function("() => document.body.dataset.fwChartDrawn")
    assert not page.get_by_test_id("chart-dates").is_visible()
    page.get_by_test_id("chart-dates-toggle").click()
    page.get_by_test_id("chart-from").fill(f"{last:%Y-%m-%dT%H:%M}")
    page.get_by_test_id("chart-to").fill(f"{first:%Y-%m-%dT%H:%M}")
    page.get_by_test_id("chart-dates-apply").click()
    page.get_by_test_id("chart-dates-error").get_by_text("To must be after From").wait_for()
    assert _axis(page, "flow")[1] - _axis(page, "flow")[0] == 3_600_000  # still the hour
    page.get_by_test_id("chart-from").fill(f"{first:%Y-%m-%dT%H:%M}")
    page.get_by_test_id("chart-to").fill(f"{last:%Y-%m-%dT%H:%M}")
    page.get_by_test_id("chart-dates-apply").click()
    window = [int(first.timestamp() * 1000), int(last.timestamp() * 1000)]
    page.wait_for_function(f"() => JSON.stringify(({_AXIS_JS})('flow')) === '{window}'.replace(/ /g, '')")
    assert page.get_by_test_id("chart-dates-error").inner_text() == ""
    page.wait_for_url(f"**start={first:%Y-%m-%dT%H:%M}**")
    assert "end=" in page.url and "tags=flow" in page.url
    _shot(page, "device-dates")
    again = new_page()
    _sign_in(again, console, "reliability_engineer", path=page.url.removeprefix(console.url))
    again.locator("[data-tag=flow]").wait_for()
    again.wait_for_function("() => document.body.dataset.fwChartDrawn")
    assert _axis(again, "flow") == window
    assert again.get_by_test_id("chart-dates").is_visible()
    again.get_by_test_id("chart-range").get_by_text("6h", exact=True).click()  # back to a preset, up to now
    again.wait_for_function(f"() => (({_AXIS_JS})('flow') || [0, 0])[1] > {window[1] + 86_400_000}")


_AXIS_JS = """(tag) => {
    const el = document.querySelector(`[data-tag="${tag}"]`);
    const chart = el && getElement(el.id.replace(/^c/, ''))?.chart;  // none while the charts are redrawn
    if (!chart) return null;
    const x = chart.getOption().xAxis[0];
    return [x.min, x.max];
}"""


def _axis(page: Any, tag: str) -> list[int]:
    """The time range a chart's x axis spans (epoch ms)."""
    return [int(v) for v in page.evaluate(f"({_AXIS_JS})({tag!r})")]


@browser_test
def test_a_new_reading_shows_in_the_latest_values_within_a_second_without_reload(
    console: Console, new_page: Any
) -> None:
    """A reading that raises no alarm still reaches an open device page: ingest's telemetry_stored event
    (one per write) redraws the latest values, pushed, without a reload or a timer."""
    device = _device_id(console, "P-1")
    page = new_page()
    _sign_in(page, console, "viewer", path=f"/devices/{device}?range=1h&tags=bearing_temp")
    page.wait_for_url(f"**/devices/{device}**")
    page.get_by_test_id("latest-flow").wait_for()
    page.evaluate("window.__notReloaded = true")
    console.reading("P-1", "flow", 41.25)
    page.get_by_test_id("latest-flow").get_by_text("41.25", exact=True).wait_for(timeout=5_000)
    assert page.evaluate("window.__notReloaded") is True


@browser_test
def test_a_week_is_drawn_from_the_rollups_as_a_band_for_a_viewer(console: Console, new_page: Any) -> None:
    """Eight days of minute readings, rolled up: the 7-day chart reads 15-minute buckets of the minute rollup and
    draws a min/max band around the average; a viewer reads it, at 1366×768, on a phone and in the dark theme."""
    device = _device_id(console, "P-3")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - 8 * D
    with psycopg.connect(console.db_url) as conn:
        (sid,) = conn.execute(  # type: ignore[misc]
            "SELECT id FROM series WHERE device_id = %s AND tag = 'flow'", (device,)
        ).fetchone()
        for day in range(9):  # plain storage keeps a partition per day: make those of the past week
            conn.execute("SELECT fw_ensure_telemetry_partition(%s)", ((start + day * D).date(),))
        conn.execute(
            """INSERT INTO telemetry (series_id, time, value, quality)
               SELECT %s, %s + g * interval '1 minute', 40 + 8 * sin(g / 90.0) + (g %% 7), 0
               FROM generate_series(0, 8 * 1440 - 20) g ON CONFLICT DO NOTHING""",
            (sid, start),
        )
        hours = int(start.timestamp()) // 3600
        flag_hours(conn, range(hours, int(now.timestamp()) // 3600 + 1))
    refresh_written(console.db_url, lag_s=0)

    for name, (width, height) in {"device-week": (1366, 768), "device-week-phone": (390, 844)}.items():
        page = new_page(width=width, height=height)
        _sign_in(page, console, "viewer", path=f"/devices/{device}?range=7d&tags=flow")
        chart = page.locator("[data-tag=flow]")
        chart.wait_for()
        assert chart.get_attribute("data-resolution") == "buckets"
        assert chart.get_attribute("data-rollup") == "telemetry_1m"
        assert 600 <= int(chart.get_attribute("data-points") or 0) <= 720
        page.wait_for_function("() => document.body.dataset.fwChartDrawn")
        option = _option(page, "flow")
        assert [(s["name"], s["stack"], s["area"]) for s in option["series"]] == [
            ("min", "band", False),
            ("min–max", "band", True),
            ("average", None, False),
        ]
        assert page.get_by_test_id("latest-flow").is_visible()
        _shot(page, name)
    # zoomed in to the last ~50 minutes, the chart reads raw points of that window; "Whole 7d" goes back
    page.evaluate(
        """() => { const el = document.querySelector('[data-tag=flow]');
                   getElement(el.id.replace(/^c/, '')).chart
                     .dispatchAction({type: 'dataZoom', start: 99.5, end: 100}); }"""
    )
    page.locator("[data-tag=flow][data-resolution=raw]").wait_for()
    page.get_by_test_id("unzoom-flow").click()
    page.locator("[data-tag=flow][data-resolution=buckets]").wait_for()
    page.get_by_test_id("theme-toggle").click()
    page.locator("body.body--dark").wait_for()
    _shot(page, "device-week-phone-dark")


@browser_test
def test_devices_are_found_by_search_and_reached_from_an_alarm_row(console: Console, new_page: Any) -> None:
    """The device list narrows as one types; an overview site opens its devices; an alarm row's device name
    opens that device's page."""
    page = new_page()
    _sign_in(page, console, "field_engineer", path="/devices")
    page.get_by_test_id("device-list").wait_for()
    p9 = _device_id(console, "P-9")
    page.get_by_test_id(f"device-{_device_id(console, 'P-2')}").wait_for()
    page.get_by_test_id("device-search").fill("hilltop")
    page.get_by_test_id(f"device-{_device_id(console, 'P-2')}").wait_for(state="detached")
    assert page.get_by_test_id(f"device-{p9}").is_visible()
    _shot(page, "devices-search")
    page.get_by_test_id("device-search").fill("no such device")
    page.get_by_test_id("empty-devices").wait_for()

    page.goto(f"{console.url}/")
    page.get_by_test_id(f"site-{console.site_of['P-9'].slug}").click()  # the overview's site list
    page.wait_for_url("**/devices?site=**")
    page.get_by_test_id(f"device-{p9}").wait_for()
    assert page.get_by_test_id(f"device-{_device_id(console, 'P-2')}").count() == 0

    alarm = console.hot_reading("P-9")
    page.goto(f"{console.url}/alarms")
    page.get_by_test_id(f"device-link-{alarm}").click()
    page.wait_for_url(f"**/devices/{p9}")
    page.get_by_test_id("device-info").wait_for()
    assert page.get_by_test_id("device-alarms").get_by_test_id(f"alarm-{alarm}").is_visible()


@browser_test
def test_an_unknown_device_says_where_to_look(console: Console, new_page: Any) -> None:
    """A device id nobody has shows a not-found state that points at the device list; a technician, who reads
    no devices, is sent to the overview and has no Devices entry in the navigation."""
    page = new_page()
    _sign_in(page, console, "viewer", path="/devices/999999")
    page.get_by_test_id("device-not-found").wait_for()
    tech = new_page()
    _sign_in(tech, console, "technician", path=f"/devices/{_device_id(console, 'P-1')}")
    tech.wait_for_url(f"{console.url}/")
    tech.get_by_test_id("user-menu").wait_for()
    assert tech.get_by_test_id("nav-devices").count() == 0


def test_a_map_click_opens_the_site_whose_marker_it_hit() -> None:
    """Within the marker's radius (in screen pixels at the map's zoom) the nearest site is hit; farther, none."""
    from fieldwatch.console.pages import site_at
    from ingest.overview import SitePlace

    a = SitePlace(1, "plant-a", "A", 48.0, 11.0, 3)
    b = SitePlace(2, "plant-b", "B", 48.0, 11.05, 1)  # ~36 px east of a at zoom 10
    px = 360 / (256 * 2**10)  # degrees of longitude per pixel at zoom 10
    assert site_at([a, b], 48.0, 11.0 + 5 * px, 10) is a
    assert site_at([a, b], 48.0, 11.0 + 18 * px, 10) is None  # 18 px from a, 18.4 from b: between them
    assert site_at([a, b], 48.0 + 10 * px, 11.0, 10) is a  # north: a latitude degree spans more pixels
    assert site_at([a, b], 48.0 + 15 * px, 11.0, 10) is None  # 15 / cos(48°) ≈ 22 px
    assert site_at([a, b], 48.0, 11.049, 14) is b  # zoomed in: 11.7 px from b
    assert site_at([], 48.0, 11.0, 10) is None
