"""Alarms become tickets; tickets get a technician. Safe to run twice, and self-healing.

:meth:`TicketingService.handle_alarm` does everything for one alarm in ONE transaction,
taking row locks in a fixed order — alarm → ticket → technician — so concurrent services
serialize instead of deadlocking:

1. lock the alarm; if it already has a ticket (another service got there first), stop;
2. lock the open ticket for (device, problem_code) — ``tickets_one_open_idx`` allows one —
   and attach the alarm to it, or create it (``ON CONFLICT DO NOTHING`` + re-select when a
   concurrent service created it first);
3. if the ticket has no active assignment, choose a technician (:mod:`ticketing.dispatch`),
   lock that technician and re-check they are still free, then insert the assignment — or
   record ``tickets.unassigned_reason``;
4. publish ``ticket_created``/``ticket_updated``/``ticket_assigned``/``ticket_unassigned`` on
   ``fw_events`` (:mod:`fwcore.events`) — delivered only if the transaction commits.

:meth:`sweep` re-does whatever a missed notification or an earlier shortage left undone.
:meth:`start` runs a thread that LISTENs on ``fw_events`` for ``alarm_opened`` (and
``alarm_cleared``, for :mod:`ticketing.autoresolve`) and sweeps
every few seconds; :meth:`stop` ends it promptly. A handler that fails is logged and counted by the
listener (:attr:`TicketingService.events`), and the next sweep redoes its work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import errors
from psycopg.rows import dict_row

from fwcore.events import (
    AlarmClearedEvent,
    AlarmOpenedEvent,
    EventListener,
    TicketAssignedEvent,
    TicketCreatedEvent,
    TicketUnassignedEvent,
    TicketUpdatedEvent,
    publish,
)
from ticketing.autoresolve import ClearOutcome, act_on_cleared, ticket_of_alarm
from ticketing.autoresolve import candidates as cleared_candidates
from ticketing.dispatch import Decision, TechnicianView
from ticketing.errors import TicketingError
from ticketing.geo import GreatCircleTravel, LatLon, TravelModel
from ticketing.planning import place_ticket
from ticketing.sla_checks import initial_due, load_policy
from ticketing.tickets import OPEN_STATUSES, ticket_priority

log = logging.getLogger(__name__)

_RETRIES = 4
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class TicketOutcome:
    """What :meth:`TicketingService.handle_alarm` did with one alarm."""

    alarm_id: int
    action: Literal["created", "attached", "already_ticketed", "skipped"]
    ticket_id: int | None = None
    decision: Decision | None = None  # set when a dispatch was attempted in this call
    reason: str = ""  # why it was skipped

    @property
    def technician_id(self) -> int | None:
        d = self.decision
        return d.technician.id if d is not None and d.technician is not None else None


class TicketingService:
    """Turns alarms into assigned tickets; see the module docstring for the guarantees."""

    def __init__(
        self,
        db_url: str,
        travel: TravelModel | None = None,
        *,
        sweep_interval_s: float = 5.0,
        poll_s: float = 0.25,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._db_url = db_url
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.travel: TravelModel = travel or GreatCircleTravel()
        self._sweep_interval_s = sweep_interval_s
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.listening = threading.Event()  # set while the LISTEN connection is up
        #: Parses and dispatches ``fw_events``; its counters (bad payloads, handler errors) are for metrics.
        self.events = EventListener()
        self.events.on(AlarmOpenedEvent, self._on_alarm_opened)
        self.events.on(AlarmClearedEvent, self._on_alarm_cleared)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, wait_s: float = 5.0) -> None:
        """Start the LISTEN/sweep thread; returns once it listens (or after ``wait_s``)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, args=(self._stop,), name="ticketing", daemon=True)
        self._thread.start()
        self.listening.wait(wait_s)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (within about ``poll_s``) and close the connection; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def close(self) -> None:
        """Same as :meth:`stop` (the name context managers and pools expect)."""
        self.stop()

    def __enter__(self) -> TicketingService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, stop_event: threading.Event) -> None:
        """LISTEN for ``alarm_opened`` and sweep periodically until ``stop_event`` is set."""
        backoff = 0.5
        while not stop_event.is_set():
            try:
                with psycopg.connect(self._db_url, autocommit=True) as lconn:
                    self.events.listen(lconn)
                    self.listening.set()
                    backoff = 0.5
                    self._safe_sweep()  # whatever happened while we were not listening
                    next_sweep = time.monotonic() + self._sweep_interval_s
                    while not stop_event.is_set():
                        self.events.poll(lconn, self._poll_s, stop_event.is_set)
                        if time.monotonic() >= next_sweep:
                            self._safe_sweep()
                            next_sweep = time.monotonic() + self._sweep_interval_s
            except psycopg.OperationalError as exc:
                log.warning("ticketing listener lost the database (%s); retrying in %.1f s", exc, backoff)
            finally:
                self.listening.clear()
            stop_event.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def _on_alarm_opened(self, event: AlarmOpenedEvent) -> None:
        self.handle_alarm(event.alarm_id)

    def _on_alarm_cleared(self, event: AlarmClearedEvent) -> None:
        self.handle_alarm_cleared(event.alarm_id)

    def _safe_sweep(self) -> None:
        try:
            self.sweep()
        except Exception:
            log.exception("ticketing sweep failed; retrying at the next interval")

    # -- work ---------------------------------------------------------------------------------
    def handle_alarm(self, alarm_id: int) -> TicketOutcome:
        """Attach ``alarm_id`` to its open ticket or create one, and dispatch if unassigned."""
        return self._transaction(lambda conn: self._handle_alarm(conn, alarm_id))

    def handle_alarm_cleared(self, alarm_id: int) -> ClearOutcome | None:
        """Auto-resolve (or annotate) the alarm's ticket if all its alarms cleared and the setting is on."""

        def work(conn: psycopg.Connection) -> ClearOutcome | None:
            ticket_id = ticket_of_alarm(conn, alarm_id)
            return None if ticket_id is None else act_on_cleared(conn, ticket_id, self.travel, self.clock())

        return self._transaction(work)

    def resolve_if_cleared(self, ticket_id: int) -> ClearOutcome | None:
        """Auto-resolve (or annotate) ``ticket_id`` if every alarm attached to it has cleared."""
        return self._transaction(lambda conn: act_on_cleared(conn, ticket_id, self.travel, self.clock()))

    def dispatch_ticket(self, ticket_id: int) -> Decision | None:
        """Try to assign a 'new', unassigned ticket; None when it needs no dispatch."""
        return self._transaction(lambda conn: self._dispatch_ticket(conn, ticket_id))

    def sweep(self) -> int:
        """Ticket every open alarm without a ticket and retry dispatch of unassigned 'new'
        tickets, and auto-resolve tickets whose alarms all cleared; returns how many alarms were ticketed
        plus how many tickets were assigned plus how many were auto-resolved or annotated."""
        done = 0
        with self._lock:
            conn = self._connection()
            alarm_ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM alarms WHERE ticket_id IS NULL AND cleared_at IS NULL"
                    " AND suppressed_by IS NULL ORDER BY id"
                ).fetchall()
            ]
        for alarm_id in alarm_ids:
            outcome = self.handle_alarm(alarm_id)
            done += outcome.action in ("created", "attached")
            done += outcome.technician_id is not None
        with self._lock:
            ticket_ids = [
                r[0]
                for r in self._connection()
                .execute(
                    f"""SELECT t.id FROM tickets t
                       WHERE t.status = 'new'
                         AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.ticket_id = t.id AND a.active)
                         AND NOT ({_HELD_SQL})
                       ORDER BY t.priority, t.id"""
                )
                .fetchall()
            ]
        for ticket_id in ticket_ids:
            decision = self.dispatch_ticket(ticket_id)
            if decision is not None and decision.technician is not None:
                done += 1
        with self._lock:
            cleared = cleared_candidates(self._connection())
        for ticket_id in cleared:  # a missed alarm_cleared event
            done += self.resolve_if_cleared(ticket_id) is not None
        return done

    # -- internals ------------------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self._db_url, autocommit=True)
            except psycopg.OperationalError as exc:
                raise TicketingError(f"cannot connect to the database: {exc}") from exc
        return self._conn

    def _transaction(self, work: Callable[[psycopg.Connection], _T]) -> _T:
        """Run ``work`` in one transaction, retrying deadlocks, unique races and lost connections."""
        last: Exception | None = None
        with self._lock:
            for attempt in range(_RETRIES):
                try:
                    conn = self._connection()
                    with conn.transaction():
                        return work(conn)
                except (errors.DeadlockDetected, errors.SerializationFailure, errors.UniqueViolation) as exc:
                    last = exc
                    log.info("ticketing transaction conflicted (%s); retry %d", type(exc).__name__, attempt + 1)
                except psycopg.OperationalError as exc:
                    last = exc
                    if self._conn is not None:
                        self._conn.close()
                    self._conn = None
                    time.sleep(0.1 * (attempt + 1))
        raise TicketingError(f"ticketing transaction failed after {_RETRIES} attempts: {last}") from last

    def _handle_alarm(self, conn: psycopg.Connection, alarm_id: int) -> TicketOutcome:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                """SELECT a.id, a.ticket_id, a.cleared_at, a.suppressed_by, a.severity, a.device_id,
                          a.auto_dispatch, a.explanation, r.name AS rule_name, r.problem_code, r.required_skill,
                          d.name AS device_name, d.key AS device_key, s.latitude, s.longitude, c.segment
                   FROM alarms a
                   JOIN rules r ON r.id = a.rule_id
                   JOIN devices d ON d.id = a.device_id
                   JOIN sites s ON s.id = d.site_id
                   JOIN clients c ON c.id = s.client_id
                   WHERE a.id = %s
                   FOR UPDATE OF a""",
                (alarm_id,),
            )
            alarm = cur.fetchone()
        if alarm is None:
            return TicketOutcome(alarm_id, "skipped", reason="no such alarm")
        if alarm["ticket_id"] is not None:
            return TicketOutcome(alarm_id, "already_ticketed", ticket_id=alarm["ticket_id"])
        if alarm["cleared_at"] is not None:
            return TicketOutcome(alarm_id, "skipped", reason="the alarm cleared before a ticket was opened")
        if alarm["suppressed_by"] is not None:
            # silenced, in maintenance, flapping or covered by a parent alarm: no work order until released
            return TicketOutcome(alarm_id, "skipped", reason=f"the alarm is suppressed ({alarm['suppressed_by']})")

        priority = ticket_priority(alarm["severity"], alarm["segment"])
        ticket_id, created, required_skill = self._open_ticket(conn, alarm, priority)
        conn.execute("UPDATE alarms SET ticket_id = %s WHERE id = %s", (ticket_id, alarm_id))
        # An open alarm again: auto-resolve may act when this one clears too.
        conn.execute("UPDATE tickets SET alarms_cleared_at = NULL WHERE id = %s", (ticket_id,))
        why = alarm_explanation_note(alarm["rule_name"], alarm["explanation"])
        if why is not None:  # where to look first, for the technician
            conn.execute(
                "INSERT INTO ticket_notes (ticket_id, author, body) VALUES (%s, %s, %s)", (ticket_id, NOTE_AUTHOR, why)
            )
        held = not alarm["auto_dispatch"] and _held(conn, ticket_id)
        if held:
            conn.execute(
                "UPDATE tickets SET unassigned_reason = %s, updated_at = now() WHERE id = %s",
                (HELD_REASON.format(rule=alarm["rule_name"]), ticket_id),
            )
        publish(
            conn,
            TicketCreatedEvent(ticket_id=ticket_id, alarm_id=alarm_id)
            if created
            else TicketUpdatedEvent(ticket_id=ticket_id, alarm_id=alarm_id),
        )
        decision = None
        if held:
            log.info("ticket %d held: rule %r is not validated for dispatch", ticket_id, alarm["rule_name"])
        elif not _has_active_assignment(conn, ticket_id):
            site = (alarm["latitude"], alarm["longitude"])
            decision = self._dispatch_locked(conn, ticket_id, site, required_skill)
        return TicketOutcome(alarm_id, "created" if created else "attached", ticket_id=ticket_id, decision=decision)

    def _open_ticket(
        self, conn: psycopg.Connection, alarm: dict[str, Any], priority: int
    ) -> tuple[int, bool, str | None]:
        """Lock the open ticket the alarm belongs to, or create it: (id, created, skill).

        The alarm belongs to the device's open ticket for the same problem or, failing that, to its
        open ticket needing the same skill: one fault trips several rules (a worn bearing runs hot and
        shakes), and a dispatcher sends one technician, not one per rule. An alarm needing another
        skill opens its own ticket. Alarms of one device take turns here (an advisory lock), so two
        rules firing at once cannot open two tickets.
        """
        device_label = alarm["device_name"] or alarm["device_key"]
        conn.execute("SELECT pg_advisory_xact_lock(%s::int, %s::int)", (_DEVICE_TICKET_LOCK, alarm["device_id"]))
        while True:
            row = conn.execute(
                """SELECT id, priority, required_skill FROM tickets
                   WHERE device_id = %s AND status = ANY(%s)
                     AND (problem_code = %s OR required_skill IS NOT DISTINCT FROM %s)
                   ORDER BY problem_code = %s DESC, created_at, id
                   LIMIT 1
                   FOR UPDATE""",
                (
                    alarm["device_id"],
                    list(OPEN_STATUSES),
                    alarm["problem_code"],
                    alarm["required_skill"],
                    alarm["problem_code"],
                ),
            ).fetchone()
            if row is not None:
                ticket_id, old_priority, skill = row
                if priority < old_priority:  # a more severe alarm makes the ticket more urgent
                    conn.execute(
                        "UPDATE tickets SET priority = %s, updated_at = now() WHERE id = %s", (priority, ticket_id)
                    )
                return ticket_id, False, skill
            row = conn.execute(
                """INSERT INTO tickets (device_id, problem_code, title, priority, required_skill, source, alarm_id,
                                        due_at)
                   VALUES (%s, %s, %s, %s, %s, 'alarm', %s, %s)
                   ON CONFLICT (device_id, problem_code) WHERE status NOT IN ('resolved', 'closed', 'cancelled')
                   DO NOTHING
                   RETURNING id""",
                (
                    alarm["device_id"],
                    alarm["problem_code"],
                    _title(alarm["rule_name"], device_label, alarm["explanation"]),
                    priority,
                    alarm["required_skill"],
                    alarm["id"],
                    initial_due(load_policy(conn, alarm["segment"], priority), self.clock()),
                ),
            ).fetchone()
            if row is not None:
                return row[0], True, alarm["required_skill"]
            # A concurrent service created it between our SELECT and INSERT: select it again.

    def _dispatch_ticket(self, conn: psycopg.Connection, ticket_id: int) -> Decision | None:
        row = conn.execute(
            """SELECT t.status, t.required_skill, s.latitude, s.longitude
               FROM tickets t JOIN devices d ON d.id = t.device_id JOIN sites s ON s.id = d.site_id
               WHERE t.id = %s
               FOR UPDATE OF t""",
            (ticket_id,),
        ).fetchone()
        if row is None or row[0] != "new" or _has_active_assignment(conn, ticket_id):
            return None
        return self._dispatch_locked(conn, ticket_id, (row[2], row[3]), row[1])

    def _dispatch_locked(
        self, conn: psycopg.Connection, ticket_id: int, site: LatLon, required_skill: str | None
    ) -> Decision:
        """Place a ticket this transaction has locked into today's plan (:func:`place_ticket`)."""
        placement = place_ticket(conn, ticket_id, self.travel, self.clock())
        for bumped in placement.unassigned_bumped:
            publish(conn, TicketUnassignedEvent(ticket_id=bumped, bumped_by=ticket_id))
        if placement.tech_id is None:
            log.info("ticket %d unassigned: %s", ticket_id, placement.reason)
            return Decision(None, None, None, placement.reason)
        publish(conn, TicketAssignedEvent(ticket_id=ticket_id, technician_id=placement.tech_id))
        log.info("ticket %d assigned to %s (%s)", ticket_id, placement.tech_name, placement.reason)
        view = TechnicianView(placement.tech_id, placement.tech_name or "", site)
        return Decision(view, placement.km, placement.eta_minutes, placement.reason)


#: First key of the advisory lock that serialises opening tickets per device (the second is the device id).
_DEVICE_TICKET_LOCK = 0x7469636B  # "tick"

#: Author of the notes ticketing writes itself.
NOTE_AUTHOR = "fieldwatch"
HELD_REASON = (
    "held for review: rule {rule!r} is not validated for dispatch — assign a technician by hand, or validate "
    "the rule (fieldwatch rules validate) so its alarms dispatch on their own"
)
#: A ticket is held while alarms are attached to it and none of them may dispatch on its own.
_HELD_SQL = """EXISTS (SELECT 1 FROM alarms h WHERE h.ticket_id = t.id)
               AND NOT EXISTS (SELECT 1 FROM alarms h WHERE h.ticket_id = t.id AND h.auto_dispatch)"""


def _held(conn: psycopg.Connection, ticket_id: int) -> bool:
    row = conn.execute(f"SELECT {_HELD_SQL} FROM tickets t WHERE t.id = %s", (ticket_id,)).fetchone()
    return bool(row and row[0])


def _drivers(explanation: Any) -> list[dict[str, Any]]:
    if not isinstance(explanation, dict):
        return []
    return [d for d in explanation.get("drivers", []) if isinstance(d, dict) and d.get("tag")]


def _title(rule_name: str, device_label: str, explanation: Any) -> str:
    """``pump health on pump-1``; with an explanation, the tag to look at first: ``… — bearing_temp high``."""
    title = f"{rule_name} on {device_label}"
    top = _drivers(explanation)[:1]
    if top:
        title += f" — {top[0]['tag']} {top[0].get('outside', '')}".rstrip()
    return title


def alarm_explanation_note(rule_name: str, explanation: Any) -> str | None:
    """A ticket note from an alarm's explanation: each driving tag, its share, its value and normal range."""
    drivers = _drivers(explanation)
    if not drivers:
        return None
    lines = [f"Why {rule_name!r} alarmed — look first at:"]
    for d in drivers[:5]:
        lo, hi = (d.get("normal") or [None, None])[:2]
        normal = f" (normal {lo:.4g}–{hi:.4g})" if isinstance(lo, int | float) and isinstance(hi, int | float) else ""
        value = d.get("value")
        shown = f"{value:.4g}" if isinstance(value, int | float) else "?"
        lines.append(f"- {d['tag']}: {round(100 * float(d.get('share', 0)))} % of the score, {shown}{normal}")
    return "\n".join(lines)


def _has_active_assignment(conn: psycopg.Connection, ticket_id: int) -> bool:
    return (
        conn.execute("SELECT 1 FROM assignments WHERE ticket_id = %s AND active", (ticket_id,)).fetchone() is not None
    )
