"""Live updates: one LISTEN on ``fw_events`` per server, fanned out to the open console pages.

Pages subscribe a coroutine function for the kinds they show (:data:`ALARM_KINDS`,
:data:`TICKET_KINDS`); each committed event of those kinds calls the subscriber, which reloads what
its page shows and pushes it to the browser over NiceGUI's websocket. Nothing polls. A lost database
connection is retried with a growing pause; pages keep what they show meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import psycopg

from fwcore.events import (
    AlarmAcknowledgedEvent,
    AlarmClearedEvent,
    AlarmCommentedEvent,
    AlarmOpenedEvent,
    AlarmSeverityChangedEvent,
    AlarmSuppressedEvent,
    Event,
    EventListener,
    RuleErrorClearedEvent,
    RuleErrorOpenedEvent,
    SilenceCreatedEvent,
    TicketAssignedEvent,
    TicketCreatedEvent,
    TicketPhotoEvent,
    TicketReassignedEvent,
    TicketStatusEvent,
    TicketUnassignedEvent,
    TicketUpdatedEvent,
)

log = logging.getLogger(__name__)

Subscriber = Callable[[Event], Awaitable[None]]
#: What changes the alarm lists and counts (rule errors are listed as alarms of their own kind).
ALARM_KINDS: tuple[type, ...] = (
    AlarmOpenedEvent,
    AlarmClearedEvent,
    AlarmAcknowledgedEvent,
    AlarmSeverityChangedEvent,
    AlarmSuppressedEvent,
    RuleErrorOpenedEvent,
    RuleErrorClearedEvent,
    AlarmCommentedEvent,
    SilenceCreatedEvent,
)
#: What changes the ticket list.
TICKET_KINDS: tuple[type, ...] = (
    TicketCreatedEvent,
    TicketUpdatedEvent,
    TicketAssignedEvent,
    TicketUnassignedEvent,
    TicketReassignedEvent,
    TicketStatusEvent,
    TicketPhotoEvent,
)


class LiveEvents:
    """The server's one listener and the pages subscribed to it."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.subscribers: dict[Subscriber, tuple[type, ...]] = {}
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._fanouts: set[asyncio.Task[None]] = set()

    def subscribe(self, subscriber: Subscriber, kinds: tuple[type, ...] = ALARM_KINDS) -> Callable[[], None]:
        """Call ``subscriber`` on every event of ``kinds`` until the returned function is called."""
        self.subscribers[subscriber] = kinds

        def unsubscribe() -> None:
            self.subscribers.pop(subscriber, None)

        return unsubscribe

    def _dispatch(self, event: Event) -> None:
        for subscriber, kinds in list(self.subscribers.items()):
            if not isinstance(event, kinds):
                continue
            task = asyncio.get_running_loop().create_task(self._call(subscriber, event))
            self._fanouts.add(task)
            task.add_done_callback(self._fanouts.discard)

    async def _call(self, subscriber: Subscriber, event: Event) -> None:
        try:
            await subscriber(event)
        except Exception:  # one broken page must not stop the others
            log.exception("console page update failed")

    async def _run(self) -> None:
        listener = EventListener()
        listener.on_every(self._dispatch)
        pause = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
                    pause = 0.5
                    await listener.alisten(conn, self.ready)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: retry, pages keep what they show
                log.warning("console live events: %s; retrying in %.1f s", exc, pause)
                self.ready.clear()
                await asyncio.sleep(pause)  # a pause between reconnection attempts, not a wait for a condition
                pause = min(pause * 2, 10.0)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="console-live-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
