"""Live rule evaluation against PostgreSQL: the ingest worker's after-commit hook.

:class:`RuleEvaluator` turns committed readings into alarms. Consistency across several
ingest workers is the database's job, not luck:

* each (rule, device) state row is locked ``FOR UPDATE`` (rows created on first use with
  ``ON CONFLICT DO NOTHING``), always in (rule_id, device_id) order so two workers cannot
  deadlock — concurrent evaluation of one pair serializes;
* ``alarms_one_open_idx`` allows at most one uncleared alarm per rule and device;
* events go out on ``fw_events`` (:func:`fwcore.events.publish_all`) in the same transaction, so
  PostgreSQL delivers them only on commit and never for a rolled-back state.

State lives in ``rule_states``, so a duration half elapsed before a restart continues after it.

Latency (the alarm of a reading committed within ~100 ms, under ingest load) comes from three things:

* **alarm-producing pairs commit first.** A batch is evaluated against the evaluator's cached states;
  pairs whose evaluation emits an event (or whose state is not cached) form a small first transaction,
  the rest a second one — a probe reading does not wait for the thousands of quiet pairs beside it;
* **the cache is only a guess, the row is the truth.** Each cached state remembers the ``xmin`` of the
  row version it belongs to; under the row lock an unchanged ``xmin`` proves nobody (no other worker,
  no restart) wrote it since, otherwise the stored state is parsed and evaluation is redone from it;
* **quiet readings write nothing.** A row is rewritten only when its durable part changes (phase, start,
  count, peak, severity, keep-firing start; everything for ``rate`` rules, whose previous value is
  in flight). A reading that leaves it unchanged would leave it unchanged again if re-evaluated after
  a restart, so nothing is lost by not recording its timestamp.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import psycopg
from psycopg import errors
from psycopg.types.json import Jsonb

from fwcore.events import (
    AlarmClearedEvent,
    AlarmOpenedEvent,
    AlarmSeverityChangedEvent,
    AlarmSuppressedEvent,
    EventBase,
    publish_all,
)
from rules.anomaly_rules import AnomalyScorer, Score, store_scores
from rules.compile import CompiledRule, UnboundThreshold, compile_rule
from rules.devices import load_devices
from rules.engine import (
    NORMAL,
    AlarmOpened,
    RuleEvent,
    RuleState,
    SeverityChanged,
    StateFormatError,
    durable_change,
    evaluate_all,
    quiet_band,
)
from rules.health import record_bindings
from rules.lifecycle import suppression_for
from rules.model import SEVERITY_RANK, Anomaly, DeviceInfo, Reading, Rule
from rules.store import list_rules

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # rule_states.last_ts before any good reading
_RETRIES = 3
_NO_XMIN = -1  # rule_states row version unknown: never equal to a real xmin
#: (rule_id, device_id) → (rule, its compiled form for the device, [(ts_ms, value, quality), …])
_Groups = dict[tuple[int, int], tuple[Rule, CompiledRule, list[tuple[int, float, int]]]]
#: Readings that cannot change their pair's cached ``normal`` state: (pair, rule, compiled, (ts_ms, value, quality))
_Quiet = list[tuple[tuple[int, int], Rule, CompiledRule, tuple[int, float, int]]]
#: What watches one (tag, device): (rule, compiled for the device, rule id, quiet band low, high; None: no band)
_Target = tuple[Rule, CompiledRule, int, float | None, float | None]


#: ``alarm_suppressed``: an alarm opened but a silence, maintenance window, parent alarm or flapping
#: burst hides it — recorded, not announced as opened (ticketing acts on ``alarm_opened`` only).
EventType = Literal["alarm_opened", "alarm_suppressed", "alarm_cleared", "alarm_severity_changed"]


class RuleEvaluationError(RuntimeError):
    """Readings could not be evaluated (database unavailable or repeated conflicts)."""


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """An alarm opened or cleared by a committed evaluation."""

    type: EventType
    alarm_id: int
    rule_id: int
    device_id: int
    ts_ms: int  # source time of the reading that caused it
    value: float
    suppressed_by: str | None = None  # set for alarm_suppressed: 'maintenance:ID', 'parent:ID', …

    def event(self) -> EventBase:
        """The ``fw_events`` event announcing it (:mod:`fwcore.events`)."""
        if self.type == "alarm_suppressed":
            return AlarmSuppressedEvent(
                alarm_id=self.alarm_id,
                device_id=self.device_id,
                rule_id=self.rule_id,
                suppressed_by=self.suppressed_by,  # type: ignore[arg-type]  # always set for this kind (validated)
            )
        return _EVENT_MODELS[self.type](alarm_id=self.alarm_id, device_id=self.device_id, rule_id=self.rule_id)

    def payload(self) -> dict[str, Any]:
        """The ``fw_events`` NOTIFY payload, as a dict."""
        return self.event().model_dump(mode="json", by_alias=True, exclude_none=True)


_EVENT_MODELS: dict[str, type[AlarmOpenedEvent | AlarmClearedEvent | AlarmSeverityChangedEvent]] = {
    "alarm_opened": AlarmOpenedEvent,
    "alarm_cleared": AlarmClearedEvent,
    "alarm_severity_changed": AlarmSeverityChangedEvent,
}


def _ts(ms: int | None) -> datetime:
    return _EPOCH if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def alarm_message(rule: Rule, peak: float | None, explanation: dict[str, Any] | None = None) -> str:
    """``bearing_temp > 80 for 30 s (peak 83.1)``; an anomaly alarm adds what drove its score."""
    text = rule.spec.describe()
    text = f"{text} (peak {peak:g})" if peak is not None else text
    if explanation and explanation.get("summary"):
        text = f"{text}: {explanation['summary']}"
    return text


class RuleEvaluator:
    """Evaluates enabled rules over committed readings; usable directly as an ingest hook.

    Thread-safe (one connection, used under a lock). Rules and device models are cached
    and reloaded every ``refresh_s`` seconds, or at once with :meth:`refresh`.
    """

    def __init__(self, db_url: str, *, refresh_s: float = 5.0) -> None:
        self._db_url = db_url
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._closed = False
        self._rules_by_tag: dict[str, list[Rule]] = {}
        self._anomaly_by_tag: dict[str, list[Rule]] = {}  # input tag → anomaly rules over it
        self._scorer = AnomalyScorer()
        self._loaded_at = -math.inf
        self._devices: dict[int, DeviceInfo | None] = {}  # None: unknown device
        self._compiled: dict[tuple[int, int], CompiledRule | None] = {}  # None: unbound thresholds
        self._known_pairs: set[tuple[int, int]] = set()  # (rule, device) whose rule_states row exists
        #: (tag, device) → the rules that watch it there, bound to the device (the per-reading hot path)
        self._bindings: dict[tuple[str, int], list[_Target]] = {}
        #: (rule, device) → (state, xmin of the rule_states row version it was read from or written as)
        self._states: dict[tuple[int, int], tuple[RuleState, int]] = {}
        self._rules_fingerprint: str | None = None
        self._anomaly_rules: list[Rule] = []
        self.unbound: dict[tuple[int, int], str] = {}  # (rule, device) → why it could not be bound
        #: (rule, device) → why binding failed, or None: bound — not yet recorded in rule_errors
        self._health_pending: dict[tuple[int, int], str | None] = {}

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            self._closed = True
            self._drop_connection()

    def __enter__(self) -> RuleEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh(self) -> None:
        """Forget cached rules and device models; the next call reloads them."""
        self._loaded_at = -math.inf
        self._rules_fingerprint = None

    def warm(self, limit: int = 200_000) -> int:
        """Bind every stored series that a rule watches to its rules now, before the first batch arrives.

        Binding is lazy: without this, the first batch that carries thousands of never-seen series (after
        a start or a restart, or when a fleet is registered) compiles every (rule, device) pair on the
        reading path, and an alarm in that batch waited ~180 ms for it (docs/rules.md, alarm latency).
        Up to ``limit`` (device, tag) pairs; the rest bind lazily as before. Returns the pairs bound.
        Rule states are not preloaded: an uncached quiet pair waits for the second transaction anyway.
        """
        bound = 0

        def work(conn: psycopg.Connection) -> list[AlarmEvent]:
            nonlocal bound
            self._maybe_reload(conn)
            tags = list(self._rules_by_tag)
            if not tags:
                return []
            pairs = conn.execute(
                "SELECT device_id, tag FROM series WHERE tag = ANY(%s) ORDER BY device_id LIMIT %s", (tags, limit)
            ).fetchall()
            self._load_devices(conn, {d for d, _ in pairs})
            for device_id, tag in pairs:
                self._targets(tag, device_id)
            self._flush_health(conn)
            bound = len(pairs)
            return []

        self._retrying(work, "the warm-up")
        log.info("rules bound to %d series ahead of the first batch", bound)
        return bound

    # -- the hook ------------------------------------------------------------------------
    def __call__(self, readings: Iterable[Reading]) -> list[AlarmEvent]:
        return self.process(readings)

    def process(self, readings: Iterable[Reading]) -> list[AlarmEvent]:
        """Evaluate ``readings`` in one transaction; returns the alarm events it committed."""
        batch = list(readings)
        if not batch:
            return []

        def work(conn: psycopg.Connection) -> list[AlarmEvent]:
            if self._rules_fingerprint is None:  # first batch, or refresh(): rules before anything
                self._maybe_reload(conn)
            groups, quiet = self._group(conn, batch)
            scores = self._anomaly_scores(conn, batch)
            self._add_scores(groups, scores)
            events = (
                self._apply(conn, groups, quiet, first=lambda c: store_scores(c, scores)) if groups or quiet else []
            )
            self._flush_health(conn)  # rule errors of new bindings: after the alarms, which must not wait
            self._maybe_reload(conn)  # the periodic check runs after the alarms committed, not before
            for ev in events:
                log.info("%s alarm %d (rule %d, device %d)", ev.type, ev.alarm_id, ev.rule_id, ev.device_id)
            return events

        return self._retrying(work, f"{len(batch)} readings")

    def process_scores(self, scores: Iterable[tuple[Rule, int, int, float]]) -> list[AlarmEvent]:
        """Evaluate computed scores ``(rule, device_id, ts_ms, score)`` — no-data, anomaly — through
        the same state machine, locking, suppression and events as readings; one transaction."""
        items = list(scores)
        if not items:
            return []

        def work(conn: psycopg.Connection) -> list[AlarmEvent]:
            self._load_devices(conn, {d for _, d, _, _ in items})
            groups: _Groups = {}
            self._add_scores(groups, items)
            events = self._apply(conn, groups, []) if groups else []
            self._flush_health(conn)
            return events

        return self._retrying(work, f"{len(items)} scores")

    def _retrying(self, work: Callable[[psycopg.Connection], list[AlarmEvent]], what: str) -> list[AlarmEvent]:
        """Run ``work`` under the evaluator lock, retrying deadlocks, stale caches and lost connections."""
        with self._lock:
            if self._closed:
                raise RuleEvaluationError("the evaluator is closed")
            last: Exception | None = None
            for _ in range(_RETRIES):
                try:
                    return work(self._connection())
                except (errors.DeadlockDetected, errors.SerializationFailure, errors.ForeignKeyViolation) as exc:
                    # FK: a rule or device was deleted after we cached it. Reload and retry.
                    last = exc
                    self.refresh()
                except psycopg.OperationalError as exc:
                    last = exc
                    self._drop_connection()
                    time.sleep(0.1)
            raise RuleEvaluationError(f"could not evaluate {what}: {last}") from last

    # -- internals -------------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self._db_url, autocommit=True)
            except psycopg.OperationalError as exc:
                raise RuleEvaluationError(f"cannot connect to the database: {exc}") from exc
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _maybe_reload(self, conn: psycopg.Connection) -> None:
        """Every ``refresh_s``: reload rules if any changed, and re-read the cached devices' facts.

        Bindings survive when nothing changed, so a refresh does not recompile thousands of (rule, device)
        pairs inside some unlucky batch; a changed device drops only its own bindings.
        """
        if time.monotonic() - self._loaded_at < self._refresh_s:
            return
        (fingerprint,) = conn.execute(
            """SELECT coalesce(md5(string_agg(id || ':' || version || ':' || enabled || ':' || updated_at, ','
                                              ORDER BY id)), '') FROM rules"""
        ).fetchone()  # type: ignore[misc]
        if fingerprint != self._rules_fingerprint:
            self._reload_rules(conn)
            self._rules_fingerprint = fingerprint
            self._loaded_at = time.monotonic()
            return
        self._scorer.sync(conn, self._anomaly_rules)  # newly trained (or stale) models
        if self._devices:
            found = load_devices(conn, list(self._devices))
            changed = {d for d, info in self._devices.items() if found.get(d) != info}
            if changed:
                self._devices.update({d: found.get(d) for d in changed})
                self._compiled = {k: v for k, v in self._compiled.items() if k[1] not in changed}
                self._bindings = {k: v for k, v in self._bindings.items() if k[1] not in changed}
        self._loaded_at = time.monotonic()

    def _reload_rules(self, conn: psycopg.Connection) -> None:
        by_tag: dict[str, list[Rule]] = defaultdict(list)
        anomaly_by_tag: dict[str, list[Rule]] = defaultdict(list)
        anomaly: list[Rule] = []
        for rule in list_rules(conn, enabled_only=True):
            cond = rule.spec.condition
            if isinstance(cond, Anomaly):  # scored from vectors of its input tags (rules.anomaly_rules)
                anomaly.append(rule)
                for tag in cond.tags:
                    anomaly_by_tag[tag].append(rule)
            elif cond.kind != "no_data":  # silence is the scheduler's job (rules.nodata)
                by_tag[rule.tag].append(rule)
        self._rules_by_tag = dict(by_tag)
        self._anomaly_by_tag = dict(anomaly_by_tag)
        self._anomaly_rules = anomaly
        self._scorer.sync(conn, anomaly)
        self._devices = {}
        self._compiled = {}
        self._bindings = {}
        self._known_pairs = set()
        # self._states stays: each entry is checked against its row's xmin before it is trusted.

    def _load_devices(self, conn: psycopg.Connection, ids: set[int]) -> None:
        """Cache the scope facts of the devices in ``ids`` not cached yet (``None``: no such device)."""
        missing = list(ids - self._devices.keys())
        if missing:
            found = load_devices(conn, missing)
            self._devices.update({d: found.get(d) for d in missing})

    def _bind(self, rule: Rule, device: DeviceInfo) -> CompiledRule | None:
        key = (rule.id, device.id)
        if key not in self._compiled:
            try:
                self._compiled[key] = compile_rule(rule.spec, rule.id, device.attributes)
                self.unbound.pop(key, None)
                self._health_pending[key] = None  # evaluating again: clears an open rule error
            except UnboundThreshold as exc:
                log.warning("%s (device %d %s); the rule is not evaluated there", exc, device.id, device.key)
                self.unbound[key] = str(exc)
                self._health_pending[key] = str(exc)  # a rule error for the rule's owner (rules.health)
                self._compiled[key] = None
        return self._compiled[key]

    def _flush_health(self, conn: psycopg.Connection) -> None:
        """Record the bindings made since the last flush (rule errors opened or cleared), in a transaction of
        their own after the batch's alarms: an alarm never waits for them, and they are recorded even if a
        later batch fails."""
        if self._health_pending:
            pending = dict(self._health_pending)
            with conn.transaction():
                record_bindings(conn, pending)
            for key, reason in pending.items():
                if self._health_pending.get(key, reason) == reason:
                    del self._health_pending[key]

    def _add_scores(self, groups: _Groups, scores: Iterable[Score]) -> None:
        """Computed scores join the groups as good-quality readings of their rule."""
        for rule, device_id, ts_ms, score in scores:
            device = self._devices.get(device_id)
            compiled = self._bind(rule, device) if device is not None else None
            if compiled is not None:
                groups.setdefault((rule.id, device_id), (rule, compiled, []))[2].append((ts_ms, score, 0))

    def _anomaly_scores(self, conn: psycopg.Connection, batch: list[Reading]) -> list[Score]:
        if not self._anomaly_by_tag:
            return []
        relevant = [r for r in batch if r.tag in self._anomaly_by_tag]
        if not relevant:
            return []
        rules = list({r.id: r for t in {p.tag for p in relevant} for r in self._anomaly_by_tag[t]}.values())
        return self._scorer.score(conn, rules, self._devices, relevant)

    def _targets(self, tag: str, device_id: int) -> list[_Target]:
        """The rules watching ``tag`` on ``device_id``, bound to it (cached; the device must be loaded)."""
        key = (tag, device_id)
        got = self._bindings.get(key)
        if got is None:
            got = []
            device = self._devices.get(device_id)
            if device is not None:
                for rule in self._rules_by_tag.get(tag, ()):
                    if rule.spec.scope.matches(device):
                        compiled = self._bind(rule, device)
                        if compiled is not None:
                            band = quiet_band(compiled)
                            lo, hi = band if band is not None else (None, None)
                            got.append((rule, compiled, rule.id, lo, hi))
            self._bindings[key] = got
        return got

    def _group(self, conn: psycopg.Connection, batch: list[Reading]) -> tuple[_Groups, _Quiet]:
        """Readings per (rule, device) for the rules in scope — and, apart, the *quiet* ones: readings inside
        the rule's quiet band (:func:`rules.engine.quiet_band`) of a pair whose cached state is ``normal`` (or
        not cached yet — they cannot *open* an alarm whatever the row holds; a clear waits one transaction) and
        (:meth:`_apply` hands them back to a pair that has a loud reading too). They cannot open anything, so they
        wait until the alarm-producing pairs have committed. One pass; this is the per-reading hot path."""
        by_tag = self._rules_by_tag
        relevant = [r for r in batch if r.tag in by_tag]
        watched = relevant + [r for r in batch if r.tag in self._anomaly_by_tag] if self._anomaly_by_tag else relevant
        self._load_devices(conn, {r.device_id for r in watched})
        groups: _Groups = {}
        quiet: _Quiet = []
        bindings, states = self._bindings, self._states
        for r in relevant:
            device_id = r.device_id
            targets = bindings.get((r.tag, device_id))
            if targets is None:
                targets = self._targets(r.tag, device_id)
            for rule, compiled, rule_id, lo, hi in targets:
                key = (rule_id, device_id)
                item = (r.ts_ms, r.value, r.quality)
                if lo is not None and (lo < item[1] < hi or item[2] != 0):  # type: ignore[operator]
                    cached = states.get(key)  # not cached (a restart): the row decides, after the alarms
                    if cached is None or cached[0].phase == "normal":
                        quiet.append((key, rule, compiled, item))
                        continue
                group = groups.get(key)
                if group is None:
                    group = groups[key] = (rule, compiled, [])
                group[2].append(item)
        return groups, quiet

    def _lock_states(self, conn: psycopg.Connection, keys: list[tuple[int, int]]) -> list[tuple[int, int, int, Any]]:
        """Lock (creating on first use) the state rows of ``keys``, in key order: ``(rule, device, xmin, state)``,
        where ``state`` is None when ``xmin`` is the cached row version (the cached state is current — nothing
        to fetch or parse). Pairs known to exist skip the insert: the hot path is one locking SELECT."""
        new = [k for k in keys if k not in self._known_pairs]
        if new:
            conn.execute(
                """INSERT INTO rule_states (rule_id, device_id, state, last_ts)
                   SELECT k.r, k.d, %s, %s FROM unnest(%s::int[], %s::int[]) WITH ORDINALITY AS k(r, d, n)
                   ORDER BY k.n
                   ON CONFLICT (rule_id, device_id) DO NOTHING""",
                (Jsonb(NORMAL.to_json()), _EPOCH, [k[0] for k in new], [k[1] for k in new]),
            )
        states = self._states
        xmins = [states[k][1] if k in states else _NO_XMIN for k in keys]
        rows = conn.execute(
            """SELECT rs.rule_id, rs.device_id, rs.xmin::text::bigint,
                      CASE WHEN rs.xmin::text::bigint = k.x THEN NULL ELSE rs.state END
               FROM rule_states rs JOIN unnest(%b::int[], %b::int[], %b::bigint[]) AS k(r, d, x)
                 ON rs.rule_id = k.r AND rs.device_id = k.d
               ORDER BY rs.rule_id, rs.device_id
               FOR UPDATE OF rs""",
            ([k[0] for k in keys], [k[1] for k in keys], xmins),
        ).fetchall()
        if len(rows) < len(keys) and not new:  # a cached pair's row is gone (deleted by hand): create it
            self._known_pairs.difference_update(keys)
            return self._lock_states(conn, keys)
        self._known_pairs.update((r[0], r[1]) for r in rows)
        return rows

    def _apply(
        self,
        conn: psycopg.Connection,
        groups: _Groups,
        quiet: _Quiet,
        first: Callable[[psycopg.Connection], object] | None = None,
    ) -> list[AlarmEvent]:
        """Evaluate and commit: pairs that (by the cached states) emit an event, or are not cached, in a first
        small transaction; the rest — and the ``quiet`` readings — in a second. ``first`` runs in the first."""
        if groups and quiet:  # a pair with a loud reading takes its quiet ones along (time order matters)
            rest: _Quiet = []
            for q in quiet:
                group = groups.get(q[0])
                if group is None:
                    rest.append(q)
                else:
                    group[2].append(q[3])
            quiet = rest
        guesses: dict[tuple[int, int], tuple[RuleState, RuleState, list[RuleEvent]]] = {}
        hot: list[tuple[int, int]] = []
        cold: list[tuple[int, int]] = []
        states = self._states
        for key, (_, compiled, readings) in groups.items():
            cached = states.get(key)
            if cached is None:
                hot.append(key)
                continue
            new, evs = evaluate_all(compiled, cached[0], readings)
            guesses[key] = (cached[0], new, evs)
            (hot if evs else cold).append(key)
        events: list[AlarmEvent] = []
        for n, keys in enumerate((hot, cold)):
            if n == 1:  # after the alarms are committed: the quiet readings join the second transaction
                for key, rule, compiled, item in quiet:
                    group = groups.get(key)
                    if group is None:
                        group = groups[key] = (rule, compiled, [])
                        keys.append(key)
                    group[2].append(item)
            if not keys and first is None:
                continue
            done: dict[tuple[int, int], tuple[RuleState, int]] = {}
            with conn.transaction():
                if first is not None:
                    first(conn)
                    first = None
                if keys:
                    events.extend(self._commit_slice(conn, groups, sorted(keys), guesses, done))
            states.update(done)  # only states that are committed become the cache
        return events

    def _commit_slice(
        self,
        conn: psycopg.Connection,
        groups: _Groups,
        keys: list[tuple[int, int]],
        guesses: dict[tuple[int, int], tuple[RuleState, RuleState, list[RuleEvent]]],
        done: dict[tuple[int, int], tuple[RuleState, int]],
    ) -> list[AlarmEvent]:
        """Lock, evaluate (reusing a guess made from the state the row still holds), write what changed,
        record alarms and NOTIFY; fills ``done`` with the states to cache once the transaction commits."""
        events: list[AlarmEvent] = []
        updates: list[tuple[str, datetime, int, int]] = []
        written: dict[tuple[int, int], RuleState] = {}
        for rule_id, device_id, xmin, raw in self._lock_states(conn, keys):
            key = (rule_id, device_id)
            rule, compiled, readings = groups[key]
            guess = guesses.get(key)
            if raw is None and guess is not None:  # the row is the version our guess started from
                old, new, rule_events = guess
            else:
                if raw is None:  # cached state current, but no guess was made for it
                    old = self._states[key][0]
                else:
                    try:
                        old = RuleState.from_json(raw)
                    except StateFormatError:
                        log.warning(
                            "rule %d device %d: unreadable state %r; starting from normal", rule_id, device_id, raw
                        )
                        old = NORMAL
                new, rule_events = evaluate_all(compiled, old, readings)
            if durable_change(old, new, rate=compiled.kind == "rate"):
                updates.append((orjson.dumps(new.to_json()).decode(), _ts(new.last_ts_ms), rule_id, device_id))
                written[key] = new
            else:
                done[key] = (new, xmin)
            for ev in rule_events:
                alarm = self._record(conn, rule, device_id, ev)
                if alarm is not None:
                    events.append(alarm)
        if updates:  # one statement for the slice, not one per pair
            cols = list(zip(*updates, strict=True))
            rows = conn.execute(
                """UPDATE rule_states rs SET state = u.s::jsonb, last_ts = u.t, updated_at = now()
                   FROM unnest(%b::text[], %b::timestamptz[], %b::int[], %b::int[]) AS u(s, t, r, d)
                   WHERE rs.rule_id = u.r AND rs.device_id = u.d
                   RETURNING rs.rule_id, rs.device_id, rs.xmin::text::bigint""",
                (list(cols[0]), list(cols[1]), list(cols[2]), list(cols[3])),  # %b: no per-element quoting
            ).fetchall()
            for r, d, x in rows:
                done[(r, d)] = (written[(r, d)], x)
        publish_all(conn, [ev.event() for ev in events])  # one statement for the slice's events
        return events

    def _record(self, conn: psycopg.Connection, rule: Rule, device_id: int, ev: RuleEvent) -> AlarmEvent | None:
        """Write one state-machine event to ``alarms``; None when the table already agrees."""
        if isinstance(ev, AlarmOpened):
            when = _ts(ev.ts_ms)
            suppressed_by, flapping = suppression_for(conn, rule, self._devices.get(device_id), device_id, when)
            explanation = self._scorer.explanations.get((rule.id, device_id, ev.ts_ms))
            message = alarm_message(rule, ev.peak, explanation)
            if flapping:
                message = f"flapping: {message}"
            row = conn.execute(
                """INSERT INTO alarms (rule_id, device_id, severity, peak_severity, latched, state, message,
                                       trigger_value, triggered_at, suppressed_by, flapping, explanation,
                                       auto_dispatch)
                   VALUES (%s, %s, %s, %s, %s, 'active', %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (rule_id, device_id) WHERE cleared_at IS NULL DO NOTHING
                   RETURNING id""",
                (
                    rule.id,
                    device_id,
                    ev.severity,
                    ev.severity,
                    rule.spec.latch,
                    message,
                    ev.value,
                    when,
                    suppressed_by,
                    flapping,
                    None if explanation is None else Jsonb(explanation),
                    rule.spec.auto_dispatch,
                ),
            ).fetchone()
            if row is None:  # an open alarm already exists (latched, or state reset by hand): keep it
                conn.execute(
                    "UPDATE alarms SET condition_cleared_at = NULL WHERE rule_id = %s AND device_id = %s"
                    " AND cleared_at IS NULL",
                    (rule.id, device_id),
                )
                return None
            kind: EventType = "alarm_opened" if suppressed_by is None else "alarm_suppressed"
            return AlarmEvent(kind, row[0], rule.id, device_id, ev.ts_ms, ev.value, suppressed_by)
        if isinstance(ev, SeverityChanged):
            row = conn.execute(
                """UPDATE alarms SET severity = %s,
                          peak_severity = CASE WHEN %s < coalesce(array_position(%s::text[], peak_severity), 99)
                                               THEN %s ELSE peak_severity END
                   WHERE rule_id = %s AND device_id = %s AND cleared_at IS NULL
                   RETURNING id, suppressed_by""",
                (ev.severity, SEVERITY_RANK[ev.severity] + 1, list(SEVERITY_RANK), ev.severity, rule.id, device_id),
            ).fetchone()
            if row is None or row[1] is not None:  # nothing open, or suppressed: nobody is told
                return None
            return AlarmEvent("alarm_severity_changed", row[0], rule.id, device_id, ev.ts_ms, ev.value)
        # A latched alarm that nobody acknowledged yet only records that its condition is gone.
        row = conn.execute(
            """UPDATE alarms SET condition_cleared_at = %s,
                      state = CASE WHEN latched AND acknowledged_at IS NULL THEN state ELSE 'cleared' END,
                      cleared_at = CASE WHEN latched AND acknowledged_at IS NULL THEN NULL ELSE %s END
               WHERE rule_id = %s AND device_id = %s AND cleared_at IS NULL
               RETURNING id, cleared_at IS NOT NULL, suppressed_by""",
            (_ts(ev.ts_ms), _ts(ev.ts_ms), rule.id, device_id),
        ).fetchone()
        if row is None or not row[1]:  # nothing open (cleared by hand), or latched: nothing to report yet
            return None
        if row[2] is not None:  # a suppressed alarm was never announced; its clearing is not either
            return None
        return AlarmEvent("alarm_cleared", row[0], rule.id, device_id, ev.ts_ms, ev.value)
