"""The ingest worker: MQTT in, validated rows committed, then acks out.

Threads and hand-offs::

    paho network thread ──Inbound──▶ bounded queue ──▶ writer thread
                                                        │ decode + validate (registry cache)
                                                        │ ONE transaction: telemetry, dead letters,
                                                        │   held points of unregistered devices,
                                                        │   last_seq/seq_gaps, gateway status
                                                        │ commit
                                                        ├─▶ PUBACK each message (current connection only)
                                                        ├─▶ application ack per gateway on …/ack
                                                        └─▶ on_commit hooks (errors logged, never fatal)

Nothing is acknowledged before it is durable, so a crash at any point loses
nothing: the broker redelivers what was not acked, and the ``(series_id, time)``
key makes the second copy a no-op. When the database is down the writer keeps
its batch and retries with capped, jittered backoff; the queue fills, paho stops
reading, and the broker holds the rest.

Points of devices nobody registered are held, not dead-lettered (:mod:`ingest.discovery`); the
devices a gateway's status announces are recorded as discovered, and registered ones' series get
the units the gateway announced.

Gateway liveness (:mod:`ingest.liveness`): births and deaths on ``…/status`` are
stored in the transaction like the rest, ordered by session. Health messages
(``…/health``, QoS 0, subscribed by every worker) never enter the queue: the network
thread notes each as the gateway's heartbeat, and between flushes the writer thread
declares a gateway silent for longer than its timeout offline (``no heartbeat``), or
online again once it is heard from — only while this worker has been connected for the
whole timeout and its queue is not backed up, so ingest's own outage never reads as the
gateways'.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

import orjson
import psycopg

from fwcore.contract import Batch, ContractError, decode_batch, encode_ack, parse_topic, subscription, topic
from fwcore.retry import Backoff, backoff_delays
from fwcore.tls import TlsFiles
from ingest.announce import Announcements, parse_announcements
from ingest.consumer import Inbound, MqttConsumer
from ingest.discovery import Announce
from ingest.errors import DatabaseUnavailable
from ingest.fastpath import FastBatch, fast_accept
from ingest.gateway_report import buffer_of, parse_report
from ingest.hold import HoldLimits, HoldWrite, fill_ratio, holds_of, near_bound
from ingest.liveness import HEARD_AGAIN, NO_HEARTBEAT, Heard, heartbeat_verdict
from ingest.metrics import WorkerMetrics, set_hold_fill, set_sequences_missing
from ingest.points import CommittedPoint
from ingest.registry import RegistryCache
from ingest.validate import Limits, RegistryView, StatusUpdate, Verdict, parse_status, validate_batch
from ingest.writer import (
    BatchWrite,
    DeadLetter,
    StatusWrite,
    TelemetryWriter,
    WatchedGateway,
    WriteResult,
    rejection_dead_letters,
    rows_of,
)

log = logging.getLogger(__name__)

CommitHook = Callable[[list[CommittedPoint]], None]


#: Retrying a database write: from 0.1 s, doubling to 5 s, never longer than nominal (a retry sooner is cheap).
DB_RETRY: Backoff = {"base": 0.1, "cap": 5.0, "spread": (0.5, 1.0)}

#: Seconds between two heartbeat checks (at most; a short silence timeout checks more often).
HEARTBEAT_CHECK_S = 5.0


@dataclass(slots=True)
class IngestStats:
    """Counters of one worker since it started (a snapshot; read ``worker.stats`` again for fresh numbers)."""

    messages: int = 0  # messages committed (stored, dead-lettered or status)
    points: int = 0  # points newly stored
    duplicates: int = 0  # points already stored with the same value (redelivery)
    conflicts: int = 0  # points already stored with another value: the first kept, these dead-lettered
    dead_letters: int = 0  # dead-letter rows written
    held: int = 0  # points held for discovered (unregistered) devices
    commits: int = 0
    gaps: int = 0  # gateway sequences skipped when seen
    gaps_filled: int = 0  # of those, arrived later (out-of-order commits between workers, resends)
    db_errors: int = 0  # failed write attempts, retried
    not_acked: int = 0  # committed messages from an older connection (the broker redelivers them)
    queue_depth: int = 0  # received, not yet committed

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class _Work:
    """A received message, decoded once (decoding is pure; validation needs the registry)."""

    msg: Inbound
    kind: str
    site: str = ""
    gateway: str = ""
    batch: Batch | None = None
    status: StatusUpdate | None = None
    error: ContractError | None = None
    points: int = 0
    fast: FastBatch | None = None  # accepted whole by the fast path (no decode_batch/validate needed)
    announced: Announcements | None = None  # what a status says about the gateway's devices
    report: dict[str, Any] | None = None  # a full status's devices, profiles and config outcome


@dataclass(slots=True)
class _Plan:
    batches: list[BatchWrite] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    statuses: list[StatusWrite] = field(default_factory=list)
    holds: list[HoldWrite] = field(default_factory=list)
    announces: list[Announce] = field(default_factory=list)

    def write(self, writer: TelemetryWriter, want_points: bool) -> WriteResult:
        return writer.write(
            self.batches,
            self.dead_letters,
            self.statuses,
            want_points=want_points,
            holds=self.holds,
            announces=self.announces,
        )


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


def _decode(msg: Inbound, registry: RegistryView | None = None, limits: Limits | None = None) -> _Work:
    """Parse a message; with a registry, an ordinary telemetry message is validated on the fast path too."""
    try:
        site, gateway, kind = parse_topic(msg.topic)
    except ContractError as exc:
        return _Work(msg, "invalid", error=exc)
    work = _Work(msg, kind, site, gateway)
    if kind == "telemetry" and registry is not None and limits is not None:
        now_ms = int(time.time() * 1000)
        fast = fast_accept(msg.payload, site=site, gateway=gateway, registry=registry, now_ms=now_ms, limits=limits)
        if fast is not None:
            work.fast, work.points = fast, len(fast.rows)
            return work
    try:
        if kind == "telemetry":
            work.batch = decode_batch(msg.payload)
            work.points = len(work.batch.points)
        elif kind == "status" and msg.payload:  # an empty payload clears a retained status: nothing to do
            work.status = parse_status(msg.payload, gateway=gateway)
            work.announced = parse_announcements(msg.payload)
            work.report = parse_report(msg.payload)
    except ContractError as exc:
        work.error = exc
    return work


class IngestWorker:
    """Consumes telemetry and status from MQTT and commits it to PostgreSQL; see the module docstring.

    ``tls``: CA and client certificate for an ``mqtts://`` URL (``Settings.mqtt_tls``).
    ``site_filter`` narrows the subscriptions to one site slug (default ``+``: all
    sites), for workers partitioned by site and for tests on a shared broker.
    ``hold`` bounds what devices nobody registered may hold (default :class:`HoldLimits`;
    ``HoldLimits(max_points=0)`` dead-letters their points as ``unknown_device`` instead).
    ``start()`` connects and returns once the subscriptions are confirmed;
    ``stop()`` stops taking messages, commits and acks what it holds, and
    disconnects (safe twice). Also a context manager.
    """

    def __init__(
        self,
        db_url: str,
        mqtt_url: str,
        *,
        client_id: str,
        protocol: str = "5",
        share_group: str | None = None,
        batch_max_points: int = 5000,
        batch_max_wait_ms: int = 200,
        on_commit: list[CommitHook] | None = None,
        limits: Limits | None = None,
        queue_max_messages: int = 1000,
        session_expiry_s: int = 3600,
        site_filter: str = "+",
        hold: HoldLimits | None = None,
        silence_timeout_s: float = 60.0,
        tls: TlsFiles | None = None,
    ) -> None:
        if batch_max_points < 1 or batch_max_wait_ms < 0:
            raise ValueError("batch_max_points must be >= 1 and batch_max_wait_ms >= 0")
        self.client_id = client_id
        self._max_points = batch_max_points
        self._max_wait = batch_max_wait_ms / 1000
        self._hooks = list(on_commit or [])
        self._limits = limits or Limits()
        self._queue: queue.Queue[Inbound] = queue.Queue(maxsize=queue_max_messages)
        self._hold = hold or HoldLimits()
        self._writer = TelemetryWriter(db_url, hold=self._hold)
        self._warned: dict[tuple[str, str], str] = {}  # (gateway, device) -> "near" | "full": logged once
        self._registry = RegistryCache()
        self._metrics = WorkerMetrics(client_id)
        self._stats = IngestStats()
        self._stats_lock = threading.Lock()
        self._in_hand = 0
        self._stopping = threading.Event()  # finish what is queued, then exit
        self._abandon = threading.Event()  # give up retrying (stop timed out); nothing held is acked
        self._state = _State.NEW
        self._thread: threading.Thread | None = None
        self._site_filter = site_filter
        if silence_timeout_s <= 0:
            raise ValueError("silence_timeout_s must be > 0")
        self._silence_s = silence_timeout_s
        #: (site, gateway) -> its last sign of life, written by the network thread.
        self._heard: dict[tuple[str, str], Heard] = {}
        self._buffers_stored: dict[int, tuple[int, float]] = {}  # gateway id -> buffer last written
        self._heard_lock = threading.Lock()
        self._next_heartbeat_check = 0.0
        telemetry = subscription("telemetry", site=site_filter)
        if share_group and protocol == "5":
            telemetry = f"$share/{share_group}/{telemetry}"
        if share_group and protocol != "5":
            log.warning("shared subscriptions need MQTT 5; %s subscribes to all telemetry", client_id)
        self._consumer = MqttConsumer(
            mqtt_url,
            client_id=client_id,
            protocol=protocol,
            subscriptions=[
                telemetry,
                subscription("status", site=site_filter),
                subscription("health", site=site_filter),
            ],
            sink=self._enqueue,
            session_expiry_s=session_expiry_s,
            receive_maximum=queue_max_messages,
            tls=tls,
        )

    # lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Connect to the database (if it is up) and the broker; raises ``BrokerUnavailable``/``NotMigrated``."""
        if self._state is not _State.NEW:
            raise RuntimeError(f"worker {self.client_id} is {self._state.value}; create a new one")
        try:
            self._writer.connection()
        except DatabaseUnavailable as exc:
            log.warning("%s; the writer will keep retrying", exc)
        self._thread = threading.Thread(target=self._run, name=f"ingest-writer-{self.client_id}", daemon=True)
        self._thread.start()
        self._state = _State.RUNNING
        try:
            self._consumer.start(timeout)
        except Exception:
            self.stop(timeout=1)
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Flush and ack what was received, then disconnect. Safe twice; never raises for a dead peer.

        If the database stays down for ``timeout`` seconds the held messages are
        left unacked: the broker redelivers them to the next worker with this client id.
        """
        if self._state is not _State.RUNNING:
            self._state = _State.STOPPED
            return
        self._state = _State.STOPPED
        self._consumer.pause()
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: could not commit within %.0f s; leaving messages unacked", self.client_id, timeout)
                self._abandon.set()
                self._thread.join(10)
        self._consumer.stop()
        self._writer.close()

    def __enter__(self) -> IngestWorker:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def stats(self) -> IngestStats:
        """A snapshot of the counters."""
        with self._stats_lock:
            snap = IngestStats(**self._stats.as_dict())
        snap.queue_depth = self._queue.qsize() + self._in_hand
        return snap

    @property
    def running(self) -> bool:
        return self._state is _State.RUNNING and self._thread is not None and self._thread.is_alive()

    @property
    def broker_connected(self) -> bool:
        """The MQTT connection is up (False while paho reconnects)."""
        return self._consumer.connected

    # network thread -----------------------------------------------------------------

    def _enqueue(self, msg: Inbound) -> None:
        if self._note_life(msg):
            # A heartbeat: nothing to store. Gateways send it at QoS 0; one sent at QoS 1 is acked now,
            # or unacked ones would use up the broker's in-flight window and stall telemetry.
            self._consumer.ack(msg)
            return
        # Blocking is the back-pressure: paho stops reading, the broker keeps the rest.
        while not self._stopping.is_set():
            try:
                self._queue.put(msg, timeout=0.5)
                return
            except queue.Full:
                continue

    def _note_life(self, msg: Inbound) -> bool:
        """Record a health message or a live birth as a sign of life; True for health (never queued).

        A retained message is not a sign of life (it may be years old), nor is a death.
        """
        parts = msg.topic.split("/")
        kind = parts[4] if len(parts) == 5 else ""
        if kind not in ("health", "status"):
            return False
        if msg.retained:
            return kind == "health"
        try:
            obj = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            obj = {}
        if kind == "status" and obj.get("state") != "online":
            return False
        session = obj.get("session")
        interval = obj.get("interval_s")
        key = (parts[2], parts[3])
        with self._heard_lock:
            before = self._heard.get(key)
            if not isinstance(interval, int | float) or isinstance(interval, bool) or interval <= 0:
                interval = before.interval_s if before is not None else None
            self._heard[key] = Heard(
                time.monotonic(),
                int(time.time() * 1000),
                session if isinstance(session, int) and not isinstance(session, bool) else None,
                float(interval) if interval is not None else None,
                buffer_of(obj) if kind == "health" else before.buffer if before is not None else None,
            )
        if kind == "health":
            self._metrics.message("health", 1)
            return True
        return False

    # writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                self._check_heartbeats()
            except Exception:  # never fatal: the next check tries again
                log.exception("%s: heartbeat check failed", self.client_id)
            items = self._collect()
            if items:
                try:
                    self._flush(items)
                except Exception:  # a bug must not kill ingest; the messages stay unacked
                    log.exception("%s: unexpected error handling %d messages", self.client_id, len(items))
                finally:
                    self._in_hand = 0
                    self._metrics.queue_depth.set(self._queue.qsize())
            elif self._stopping.is_set():
                return

    def _check_heartbeats(self) -> None:
        """Declare silent gateways offline and heard ones online again (see the module docstring)."""
        now = time.monotonic()
        if now < self._next_heartbeat_check:
            return
        self._next_heartbeat_check = now + min(HEARTBEAT_CHECK_S, self._silence_s / 4)
        since = self._consumer.connected_since
        if since is None or self._queue.qsize() > self._queue.maxsize // 2:
            return  # not listening (or behind): nothing to judge by
        try:
            watched = self._writer.watched_gateways(self._site_filter)
        except (DatabaseUnavailable, psycopg.OperationalError):
            return  # the writer reports the database; the next check tries again
        with self._heard_lock:
            heard = dict(self._heard)
        self._store_buffers(watched, heard)
        if now - since < self._silence_s:
            return  # not listening long enough: a silence we did not hear proves nothing
        for g in watched:
            last = heard.get((g.site, g.slug))
            verdict = heartbeat_verdict(g.status, last, now=now, listening_since=since, floor_s=self._silence_s)
            if verdict == "offline":
                quiet_since = max(last.at, since) if last is not None else since
                at_ms = int(time.time() * 1000 - (now - quiet_since) * 1000)
                if self._writer.set_liveness(g.id, g.status, "offline", at_ms, NO_HEARTBEAT, g.status.session):
                    log.warning(
                        "gateway %s/%s silent for %.0f s (no health message, no birth): offline",
                        g.site,
                        g.slug,
                        now - quiet_since,
                    )
            elif verdict == "online" and last is not None:
                sessions = [x for x in (g.status.session, last.session) if x is not None]
                session = max(sessions) if sessions else None
                if self._writer.set_liveness(g.id, g.status, "online", last.wall_ms, HEARD_AGAIN, session):
                    log.info("gateway %s/%s heard from again: online", g.site, g.slug)

    def _store_buffers(self, watched: list[WatchedGateway], heard: dict[tuple[str, str], Heard]) -> None:
        """Store the disk buffer each watched gateway's last health message described, when it changed."""
        changed = []
        for g in watched:
            last = heard.get((g.site, g.slug))
            if last is None or last.buffer is None or self._buffers_stored.get(g.id) == last.buffer:
                continue
            changed.append((g.id, *last.buffer))
        if not changed:
            return
        try:
            self._writer.set_buffers(changed)
        except (DatabaseUnavailable, psycopg.OperationalError):
            return  # the next check tries again
        self._buffers_stored.update({gid: (depth, age) for gid, depth, age in changed})

    def _collect(self) -> list[_Work]:
        """Up to ``batch_max_points`` points or ``batch_max_wait_ms`` after the first message.

        Waits in short slices so ``stop()`` cuts the wait short and flushes at once.
        """
        try:
            first = self._queue.get(timeout=0.05)
        except queue.Empty:
            return []
        items = [_decode(first, self._registry, self._limits)]
        self._in_hand = 1
        points = items[0].points
        deadline = time.monotonic() + self._max_wait
        while points < self._max_points:
            left = deadline - time.monotonic()
            stopping = self._stopping.is_set()
            if left <= 0 and not stopping:
                break
            try:
                msg = self._queue.get_nowait() if stopping else self._queue.get(timeout=min(left, 0.05))
            except queue.Empty:
                if stopping:
                    break
                continue
            work = _decode(msg, self._registry, self._limits)
            items.append(work)
            self._in_hand = len(items)
            points += work.points
        self._metrics.queue_depth.set(self._queue.qsize() + len(items))
        return items

    def _flush(self, items: list[_Work]) -> None:
        delays = backoff_delays(**DB_RETRY)
        failing = False
        while True:
            started = time.perf_counter()
            try:
                plan = self._plan(items)
                result = plan.write(self._writer, bool(self._hooks))
            except DatabaseUnavailable as exc:
                self._count(db_errors=1)
                self._metrics.db_errors.inc()
                if not failing:
                    log.error("%s: %s; keeping %d messages and retrying", self.client_id, exc, len(items))
                    failing = True
                if self._abandon.wait(next(delays)):
                    return
                continue
            except (psycopg.Error, ValueError, KeyError) as exc:
                # The data, not the server, was refused: find the message responsible.
                log.warning("%s: batch refused by the database (%s); writing messages one by one", self.client_id, exc)
                self._registry.clear()
                self._writer.forget_series()
                self._isolate(items)
                return
            if failing:
                log.info("%s: database writes work again", self.client_id)
            self._metrics.commit_seconds.observe(time.perf_counter() - started)
            self._metrics.batch_points.observe(result.inserted + result.duplicates)
            self._after_commit(items, plan, result)
            return

    def _isolate(self, items: list[_Work]) -> None:
        """Write each message alone; one the database still refuses is dead-lettered as ``write_failed``."""
        for work in items:
            while True:
                try:
                    plan = self._plan([work])
                    result = plan.write(self._writer, bool(self._hooks))
                except DatabaseUnavailable:
                    self._count(db_errors=1)
                    if self._abandon.wait(1.0):
                        return
                    continue
                except (psycopg.Error, ValueError, KeyError) as exc:
                    log.error("%s: message on %s refused by the database: %s", self.client_id, work.msg.topic, exc)
                    plan = _Plan(dead_letters=[DeadLetter(work.msg.topic, work.msg.payload, "write_failed", str(exc))])
                    try:
                        result = self._writer.write([], plan.dead_letters)
                    except DatabaseUnavailable:
                        if self._abandon.wait(1.0):
                            return
                        continue
                self._after_commit([work], plan, result)
                break

    def _plan(self, items: list[_Work]) -> _Plan:
        """Validate every message against the registry (looking up what the cache misses)."""
        self._registry.expire()
        now_ms = int(time.time() * 1000)
        conn = self._writer.connection()

        def check(w: _Work) -> Verdict:
            assert w.batch is not None
            return validate_batch(
                w.batch, site=w.site, gateway=w.gateway, registry=self._registry, now_ms=now_ms, limits=self._limits
            )

        verdicts = {i: check(w) for i, w in enumerate(items) if w.batch is not None and w.error is None}
        need_gw = {v.missing_gateway for v in verdicts.values() if v.missing_gateway}
        need_gw |= {w.gateway for w in items if w.status is not None and self._registry.gateway(w.gateway) is None}
        need_dev = set().union(*(v.missing_devices for v in verdicts.values()))
        try:
            if (need_gw or need_dev) and self._registry.lookup(conn, need_gw, need_dev):
                verdicts = {
                    i: check(items[i]) if (v.missing_gateway or v.missing_devices) else v for i, v in verdicts.items()
                }
                # A gateway found just now may have devices we have not looked up yet.
                more = set().union(*(v.missing_devices for v in verdicts.values())) - need_dev
                if more and self._registry.lookup(conn, (), more):
                    verdicts = {i: check(items[i]) if v.missing_devices else v for i, v in verdicts.items()}
        except psycopg.OperationalError as exc:
            self._writer.close()
            raise DatabaseUnavailable(f"registry lookup failed: {exc}") from exc

        plan = _Plan()
        for i, w in enumerate(items):
            if w.error is not None:
                plan.dead_letters.append(DeadLetter(w.msg.topic, w.msg.payload, w.error.reason, w.error.detail))
            elif w.fast is not None:
                f = w.fast
                plan.batches.append(BatchWrite(w.site, w.gateway, f.gateway_id, f.seq, f.historical, f.rows))
            elif w.kind == "telemetry":
                v = verdicts[i]
                rejections = v.rejections
                if v.gateway_id is not None and self._hold.enabled:
                    assert w.batch is not None
                    holds, rejections = holds_of(
                        rejections,
                        topic=w.msg.topic,
                        site=w.site,
                        gateway=w.gateway,
                        gateway_id=v.gateway_id,
                        seq=w.batch.seq,
                        historical=w.batch.historical,
                        sent_at=w.batch.sent_at,
                        now_ms=now_ms,
                        limits=self._limits,
                    )
                    plan.holds += holds
                plan.dead_letters += rejection_dead_letters(w.msg.topic, w.msg.payload, w.batch, rejections)
                if v.gateway_id is not None:
                    assert w.batch is not None
                    plan.batches.append(
                        BatchWrite(
                            w.site, w.gateway, v.gateway_id, w.batch.seq, w.batch.historical, rows_of(v.accepted)
                        )
                    )
            elif w.kind == "status" and w.status is not None:
                ref = self._registry.gateway(w.gateway)
                if ref is None or ref.site != w.site:
                    detail = f"status from gateway {w.gateway!r} at site {w.site!r}, which is not registered there"
                    plan.dead_letters.append(DeadLetter(w.msg.topic, w.msg.payload, "unknown_gateway", detail))
                else:
                    st = w.status
                    plan.statuses.append(StatusWrite(ref.id, st.state, st.ts_ms, st.session, st.reason, w.report))
                    if w.announced is not None and w.announced.devices:
                        plan.announces.append(Announce(ref.id, w.announced.devices))
                    if w.announced is not None and w.announced.problems:
                        log.warning("status of gateway %r: %s", w.gateway, "; ".join(w.announced.problems))
            # Other kinds (health, our own acks) are not subscribed to; an empty status is a cleared retain.
        return plan

    def _after_commit(self, items: list[_Work], plan: _Plan, result: WriteResult) -> None:
        not_acked = sum(1 for w in items if not self._consumer.ack(w.msg))
        acks: dict[tuple[str, str], list[int]] = defaultdict(list)
        for b in plan.batches:
            if b.seq is not None:  # always, from MQTT (None is the history import's, which acks nothing)
                acks[(b.site, b.gateway)].append(b.seq)
        now_ms = int(time.time() * 1000)
        for (site, gateway), seqs in acks.items():
            if not self._consumer.publish(topic(site, gateway, "ack"), encode_ack(seqs, ts=now_ms)):
                log.warning(
                    "%s: could not publish the ack for %s/%s; the gateway will resend", self.client_id, site, gateway
                )
        dead = sum(result.dead_letters.values())
        self._count(
            messages=len(items),
            points=result.inserted,
            duplicates=result.duplicates,
            conflicts=result.conflicts,
            dead_letters=dead,
            commits=1,
            gaps=result.gaps,
            gaps_filled=result.filled,
            not_acked=not_acked,
        )
        for kind in {w.kind for w in items}:
            self._metrics.message(kind, sum(1 for w in items if w.kind == kind))
        self._metrics.points.inc(result.inserted)
        self._metrics.duplicates.inc(result.duplicates)
        self._metrics.conflicts.inc(result.conflicts)
        self._metrics.commits.inc()
        self._metrics.seq_gaps.inc(result.gaps)
        self._metrics.seq_filled.inc(result.filled)
        set_sequences_missing(result.missing)
        for reason, n in result.dead_letters.items():
            self._metrics.dead_letter(reason, n)
        self._after_holds(result)
        if result.committed:
            for hook in self._hooks:
                try:
                    hook(result.committed)
                except Exception:
                    log.exception("%s: on_commit hook %r failed; ingest continues", self.client_id, hook)

    def _after_holds(self, result: WriteResult) -> None:
        """Teach the cache devices accepted in the write; count, gauge and warn about holds near their bound."""
        for (gateway_id, key), device_id in result.accepted.items():
            self._registry.learn(gateway_id, key, device_id)
        if result.held:
            self._count(held=result.held)
            self._metrics.held.inc(result.held)
        for slug, (pending, fullest) in result.hold_gateways.items():
            set_hold_fill(slug, pending, fill_ratio(fullest, self._hold))
        for h in result.holds:
            state = "full" if h.refused else "near" if near_bound(h.held, self._hold) else ""
            who = (h.gateway, h.key)
            if state and self._warned.get(who) != state:
                advice = f"accept it (fieldwatch devices accept {h.discovered_id}) or reject it"
                if state == "full":
                    log.warning(
                        "%s: the hold of device %r on gateway %r (not registered) is full: %d points held, "
                        "%d more dead-lettered as hold_full; %s",
                        self.client_id,
                        h.key,
                        h.gateway,
                        h.held,
                        h.refused,
                        advice,
                    )
                else:
                    log.warning(
                        "%s: device %r on gateway %r is not registered and its hold is near its bound: "
                        "%d of %d points held; %s",
                        self.client_id,
                        h.key,
                        h.gateway,
                        h.held,
                        self._hold.max_points,
                        advice,
                    )
            if state:
                self._warned[who] = state
            else:
                self._warned.pop(who, None)
        if result.skipped:
            log.warning(
                "%s: announced devices not recorded as discovered (discovery_max_devices reached): %s",
                self.client_id,
                ", ".join(result.skipped[:10]),
            )

    def _count(self, **deltas: int) -> None:
        with self._stats_lock:
            for name, n in deltas.items():
                setattr(self._stats, name, getattr(self._stats, name) + n)
