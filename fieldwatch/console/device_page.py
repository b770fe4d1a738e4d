"""The Device pages: ``/devices`` (find a device) and ``/devices/{id}`` (one device, live).

A device's page shows the latest value of every tag with its unit and quality; charts of the tags the
viewer picks over the range they pick (raw points for short ranges, rollup buckets with a min/max band
for long ones: :func:`ingest.device_view.choose_resolution`), with the device's alarm episodes shaded
and an anomaly score's threshold drawn; its equipment profile and gateway; its open alarms and tickets.

The page is thin: every read is a domain function (:mod:`ingest.device_view`, :mod:`rules.device_alarms`,
:mod:`ticketing.tickets`), every option a pure function (:mod:`.charts`). Alarm events of this device
redraw the alarms, the latest values and the charts' episodes; ticket events its tickets; ingest's
``telemetry_stored`` events naming this device (one per write transaction, not per point) redraw its
latest values, at most once per :data:`LATEST_MIN_INTERVAL_S` (a busy device writes many times a second).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import psycopg
from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import ui

from fwcore import policy
from fwcore.contract import Quality
from fwcore.errors import NotFound
from fwcore.events import Event, TelemetryStoredEvent
from fwcore.policy import Visible
from fwcore.users import SESSION_COOKIE, UserSession, session_of
from ingest.device_view import ChartData, DeviceCard, chart_data, device_card, find_devices
from ingest.queries import LatestValue, device_latest
from rules.alarms import Alarm
from rules.device_alarms import Episode, device_open_alarms, episodes, is_score_tag, rule_tags, score_thresholds
from ticketing.tickets import OPEN_STATUSES, TicketSummary, list_ticket_summaries

from .charts import chart_option, with_view
from .live import ALARM_KINDS, TICKET_KINDS
from .pages import (
    SEVERITY_COLORS,
    STATE_NAMES,
    TICKET_STATUS_NAMES,
    _db,
    _empty,
    _may,
    _page_heading,
    _signed_in,
    _state,
    _to_signin,
    _when,
    frame,
)
from .session import session_policy

log = logging.getLogger(__name__)

#: The ranges a chart offers (label → length), shortest first; the default is a day.
RANGES: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
DEFAULT_RANGE = "24h"
#: The longest window a chart may be asked for by dates (one bounded query per chart: hourly buckets).
MAX_WINDOW = timedelta(days=366)
#: The earliest a custom window may start (older dates are typing mistakes, not history).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
#: The most charts one page draws at once (each is a bounded query and a canvas).
MAX_CHARTS = 6
#: The latest values redraw at most this often on ``telemetry_stored`` events (within a second of a write).
LATEST_MIN_INTERVAL_S = 0.5
#: How often an open page re-checks its session on telemetry events (other events check every time).
SESSION_RECHECK_S = 30.0
#: Zoomed in to less than this share of a chart's range, the chart reads the zoomed window again at the
#: resolution it calls for (a week's 15-minute buckets become raw points at two hours).
REFINE_BELOW = 0.5
QUALITY_NAMES = {q.value: q.name.lower().replace("_", " ") for q in Quality}


def _testid(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", tag)


def _device_access(session: UserSession) -> Visible | None:
    """Which devices the session may see (None: none): ``device.read`` and ``telemetry.read`` both needed."""
    decision = policy.decide(session.user.principal, "device.read")
    if not decision.allowed or not _may(session, "telemetry.read"):
        return None
    return policy.visible(session.user.principal, decision)


# --- the device list ------------------------------------------------------------------------------


@ui.page("/devices")
async def devices_page(request: Request, q: str = "", site: str = "") -> Any:
    session = await _signed_in(request)
    if session is None:
        return _to_signin(request)
    visible = _device_access(session)
    if visible is None:
        return RedirectResponse("/", 303)
    limit = 200
    found: list[DeviceCard] = await _db(find_devices, q, site=site or None, visible=visible, limit=limit)

    with frame(session, "Devices", "/devices"):
        subtitle = _page_heading("Devices", "")
        search = (
            ui.input("Search", value=q, placeholder="key, name, model, site or gateway")
            .props("outlined dense clearable debounce=300 data-testid=device-search")
            .classes("w-full max-w-[420px]")
        )
        with search.add_slot("prepend"):
            ui.icon("search")
        if site:
            ui.link("Show every site's devices", "/devices").props("data-testid=all-sites").classes("text-sm")

        @ui.refreshable
        def device_list() -> None:
            more = f" (the first {limit}: search to narrow)" if len(found) >= limit else ""
            at = f" at site {site}" if site else ""
            subtitle.set_text(f"{len(found)} device{'' if len(found) == 1 else 's'}{at}{more}")
            with ui.card().classes("fw-card w-full p-0").props("data-testid=device-list"):
                if not found:
                    _empty(
                        "memory",
                        "No device matches" if search.value else "No devices yet",
                        "Try part of a key, a site or a model."
                        if search.value
                        else "Register devices with `fieldwatch fleet apply FILE` or the API (`POST /api/v1/devices`), "
                        "or run `fieldwatch demo`.",
                        "empty-devices",
                    )
                    return
                for d in found:
                    _device_row(d)

        device_list()

    async def on_search(e: Any) -> None:
        nonlocal found
        found = await _db(find_devices, e.value or "", site=site or None, visible=visible, limit=limit)
        device_list.refresh()

    search.on_value_change(on_search)
    return None


def _gateway_badge(card: DeviceCard) -> None:
    status = card.gateway_status or "none"
    color = {"online": "positive", "offline": "negative"}.get(status, "grey-6")
    ui.badge("no gateway" if card.gateway_slug is None else status, color=color).props(
        "outline data-testid=gateway-status"
    )


def _device_row(d: DeviceCard) -> None:
    with (
        ui.link(target=f"/devices/{d.id}")
        .classes("fw-alarm-row w-full flex items-center gap-4 px-4 py-3 no-underline text-inherit")
        .props(f"data-testid=device-{d.id}")
    ):
        ui.icon("memory", color="primary", size="24px")
        with ui.column().classes("gap-0 grow"):
            ui.label(d.name).classes("font-medium")
            ui.label(f"{d.key} · {d.equipment_model} · {d.site_name}").classes("text-sm fw-muted")
        _gateway_badge(d)


# --- one device -----------------------------------------------------------------------------------


@dataclass
class _Device:
    """What one device's page shows, reloaded piece by piece as events arrive."""

    card: DeviceCard
    latest: list[LatestValue]
    alarms: list[Alarm]
    tickets: list[TicketSummary] | None  # None: the role may not read tickets
    charts: list[tuple[ChartData, float | None]] = field(default_factory=list)
    episodes: list[Episode] = field(default_factory=list)


def _load_device(conn: psycopg.Connection, device_id: int, visible: Visible, ticket_visible: Visible | None) -> _Device:
    card = device_card(conn, device_id, visible=visible)
    return _Device(
        card,
        device_latest(conn, device_id).values,
        device_open_alarms(conn, device_id),
        _load_tickets(conn, device_id, ticket_visible),
    )


def _load_tickets(conn: psycopg.Connection, device_id: int, visible: Visible | None) -> list[TicketSummary] | None:
    if visible is None:
        return None
    return list(
        list_ticket_summaries(conn, device_id=device_id, status=list(OPEN_STATUSES), visible=visible, limit=50).items
    )


def _load_charts(
    conn: psycopg.Connection, device_id: int, windows: list[tuple[int, datetime, datetime]]
) -> tuple[list[tuple[ChartData, float | None]], list[Episode]]:
    """Each ``(series, start, end)``'s chart data, the score thresholds, and the episodes over all the windows."""
    charts = [chart_data(conn, s, start, end) for s, start, end in windows]
    thresholds = score_thresholds(conn, [c.tag for c in charts])
    found = episodes(conn, device_id, min(w[1] for w in windows), max(w[2] for w in windows)) if windows else []
    return [(c, thresholds.get(c.tag, 1.0 if is_score_tag(c.tag) else None)) for c in charts], found


def zoom_span(args: dict[str, Any]) -> tuple[float, float] | None:
    """The percentages of its range an ECharts ``datazoom`` event shows, or None for a malformed one (pure)."""
    zoom = (args.get("batch") or [args])[0]
    try:
        lo, hi = float(zoom.get("start", 0.0)), float(zoom.get("end", 100.0))
    except (TypeError, ValueError, AttributeError):
        return None
    lo, hi = max(0.0, min(lo, 100.0)), max(0.0, min(hi, 100.0))
    return None if hi <= lo else (lo, hi)


def zoom_window(start: datetime, end: datetime, args: dict[str, Any]) -> tuple[datetime, datetime] | None:
    """The time window an ECharts ``datazoom`` event shows (percentages of ``[start, end)``), or None when it
    still shows more than :data:`REFINE_BELOW` of the range — the loaded data is fine enough for that (pure)."""
    span = zoom_span(args)
    if span is None or span[1] - span[0] > REFINE_BELOW * 100:
        return None
    lo, hi = span
    return start + (end - start) * (lo / 100), start + (end - start) * (hi / 100)


def zoom_view(start: datetime, end: datetime, args: dict[str, Any]) -> tuple[int | None, int | None] | None:
    """Where a shallow zoom or pan left a chart, as epoch milliseconds for :func:`.charts.with_view`: an end at
    the range's edge is None (a view up to "now" keeps following the data); None when it shows the whole
    range or the event is malformed (pure)."""
    span = zoom_span(args)
    if span is None:
        return None
    lo, hi = span
    start_ms, total_ms = start.timestamp() * 1000, (end - start).total_seconds() * 1000
    first = None if lo <= 0.05 else round(start_ms + total_ms * lo / 100)
    last = None if hi >= 99.95 else round(start_ms + total_ms * hi / 100)
    return None if first is None and last is None else (first, last)


class WindowError(ValueError):
    """A custom chart window that cannot be drawn; the message says what to change."""


def _instant(text: str, what: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise WindowError(f"{what} {shown!r} is not a date and time: write it as 2026-11-03T10:00 (UTC)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def custom_window(start: str, end: str, now: datetime) -> tuple[datetime, datetime]:
    """The window ``[start, end)`` a user typed (ISO dates or date-times; without an offset, UTC — the
    console shows UTC), or :class:`WindowError` saying what to change: end after start, at most
    :data:`MAX_WINDOW` long, not before 2000, not more than a day ahead (pure)."""
    first, last = _instant(start, "From"), _instant(end, "To")
    if last <= first:
        raise WindowError("To must be after From")
    if last - first > MAX_WINDOW:
        raise WindowError(f"a window may be at most {MAX_WINDOW.days} days long: narrow it")
    if first < EARLIEST:
        raise WindowError("From is before 2000: check the year")
    if last > now + timedelta(days=1):
        raise WindowError("To is more than a day ahead: nothing is recorded there yet")
    return first, last


def _field(t: datetime) -> str:
    """A time as a ``datetime-local`` input's value (UTC, to the minute)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def default_tags(latest: list[LatestValue], alarms: list[Alarm], alarm_tags: dict[int, str]) -> list[str]:
    """The tags charted when the page opens: those of open alarms and anomaly scores, else the first tag (pure)."""
    have = [v.tag for v in latest]
    picked = [t for t in dict.fromkeys(alarm_tags.get(a.rule_id, "") for a in alarms) if t in have]
    picked += [t for t in have if is_score_tag(t) and t not in picked]
    return (picked or have[:1])[:MAX_CHARTS]


@ui.page("/devices/{device_id}")
async def device_page(
    request: Request, device_id: int, range: str = DEFAULT_RANGE, tags: str = "", start: str = "", end: str = ""
) -> Any:
    session = await _signed_in(request)
    if session is None:
        return _to_signin(request)
    visible = _device_access(session)
    if visible is None:
        return RedirectResponse("/", 303)
    ticket_decision = policy.decide(session.user.principal, "ticket.read")
    ticket_visible = policy.visible(session.user.principal, ticket_decision) if ticket_decision.allowed else None
    try:
        data: _Device = await _db(_load_device, device_id, visible, ticket_visible)
    except NotFound:
        with frame(session, "Device", "/devices"):
            _page_heading("Device not found", "")
            with ui.card().classes("fw-card w-full"):
                _empty(
                    "search_off",
                    f"There is no device {device_id} you may see",
                    "Find it in the [device list](/devices), or open it from an alarm.",
                    "device-not-found",
                )
        return None
    card = data.card
    chosen: dict[str, Any] = {"range": range if range in RANGES else DEFAULT_RANGE, "window": None}
    window_problem = ""
    if start or end:  # a window by dates (a shared link, or the Dates fields): else the preset range up to now
        try:
            chosen["window"] = custom_window(start, end, datetime.now(UTC))
        except WindowError as exc:
            window_problem = str(exc)
    if tags:
        chosen["tags"] = [t for t in tags.split(",") if t in {v.tag for v in data.latest}][:MAX_CHARTS]
    else:
        chosen["tags"] = default_tags(data.latest, data.alarms, await _db(rule_tags, [a.rule_id for a in data.alarms]))
    series_of = {v.tag: v.series_id for v in data.latest}
    drawn: dict[str, ui.echart] = {}

    zoomed: dict[str, tuple[datetime, datetime]] = {}  # tag → the window a zoom narrowed its chart to
    # tag → where a shallow zoom or pan left its chart (ms; None: that end of the range), kept across redraws
    views: dict[str, tuple[int | None, int | None]] = {}

    def option_of(cd: ChartData, threshold: float | None) -> dict[str, Any]:
        option = chart_option(cd, data.episodes, threshold)
        view = views.get(cd.tag)
        return option if view is None else with_view(option, *view)

    def shown_window() -> tuple[datetime, datetime]:
        """The window the charts show: the one chosen by dates, else the preset range up to now."""
        if chosen["window"] is not None:
            return chosen["window"]
        last = datetime.now(UTC)
        return last - RANGES[chosen["range"]], last

    async def load_charts() -> None:
        whole = shown_window()  # one "now" for every chart
        windows = [(series_of[t], *zoomed.get(t, whole)) for t in chosen["tags"]]
        data.charts, data.episodes = await _db(_load_charts, device_id, windows)

    await load_charts()

    with frame(session, card.name, "/devices"):
        _page_heading(card.name, f"{card.key} · {card.equipment_model} · {card.site_name} · {card.client_name}")
        with ui.row().classes("w-full gap-4 items-stretch max-lg:flex-wrap no-wrap"):
            with ui.card().classes("fw-card p-4 gap-2 w-full lg:w-[340px] shrink-0").props("data-testid=device-info"):
                ui.label("Equipment").classes("text-lg font-semibold")
                _fact("Model", card.equipment_model)
                _fact("Profile", card.profile_name or "none", "profile")
                _fact("Profile version", card.profile_version or "not versioned", "profile-version")
                _fact("Serial", card.serial or "—")
                _fact("Gateway", card.gateway_slug or "none", "gateway")
                with ui.row().classes("w-full items-center justify-end gap-2"):
                    since = f"since {_when(card.gateway_status_at)}" if card.gateway_status_at else ""
                    ui.label(since).classes("text-xs fw-muted")
                    _gateway_badge(card)
                _fact("Site", f"{card.site_name} ({card.site_slug})")

            with ui.card().classes("fw-card p-4 gap-2 grow min-w-[300px]").props("data-testid=device-alarms"):

                @ui.refreshable
                def alarm_card() -> None:
                    ui.label(f"Open alarms ({len(data.alarms)})").classes("text-lg font-semibold")
                    if not data.alarms:
                        _empty("check_circle", "No open alarms", "This device is quiet.", "empty-device-alarms")
                    for a in data.alarms:
                        with ui.row().classes("w-full items-center gap-3 no-wrap").props(f"data-testid={a.key}"):
                            ui.badge(a.severity.upper(), color=SEVERITY_COLORS.get(a.severity, "#777")).classes(
                                "w-[76px] justify-center"
                            )
                            with ui.column().classes("gap-0 grow"):
                                ui.label(a.message or a.rule_name).classes("text-sm font-medium")
                                state = STATE_NAMES.get(a.state, a.state)
                                hidden = f" · suppressed ({a.suppressed_by})" if a.suppressed_by else ""
                                ui.label(f"{state} · opened {_when(a.opened_at)}{hidden}").classes("text-xs fw-muted")

                alarm_card()

            with ui.card().classes("fw-card p-4 gap-2 grow min-w-[300px]").props("data-testid=device-tickets"):

                @ui.refreshable
                def ticket_card() -> None:
                    if data.tickets is None:
                        ui.label("Tickets").classes("text-lg font-semibold")
                        ui.label("Your role does not read tickets.").classes("text-sm fw-muted")
                        return
                    ui.label(f"Open tickets ({len(data.tickets)})").classes("text-lg font-semibold")
                    if not data.tickets:
                        ui.label("No open ticket for this device.").classes("text-sm fw-muted")
                    for t in data.tickets:
                        with ui.row().classes("w-full items-center gap-3 no-wrap").props(f"data-testid=ticket-{t.id}"):
                            ui.badge(f"P{t.priority}").classes("w-[40px] justify-center")
                            with ui.column().classes("gap-0 grow"):
                                ui.label(f"#{t.id} {t.title}").classes("text-sm font-medium")
                                who = t.assignment.technician_name if t.assignment is not None else "unassigned"
                                status = TICKET_STATUS_NAMES.get(t.status, t.status)
                                ui.label(f"{status} · {who}").classes("text-xs fw-muted")

                ticket_card()

        with ui.card().classes("fw-card w-full p-4 gap-2").props("data-testid=latest-values"):
            ui.label("Latest values").classes("text-lg font-semibold")

            @ui.refreshable
            def latest_card() -> None:
                if not data.latest:
                    _empty(
                        "sensors_off",
                        "No series yet",
                        "Values appear once the gateway publishes readings for this device.",
                        "empty-latest",
                    )
                    return
                with ui.element("div").classes(
                    "w-full grid gap-2 grid-cols-2 md:grid-cols-[repeat(auto-fill,minmax(200px,1fr))]"
                ):
                    for v in data.latest:
                        _latest_tile(v)

            latest_card()

        with ui.card().classes("fw-card w-full p-4 gap-3").props("data-testid=device-charts"):
            with ui.row().classes("w-full items-center gap-3"):
                ui.label("Charts").classes("text-lg font-semibold grow")
                ui.select(
                    [v.tag for v in data.latest],
                    multiple=True,
                    value=list(chosen["tags"]),
                    label=f"Tags (up to {MAX_CHARTS})",
                    on_change=lambda e: pick_tags(e.value),
                ).props(f"outlined dense use-chips max-values={MAX_CHARTS} data-testid=chart-tags").classes(
                    "min-w-[260px] max-w-[640px]"
                )
                range_toggle = ui.toggle(
                    list(RANGES),
                    value=None if chosen["window"] else chosen["range"],
                    on_change=lambda e: pick_range(e.value),
                ).props("no-caps unelevated toggle-color=primary data-testid=chart-range")
                dates_button = ui.button("Dates", icon="date_range").props(
                    "flat dense no-caps data-testid=chart-dates-toggle"
                )
            with ui.row().classes("w-full items-end gap-3").props("data-testid=chart-dates") as dates:
                shown = shown_window()
                from_field = (
                    ui.input("From (UTC)", value=_field(shown[0]))
                    .props("type=datetime-local outlined dense data-testid=chart-from")
                    .classes("w-[220px]")
                )
                to_field = (
                    ui.input("To (UTC)", value=_field(shown[1]))
                    .props("type=datetime-local outlined dense data-testid=chart-to")
                    .classes("w-[220px]")
                )
                ui.button("Show", on_click=lambda: pick_window(from_field.value, to_field.value)).props(
                    "unelevated no-caps color=primary data-testid=chart-dates-apply"
                )
                problem = (
                    ui.label(window_problem).classes("text-sm text-negative").props("data-testid=chart-dates-error")
                )
            dates.set_visibility(bool(chosen["window"] or window_problem))
            dates_button.on_click(lambda: dates.set_visibility(not dates.visible))
            ui.label(
                "Scroll on a chart or drag the slider's ends to zoom (zoomed in far, the chart reads finer data), "
                "drag to pan; shaded spans are alarm episodes."
            ).classes("text-xs fw-muted -mt-2")

            @ui.refreshable
            def chart_area() -> None:
                drawn.clear()
                if not data.charts:
                    _empty(
                        "show_chart", "No tag chosen", "Choose one or more tags above to chart them.", "empty-charts"
                    )
                    return
                for cd, threshold in data.charts:
                    with ui.column().classes("w-full gap-0"):
                        with ui.row().classes("w-full items-baseline gap-2"):
                            ui.label(cd.tag).classes("font-medium")
                            if cd.unit:
                                ui.label(f"({cd.unit})").classes("text-sm fw-muted")
                            ui.space()
                            note = cd.resolution.label
                            if threshold is not None:
                                note += f" · anomaly threshold {threshold:g}"
                            ui.label(note).classes("text-xs fw-muted").props(f"data-testid=note-{_testid(cd.tag)}")
                            if cd.tag in zoomed:
                                whole = "window" if chosen["window"] else chosen["range"]
                                ui.button(f"Whole {whole}", icon="zoom_out", on_click=lambda t=cd.tag: unzoom(t)).props(
                                    f"flat dense no-caps size=sm data-testid=unzoom-{_testid(cd.tag)}"
                                )
                        chart = ui.echart(option_of(cd, threshold)).classes("w-full h-[280px]")
                        _mark_chart(chart, cd, data.episodes)
                        chart.on("chart:finished", js_handler=_FINISHED_JS)
                        chart.on(
                            "chart:datazoom",
                            lambda e, t=cd.tag: refine(t, e.args),
                            ["start", "end", "batch"],
                            throttle=0.6,
                            leading_events=False,
                        )
                        drawn[cd.tag] = chart

            chart_area()

    async def refine(tag: str, args: Any) -> None:
        current = next((cd for cd, _ in data.charts if cd.tag == tag), None)
        if current is None or not isinstance(args, dict):
            return
        window = zoom_window(current.start, current.end, args)
        if window is None:  # the loaded data is fine enough: remember the view for the next redraw
            view = zoom_view(current.start, current.end, args)
            if view is None:
                views.pop(tag, None)
            else:
                views[tag] = view
            return
        views.pop(tag, None)  # the narrowed window is drawn whole
        zoomed[tag] = window
        await load_charts()
        chart_area.refresh()

    async def unzoom(tag: str) -> None:
        zoomed.pop(tag, None)
        views.pop(tag, None)
        await load_charts()
        chart_area.refresh()

    async def pick_tags(value: list[str] | None) -> None:
        chosen["tags"] = list(value or [])[:MAX_CHARTS]
        await load_charts()
        chart_area.refresh()

    async def pick_range(value: str | None) -> None:
        if value is None:  # the toggle cleared because a window by dates was chosen
            return
        chosen["range"] = value if value in RANGES else DEFAULT_RANGE
        chosen["window"] = None
        dates.set_visibility(False)
        await show_new_window(f"range={chosen['range']}")

    async def pick_window(first: str | None, last: str | None) -> None:
        try:
            window = custom_window(first or "", last or "", datetime.now(UTC))
        except WindowError as exc:
            problem.set_text(str(exc))
            return
        chosen["window"] = window
        range_toggle.set_value(None)
        await show_new_window(f"start={_field(window[0])}&end={_field(window[1])}")

    async def show_new_window(query: str) -> None:
        """Draw the newly chosen window whole (no zoom kept from the old one) and name it in the address bar
        (no reload), so the link can be sent to someone."""
        problem.set_text("")
        zoomed.clear()
        views.clear()
        tag_list = ",".join(chosen["tags"])
        ui.run_javascript(f"history.replaceState(null, '', '?{query}&tags={quote(tag_list)}')")
        await load_charts()
        chart_area.refresh()

    async def redraw_charts() -> None:
        await load_charts()
        if set(drawn) != {cd.tag for cd, _ in data.charts}:
            chart_area.refresh()
            return
        for cd, threshold in data.charts:
            chart = drawn[cd.tag]
            chart.options.clear()
            chart.options.update(option_of(cd, threshold))
            _mark_chart(chart, cd, data.episodes)
            chart.update()

    async def refresh_latest() -> None:
        data.latest = (await _db(device_latest, device_id)).values
        latest_card.refresh()

    _subscribe_device(request, device_id, alarm_card, ticket_card, refresh_latest, redraw_charts, data, ticket_visible)
    return None


#: Stamps the page (performance.now(): ms since navigation) when ECharts first finishes drawing a chart;
#: the browser tests and bench/ui.py wait for it.
_FINISHED_JS = "() => { document.body.dataset.fwChartDrawn ??= String(performance.now()); }"


def _mark_chart(chart: ui.echart, cd: ChartData, found: list[Episode]) -> None:
    chart.props["data-testid"] = f"chart-{_testid(cd.tag)}"
    chart.props["data-tag"] = cd.tag
    chart.props["data-resolution"] = "raw" if cd.resolution.raw else "buckets"
    chart.props["data-rollup"] = cd.resolution.rollup or ""
    chart.props["data-points"] = str(len(cd.points) if cd.resolution.raw else len(cd.buckets))
    chart.props["data-episodes"] = str(len(found))


def _fact(label: str, value: str, testid: str = "") -> None:
    with ui.row().classes("w-full items-center justify-between gap-2"):
        ui.label(label).classes("fw-muted text-sm")
        value_label = ui.label(value).classes("text-sm font-medium text-right")
        if testid:
            value_label.props(f"data-testid={testid}")


def _latest_tile(v: LatestValue) -> None:
    good = v.quality in (None, Quality.GOOD)
    with (
        ui.column()
        .classes("gap-0 p-3 rounded-lg border border-solid border-[rgba(127,127,127,.25)]")
        .props(f"data-testid=latest-{_testid(v.tag)}")
    ):
        ui.label(v.tag).classes("text-xs fw-muted truncate")
        with ui.row().classes("items-baseline gap-1"):
            ui.label("—" if v.value is None else f"{v.value:.6g}").classes("text-xl font-semibold").props(
                "data-testid=value"
            )
            ui.label(v.unit).classes("text-sm fw-muted")
        quality = "no data" if v.quality is None else QUALITY_NAMES.get(v.quality, f"quality {v.quality}")
        with ui.row().classes("items-center gap-1"):
            ui.icon("circle", size="8px", color="grey-6" if v.quality is None else "positive" if good else "negative")
            ui.label(quality).classes("text-xs").props("data-testid=quality")
        if v.time is not None:
            ui.label(_when(v.time)).classes("text-xs fw-muted")


def _subscribe_device(
    request: Request,
    device_id: int,
    alarm_card: Any,
    ticket_card: Any,
    refresh_latest: Any,
    redraw_charts: Any,
    data: _Device,
    ticket_visible: Visible | None,
) -> None:
    """Redraw on this device's alarm events and on ticket events while the page is open; back to sign-in
    once the session ends (as :func:`.pages._subscribe`, filtered to one device)."""
    client = ui.context.client
    cookie = request.cookies.get(SESSION_COOKIE)

    checked = {"at": time.monotonic()}
    pending: dict[str, asyncio.Task[None] | None] = {"task": None}

    async def session_ok() -> bool:
        still = await _db(session_of, cookie, policy=session_policy(_state().settings), touch=False)
        checked["at"] = time.monotonic()
        if still is None:
            with client:
                ui.navigate.to("/signin")
        return still is not None

    async def latest_soon() -> None:
        await asyncio.sleep(LATEST_MIN_INTERVAL_S)  # writes within this pause are read once
        pending["task"] = None
        if time.monotonic() - checked["at"] > SESSION_RECHECK_S and not await session_ok():
            return
        try:
            with client:
                await refresh_latest()
        except Exception:  # the page closed meanwhile: nothing to draw on
            log.debug("device %s: latest values not redrawn", device_id, exc_info=True)

    async def on_event(event: Event) -> None:
        if isinstance(event, TelemetryStoredEvent):
            if event.device_ids is not None and device_id not in event.device_ids:
                return
            if pending["task"] is None:
                pending["task"] = asyncio.create_task(latest_soon())
            return
        if getattr(event, "device_id", device_id) != device_id:
            return
        if not await session_ok():
            return
        if isinstance(event, ALARM_KINDS):
            data.alarms = await _db(device_open_alarms, device_id)
            with client:
                alarm_card.refresh()
                await refresh_latest()
                await redraw_charts()
        else:
            data.tickets = await _db(_load_tickets, device_id, ticket_visible)
            with client:
                ticket_card.refresh()

    client.on_delete(_state().live.subscribe(on_event, (*ALARM_KINDS, *TICKET_KINDS, TelemetryStoredEvent)))
