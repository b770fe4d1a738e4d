"""Rule health: is each rule evaluating each device in its scope, and if not, why and since when.

A (rule, device) pair is in one of four states:

* ``evaluating`` — readings go through the state machine (``rule_states`` has the pair);
* ``warming_up`` — an anomaly rule whose window has not filled yet (no score so far);
* ``waiting`` — in scope, but no reading of the rule's tag has arrived yet;
* ``error`` — the rule cannot evaluate the device: a threshold bound to a device attribute that is
  missing or not a number (:class:`rules.compile.UnboundThreshold`).

An error is not only logged: the evaluator records it as a *rule error* (``rule_errors``), an alarm
of its own kind for the rule's owner (who last changed the rule), announced as ``rule_error_opened``
and cleared (``rule_error_cleared``) as soon as the device binds again. It never opens a ticket: it
is the rule that is broken, not the equipment. :mod:`rules.alarms` lists it beside the equipment alarms
(``kind`` ``rule_error``, with :func:`rule_error_hint` saying what to fix), so it is seen where alarms are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

import psycopg
from pydantic import BaseModel

from fwcore.events import EventBase, RuleErrorClearedEvent, RuleErrorOpenedEvent, publish_all
from rules.devices import load_devices
from rules.model import Anomaly
from rules.store import find_rule

HealthState = Literal["evaluating", "warming_up", "waiting", "error"]


class PairHealth(BaseModel):
    device_id: int
    device_key: str
    site: str
    state: HealthState
    since: datetime | None  # when the pair entered this state (None: not known)
    reason: str | None = None  # for error, warming_up and waiting: why
    rule_error_id: int | None = None  # the open rule error of an ``error`` pair
    phase: str | None = None  # of an evaluating pair: the state machine's phase (normal, pending, active, …)


class RuleHealth(BaseModel):
    rule_id: int
    rule: str
    owner: str  # who last changed the rule: rule errors are theirs to fix
    enabled: bool
    devices: list[PairHealth]
    counts: dict[str, int]  # state -> pairs


def record_bindings(conn: psycopg.Connection, outcomes: Mapping[tuple[int, int], str | None]) -> list[EventBase]:
    """Record what binding (rule, device) pairs found: a reason opens a rule error (once per open error;
    a changed reason is updated), ``None`` clears the pair's open one. Publishes the events; returns them."""
    events: list[EventBase] = []
    bound = sorted(k for k, reason in outcomes.items() if reason is None)
    if bound:  # one statement: after a start every pair binds afresh, and almost none has an open error
        rows = conn.execute(
            """UPDATE rule_errors e SET cleared_at = now()
               FROM unnest(%s::int[], %s::int[]) AS k(r, d)
               WHERE e.rule_id = k.r AND e.device_id = k.d AND e.cleared_at IS NULL
               RETURNING e.id, e.rule_id, e.device_id""",
            ([k[0] for k in bound], [k[1] for k in bound]),
        ).fetchall()
        events += [RuleErrorClearedEvent(rule_error_id=i, rule_id=r, device_id=d) for i, r, d in rows]
    for (rule_id, device_id), reason in sorted((k, v) for k, v in outcomes.items() if v is not None):
        row = conn.execute(
            """INSERT INTO rule_errors (rule_id, device_id, reason, owner)
               SELECT %s, %s, %s, r.updated_by FROM rules r WHERE r.id = %s
               ON CONFLICT (rule_id, device_id) WHERE cleared_at IS NULL
               DO UPDATE SET reason = EXCLUDED.reason WHERE rule_errors.reason IS DISTINCT FROM EXCLUDED.reason
               RETURNING id, xmax = 0""",
            (rule_id, device_id, reason, rule_id),
        ).fetchone()
        if row is not None and row[1]:  # a new error (not an updated reason)
            events.append(RuleErrorOpenedEvent(rule_error_id=row[0], rule_id=rule_id, device_id=device_id))
    publish_all(conn, events)
    return events


_ATTRIBUTE = re.compile(r"attribute '([^']+)'")


def rule_error_hint(reason: str, *, device_id: int, device_key: str) -> str:
    """What the owner of a rule error can do about it, from its ``reason`` (the binding's message).

    Both fixes are named: the device's attribute (when the reason names one) and the rule. Either way
    the error clears by itself once the evaluator binds the pair again (it re-reads devices every few
    seconds), so nobody has to close it.
    """
    found = _ATTRIBUTE.search(reason)
    device = (
        f"set the attribute {found.group(1)!r} of device {device_key} to a number "
        f'(PATCH /api/v1/devices/{device_id} with {{"attributes": …}}, or `fieldwatch fleet devices change`)'
        if found
        else f"fix device {device_key}"
    )
    return (
        f"Fix it: {device}, or change the rule (another attribute, or a default for the threshold; "
        "`fieldwatch rules apply`). It clears by itself once the device is evaluated again; it never opens a ticket."
    )


class RuleError(BaseModel):
    id: int
    rule_id: int
    rule: str
    device_id: int
    device_key: str
    reason: str
    owner: str
    opened_at: datetime
    cleared_at: datetime | None


def list_rule_errors(conn: psycopg.Connection, *, open_only: bool = True) -> list[RuleError]:
    """Rule errors, newest first (only the open ones unless ``open_only`` is False)."""
    rows = conn.execute(
        """SELECT e.id, e.rule_id, r.name, e.device_id, d.key, e.reason, e.owner, e.opened_at, e.cleared_at
           FROM rule_errors e JOIN rules r ON r.id = e.rule_id JOIN devices d ON d.id = e.device_id
           WHERE NOT %s OR e.cleared_at IS NULL ORDER BY e.opened_at DESC, e.id DESC""",
        (open_only,),
    ).fetchall()
    keys = ("id", "rule_id", "rule", "device_id", "device_key", "reason", "owner", "opened_at", "cleared_at")
    return [RuleError(**dict(zip(keys, r, strict=True))) for r in rows]


def rule_health(conn: psycopg.Connection, ref: str | int) -> RuleHealth:
    """The state of ``ref`` (id or name) on every device in its scope; raises ``UnknownRule``."""
    rule = find_rule(conn, ref)
    enabled_row = conn.execute("SELECT enabled FROM rules WHERE id = %s", (rule.id,)).fetchone()
    enabled = bool(enabled_row and enabled_row[0])
    ids = [r[0] for r in conn.execute("SELECT id FROM devices ORDER BY id").fetchall()]
    devices = [d for d in load_devices(conn, ids).values() if rule.spec.scope.matches(d)]
    errors = {
        r[0]: (r[1], r[2], r[3])
        for r in conn.execute(
            "SELECT device_id, id, reason, opened_at FROM rule_errors WHERE rule_id = %s AND cleared_at IS NULL",
            (rule.id,),
        ).fetchall()
    }
    states = {
        r[0]: (r[1], r[2])
        for r in conn.execute(
            """SELECT rs.device_id, GREATEST(rs.created_at, (SELECT max(e.cleared_at) FROM rule_errors e
                                             WHERE e.rule_id = rs.rule_id AND e.device_id = rs.device_id)),
                      rs.state->>'phase'
               FROM rule_states rs WHERE rs.rule_id = %s""",
            (rule.id,),
        ).fetchall()
    }
    anomaly = isinstance(rule.spec.condition, Anomaly)
    pairs: list[PairHealth] = []
    for d in sorted(devices, key=lambda d: (d.site, d.key)):
        base = {"device_id": d.id, "device_key": d.key, "site": d.site}
        if d.id in errors:
            error_id, reason, opened = errors[d.id]
            pairs.append(PairHealth(**base, state="error", since=opened, reason=reason, rule_error_id=error_id))
        elif d.id in states:
            since, phase = states[d.id]
            pairs.append(PairHealth(**base, state="evaluating", since=since, phase=phase))
        elif anomaly:
            why = "the anomaly window is filling; no score yet (warm-up never alarms)"
            pairs.append(PairHealth(**base, state="warming_up", since=rule.updated_at, reason=why))
        else:
            why = f"no reading of {rule.spec.tag!r} evaluated yet"
            pairs.append(PairHealth(**base, state="waiting", since=rule.updated_at, reason=why))
    counts: dict[str, int] = {}
    for p in pairs:
        counts[p.state] = counts.get(p.state, 0) + 1
    return RuleHealth(
        rule_id=rule.id, rule=rule.name, owner=rule.updated_by, enabled=enabled, devices=pairs, counts=counts
    )
