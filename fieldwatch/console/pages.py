"""The console's pages (NiceGUI): sign-in, the overview and the live alarms list, in one layout.

Every page starts by finding the visitor's session (:func:`_signed_in`) and sends them to the
sign-in page without one. Pages only read, through the domains' functions; what changes state is
an HTTP POST to :mod:`.session` (made by the page's JavaScript with the session's CSRF token), so
the server checks the same policy whatever the page shows. A page subscribes to the server's live
events (:mod:`.live`) and redraws what changed, pushed over NiceGUI's websocket.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from nicegui import run, ui
from nicegui.events import GenericEventArguments

from fwcore import policy
from fwcore.events import Event
from fwcore.settings import Settings
from fwcore.users import SESSION_COOKIE, UserSession, session_of
from ingest.overview import FleetCounts, SitePlace, fleet_counts, site_places
from rules.alarms import SEVERITIES, Alarm, open_alarms, open_counts, worst_open_by_site
from rules.lifecycle import Comment, comments_of, list_silences, silence_rows
from ticketing.tickets import OPEN_STATUSES, TicketSummary, list_ticket_summaries

from .live import ALARM_KINDS, TICKET_KINDS, LiveEvents
from .session import ACTIONS, CSRF_HEADER, SIGNIN, SIGNOUT, _safe_next, session_policy

T = TypeVar("T")

PRODUCT = "fieldwatch"
#: Severity → colour (badges, map markers), worst first; "none" is a site without open alarms.
SEVERITY_COLORS = {
    "critical": "#c62828",
    "major": "#ef6c00",
    "minor": "#f9a825",
    "warning": "#5c8fbf",
    "none": "#2e7d32",
}
ROLE_NAMES = {
    "admin": "Administrator",
    "dispatcher": "Dispatcher",
    "reliability_engineer": "Reliability engineer",
    "field_engineer": "Field engineer",
    "technician": "Technician",
    "viewer": "Viewer",
}
STATE_NAMES = {"active": "Active", "acknowledged": "Acknowledged"}
#: Rule errors (a rule cannot evaluate a device) are drawn apart from the equipment's severities.
RULE_ERROR_COLOR = "#6a1b9a"
KIND_NAMES = {"equipment": "Equipment alarms", "rule_error": "Rule errors"}
#: The navigation: (label, icon, path, the action a role needs to see it).
NAV = (
    ("Overview", "dashboard", "/", "site.read"),
    ("Alarms", "notifications_active", "/alarms", "alarm.read"),
    ("Devices", "memory", "/devices", "device.read"),
    ("Tickets", "assignment", "/tickets", "ticket.read"),
    ("Gateways", "router", "/gateways", "gateway.read"),
)
SIGNIN_ERRORS = {
    "wrong": "Wrong username or password.",
    "throttled": "Too many failed sign-ins. Wait a few minutes, then try again, "
    "or ask an admin to reset your password.",
}


@dataclass
class ConsoleState:
    """What the pages need from the server: its app (the connection pool), settings and live events."""

    app: FastAPI
    settings: Settings
    live: LiveEvents


STATE: ConsoleState | None = None


def _state() -> ConsoleState:
    if STATE is None:  # pragma: no cover - mount_console sets it before any page is served
        raise RuntimeError("the console is not mounted")
    return STATE


def _with_conn(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with _state().app.state.pool.connection() as conn:
        return fn(conn, *args, **kwargs)


async def _db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(conn, *args)`` on a pooled connection, in a worker thread (the event loop never blocks)."""
    result = await run.io_bound(_with_conn, fn, *args, **kwargs)
    return result  # type: ignore[return-value]  # None only when the app shuts down meanwhile


async def _signed_in(request: Request) -> UserSession | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    return await _db(session_of, cookie, policy=session_policy(_state().settings))


def _to_signin(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/signin?next={quote(target)}", 303)


def _may(session: UserSession, action: str) -> bool:
    return policy.decide(session.user.principal, action).allowed


def _theme() -> None:
    ui.colors(
        primary="#17456b",
        secondary="#2f7d8c",
        accent="#e0a030",
        positive="#2e7d32",
        negative="#c62828",
        warning="#ef6c00",
        info="#5c8fbf",
    )
    ui.add_css(
        """
        body { font-family: Inter, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
        .body--light { background: #f4f6f9; }
        .fw-card { border-radius: 10px; }
        .fw-link-card:hover { box-shadow: 0 0 0 2px var(--q-primary); }
        .fw-kpi-value { font-size: 2rem; font-weight: 600; line-height: 1.1; }
        .fw-muted { opacity: .7; }
        .fw-alarm-row + .fw-alarm-row { border-top: 1px solid rgba(127,127,127,.18); }
        .fw-nav .q-item { border-radius: 8px; margin: 2px 8px; }
        .fw-nav .q-item.fw-active { background: rgba(23,69,107,.12); font-weight: 600; }
        .body--dark .fw-nav .q-item.fw-active { background: rgba(255,255,255,.12); }
        .fw-map { height: 420px; border-radius: 8px; background: #dfe7ee; }
        .body--dark .fw-map { background: #2a3440; }
        """
    )


_ACTION_JS = f"""
<script>
window.fwPost = async (path, what, body) => {{
  const token = document.querySelector('meta[name="fw-csrf"]').content;
  const headers = {{'{CSRF_HEADER}': token}};
  const init = {{method: 'POST', credentials: 'same-origin', headers: headers}};
  if (body !== undefined) {{ headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }}
  let status = 0, detail = '';
  try {{
    const r = await fetch(path, init);
    status = r.status;
    try {{
      const answer = await r.json();
      detail = typeof answer.detail === 'string' ? answer.detail
        : Array.isArray(answer.detail) ? answer.detail.map((d) => d.msg).join('; ') : '';
    }} catch (e) {{}}
  }} catch (e) {{ detail = 'the server did not answer; check your connection'; }}
  emitEvent('fw_action_done', {{path: path, what: what, status: status, detail: detail}});
}};
</script>
"""


@contextmanager
def frame(session: UserSession, title: str, path: str) -> Iterator[None]:
    """The layout of every signed-in page: header, navigation drawer, user menu; yields the main column."""
    _theme()
    ui.page_title(f"{title} · {PRODUCT}")
    ui.add_head_html(f'<meta name="fw-csrf" content="{session.csrf_token}">' + _ACTION_JS)
    dark = ui.dark_mode(False)
    user = session.user

    def done(e: GenericEventArguments) -> None:
        status, detail, what = e.args.get("status"), e.args.get("detail") or "", e.args.get("what") or "Done"
        if status == 200:
            ui.notify(what, type="positive")
        elif status == 401:
            ui.navigate.to("/signin")
        else:
            ui.notify(f"Refused: {detail or f'HTTP {status}'}", type="negative", multi_line=True)

    ui.on("fw_action_done", done)

    drawer = ui.left_drawer(value=None, bordered=True).props("width=224").classes("fw-nav pt-4")
    with ui.header(elevated=True).classes("items-center gap-2 px-3 py-1 bg-primary text-white"):
        ui.button(icon="menu", on_click=drawer.toggle).props("flat round color=white aria-label=Navigation")
        ui.icon("sensors", size="28px")
        ui.label(PRODUCT).classes("text-xl font-semibold tracking-wide")
        ui.label("operations console").classes("text-sm opacity-75 gt-xs")
        ui.space()
        ui.button(icon="dark_mode", on_click=dark.toggle).props(
            'flat round color=white aria-label="Light or dark" data-testid=theme-toggle'
        ).tooltip("Light or dark")
        with ui.button().props("flat no-caps color=white data-testid=user-menu"):
            ui.avatar(user.label[:1].upper(), color="white", text_color="primary", size="28px")
            ui.label(user.label).classes("ml-2 gt-xs")
            with (
                ui.menu().props("anchor='bottom right' self='top right'"),
                ui.column().classes("p-4 gap-1 min-w-[220px]"),
            ):
                ui.label(user.label).classes("text-base font-semibold")
                ui.label(f"{user.username} · {ROLE_NAMES.get(user.role, user.role)}").classes("text-sm fw-muted").props(
                    "data-testid=user-role"
                )
                ui.separator().classes("my-2")
                with ui.element("form").props(f"method=post action={SIGNOUT}"):
                    hidden = ui.element("input")
                    hidden.props["type"] = "hidden"
                    hidden.props["name"] = "csrf"
                    hidden.props["value"] = session.csrf_token
                    ui.button("Sign out", icon="logout").props("type=submit flat no-caps data-testid=sign-out")
    with drawer, ui.list().classes("w-full"):
        for label, icon, target, action in NAV:
            if not _may(session, action):
                continue
            with (
                ui.item(on_click=lambda t=target: ui.navigate.to(t))
                .classes("fw-active" if target == path else "")
                .props(f"clickable data-testid=nav-{label.lower()}")
            ):
                with ui.item_section().props("avatar"):
                    ui.icon(icon)
                ui.item_section(label)
    with ui.column().classes("w-full max-w-[1400px] mx-auto p-4 md:p-6 gap-4"):
        yield


def _page_heading(title: str, subtitle: str) -> ui.label:
    with ui.row().classes("w-full items-end justify-between"):
        with ui.column().classes("gap-0"):
            ui.label(title).classes("text-2xl font-semibold")
            sub = ui.label(subtitle).classes("fw-muted")
        with ui.row().classes("items-center gap-1 text-sm fw-muted"):
            ui.icon("circle", color="positive", size="10px")
            ui.label("Live")
    return sub


def _empty(icon: str, title: str, hint: str, testid: str) -> None:
    with ui.column().classes("w-full items-center py-12 gap-2 text-center").props(f"data-testid={testid}"):
        ui.icon(icon, size="48px", color="positive" if icon == "check_circle" else "grey-6")
        ui.label(title).classes("text-lg font-medium")
        ui.markdown(hint).classes("fw-muted max-w-xl")


def _when(ts: datetime) -> str:
    seconds = max(0, int((datetime.now(UTC) - ts).total_seconds()))
    ago = (
        f"{seconds} s ago"
        if seconds < 60
        else f"{seconds // 60} min ago"
        if seconds < 3600
        else f"{seconds // 3600} h ago"
        if seconds < 86400
        else f"{seconds // 86400} d ago"
    )
    return f"{ts.astimezone(UTC):%Y-%m-%d %H:%M} UTC · {ago}"


def _subscribe(
    render: Callable[[], Any], reload: Callable[[], Any], request: Request, kinds: tuple[type, ...] = ALARM_KINDS
) -> None:
    """Redraw on every event of ``kinds`` while this page is open; back to sign-in once the session ends."""
    client = ui.context.client
    cookie = request.cookies.get(SESSION_COOKIE)

    async def on_event(_event: Event) -> None:
        still = await _db(session_of, cookie, policy=session_policy(_state().settings), touch=False)
        if still is None:
            with client:
                ui.navigate.to("/signin")
            return
        await reload()
        render()

    client.on_delete(_state().live.subscribe(on_event, kinds))


# --- sign-in --------------------------------------------------------------------------------------


@ui.page("/signin")
async def signin_page(request: Request, error: str = "", next: str = "/", signed_out: str = "") -> Any:
    target = _safe_next(next)
    if await _signed_in(request) is not None:
        return RedirectResponse(target, 303)
    _theme()
    ui.page_title(f"Sign in · {PRODUCT}")
    ui.query("body").style("background: linear-gradient(135deg, #17456b 0%, #2f7d8c 100%)")
    with (
        ui.column().classes("w-full min-h-screen items-center justify-center p-4"),
        ui.card().classes("fw-card w-full max-w-[400px] p-8 gap-4"),
    ):
        with ui.row().classes("items-center gap-2"):
            ui.icon("sensors", size="32px", color="primary")
            ui.label(PRODUCT).classes("text-2xl font-semibold text-primary")
        ui.label("Sign in to the operations console").classes("text-base fw-muted -mt-2")
        if error in SIGNIN_ERRORS:
            with (
                ui.row()
                .classes("w-full items-center gap-2 p-3 rounded bg-red-1 text-negative")
                .props("role=alert data-testid=signin-error")
            ):
                ui.icon("error_outline")
                ui.label(SIGNIN_ERRORS[error]).classes("grow")
        elif signed_out:
            with (
                ui.row()
                .classes("w-full items-center gap-2 p-3 rounded bg-green-1 text-positive")
                .props("data-testid=signed-out")
            ):
                ui.icon("check")
                ui.label("You signed out.")
        with ui.element("form").props(f"method=post action={SIGNIN}").classes("w-full flex flex-col gap-3"):
            ui.input("Username").props("name=username autocomplete=username outlined autofocus").classes("w-full")
            ui.input("Password", password=True, password_toggle_button=True).props(
                "name=password autocomplete=current-password outlined"
            ).classes("w-full")
            hidden = ui.element("input")
            hidden.props["type"] = "hidden"
            hidden.props["name"] = "next"
            hidden.props["value"] = target
            ui.button("Sign in").props("type=submit unelevated size=lg no-caps data-testid=sign-in").classes("w-full")
        ui.label("No account? Ask an administrator (fieldwatch users create).").classes("text-sm fw-muted")
    return None


# --- overview -------------------------------------------------------------------------------------


@dataclass
class _Overview:
    fleet: FleetCounts
    alarms: dict[str, int]
    sites: list[SitePlace]
    worst: dict[str, str]


def _load_overview(conn: psycopg.Connection) -> _Overview:
    return _Overview(fleet_counts(conn), open_counts(conn), site_places(conn), worst_open_by_site(conn))


#: How far from a site's marker centre (pixels) a click on the map still opens that site's alarms.
MARKER_HIT_PX = 16.0


def site_at(sites: list[SitePlace], lat: float, lng: float, zoom: float) -> SitePlace | None:
    """The site whose marker a click at (``lat``, ``lng``) on the map at ``zoom`` hit, if any: the nearest
    within :data:`MARKER_HIT_PX` screen pixels (Web Mercator: a degree of longitude is 256·2^zoom/360
    pixels; a degree of latitude, that over cos(latitude))."""
    px_per_deg = 256 * 2**zoom / 360
    best: tuple[float, SitePlace] | None = None
    for s in sites:
        dx = (lng - s.longitude) * px_per_deg
        dy = (lat - s.latitude) * px_per_deg / max(math.cos(math.radians(lat)), 1e-6)
        d = math.hypot(dx, dy)
        if d <= MARKER_HIT_PX and (best is None or d < best[0]):
            best = (d, s)
    return best[1] if best else None


def _kpi(label: str, value: int, icon: str, color: str, testid: str, note: str = "", target: str = "") -> None:
    """A number of the Overview; with ``target``, a click opens the list behind it."""
    card = ui.card().classes("fw-card p-4 gap-1").props(f"data-testid={testid}")
    if target:
        card.classes("cursor-pointer fw-link-card").on("click", lambda: ui.navigate.to(target))
        card.props(f'role=link aria-label="{label}: open the list"')
    with card:
        with ui.row().classes("items-center gap-2 fw-muted text-sm"):
            ui.icon(icon, color=color, size="20px")
            ui.label(label)
        ui.label(str(value)).classes("fw-kpi-value").props("data-testid=value")
        ui.label(note).classes("text-xs fw-muted")


@ui.page("/")
async def overview_page(request: Request) -> Any:
    session = await _signed_in(request)
    if session is None:
        return _to_signin(request)
    if not _may(session, "site.read"):
        with frame(session, "Overview", "/"):
            _page_heading("Overview", "")
            with ui.card().classes("fw-card w-full"):
                _empty(
                    "engineering",
                    "Nothing here for your role yet",
                    "Your jobs are under **Tickets** (and in the API, `/api/v1/tickets`). "
                    "Ask an administrator if you need to see the fleet.",
                    "empty-role",
                )
        return None
    data = await _db(_load_overview)
    may_devices = _may(session, "device.read") and _may(session, "telemetry.read")
    may_gateways = _may(session, "gateway.read")
    tile_url = _state().settings.console_tile_url
    markers: list[Any] = []

    with frame(session, "Overview", "/"):
        _page_heading("Overview", "Your fleet right now: connectivity, open alarms and where they are.")

        @ui.refreshable
        def cards() -> None:
            f, a = data.fleet, data.alarms
            devices = f.devices_online + f.devices_offline + f.devices_unknown
            total_open = sum(a.values())
            with ui.grid().classes("w-full gap-4 grid-cols-2 lg:grid-cols-4"):
                _kpi(
                    "Devices online",
                    f.devices_online,
                    "lan",
                    "positive",
                    "kpi-devices-online",
                    f"of {devices} devices",
                    "/devices" if may_devices else "",
                )
                _kpi(
                    "Devices offline",
                    f.devices_offline,
                    "portable_wifi_off",
                    "negative" if f.devices_offline else "grey-6",
                    "kpi-devices-offline",
                    f"{f.devices_unknown} not heard from yet" if f.devices_unknown else "their gateway is offline",
                    "/gateways" if may_gateways else "",
                )
                _kpi(
                    "Gateways offline",
                    f.gateways_offline,
                    "router",
                    "negative" if f.gateways_offline else "grey-6",
                    "kpi-gateways-offline",
                    f"{f.gateways_online} online",
                    "/gateways" if may_gateways else "",
                )
                with (
                    ui.card()
                    .classes("fw-card p-4 gap-1 cursor-pointer fw-link-card")
                    .props('data-testid=kpi-open-alarms role=link aria-label="Open alarms: open the list"')
                    .on("click", lambda: ui.navigate.to("/alarms"))
                ):
                    with ui.row().classes("items-center gap-2 fw-muted text-sm"):
                        ui.icon("notifications_active", color="negative" if total_open else "grey-6", size="20px")
                        ui.label("Open alarms")
                    ui.label(str(total_open)).classes("fw-kpi-value").props("data-testid=value")
                    with ui.row().classes("gap-1"):
                        for severity in SEVERITIES:
                            ui.badge(f"{a[severity]} {severity}", color=SEVERITY_COLORS[severity]).props(
                                f"data-testid=open-{severity}" + ("" if a[severity] else " outline")
                            ).classes("cursor-pointer").on(
                                "click.stop", lambda sev=severity: ui.navigate.to(f"/alarms?severity={sev}")
                            )
                        errors = a.get("rule_error", 0)
                        ui.badge(f"{errors} rule error{'' if errors == 1 else 's'}", color=RULE_ERROR_COLOR).props(
                            "data-testid=open-rule-error" + ("" if errors else " outline")
                        ).classes("cursor-pointer").on(
                            "click.stop", lambda: ui.navigate.to("/alarms?kind=rule_error")
                        ).tooltip("Rules that cannot evaluate a device: for the rule's owner, never a ticket")

        cards()
        with ui.row().classes("w-full gap-4 items-stretch no-wrap max-lg:flex-wrap"):
            with ui.card().classes("fw-card p-2 grow min-w-[320px]"):
                center = (
                    (
                        sum(s.latitude for s in data.sites) / len(data.sites),
                        sum(s.longitude for s in data.sites) / len(data.sites),
                    )
                    if data.sites
                    else (48.0, 11.0)
                )
                fleet_map = ui.leaflet(center=center, zoom=7).classes("w-full fw-map").props("data-testid=site-map")
                fleet_map.clear_layers()
                if tile_url:
                    fleet_map.tile_layer(
                        url_template=tile_url,
                        options={"maxZoom": 18, "attribution": "Map tiles: your tile server (console_tile_url)"},
                    )

                def draw_markers() -> None:
                    for layer in markers:
                        fleet_map.remove_layer(layer)
                    markers.clear()
                    for s in data.sites:
                        color = SEVERITY_COLORS[data.worst.get(s.slug, "none")]
                        markers.append(
                            fleet_map.generic_layer(
                                name="circleMarker",
                                args=[
                                    [s.latitude, s.longitude],
                                    {
                                        "radius": 10,
                                        "color": "#ffffff",
                                        "weight": 2,
                                        "fillColor": color,
                                        "fillOpacity": 0.95,
                                    },
                                ],
                            )
                        )

                draw_markers()

                def open_site(e: GenericEventArguments) -> None:
                    where = e.args.get("latlng") or {}
                    hit = site_at(data.sites, float(where.get("lat", 0)), float(where.get("lng", 0)), fleet_map.zoom)
                    if hit is not None:  # a marker: the site's open alarms
                        ui.navigate.to(f"/alarms?site={quote(hit.slug)}")

                fleet_map.on("map-click", open_site)
                bounds = [[s.latitude, s.longitude] for s in data.sites]

                def fit() -> None:
                    # The map is built before its card has its final size: without invalidateSize Leaflet
                    # draws its vector layer for the first size (markers scaled up, or off the map).
                    fleet_map.run_map_method("invalidateSize")
                    if len(bounds) > 1:
                        fleet_map.run_map_method("fitBounds", bounds, {"padding": [48, 48], "maxZoom": 11})

                fleet_map.on("init", fit)
            with ui.card().classes("fw-card p-4 w-full lg:w-[380px] shrink-0 gap-2"):
                ui.label("Sites").classes("text-lg font-semibold")

                @ui.refreshable
                def site_list() -> None:
                    if not data.sites:
                        _empty(
                            "place",
                            "No sites yet",
                            "Register a site with the API (`POST /api/v1/sites`), or run `fieldwatch demo` "
                            "to try the console on a simulated fleet.",
                            "empty-sites",
                        )
                        return
                    for s in sorted(
                        data.sites, key=lambda s: (*SEVERITIES, "none").index(data.worst.get(s.slug, "none"))
                    ):
                        worst = data.worst.get(s.slug)
                        with (
                            ui.link(target=f"/devices?site={quote(s.slug)}")
                            .classes("w-full flex items-center gap-3 py-1 no-underline text-inherit")
                            .props(f"data-testid=site-{s.slug}")
                        ):
                            ui.icon("circle", size="14px").style(f"color: {SEVERITY_COLORS[worst or 'none']}")
                            with ui.column().classes("gap-0 grow"):
                                ui.label(s.name).classes("font-medium")
                                ui.label(f"{s.slug} · {s.devices} device{'' if s.devices == 1 else 's'}").classes(
                                    "text-xs fw-muted"
                                )
                            ui.label(f"worst: {worst}" if worst else "no open alarms").classes("text-sm fw-muted")

                site_list()
                with ui.row().classes("gap-3 text-xs fw-muted pt-2"):
                    for severity, color in SEVERITY_COLORS.items():
                        with ui.row().classes("items-center gap-1"):
                            ui.icon("circle", size="10px").style(f"color: {color}")
                            ui.label("no alarm" if severity == "none" else severity)

    async def reload() -> None:
        nonlocal data
        data = await _db(_load_overview)

    def render() -> None:
        cards.refresh()
        site_list.refresh()
        draw_markers()

    _subscribe(render, reload, request)
    return None


# --- alarms ---------------------------------------------------------------------------------------


@ui.page("/alarms")
async def alarms_page(request: Request, severity: str = "", site: str = "", kind: str = "") -> Any:
    """The open alarms; ``severity``, ``site`` and ``kind`` preset the filters (the Overview links here)."""
    session = await _signed_in(request)
    if session is None:
        return _to_signin(request)
    if not _may(session, "alarm.read"):
        return RedirectResponse("/", 303)
    view: _AlarmsView = await _db(_load_alarms)
    sites = await _db(site_places)
    may = _AlarmActions(
        acknowledge=_may(session, "alarm.acknowledge"),
        comment=_may(session, "alarm.comment"),
        silence=_may(session, "silence.write"),
    )
    severity_preset = [severity] if severity in SEVERITIES else []
    site_preset = site if any(s.slug == site for s in sites) else ""
    kind_preset = kind if kind in KIND_NAMES else ""
    chosen: dict[str, Any] = {
        "severity": severity_preset,
        "state": "open",
        "site": site_preset or None,
        "kind": kind_preset or None,
    }

    def shown() -> list[Alarm]:
        return [
            a
            for a in view.alarms
            if (not chosen["severity"] or a.severity in chosen["severity"])
            and (chosen["state"] == "open" or a.state == chosen["state"])
            and (chosen["site"] in (None, "") or a.site == chosen["site"])
            and (chosen["kind"] in (None, "") or a.kind == chosen["kind"])
        ]

    with frame(session, "Alarms", "/alarms"):
        subtitle = _page_heading("Open alarms", "")
        with ui.row().classes("w-full gap-3 items-center"):
            ui.select(
                list(SEVERITIES),
                multiple=True,
                value=severity_preset,
                label="Severity",
                on_change=lambda e: pick("severity", e.value),
            ).props("outlined dense clearable use-chips data-testid=filter-severity").classes("min-w-[220px]")
            ui.select(
                {"open": "Active and acknowledged", "active": "Active", "acknowledged": "Acknowledged"},
                value="open",
                label="State",
                on_change=lambda e: pick("state", e.value),
            ).props("outlined dense data-testid=filter-state").classes("min-w-[220px]")
            ui.select(
                {"": "All sites", **{s.slug: s.name for s in sites}},
                value=site_preset,
                label="Site",
                on_change=lambda e: pick("site", e.value),
            ).props("outlined dense data-testid=filter-site").classes("min-w-[200px]")
            ui.select(
                {"": "All kinds", **KIND_NAMES},
                value=kind_preset,
                label="Kind",
                on_change=lambda e: pick("kind", e.value),
            ).props("outlined dense data-testid=filter-kind").classes("min-w-[200px]")

        dialog = _ActionDialog()

        @ui.refreshable
        def alarm_list() -> None:
            rows = shown()
            subtitle.set_text(
                f"{len(rows)} shown of {len(view.alarms)} open · updates as they happen, no need to reload"
            )
            with ui.card().classes("fw-card w-full p-0").props("data-testid=alarm-list"):
                if not view.alarms:
                    _empty(
                        "check_circle",
                        "No open alarms",
                        "All quiet. An alarm appears here the moment a rule raises one; rules are applied "
                        "with `fieldwatch rules apply FILE` (docs/rules.md).",
                        "empty-alarms",
                    )
                    return
                if not rows:
                    _empty(
                        "filter_alt_off",
                        "No open alarm matches these filters",
                        "Clear a filter to see more.",
                        "empty-filter",
                    )
                    return
                for a in rows:
                    _alarm_row(a, may, view, dialog)

        alarm_list()

    def pick(key: str, value: Any) -> None:
        chosen[key] = value or ([] if key == "severity" else None if key in ("site", "kind") else "open")
        alarm_list.refresh()

    async def reload() -> None:
        nonlocal view
        view = await _db(_load_alarms)

    async def after_action(e: GenericEventArguments) -> None:
        # Comments and windows send no event: the page that made one redraws at once; other pages at their
        # next alarm event. (Acknowledging sends one: every page redraws.)
        if e.args.get("status") == 200:
            await reload()
            alarm_list.refresh()

    ui.on("fw_action_done", after_action)
    _subscribe(alarm_list.refresh, reload, request)
    return None


@dataclass(frozen=True)
class _AlarmActions:
    """What the signed-in role may do on the page (the server checks again: this only hides buttons)."""

    acknowledge: bool
    comment: bool
    silence: bool


@dataclass
class _AlarmsView:
    """What the Alarms page shows: the open alarms, their comments, and the windows running now."""

    alarms: list[Alarm]
    comments: dict[int, list[Comment]]
    windows: list[dict[str, Any]]  # active silences and maintenance windows, as rules.lifecycle.silence_rows

    def windows_of(self, a: Alarm) -> list[dict[str, Any]]:
        """The running windows an alarm of ``a``'s rule and device would be suppressed by (every target set
        on a window must match), maintenance first."""
        return sorted(
            (
                w
                for w in self.windows
                if w["device_id"] in (None, a.device_id)
                and w["rule_id"] in (None, a.rule_id)
                and w["site"] in (None, a.site)
            ),
            key=lambda w: (w["kind"] != "maintenance", w["ends_at"]),
        )


def _load_alarms(conn: psycopg.Connection) -> _AlarmsView:
    alarms = open_alarms(conn)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = silence_rows(conn, list_silences(conn, active_only=True))
    windows = [w for w in rows if w["starts_at"] <= now]  # not those planned for later
    return _AlarmsView(alarms, comments_of(conn, [a.id for a in alarms if a.kind == "equipment"]), windows)


def _post(path: str, what: str, body: dict[str, Any]) -> None:
    """POST ``body`` from the browser, with the session's cookie and CSRF token (``window.fwPost``): the
    server checks the action like any other; the answer comes back as ``fw_action_done``."""
    ui.run_javascript(f"window.fwPost({json.dumps(path)}, {json.dumps(what)}, {json.dumps(body)})")


class _ActionDialog:
    """One dialog per Alarms page for the actions that need words or an end time: comment, silence,
    maintenance. Opening it for an alarm redraws its body; Save posts through :func:`_post`."""

    def __init__(self) -> None:
        self.mode = "comment"
        self.alarm: Alarm | None = None
        with ui.dialog() as self.dialog, ui.card().classes("fw-card min-w-[380px] gap-3 p-6"):
            self.body = ui.refreshable(self._body)
            self.body()

    def open(self, mode: str, alarm: Alarm) -> None:
        self.mode, self.alarm = mode, alarm
        self.body.refresh()
        self.dialog.open()

    def _body(self) -> None:
        a = self.alarm
        if a is None:
            return
        where = f"{a.device_name} · {a.site} · rule “{a.rule_name}”"
        if self.mode == "comment":
            ui.label(f"Comment on alarm {a.id}").classes("text-lg font-semibold")
            ui.label(where).classes("text-sm fw-muted")
            text = ui.textarea("Comment", placeholder="What you saw or did; everyone on the alarm reads it").props(
                "outlined autogrow autofocus data-testid=comment-text"
            )
            text.classes("w-full")
            self._buttons("Add comment", "comment-save", lambda: self._comment(a, text.value or ""))
            return
        maintenance = self.mode == "maintenance"
        ui.label("Maintenance window" if maintenance else f"Silence alarm {a.id}").classes("text-lg font-semibold")
        ui.label(
            "Alarms opening in the window are held: no ticket, nobody dispatched; still open when it ends, "
            "they are released and ticketed."
            if maintenance
            else f"Alarms of rule “{a.rule_name}” on {a.device_name} opening before the end are held: no "
            "ticket, nobody dispatched. This alarm stays as it is."
        ).classes("text-sm fw-muted max-w-[460px]")
        on = None
        if maintenance:
            on = ui.radio(
                {"device": f"Device {a.device_name}", "site": f"The whole site {a.site}"}, value="device"
            ).props("data-testid=window-on")
        default_end = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
        until = ui.input("Until (UTC)", value=default_end).props(
            "type=datetime-local outlined data-testid=window-until"
        )
        reason = ui.input("Reason", placeholder="e.g. pump swap, sensor replaced").props(
            "outlined data-testid=window-reason"
        )
        until.classes("w-full")
        reason.classes("w-full")
        self._buttons(
            "Start maintenance" if maintenance else "Silence",
            "window-save",
            lambda: self._window(
                a, self.mode, on.value if on is not None else "rule_device", until.value, reason.value
            ),
        )

    def _buttons(self, label: str, testid: str, save: Callable[[], None]) -> None:
        with ui.row().classes("w-full justify-end gap-2"):
            ui.button("Cancel", on_click=self.dialog.close).props("flat no-caps data-testid=dialog-cancel")
            ui.button(label, on_click=save).props(f"unelevated no-caps data-testid={testid}")

    def _comment(self, a: Alarm, text: str) -> None:
        if not text.strip():
            ui.notify("Write the comment first.", type="warning")
            return
        _post(f"{ACTIONS}/alarms/{a.id}/comments", f"Comment added to alarm {a.id}", {"body": text})
        self.dialog.close()

    def _window(self, a: Alarm, kind: str, on: str, until: str | None, reason: str | None) -> None:
        try:
            ends = datetime.fromisoformat(until or "").replace(tzinfo=UTC)
        except ValueError:
            ui.notify("Give the end as a date and time (UTC).", type="warning")
            return
        if ends <= datetime.now(UTC):
            ui.notify("The end must be in the future (times are UTC).", type="warning")
            return
        what = f"{'Maintenance' if kind == 'maintenance' else 'Silence'} until {ends:%Y-%m-%d %H:%M} UTC"
        body = {"kind": kind, "alarm_id": a.id, "on": on, "ends_at": ends.isoformat(), "reason": reason or ""}
        _post(f"{ACTIONS}/silences", what, body)
        self.dialog.close()


def _rule_error_row(a: Alarm) -> None:
    """A rule that cannot evaluate a device: for the rule's owner, with what to do; nothing to acknowledge."""
    with (
        ui.row()
        .classes("fw-alarm-row w-full items-center gap-4 px-4 py-3 no-wrap max-md:flex-wrap")
        .props(f"data-testid={a.key} data-state={a.state} data-kind=rule_error")
    ):
        ui.badge("RULE ERROR", color=RULE_ERROR_COLOR).classes("w-[84px] justify-center py-1 text-[10px]")
        with ui.column().classes("gap-0 grow min-w-[240px]"):
            ui.label(f"Rule “{a.rule_name}” cannot evaluate {a.device_name}").classes("font-medium")
            ui.label(a.message).classes("text-sm").props("data-testid=reason")
            ui.label(a.hint or "").classes("text-sm fw-muted").props("data-testid=hint")
        with ui.column().classes("gap-0 items-end min-w-[200px]"):
            ui.label(f"for {a.owner or 'the rule owner'}").classes("text-sm font-medium").props("data-testid=owner")
            ui.label(f"since {_when(a.opened_at)}").classes("text-xs fw-muted")
            ui.label("no ticket: the rule, not the equipment").classes("text-xs fw-muted")
        ui.element("div").classes("w-[140px] max-md:hidden")


def _alarm_row(a: Alarm, may: _AlarmActions, view: _AlarmsView, dialog: _ActionDialog) -> None:
    if a.kind == "rule_error":
        _rule_error_row(a)
        return
    may_ack = may.acknowledge
    with (
        ui.row()
        .classes("fw-alarm-row w-full items-center gap-4 px-4 py-3 no-wrap max-md:flex-wrap")
        .props(f"data-testid=alarm-{a.id} data-state={a.state}")
    ):
        ui.badge(a.severity.upper(), color=SEVERITY_COLORS.get(a.severity, "#777")).classes(
            "w-[84px] justify-center py-1"
        )
        with ui.column().classes("gap-0 grow min-w-[240px]"):
            ui.label(a.message or a.rule_name).classes("font-medium")
            with ui.row().classes("gap-1 text-sm fw-muted items-baseline"):
                ui.link(a.device_name, f"/devices/{a.device_id}").props(f"data-testid=device-link-{a.id}")
                ui.label(f"· {a.site} · rule “{a.rule_name}” ({a.problem_code})")
            _alarm_notes(a, view)
            if may.comment or may.silence:
                with ui.row().classes("gap-1 pt-1"):
                    if may.comment:
                        ui.button(
                            "Comment", icon="chat_bubble_outline", on_click=lambda: dialog.open("comment", a)
                        ).props(f"flat dense no-caps size=sm data-testid=comment-{a.id}")
                    if may.silence:
                        ui.button(
                            "Silence", icon="notifications_off", on_click=lambda: dialog.open("silence", a)
                        ).props(f"flat dense no-caps size=sm data-testid=silence-{a.id}")
                        ui.button("Maintenance", icon="build", on_click=lambda: dialog.open("maintenance", a)).props(
                            f"flat dense no-caps size=sm data-testid=maintenance-{a.id}"
                        )
        with ui.column().classes("gap-0 items-end min-w-[200px]"):
            ui.label(STATE_NAMES.get(a.state, a.state)).classes(
                "text-sm font-medium " + ("text-negative" if a.state == "active" else "fw-muted")
            ).props("data-testid=state")
            by = f" by {a.acknowledged_by}" if a.acknowledged_by else ""
            ui.label(f"opened {_when(a.opened_at)}" if a.state == "active" else f"acknowledged{by}").classes(
                "text-xs fw-muted"
            )
        if may_ack and a.state == "active":
            what = json.dumps(f"Alarm {a.id} acknowledged")
            path = json.dumps(f"{ACTIONS}/alarms/{a.id}/acknowledge")
            ui.button("Acknowledge", icon="done").props(f"outline no-caps data-testid=ack-{a.id}").on(
                "click", js_handler=f"() => window.fwPost({path}, {what})"
            )
        else:
            ui.element("div").classes("w-[140px] max-md:hidden")


def _alarm_notes(a: Alarm, view: _AlarmsView) -> None:
    """Under an alarm: the windows holding its rule and device now, and its comments (oldest first)."""
    for w in view.windows_of(a):
        kind = "Maintenance" if w["kind"] == "maintenance" else "Silenced"
        target = f"site {w['site']}" if w["site"] and not w["device_id"] else "this device"
        if w["rule_id"] is not None and w["device_id"] is not None:
            target = "this rule on this device"
        why = f": {w['reason']}" if w["reason"] else ""
        with ui.row().classes("items-center gap-1 text-xs pt-1").props(f"data-testid=window-{a.id}-{w['id']}"):
            ui.icon("build" if w["kind"] == "maintenance" else "notifications_off", size="14px", color="warning")
            ui.label(
                f"{kind} ({target}) until {w['ends_at'].astimezone(UTC):%Y-%m-%d %H:%M} UTC by {w['created_by']}{why}"
            ).classes("text-warning")
    for c in view.comments.get(a.id, []):
        with ui.row().classes("items-baseline gap-1 text-sm pt-1 no-wrap").props(f"data-testid=alarm-comment-{c.id}"):
            ui.icon("chat_bubble_outline", size="14px").classes("fw-muted self-center")
            ui.label(f"{c.author} · {c.created_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC:").classes("fw-muted shrink-0")
            ui.label(c.body).classes("whitespace-pre-wrap")


# --- tickets --------------------------------------------------------------------------------------

TICKET_STATUS_NAMES = {
    "new": "New",
    "assigned": "Assigned",
    "en_route": "En route",
    "on_site": "On site",
    "resolved": "Resolved",
    "closed": "Closed",
    "cancelled": "Cancelled",
}
PRIORITY_COLORS = {1: "#c62828", 2: "#ef6c00", 3: "#5c8fbf", 4: "#78909c", 5: "#90a4ae"}


@ui.page("/tickets")
async def tickets_page(request: Request) -> Any:
    session = await _signed_in(request)
    if session is None:
        return _to_signin(request)
    decision = policy.decide(session.user.principal, "ticket.read")
    if not decision.allowed:
        return RedirectResponse("/", 303)
    visible = policy.visible(session.user.principal, decision)
    chosen = {"status": "open"}

    def load(conn: psycopg.Connection) -> list[TicketSummary]:
        return list(list_ticket_summaries(conn, visible=visible, limit=500).items)

    tickets: list[TicketSummary] = await _db(load)
    own = "" if visible.everything else " · only your own"

    with frame(session, "Tickets", "/tickets"):
        subtitle = _page_heading("Tickets", "")
        ui.select(
            {"open": "Open (new to on site)", "all": "All", **TICKET_STATUS_NAMES},
            value="open",
            label="Status",
            on_change=lambda e: pick(e.value),
        ).props("outlined dense data-testid=filter-status").classes("min-w-[220px]")

        @ui.refreshable
        def ticket_list() -> None:
            status = chosen["status"]
            rows = [
                t
                for t in tickets
                if status == "all" or (t.status in OPEN_STATUSES if status == "open" else t.status == status)
            ]
            subtitle.set_text(f"{len(rows)} shown of {len(tickets)}{own} · updates as they happen")
            with ui.card().classes("fw-card w-full p-0").props("data-testid=ticket-list"):
                if not rows:
                    _empty(
                        "assignment_turned_in",
                        "No tickets here" if tickets else "No tickets yet",
                        "Tickets open on their own from alarms (the ticketing service), or from work orders "
                        "(`POST /api/v1/workorders`).",
                        "empty-tickets",
                    )
                    return
                for t in rows:
                    _ticket_row(t)

        ticket_list()

    def pick(value: str | None) -> None:
        chosen["status"] = value or "open"
        ticket_list.refresh()

    async def reload() -> None:
        nonlocal tickets
        tickets = await _db(load)

    _subscribe(ticket_list.refresh, reload, request, TICKET_KINDS)
    return None


def _ticket_row(t: TicketSummary) -> None:
    with (
        ui.row()
        .classes("fw-alarm-row w-full items-center gap-4 px-4 py-3 no-wrap max-md:flex-wrap")
        .props(f"data-testid=ticket-{t.id} data-status={t.status}")
    ):
        ui.badge(f"P{t.priority}", color=PRIORITY_COLORS.get(t.priority, "#777")).classes(
            "w-[44px] justify-center py-1"
        )
        with ui.column().classes("gap-0 grow min-w-[240px]"):
            ui.link(f"#{t.id} {t.title}", f"/tickets/{t.id}").classes("font-medium text-inherit no-underline").props(
                f"data-testid=open-ticket-{t.id}"
            )
            ui.label(f"{t.device_name} · {t.site} · {t.problem_code}").classes("text-sm fw-muted")
        with ui.column().classes("gap-0 items-end min-w-[220px]"):
            ui.label(TICKET_STATUS_NAMES.get(t.status, t.status)).classes("text-sm font-medium").props(
                "data-testid=status"
            )
            who = t.assignment.technician_name if t.assignment is not None else None
            due = f" · due {t.due_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if t.due_at else ""
            # the reason reads "unassigned: lacks skill …" already: do not say "unassigned" twice
            reason = (t.unassigned_reason or "").removeprefix("unassigned: ").strip()
            why = f" ({reason})" if who is None and reason else ""
            ui.label(f"{who or 'unassigned'}{why}{due}").classes("text-xs fw-muted")
