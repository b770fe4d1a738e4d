"""The console's Gateways page (``/gateways``), for field engineers: the fleet of gateways, live.

Per gateway: online/offline and since when, last seen, sequence gaps, the disk buffer (depth and
oldest entry), the devices behind it with their state and profile version, and what became of the
last remote configuration (applied, rejected, rolled back, with the error) — all read through
:func:`ingest.gateway_fleet.gateway_views`. The page redraws on the ``gateway_status`` and
``gateway_config`` events ingest publishes when it stores a birth, death, heartbeat verdict or
report, so a gateway whose process dies turns offline on an open page without reload.

Roles that may configure gateways (``gateway.configure``) get **Push configuration**: an editor,
a check on the server with the gateway's own validation (:mod:`.gateway_config`), the diff against
the last pushed document, then a confirm that POSTs it (session, CSRF, policy) — and the outcome
arrives on the page when the gateway reports it.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import ui

from fwcore.events import GatewayBufferEvent, GatewayConfigEvent, GatewayStatusEvent
from ingest.gateway_fleet import GatewayView, gateway_views

from . import gateway_config
from .pages import _db, _empty, _may, _page_heading, _signed_in, _subscribe, _to_signin, _when, frame
from .session import ACTIONS

#: What changes the gateways page.
GATEWAY_KINDS: tuple[type, ...] = (GatewayStatusEvent, GatewayConfigEvent, GatewayBufferEvent)
STATUS_COLORS = {"online": "positive", "offline": "negative", "unknown": "grey-6"}
OUTCOME_NAMES = {"applied": "Applied", "rejected": "Rejected", "rolled_back": "Rolled back"}
OUTCOME_COLORS = {"applied": "positive", "rejected": "negative", "rolled_back": "warning"}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    return f"{s} s" if s < 120 else f"{s // 60} min" if s < 7200 else f"{s // 3600} h"


def _fact(label: str, value: str, testid: str) -> None:
    with ui.column().classes("gap-0 min-w-[120px]"):
        ui.label(label).classes("text-xs fw-muted uppercase tracking-wide")
        ui.label(value).classes("text-sm font-medium").props(f"data-testid={testid}")


def _gateway_card(g: GatewayView, may_push: bool, open_editor: Any) -> None:
    with (
        ui.card()
        .classes("fw-card w-full p-4 gap-3")
        .props(f"data-testid=gateway-{g.slug} data-status={g.status} data-id={g.id}")
    ):
        with ui.row().classes("w-full items-center gap-3 no-wrap max-md:flex-wrap"):
            ui.icon("router", size="28px", color=STATUS_COLORS.get(g.status, "grey-6"))
            with ui.column().classes("gap-0 grow min-w-[200px]"):
                ui.label(g.name or g.slug).classes("text-lg font-semibold")
                ui.label(f"{g.slug} · {g.site_name} ({g.site})").classes("text-sm fw-muted")
            with ui.column().classes("gap-0 items-end"):
                ui.badge(g.status.upper(), color=STATUS_COLORS.get(g.status, "grey-6")).classes("px-2 py-1").props(
                    "data-testid=status"
                )
                since = f"since {_when(g.status_at)}" if g.status_at else "not heard from yet"
                reason = f" · {g.status_reason}" if g.status_reason else ""
                ui.label(since + reason).classes("text-xs fw-muted").props("data-testid=since")
            if may_push:
                ui.button("Push configuration", icon="upload_file", on_click=lambda g=g: open_editor(g)).props(
                    f"outline no-caps data-testid=push-{g.slug}"
                )
        with ui.row().classes("w-full gap-6"):
            _fact("Last seen", _when(g.last_seen) if g.last_seen else "never", "last-seen")
            _fact("Last sequence", "—" if g.last_seq is None else str(g.last_seq), "last-seq")
            _fact("Sequence gaps", str(g.seq_gaps), "seq-gaps")
            depth = "—" if g.buffer_depth is None else f"{g.buffer_depth} batch{'' if g.buffer_depth == 1 else 'es'}"
            _fact("Disk buffer", depth, "buffer-depth")
            _fact("Oldest unsent", _age(g.buffer_oldest_age_s) if g.buffer_depth else "—", "buffer-oldest")
            _fact("Config running", g.config_version or "—", "config-version")
        last = g.last_config
        if last is not None:
            with (
                ui.row()
                .classes("w-full items-start gap-2 p-2 rounded max-md:flex-wrap")
                .style("background: rgba(127,127,127,.12)")  # readable in light and dark
                .props(f"data-testid=config-outcome data-outcome={last.outcome} data-version={last.version}")
            ):
                ui.badge(OUTCOME_NAMES.get(last.outcome, last.outcome), color=OUTCOME_COLORS.get(last.outcome, "grey"))
                touched = ", ".join(
                    f"{what} {', '.join(names)}"
                    for what, names in (("added", last.added), ("removed", last.removed), ("changed", last.changed))
                    if names
                )
                when = f" · {_when(last.at)}" if last.at else ""
                ui.label(f"config {last.version}{when}" + (f" · {touched}" if touched else "")).classes("text-sm")
                if last.error:
                    ui.label(last.error).classes("text-sm text-negative w-full").props("data-testid=config-error")
        elif g.pushed_version:
            ui.label(
                f"config {g.pushed_version} pushed {_when(g.pushed_at) if g.pushed_at else ''}; waiting for "
                "the gateway to report it (it applies it when it is online)"
            ).classes("text-sm fw-muted")
        with (
            ui.expansion(f"Devices ({len(g.devices)})", icon="precision_manufacturing")
            .classes("w-full")
            .props("dense data-testid=devices")
        ):
            if not g.devices:
                ui.label(
                    "No registered device reads through this gateway. Register devices with the API "
                    "(`POST /api/v1/devices`), or accept the ones it announced (Discovered devices)."
                ).classes("text-sm fw-muted")
            for d in g.devices:
                with ui.row().classes("w-full items-center gap-3 py-1").props(f"data-testid=device-{d.key}"):
                    ui.icon("circle", size="10px", color=STATUS_COLORS.get(d.state, "grey-6"))
                    ui.label(d.name).classes("font-medium grow")
                    ui.label(d.profile or "inline tags").classes("text-xs fw-muted")
                    ui.label(d.state).classes("text-sm").props("data-testid=device-state")
            if g.unregistered:
                ui.label(f"Announced but not registered: {', '.join(g.unregistered)}").classes("text-xs fw-muted")


@ui.page("/gateways")
async def gateways_page(request: Request) -> Any:
    session = await _signed_in(request)
    if session is None:
        return _to_signin(request)
    if not _may(session, "gateway.read"):
        return RedirectResponse("/", 303)
    gateways: list[GatewayView] = await _db(gateway_views)
    may_push = _may(session, "gateway.configure")
    editor = gateway_config.ConfigEditor(ACTIONS) if may_push else None

    with frame(session, "Gateways", "/gateways"):
        subtitle = _page_heading("Gateways", "")

        @ui.refreshable
        def gateway_list() -> None:
            offline = sum(1 for g in gateways if g.status == "offline")
            subtitle.set_text(
                f"{len(gateways)} gateways · {offline} offline · updates as they happen, no need to reload"
            )
            if not gateways:
                with ui.card().classes("fw-card w-full"):
                    _empty(
                        "router",
                        "No gateways yet",
                        "Add one with `fieldwatch fleet gateway add`, then `fieldwatch gateway provision` gives it "
                        "broker credentials and a config (docs/gateway.md).",
                        "empty-gateways",
                    )
                return
            with ui.column().classes("w-full gap-3").props("data-testid=gateway-list"):
                for g in gateways:
                    _gateway_card(g, may_push, editor.open if editor is not None else None)

        gateway_list()
        if editor is not None:
            editor.build()

    async def reload() -> None:
        nonlocal gateways
        gateways = await _db(gateway_views)

    _subscribe(gateway_list.refresh, reload, request, GATEWAY_KINDS)
    return None


def js_string(value: str) -> str:
    """``value`` as a JavaScript string literal (JSON is a subset)."""
    return json.dumps(value)
