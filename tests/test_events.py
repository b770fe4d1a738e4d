"""The fw_events contract: every kind through a real PostgreSQL NOTIFY, and a listener that never falls over."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from fwcore.events import (
    CHANNEL,
    KINDS,
    MAX_PAYLOAD_BYTES,
    MODELS,
    AlarmAcknowledgedEvent,
    AlarmClearedEvent,
    AlarmCommentedEvent,
    AlarmOpenedEvent,
    AlarmSeverityChangedEvent,
    AlarmSuppressedEvent,
    Event,
    EventBase,
    EventError,
    EventListener,
    GatewayBufferEvent,
    GatewayConfigEvent,
    GatewayStatusEvent,
    RuleErrorClearedEvent,
    RuleErrorOpenedEvent,
    SilenceCreatedEvent,
    SlaAtRiskEvent,
    SlaBreachedEvent,
    TelemetryStoredEvent,
    TicketAssignedEvent,
    TicketCreatedEvent,
    TicketNoteEvent,
    TicketPhotoEvent,
    TicketReassignedEvent,
    TicketStatusEvent,
    TicketUnassignedEvent,
    TicketUpdatedEvent,
    encode,
    parse,
    publish,
    publish_all,
)

ROOT = Path(__file__).resolve().parents[1]
DUE = datetime(2026, 12, 21, 13, 0, tzinfo=timezone(timedelta(hours=1)))

#: One event of every kind (and of each optional field), with the JSON its sender wrote before the
#: contract existed: these keys and values are what deployed listeners read.
SAMPLES: list[tuple[EventBase, dict[str, Any]]] = [
    (
        AlarmOpenedEvent(alarm_id=7, device_id=3, rule_id=2),
        {"type": "alarm_opened", "alarm_id": 7, "device_id": 3, "rule_id": 2},
    ),
    (
        AlarmOpenedEvent(alarm_id=8, device_id=3, rule_id=2, released=True),
        {"type": "alarm_opened", "alarm_id": 8, "device_id": 3, "rule_id": 2, "released": True},
    ),
    (
        AlarmSuppressedEvent(alarm_id=9, device_id=3, rule_id=2, suppressed_by="maintenance:4"),
        {"type": "alarm_suppressed", "alarm_id": 9, "device_id": 3, "rule_id": 2, "suppressed_by": "maintenance:4"},
    ),
    (
        AlarmClearedEvent(alarm_id=7, device_id=3, rule_id=2),
        {"type": "alarm_cleared", "alarm_id": 7, "device_id": 3, "rule_id": 2},
    ),
    (
        AlarmAcknowledgedEvent(alarm_id=7, device_id=3, rule_id=2, by="ada"),
        {"type": "alarm_acknowledged", "alarm_id": 7, "device_id": 3, "rule_id": 2, "by": "ada"},
    ),
    (
        AlarmSeverityChangedEvent(alarm_id=7, device_id=3, rule_id=2),
        {"type": "alarm_severity_changed", "alarm_id": 7, "device_id": 3, "rule_id": 2},
    ),
    (
        RuleErrorOpenedEvent(rule_error_id=4, rule_id=2, device_id=3),
        {"type": "rule_error_opened", "rule_error_id": 4, "rule_id": 2, "device_id": 3},
    ),
    (
        RuleErrorClearedEvent(rule_error_id=4, rule_id=2, device_id=3),
        {"type": "rule_error_cleared", "rule_error_id": 4, "rule_id": 2, "device_id": 3},
    ),
    (TicketCreatedEvent(ticket_id=5, alarm_id=7), {"type": "ticket_created", "ticket_id": 5, "alarm_id": 7}),
    (TicketCreatedEvent(ticket_id=6), {"type": "ticket_created", "ticket_id": 6}),
    (TicketUpdatedEvent(ticket_id=5, alarm_id=8), {"type": "ticket_updated", "ticket_id": 5, "alarm_id": 8}),
    (
        TicketAssignedEvent(ticket_id=5, technician_id=11),
        {"type": "ticket_assigned", "ticket_id": 5, "technician_id": 11},
    ),
    (
        TicketAssignedEvent(ticket_id=6, technician_id=12, by="ann", override=False),
        {"type": "ticket_assigned", "ticket_id": 6, "technician_id": 12, "by": "ann", "override": False},
    ),
    (TicketUnassignedEvent(ticket_id=4, bumped_by=5), {"type": "ticket_unassigned", "ticket_id": 4, "bumped_by": 5}),
    (TicketReassignedEvent(ticket_id=4), {"type": "ticket_reassigned", "ticket_id": 4}),
    (
        TicketStatusEvent(ticket_id=5, status="en_route", from_status="assigned"),
        {"type": "ticket_status", "ticket_id": 5, "status": "en_route", "from": "assigned"},
    ),
    (
        TicketStatusEvent(ticket_id=6, status="resolved", from_status="new", by="ticketing", reason="alarm_cleared"),
        {
            "type": "ticket_status",
            "ticket_id": 6,
            "status": "resolved",
            "from": "new",
            "by": "ticketing",
            "reason": "alarm_cleared",
        },
    ),
    (
        TicketNoteEvent(ticket_id=5, reason="alarm_cleared"),
        {"type": "ticket_note", "ticket_id": 5, "reason": "alarm_cleared"},
    ),
    (SlaBreachedEvent(ticket_id=5, kind="response"), {"type": "sla_breached", "ticket_id": 5, "kind": "response"}),
    (
        SlaAtRiskEvent(ticket_id=5, due_at=DUE),
        {"type": "sla_at_risk", "ticket_id": 5, "due_at": DUE.isoformat()},
    ),
    (
        GatewayStatusEvent(gateway_id=3, status="offline"),
        {"type": "gateway_status", "gateway_id": 3, "status": "offline"},
    ),
    (
        GatewayConfigEvent(gateway_id=3, version="8", outcome="rolled_back"),
        {"type": "gateway_config", "gateway_id": 3, "version": "8", "outcome": "rolled_back"},
    ),
    (TelemetryStoredEvent(device_ids=[4, 7]), {"type": "telemetry_stored", "device_ids": [4, 7]}),
    (TelemetryStoredEvent(), {"type": "telemetry_stored"}),
    (GatewayBufferEvent(gateway_ids=[3, 8]), {"type": "gateway_buffer", "gateway_ids": [3, 8]}),
    (
        AlarmCommentedEvent(alarm_id=9, device_id=3, comment_id=2),
        {"type": "alarm_commented", "alarm_id": 9, "device_id": 3, "comment_id": 2},
    ),
    (
        SilenceCreatedEvent(silence_id=4, kind="maintenance", device_id=3),
        {"type": "silence_created", "silence_id": 4, "kind": "maintenance", "device_id": 3},
    ),
    (
        SilenceCreatedEvent(silence_id=5, kind="silence"),
        {"type": "silence_created", "silence_id": 5, "kind": "silence"},
    ),
    (TicketPhotoEvent(ticket_id=5, photo_id=1), {"type": "ticket_photo_added", "ticket_id": 5, "photo_id": 1}),
]
EVENTS = [e for e, _ in SAMPLES]


@pytest.fixture
def conns(db_url: str) -> Iterator[tuple[psycopg.Connection, psycopg.Connection]]:
    """(sender, listener): two autocommit connections, the second LISTENing on fw_events."""
    with psycopg.connect(db_url, autocommit=True) as sender, psycopg.connect(db_url, autocommit=True) as listener:
        EventListener().listen(listener)
        yield sender, listener


def received(listener: psycopg.Connection, n: int, timeout: float = 2.0) -> list[str]:
    return [note.payload for note in listener.notifies(timeout=timeout, stop_after=n)]


def test_samples_cover_every_kind() -> None:
    """The samples hold every kind the union knows, so a new kind cannot skip the round trip."""
    assert {e.type for e in EVENTS} == set(KINDS) == set(MODELS)


@pytest.mark.parametrize(("event", "legacy"), SAMPLES, ids=[f"{e.type}-{i}" for i, e in enumerate(EVENTS)])
def test_payload_keeps_the_keys_and_values_senders_used(event: EventBase, legacy: dict[str, Any]) -> None:
    """Each model encodes to compact JSON with exactly the keys and values its sender wrote before."""
    text = encode(event)
    assert orjson.loads(text) == legacy
    assert ": " not in text and ", " not in text
    assert parse(text) == event


def test_every_kind_round_trips_through_a_real_notify(conns: tuple[psycopg.Connection, psycopg.Connection]) -> None:
    """Events published in a transaction arrive on a LISTENing connection, in order, and parse equal."""
    sender, listener = conns
    with sender.transaction():
        for event in EVENTS:
            publish(sender, event)
    assert [parse(p) for p in received(listener, len(EVENTS))] == EVENTS


def test_publish_all_sends_in_order_in_one_statement(conns: tuple[psycopg.Connection, psycopg.Connection]) -> None:
    """publish_all delivers every event, in the order given; an empty list sends nothing."""
    sender, listener = conns
    with sender.transaction():
        publish_all(sender, [])
        publish_all(sender, EVENTS[::-1])
        publish_all(sender, [TicketReassignedEvent(ticket_id=99)])
    assert [parse(p) for p in received(listener, len(EVENTS) + 1)] == [
        *EVENTS[::-1],
        TicketReassignedEvent(ticket_id=99),
    ]


def test_nothing_is_delivered_for_a_rolled_back_transaction(
    conns: tuple[psycopg.Connection, psycopg.Connection],
) -> None:
    """An event published in a transaction that rolls back never reaches a listener."""
    sender, listener = conns
    with sender.transaction():
        publish(sender, TicketReassignedEvent(ticket_id=1))
        raise psycopg.Rollback
    with sender.transaction():
        publish(sender, TicketReassignedEvent(ticket_id=2))
    assert [parse(p) for p in received(listener, 2, timeout=1.0)] == [TicketReassignedEvent(ticket_id=2)]


BAD = [
    ("not json", "not json"),
    ('{"type":"alarm_opened"', "not json"),
    ('{"type":"alarm_exploded","alarm_id":1}', "unknown type 'alarm_exploded'"),
    ('{"alarm_id":1,"device_id":2,"rule_id":3}', "no 'type' field"),
    ('{"type":"alarm_opened","alarm_id":1,"device_id":2}', "alarm_opened.rule_id: Field required"),
    ('{"type":"alarm_opened","alarm_id":"1","device_id":2,"rule_id":3}', "alarm_opened.alarm_id"),
    ('{"type":"sla_breached","ticket_id":1,"kind":"lunch"}', "sla_breached.kind"),
    ('{"type":"sla_at_risk","ticket_id":1,"due_at":"2026-12-21T13:00:00"}', "sla_at_risk.due_at"),
]


@pytest.mark.parametrize(("payload", "says"), BAD)
def test_parse_refuses_a_bad_payload_with_one_clear_error(payload: str, says: str) -> None:
    """Not JSON, an unknown type, a missing field or a wrong type: one EventError that says which."""
    with pytest.raises(EventError) as caught:
        parse(payload)
    message = str(caught.value)
    assert CHANNEL in message and payload[:40] in message
    assert says in message or (says == "not json" and "Invalid JSON" in message)


def test_parse_ignores_fields_it_does_not_know() -> None:
    """A newer sender's extra optional field does not break an older listener."""
    assert parse('{"type":"ticket_reassigned","ticket_id":4,"technician_id":9}') == TicketReassignedEvent(ticket_id=4)


def test_bad_payloads_are_counted_and_logged_and_the_next_good_event_is_delivered(
    conns: tuple[psycopg.Connection, psycopg.Connection], caplog: pytest.LogCaptureFixture
) -> None:
    """Each bad payload on the channel is logged and counted; the good event after them still reaches its handler."""
    sender, listener = conns
    got: list[AlarmOpenedEvent] = []
    events = EventListener()
    events.on(AlarmOpenedEvent, got.append)
    with sender.transaction():
        for payload, _ in BAD:
            sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        publish(sender, EVENTS[0])
    with caplog.at_level(logging.WARNING, logger="fwcore.events"):
        while events.delivered + events.bad_payloads < len(BAD) + 1:
            assert events.poll(listener, 2.0) > 0, "a notification went missing"
    assert got == [EVENTS[0]]
    assert (events.bad_payloads, events.delivered, events.handler_errors) == (len(BAD), 1, 0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(BAD) and "unknown type 'alarm_exploded'" in caplog.text


def test_a_handler_that_raises_does_not_stop_the_listener(
    conns: tuple[psycopg.Connection, psycopg.Connection], caplog: pytest.LogCaptureFixture
) -> None:
    """A failing handler is logged with its event and counted; other handlers and later events still run."""
    sender, listener = conns
    calls: list[Event] = []

    def flaky(event: TicketReassignedEvent) -> None:
        calls.append(event)
        if event.ticket_id == 1:
            raise RuntimeError("boom")

    everything: list[Event] = []
    events = EventListener()
    events.on(TicketReassignedEvent, flaky)
    events.on_every(everything.append)
    with sender.transaction():
        publish_all(sender, [TicketReassignedEvent(ticket_id=1), TicketReassignedEvent(ticket_id=2)])
    with caplog.at_level(logging.ERROR, logger="fwcore.events"):
        while events.delivered < 2:
            assert events.poll(listener, 2.0) > 0, "a notification went missing"
    assert calls == everything == [TicketReassignedEvent(ticket_id=1), TicketReassignedEvent(ticket_id=2)]
    assert events.handler_errors == 1
    assert "flaky" in caplog.text and "ticket_id=1" in caplog.text and "boom" in caplog.text


def _note_of_size(size: int) -> TicketNoteEvent:
    """A ticket_note whose payload is exactly ``size`` bytes (with multi-byte characters in it)."""
    bare = len(encode(TicketNoteEvent(ticket_id=1, reason="é")).encode())
    return TicketNoteEvent(ticket_id=1, reason="é" + "x" * (size - bare))


def test_a_payload_over_the_limit_is_refused_at_publish(conns: tuple[psycopg.Connection, psycopg.Connection]) -> None:
    """The largest payload PostgreSQL takes goes through; one byte more is refused before anything is sent,
    and the sender's transaction stays usable."""
    sender, listener = conns
    largest, too_big = _note_of_size(MAX_PAYLOAD_BYTES - 1), _note_of_size(MAX_PAYLOAD_BYTES)
    assert len(encode(largest).encode()) == MAX_PAYLOAD_BYTES - 1
    with sender.transaction():
        with pytest.raises(EventError, match=f"ticket_note event is {MAX_PAYLOAD_BYTES} bytes"):
            publish(sender, too_big)
        with pytest.raises(EventError):
            publish_all(sender, [EVENTS[0], too_big])
        publish(sender, largest)
    assert [parse(p) for p in received(listener, 2, timeout=1.0)] == [largest]
    with pytest.raises(psycopg.errors.InvalidParameterValue):  # PostgreSQL's own limit agrees with ours
        sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, too_big.model_dump_json()))


def test_on_refuses_what_is_not_an_event_model() -> None:
    """Registering a handler for something other than an event model fails at once, naming the models."""
    with pytest.raises(TypeError, match="AlarmOpenedEvent"):
        EventListener().on(dict, print)  # type: ignore[type-var]


async def test_an_asyncio_consumer_receives_events(db_url: str) -> None:
    """alisten on an AsyncConnection delivers committed events to handlers until the task is cancelled."""
    got: asyncio.Queue[Event] = asyncio.Queue()
    events = EventListener()
    events.on_every(got.put_nowait)
    ready = asyncio.Event()
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
        task = asyncio.create_task(events.alisten(aconn, ready))
        await asyncio.wait_for(ready.wait(), 5.0)
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as sender:
            await sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, encode(EVENTS[0])))
            await sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, "not json"))
            await sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, encode(EVENTS[1])))
        assert [await asyncio.wait_for(got.get(), 2.0) for _ in range(2)] == EVENTS[:2]
        assert events.bad_payloads == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_the_module_imports_without_psycopg() -> None:
    """An edge install has no database driver: the event contract still imports and parses."""
    probe = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from fwcore.events import parse\n"
        'assert parse(\'{"type":"ticket_reassigned","ticket_id":1}\').ticket_id == 1\n'
    )
    subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=ROOT)


def test_docs_list_every_kind_and_its_fields() -> None:
    """docs/contract.md has a table row per kind naming each of its JSON fields."""
    text = (ROOT / "docs" / "contract.md").read_text()
    section = text[text.index("## Database events (fw_events)") :]
    rows = {line.split("|")[1].strip(" `"): line for line in section.splitlines() if line.startswith("| `")}
    for kind, model in MODELS.items():
        assert kind in rows, f"docs/contract.md has no row for {kind}"
        for name, field in model.model_fields.items():
            if name != "type":
                assert f"`{field.alias or name}`" in rows[kind], f"{kind}: {field.alias or name} is not documented"


def test_utc_due_times_keep_their_offset_form() -> None:
    """A UTC due time is sent as isoformat() gives it (+00:00), the form sla_at_risk always used."""
    due = datetime(2026, 1, 1, tzinfo=UTC)
    assert orjson.loads(encode(SlaAtRiskEvent(ticket_id=1, due_at=due)))["due_at"] == "2026-01-01T00:00:00+00:00"
