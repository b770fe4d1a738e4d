"""The console's ticket page (``/tickets/{id}``): one job, everything about it, live.

Its timeline (status history with who and where, notes, parts used, time on site), the alarms
attached to it, the dispatch explanation (why this technician, or why nobody), and the photos from
the field with where and when they were taken — read through ticketing's and rules' own functions,
the ones the API serves. The page redraws on the ticket events (and ``ticket_note``).

Who may look is decided like the API's ``GET /api/v1/tickets/{id}``: ``ticket.read`` on the
ticket's facts (:func:`ticketing.scope.ticket_facts`), so a technician gets their own tickets and a
403 for anyone else's; an unknown ticket is a 404. Photos are served by :data:`PHOTO` with the same
check, so an image URL is no way around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import HTMLResponse
from nicegui import ui

from fwcore import policy
from fwcore.events import TicketNoteEvent
from fwcore.users import UserSession
from rules.alarms import Alarm, get_alarm
from ticketing.errors import NotFound
from ticketing.evidence import Photo, list_photos, photo_bytes
from ticketing.scope import ticket_facts
from ticketing.tickets import TicketExplanation, TicketSummary, get_ticket, get_ticket_summary, ticket_explanation
from ticketing.timeline import Timeline, ticket_timeline

from .live import TICKET_KINDS
from .pages import (
    PRIORITY_COLORS,
    SEVERITY_COLORS,
    STATE_NAMES,
    TICKET_STATUS_NAMES,
    _db,
    _page_heading,
    _signed_in,
    _subscribe,
    _to_signin,
    _when,
    frame,
)
from .session import ConnDep, current_session

router = APIRouter(include_in_schema=False)
#: A ticket photo's bytes, for the page's <img> (session cookie, ``ticket.read`` on the ticket).
PHOTO = "/console/tickets/{ticket_id}/photos/{photo_id}"
#: What changes a ticket page: the ticket events, and system notes.
KINDS: tuple[type, ...] = (*TICKET_KINDS, TicketNoteEvent)


def may_read(conn: psycopg.Connection, session: UserSession, ticket_id: int) -> policy.Decision:
    """``ticket.read`` on this ticket; raises :class:`NotFound` when there is no such ticket."""
    principal = session.user.principal
    decision = policy.decide(principal, "ticket.read")
    if decision.allowed and decision.scope is not policy.Scope.ALL:
        decision = policy.decide(principal, "ticket.read", ticket_facts(conn, ticket_id))
    elif decision.allowed:
        ticket_facts(conn, ticket_id)  # NotFound for an unknown ticket, whoever asks
    return decision


@router.get(PHOTO)
def photo(
    ticket_id: int, photo_id: int, conn: ConnDep, session: Annotated[UserSession, Depends(current_session)]
) -> Response:
    """One photo of a ticket the signed-in person may read."""
    try:
        decision = may_read(conn, session, ticket_id)
        if not decision.allowed:
            raise HTTPException(403, decision.reason)
        data, content_type = photo_bytes(conn, ticket_id, photo_id)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return Response(data, media_type=content_type, headers={"Cache-Control": "private, max-age=3600"})


@dataclass
class _TicketData:
    ticket: TicketSummary
    timeline: Timeline
    explanation: TicketExplanation
    alarms: list[Alarm]
    photos: list[Photo]


def _load(conn: psycopg.Connection, ticket_id: int) -> _TicketData:
    detail = get_ticket(conn, ticket_id)
    if detail is None:
        raise NotFound("ticket", ticket_id)
    return _TicketData(
        get_ticket_summary(conn, ticket_id),
        ticket_timeline(conn, ticket_id),
        ticket_explanation(conn, ticket_id),
        [get_alarm(conn, a) for a in detail.alarm_ids],
        list_photos(conn, ticket_id),
    )


def _refusal(status: int, title: str, hint: str) -> HTMLResponse:
    body = (
        f"<!doctype html><title>{title} · fieldwatch</title>"
        '<body style="font-family: sans-serif; max-width: 40rem; margin: 4rem auto">'
        f"<h1>{title}</h1><p>{hint}</p><p><a href='/tickets'>Back to the tickets</a></p>"
    )
    return HTMLResponse(body, status_code=status)


def _place(lat: float | None, lon: float | None) -> str:
    return f"{lat:.5f}, {lon:.5f}" if lat is not None and lon is not None else "no position"


def _section(title: str, icon: str, testid: str) -> Any:
    card = ui.card().classes("fw-card w-full p-4 gap-2").props(f"data-testid={testid}")
    with card, ui.row().classes("items-center gap-2"):
        ui.icon(icon, color="primary")
        ui.label(title).classes("text-lg font-semibold")
    return card


def _summary(t: TicketSummary) -> None:
    with ui.card().classes("fw-card w-full p-4 gap-2").props(f"data-testid=ticket-summary data-status={t.status}"):
        with ui.row().classes("w-full items-center gap-3"):
            ui.badge(f"P{t.priority}", color=PRIORITY_COLORS.get(t.priority, "#777")).classes("px-2 py-1")
            ui.label(TICKET_STATUS_NAMES.get(t.status, t.status)).classes("text-lg font-semibold").props(
                "data-testid=status"
            )
            ui.space()
            if t.due_at is not None:
                left = t.sla_remaining_s
                due = (
                    f"due {_when(t.due_at)}"
                    if left is None
                    else f"due in {int(left // 60)} min"
                    if left >= 0
                    else f"{int(-left // 60)} min late"
                )
                ui.label(due).classes("text-sm " + ("text-negative" if t.sla_state == "breached" else "fw-muted"))
        ui.label(f"{t.device_name} · {t.site} · {t.client} · {t.problem_code}").classes("fw-muted")
        who = t.assignment.technician_name if t.assignment else "nobody yet"
        ui.label(f"Held by {who} · opened {_when(t.created_at)} · source: {t.source}").classes("text-sm")


def _timeline(tl: Timeline) -> None:
    with _section("Timeline", "timeline", "ticket-timeline"):
        events: list[tuple[Any, str, str]] = [
            (
                h.at,
                TICKET_STATUS_NAMES.get(h.status, h.status) + (f" — by {h.actor}" if h.actor else ""),
                _place(h.lat, h.lon),
            )
            for h in tl.history
        ]
        events += [(n["at"], f"Note by {n['author']}", n["body"]) for n in tl.notes]
        if not events:
            ui.label("Nothing has happened to this ticket yet.").classes("fw-muted")
        with ui.column().classes("gap-0 w-full"):
            for at, what, detail in sorted(events, key=lambda e: e[0]):
                with ui.row().classes("w-full gap-3 py-1 fw-alarm-row no-wrap").props("data-testid=timeline-entry"):
                    ui.label(f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC").classes(
                        "text-xs fw-muted w-[170px] shrink-0"
                    )
                    with ui.column().classes("gap-0"):
                        ui.label(what).classes("text-sm font-medium")
                        ui.label(detail).classes("text-xs fw-muted")
        if tl.time_on_site_minutes is not None:
            ui.label(f"Time on site: {tl.time_on_site_minutes:.0f} min").classes("text-sm")
        if tl.failure_code:
            ui.label(f"Failure code: {tl.failure_code}").classes("text-sm")


def _parts(tl: Timeline) -> None:
    with _section("Parts used", "build", "ticket-parts"):
        if not tl.parts_used:
            ui.label(
                "No parts recorded. The technician adds them when closing the job (the field app or "
                "`POST /api/v1/tickets/{id}/status`)."
            ).classes("text-sm fw-muted")
        for p in tl.parts_used:
            with ui.row().classes("gap-3 items-center").props("data-testid=part"):
                ui.label(f"{p['quantity']} × {p['part']}").classes("font-medium")
                ui.label(f"{p['at'].astimezone(UTC):%Y-%m-%d %H:%M} UTC").classes("text-xs fw-muted")


def _alarms(alarms: list[Alarm]) -> None:
    with _section("Alarms", "notifications_active", "ticket-alarms"):
        if not alarms:
            ui.label("No alarm is attached: this ticket came from a work order or a maintenance plan.").classes(
                "text-sm fw-muted"
            )
        for a in alarms:
            with ui.row().classes("w-full items-center gap-3 py-1 fw-alarm-row").props(f"data-testid=alarm-{a.id}"):
                ui.badge(a.severity.upper(), color=SEVERITY_COLORS.get(a.severity, "#777")).classes(
                    "w-[84px] justify-center"
                )
                with ui.column().classes("gap-0 grow"):
                    ui.label(a.message or a.rule_name).classes("font-medium")
                    value = f" · value {a.trigger_value:g}" if a.trigger_value is not None else ""
                    ui.label(f"rule “{a.rule_name}” ({a.problem_code}){value}").classes("text-xs fw-muted")
                state = "Cleared" if a.state == "cleared" else STATE_NAMES.get(a.state, a.state)
                ui.label(f"{state} · opened {_when(a.opened_at)}").classes("text-xs fw-muted")


def _explanation(e: TicketExplanation) -> None:
    with _section("Why this technician", "psychology", "ticket-explanation"):
        if e.technician_name:
            ui.label(f"Assigned to {e.technician_name}").classes("font-medium")
        else:
            ui.label("Not assigned").classes("font-medium text-negative")
        reason = (e.reason or "").removeprefix("unassigned: ")  # the heading already says so
        if reason:
            ui.label(reason).classes("text-sm").props("data-testid=explanation-reason")
        for blocker in e.unassigned_blockers:
            if blocker not in reason:  # the reason often is the one blocker: say it once
                ui.label(f"• {blocker}").classes("text-sm")
        text = e.explanation.get("text")
        if isinstance(text, str) and text:
            ui.label(text).classes("text-sm fw-muted")
        shown = {
            k: v for k, v in e.explanation.items() if k != "text" and v is not None and not isinstance(v, dict | list)
        }
        if shown:
            with ui.row().classes("gap-4 flex-wrap"):
                for k, v in shown.items():
                    with ui.column().classes("gap-0"):
                        ui.label(k.replace("_", " ")).classes("text-xs fw-muted uppercase")
                        ui.label(f"{v:.1f}" if isinstance(v, float) else str(v)).classes("text-sm")


def _photos(ticket_id: int, photos: list[Photo]) -> None:
    with _section("Photos", "photo_camera", "ticket-photos"):
        if not photos:
            ui.label(
                "No photos yet. Technicians upload them from the field "
                "(`POST /api/v1/tickets/{id}/photos` with the image as the body)."
            ).classes("text-sm fw-muted")
        with ui.row().classes("gap-4 flex-wrap"):
            for p in photos:
                with ui.card().classes("p-2 gap-1 w-[220px]").props(f"data-testid=photo-{p.id}"):
                    ui.image(PHOTO.format(ticket_id=ticket_id, photo_id=p.id)).classes("w-full h-[140px] rounded")
                    ui.label(f"taken {p.taken_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC").classes("text-xs").props(
                        "data-testid=taken"
                    )
                    ui.label(f"at {_place(p.lat, p.lon)}").classes("text-xs").props("data-testid=where")
                    ui.label(f"by {p.uploaded_by}").classes("text-xs fw-muted")


@ui.page("/tickets/{ticket_id}")
async def ticket_page(request: Request, ticket_id: int) -> Any:
    session = await _signed_in(request)
    if session is None:
        return _to_signin(request)
    try:
        decision = await _db(may_read, session, ticket_id)
    except NotFound:
        return _refusal(404, f"No ticket {ticket_id}", "It may have been a typo in the address. Find it in the list.")
    if not decision.allowed:
        return _refusal(403, f"Ticket {ticket_id} is not yours to see", decision.reason)
    data: _TicketData = await _db(_load, ticket_id)

    with frame(session, f"Ticket #{ticket_id}", "/tickets"):
        heading = _page_heading(f"#{ticket_id} {data.ticket.title}", "updates as they happen, no need to reload")
        heading.props("data-testid=ticket-heading")

        @ui.refreshable
        def body() -> None:
            _summary(data.ticket)
            with ui.row().classes("w-full gap-4 items-start no-wrap max-lg:flex-wrap"):
                with ui.column().classes("grow gap-4 min-w-[320px]"):
                    _timeline(data.timeline)
                    _photos(ticket_id, data.photos)
                with ui.column().classes("w-full lg:w-[420px] shrink-0 gap-4"):
                    _alarms(data.alarms)
                    _explanation(data.explanation)
                    _parts(data.timeline)

        body()

    async def reload() -> None:
        nonlocal data
        data = await _db(_load, ticket_id)

    _subscribe(body.refresh, reload, request, KINDS)
    return None
