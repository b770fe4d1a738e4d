"""The database event channel ``fw_events``: one typed model per kind, one publish, one listener.

Services tell each other about committed changes with PostgreSQL ``LISTEN/NOTIFY``. A sender
calls :func:`publish` *inside* the transaction that made the change: PostgreSQL delivers the
notification only when that transaction commits, and never for one that rolled back, so no event
exists for a state nobody can read. Events carry ids, not bodies (a NOTIFY payload must stay under
:data:`MAX_PAYLOAD_BYTES`); a consumer reads the rows it needs. ``docs/contract.md`` ("Database
events") is the prose twin of this module: the kinds, their fields, who sends and who consumes.

Compatibility rule (there is no version field; the payload keys are the contract):

* adding a kind, or an optional field (default ``None``, absent from the JSON when unset), is
  compatible: listeners ignore fields they do not know, and count a kind they do not know as a bad
  payload without stopping;
* renaming or removing a field, making an optional field required, or changing a field's type or
  meaning is not: add a new kind instead and retire the old one once no listener reads it.

Validation is strict (an id sent as ``"5"`` is refused, not coerced), so a sender that drifts from
the model fails in its own transaction, where a test sees it, rather than in every listener.

Receiving: :class:`EventListener` holds handlers per kind; :meth:`EventListener.handle` parses one
payload and calls them — pure, with no I/O, so a thread polling a psycopg connection
(:meth:`EventListener.poll`, the ticketing service) and an asyncio server reading
``AsyncConnection.notifies()`` (:meth:`EventListener.alisten`, the web console) share it. A bad
payload is logged and counted, a handler that raises is logged with its event and counted, and the
listener goes on with the next notification either way.

This is the foundation floor: pydantic only. psycopg is needed only by whoever holds the
connection, so this module imports on an edge install without a database driver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, TypeAdapter, ValidationError

if TYPE_CHECKING:
    import asyncio

    import psycopg

log = logging.getLogger(__name__)

CHANNEL = "fw_events"
#: PostgreSQL refuses a NOTIFY payload of this many bytes or more ("payload string too long").
MAX_PAYLOAD_BYTES = 8000
_LISTEN = "LISTEN fw_events"
_NOTIFY = "SELECT pg_notify(%s, %s)"
_NOTIFY_MANY = "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) WITH ORDINALITY AS u(p, n) ORDER BY n"
_SHOWN = 200  # characters of a bad payload quoted in errors and logs


class EventError(ValueError):
    """A payload is not a valid ``fw_events`` event, or an event is too large to send."""


# --- the models -----------------------------------------------------------------------------------

#: A timestamp sent as Python's ``isoformat()`` (``…+00:00``), as the senders always have.
IsoDatetime = Annotated[AwareDatetime, PlainSerializer(datetime.isoformat, return_type=str)]


class EventBase(BaseModel):
    """Fields common to every kind; ``type`` names the kind and comes first in the JSON."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore", populate_by_name=True)

    type: str


class _AlarmIds(EventBase):
    alarm_id: int
    device_id: int
    rule_id: int


class AlarmOpenedEvent(_AlarmIds):
    """An alarm opened and is visible: ticketing tickets it. ``released``: it was suppressed and its
    reason to stay quiet ended (a silence over, a parent alarm cleared) — a late opening."""

    type: Literal["alarm_opened"] = "alarm_opened"
    released: bool | None = None


class AlarmSuppressedEvent(_AlarmIds):
    """An alarm opened but is hidden (``maintenance:ID``, ``silence:ID``, ``parent:ALARM``,
    ``flapping:ALARM``); no ticket. If released later, an ``alarm_opened`` follows."""

    type: Literal["alarm_suppressed"] = "alarm_suppressed"
    suppressed_by: str


class AlarmClearedEvent(_AlarmIds):
    """A visible alarm cleared (its condition ended, or a latched one was acknowledged)."""

    type: Literal["alarm_cleared"] = "alarm_cleared"


class AlarmAcknowledgedEvent(_AlarmIds):
    """Someone acknowledged an active alarm (``by``: who); the console's alarm lists update."""

    type: Literal["alarm_acknowledged"] = "alarm_acknowledged"
    by: str


class AlarmSeverityChangedEvent(_AlarmIds):
    """A visible open alarm moved to another severity step; read the alarm for the new one."""

    type: Literal["alarm_severity_changed"] = "alarm_severity_changed"


class TicketCreatedEvent(EventBase):
    """A ticket was opened: from an alarm (``alarm_id`` set), a work order or a maintenance plan."""

    type: Literal["ticket_created"] = "ticket_created"
    ticket_id: int
    alarm_id: int | None = None


class TicketUpdatedEvent(EventBase):
    """Another alarm attached to an open ticket."""

    type: Literal["ticket_updated"] = "ticket_updated"
    ticket_id: int
    alarm_id: int


class TicketAssignedEvent(EventBase):
    """A ticket got a technician: by the optimizer, or by a dispatcher (``by`` and ``override`` set)."""

    type: Literal["ticket_assigned"] = "ticket_assigned"
    ticket_id: int
    technician_id: int
    by: str | None = None
    override: bool | None = None


class TicketUnassignedEvent(EventBase):
    """A ticket lost its technician to a more urgent one (``bumped_by``)."""

    type: Literal["ticket_unassigned"] = "ticket_unassigned"
    ticket_id: int
    bumped_by: int


class TicketReassignedEvent(EventBase):
    """The day's re-optimisation moved a ticket to another route; read the assignment for whose."""

    type: Literal["ticket_reassigned"] = "ticket_reassigned"
    ticket_id: int


class TicketStatusEvent(EventBase):
    """A ticket moved along its lifecycle (``new``, ``assigned``, ``en_route``, ``on_site``,
    ``resolved``, ``closed``, ``cancelled``). ``from`` is a Python keyword: the field is
    ``from_status`` in code and ``from`` in the JSON."""

    type: Literal["ticket_status"] = "ticket_status"
    ticket_id: int
    status: str
    from_status: str = Field(alias="from")
    by: str | None = None
    reason: str | None = None


class TicketNoteEvent(EventBase):
    """A note was added to a ticket by the system (``reason`` says why, e.g. ``alarm_cleared``)."""

    type: Literal["ticket_note"] = "ticket_note"
    ticket_id: int
    reason: str


class SlaBreachedEvent(EventBase):
    """A ticket missed an SLA target (recorded once per ticket and kind)."""

    type: Literal["sla_breached"] = "sla_breached"
    ticket_id: int
    kind: Literal["response", "resolution"]


class SlaAtRiskEvent(EventBase):
    """A ticket is predicted to miss its response target (``due_at``); escalated once."""

    type: Literal["sla_at_risk"] = "sla_at_risk"
    ticket_id: int
    due_at: IsoDatetime


class _RuleErrorIds(EventBase):
    rule_error_id: int
    rule_id: int
    device_id: int


class RuleErrorOpenedEvent(_RuleErrorIds):
    """A rule cannot evaluate a device (e.g. an attribute its threshold needs is missing or not a number):
    a "rule error" for the rule's owner. Not an equipment alarm: ticketing ignores it."""

    type: Literal["rule_error_opened"] = "rule_error_opened"


class RuleErrorClearedEvent(_RuleErrorIds):
    """The device is evaluated by the rule again."""

    type: Literal["rule_error_cleared"] = "rule_error_cleared"


class GatewayStatusEvent(EventBase):
    """Ingest stored a gateway's status: a birth or death, a heartbeat verdict, or a full status with its
    devices, profiles and config outcome (``status``: online or offline). The console's Gateways page."""

    type: Literal["gateway_status"] = "gateway_status"
    gateway_id: int
    status: str


class GatewayConfigEvent(EventBase):
    """A gateway reported the outcome of a remote config (``applied``, ``rejected``, ``rolled_back``),
    or a config was pushed to it (``pushed``); read ``gateways.report`` / ``gateway_configs`` for the rest."""

    type: Literal["gateway_config"] = "gateway_config"
    gateway_id: int
    version: str | None
    outcome: str


class GatewayBufferEvent(EventBase):
    """Ingest stored new disk-buffer figures (depth, oldest unsent entry) that gateways' health messages
    reported; read ``gateways.buffer_depth`` / ``buffer_oldest_age_s``. Sent only when a figure changed."""

    type: Literal["gateway_buffer"] = "gateway_buffer"
    gateway_ids: list[int]


class AlarmCommentedEvent(EventBase):
    """Someone commented on an alarm (API or console); read ``alarm_comments`` for the words."""

    type: Literal["alarm_commented"] = "alarm_commented"
    alarm_id: int
    device_id: int
    comment_id: int


class SilenceCreatedEvent(EventBase):
    """A silence or maintenance window was created (``kind``); ``device_id`` when it names one device."""

    type: Literal["silence_created"] = "silence_created"
    silence_id: int
    kind: str
    device_id: int | None = None


class TicketPhotoEvent(EventBase):
    """A photo was attached to a ticket as evidence; read ``ticket_photos`` for it."""

    type: Literal["ticket_photo_added"] = "ticket_photo_added"
    ticket_id: int
    photo_id: int


#: Most devices a ``telemetry_stored`` event names; past it the event names none ("many: refresh all").
MAX_TELEMETRY_DEVICE_IDS = 200


class TelemetryStoredEvent(EventBase):
    """Ingest committed readings (one event per write transaction) of ``device_ids`` — or of more than
    :data:`MAX_TELEMETRY_DEVICE_IDS` devices when ``None``. The console's Device page redraws its latest
    values from it. Ids only, as every event: the readings are read from ``telemetry``."""

    type: Literal["telemetry_stored"] = "telemetry_stored"
    device_ids: list[int] | None = None


Event = Annotated[
    AlarmOpenedEvent
    | AlarmSuppressedEvent
    | AlarmClearedEvent
    | AlarmSeverityChangedEvent
    | AlarmAcknowledgedEvent
    | TicketCreatedEvent
    | TicketUpdatedEvent
    | TicketAssignedEvent
    | TicketUnassignedEvent
    | TicketReassignedEvent
    | TicketStatusEvent
    | TicketNoteEvent
    | SlaBreachedEvent
    | SlaAtRiskEvent
    | RuleErrorOpenedEvent
    | RuleErrorClearedEvent
    | GatewayStatusEvent
    | GatewayConfigEvent
    | TelemetryStoredEvent
    | GatewayBufferEvent
    | AlarmCommentedEvent
    | SilenceCreatedEvent
    | TicketPhotoEvent,
    Field(discriminator="type"),
]
"""Any ``fw_events`` event; ``type`` picks the model."""

_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
#: kind (the ``type`` value) → its model, in the order of :data:`Event`.
MODELS: dict[str, type[EventBase]] = {m.model_fields["type"].default: m for m in get_args(get_args(Event)[0])}
KINDS: tuple[str, ...] = tuple(MODELS)


# --- the wire form --------------------------------------------------------------------------------


def encode(event: EventBase) -> str:
    """The NOTIFY payload of ``event``: compact JSON, optional fields left out when unset.

    Raises :class:`EventError` when it would reach :data:`MAX_PAYLOAD_BYTES` — PostgreSQL would
    refuse it and abort the sender's transaction; send ids and let consumers read the rows.
    """
    text = event.model_dump_json(by_alias=True, exclude_none=True)
    # A character is at most 4 UTF-8 bytes: short payloads (every real one) skip the encode.
    if len(text) * 4 >= MAX_PAYLOAD_BYTES and len(text.encode()) >= MAX_PAYLOAD_BYTES:
        raise EventError(
            f"{event.type} event is {len(text.encode())} bytes; NOTIFY payloads must be under "
            f"{MAX_PAYLOAD_BYTES} bytes (send ids, not bodies): {text[:_SHOWN]!r}…"
        )
    return text


def parse(payload: str | bytes) -> Event:
    """The event in a NOTIFY payload; :class:`EventError` says what is wrong with a bad one."""
    try:
        return _ADAPTER.validate_json(payload)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        shown = payload[:_SHOWN] if isinstance(payload, str) else payload[:_SHOWN].decode(errors="replace")
        raise EventError(f"bad {CHANNEL} payload ({problems}): {shown!r}") from None


def _problem(error: Any) -> str:
    """One validation error in words: an unknown or missing ``type`` plainly, else ``kind.field: message``."""
    if error["type"] == "union_tag_invalid":
        return f"unknown type {error['ctx']['tag']!r}"
    if error["type"] == "union_tag_not_found":
        return "no 'type' field"
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


# --- sending --------------------------------------------------------------------------------------


def publish(conn: psycopg.Connection[Any], event: EventBase) -> None:
    """Send ``event`` on :data:`CHANNEL`; call it inside the transaction that made the change.

    One statement, no extra round trip. Database errors are the caller's (they belong to its
    transaction and its retry loop); an event too large raises :class:`EventError` before anything
    is sent, leaving the transaction usable.
    """
    conn.execute(_NOTIFY, (CHANNEL, encode(event)))


def publish_all(conn: psycopg.Connection[Any], events: Sequence[EventBase]) -> None:
    """Send ``events`` in order with ONE statement (the rule evaluator's hot path); nothing when empty.

    Like NOTIFY itself, PostgreSQL folds identical payloads sent in one transaction into one.
    """
    if len(events) == 1:
        publish(conn, events[0])
    elif events:
        conn.execute(_NOTIFY_MANY, (CHANNEL, [encode(e) for e in events]))


# --- receiving ------------------------------------------------------------------------------------

E = TypeVar("E", bound=EventBase)
Handler = Callable[[Any], object]


class EventListener:
    """Parses ``fw_events`` payloads and calls the handlers registered for their kind.

    Handlers are plain callables run in the listener's thread (or event loop: keep them short
    there, e.g. put the event on a queue). Kinds without a handler are parsed (so bad payloads are
    still counted) and dropped. Counters, for metrics and tests:

    * ``delivered`` — valid events received (handled or not);
    * ``bad_payloads`` — payloads that are not a valid event (logged at WARNING);
    * ``handler_errors`` — handler calls that raised (logged with the event and the traceback).
    """

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}
        self._every: list[Handler] = []
        self.delivered = 0
        self.bad_payloads = 0
        self.handler_errors = 0

    def on(self, kind: type[E], handler: Callable[[E], object]) -> None:
        """Call ``handler(event)`` for every event of model ``kind`` (e.g. ``AlarmOpenedEvent``)."""
        if kind not in MODELS.values():
            names = ", ".join(m.__name__ for m in MODELS.values())
            raise TypeError(f"{kind!r} is not an {CHANNEL} model; one of {names}")
        self._handlers.setdefault(kind.model_fields["type"].default, []).append(handler)

    def on_every(self, handler: Callable[[Event], object]) -> None:
        """Call ``handler(event)`` for every valid event, whatever its kind (e.g. a console feed)."""
        self._every.append(handler)

    def handle(self, payload: str | bytes) -> Event | None:
        """Parse one payload and dispatch it; the event, or None for a bad payload. Never raises."""
        try:
            event = parse(payload)
        except EventError as exc:
            self.bad_payloads += 1
            log.warning("%s; ignored (%d bad so far)", exc, self.bad_payloads)
            return None
        self.delivered += 1
        self.dispatch(event)
        return event

    def dispatch(self, event: EventBase) -> None:
        """Call the handlers of ``event``'s kind, then the catch-all ones; a raising handler is
        logged and counted, and the others still run."""
        for handler in (*self._handlers.get(event.type, ()), *self._every):
            try:
                handler(event)
            except Exception:
                self.handler_errors += 1
                log.exception("%s handler %s failed on %r; the listener goes on", CHANNEL, _name(handler), event)

    # -- I/O: a thin shell around handle() ---------------------------------------------------------
    def listen(self, conn: psycopg.Connection[Any]) -> None:
        """``LISTEN fw_events`` on ``conn`` (an autocommit connection, or notifications wait for a commit)."""
        conn.execute(_LISTEN)

    def poll(self, conn: psycopg.Connection[Any], timeout: float, stop: Callable[[], bool] | None = None) -> int:
        """Handle the notifications arriving on a LISTENing ``conn`` for up to ``timeout`` seconds,
        returning early once ``stop()`` is true after one; returns how many were handled."""
        n = 0
        for note in conn.notifies(timeout=timeout):
            self.handle(note.payload)
            n += 1
            if stop is not None and stop():
                break
        return n

    async def alisten(self, conn: psycopg.AsyncConnection[Any], ready: asyncio.Event | None = None) -> None:
        """``LISTEN`` on an async (autocommit) connection and handle notifications until cancelled;
        ``ready`` is set once the LISTEN is in place (events committed after it are not missed)."""
        await conn.execute(_LISTEN)
        if ready is not None:
            ready.set()
        async for note in conn.notifies():
            self.handle(note.payload)


def _name(handler: Handler) -> str:
    return getattr(handler, "__qualname__", None) or repr(handler)
