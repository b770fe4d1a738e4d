"""Ingest throughput, end to end, against the physical limit of the same machine.

    python bench/ingest.py [--points N] [--workers K] [--json]

One run:

1. creates a throwaway database on ``FIELDWATCH_DATABASE_URL`` (migrated, with one
   site, ``--gateways`` gateways and ``--series`` series spread over their devices);
2. starts a private Mosquitto (``tests.support.brokers``: a port of its own, deep per-client
   queue as docs/ingest.md recommends; ``--shared-broker`` uses ``FIELDWATCH_MQTT_URL``
   instead, whose default ``max_queued_messages 1000`` drops QoS 1 messages in a
   burst bigger than that: the ``lost`` and ``seq_gaps`` fields then show it) and
   ``--workers`` ingest worker *processes* (MQTT 5 shared subscription when K > 1);
3. a separate publisher process sends gateway-format batches (QoS 1, one message
   per gateway poll, increasing sequence numbers) as fast as the broker takes them;
   the clock runs from the first publish to the moment every point is committed;
4. then, in the same run and database, a raw binary ``COPY`` of exactly the same
   rows into an identical table (same columns, same primary key, same day
   partitions) gives the ceiling; ``ratio`` is end-to-end over raw;
5. counts what was stored: ``lost`` (sent, not stored) and ``duplicated`` (stored
   twice; the primary key should make this impossible) must both be 0.

The last stdout line is one JSON object. Numbers on a shared 2-core machine are
noisy: run it twice and read both.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's directory comes first on sys.path and its name
# would shadow the ``ingest`` package; drop it before importing anything of ours,
# and put the repository root first (the private broker is ``tests.support.brokers``).
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import datetime as dt
import json
import multiprocessing as mp
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

TAGS_PER_DEVICE = 10


@dataclass(frozen=True)
class Plan:
    """The synthetic fleet and its data: deterministic, so publisher and raw COPY produce the same rows."""

    uid: str
    gateways: int
    series: int  # total, split evenly over gateways
    points: int  # total, rounded down to whole messages
    per_message: int

    @property
    def site(self) -> str:
        return f"s-{self.uid}"

    def gateway(self, g: int) -> str:
        return f"gw-{self.uid}-{g}"

    @property
    def series_per_gateway(self) -> int:
        return self.series // self.gateways

    @property
    def devices_per_gateway(self) -> int:
        return max(1, self.series_per_gateway // TAGS_PER_DEVICE)

    @property
    def steps(self) -> int:
        """Timestamps per series."""
        return self.points // (self.gateways * self.series_per_gateway)

    @property
    def start_ms(self) -> int:
        # Recent enough to pass the retention check, never in the future.
        return (int(time.time()) - self.steps - 120) * 1000

    def messages(self, start_ms: int) -> Iterator[tuple[int, int, list[tuple[str, str, int, float]]]]:
        """``(gateway index, seq, points)`` in publishing order: time-ordered, one poll per message."""
        spg = self.series_per_gateway
        names = [(f"dev-{i // TAGS_PER_DEVICE}", f"t{i % TAGS_PER_DEVICE}") for i in range(spg)]
        seq = [0] * self.gateways
        buf: list[list[tuple[str, str, int, float]]] = [[] for _ in range(self.gateways)]
        for step in range(self.steps):
            ts = start_ms + step * 1000
            for g in range(self.gateways):
                for i, (dev, tag) in enumerate(names):
                    buf[g].append((dev, tag, ts, float(step + i)))
                    if len(buf[g]) == self.per_message:
                        seq[g] += 1
                        yield g, seq[g], buf[g]
                        buf[g] = []
        for g in range(self.gateways):
            if buf[g]:
                seq[g] += 1
                yield g, seq[g], buf[g]


# --- setup ---------------------------------------------------------------------------


def setup_database(admin_url: str, plan: Plan) -> tuple[str, str, dict[tuple[str, str, str], int]]:
    """Create and migrate the bench database and its registry; returns (name, url, series ids)."""
    from fwcore.db import create_database
    from ingest.schema import migrate

    name = f"fwbench_{plan.uid}"
    url = create_database(admin_url, name)
    migrate(url)
    series: dict[tuple[str, str, str], int] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        (client,) = conn.execute(
            "INSERT INTO clients (name, segment) VALUES (%s, 'standard') RETURNING id", (f"bench-{plan.uid}",)
        ).fetchone()  # type: ignore[misc]
        (site,) = conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude)"
            " VALUES (%s, %s, 'bench', 0, 0) RETURNING id",
            (client, plan.site),
        ).fetchone()  # type: ignore[misc]
        for g in range(plan.gateways):
            (gw,) = conn.execute(
                "INSERT INTO gateways (site_id, slug) VALUES (%s, %s) RETURNING id", (site, plan.gateway(g))
            ).fetchone()  # type: ignore[misc]
            for i in range(plan.series_per_gateway):
                dev, tag = f"dev-{i // TAGS_PER_DEVICE}", f"t{i % TAGS_PER_DEVICE}"
                if i % TAGS_PER_DEVICE == 0:
                    (dev_id,) = conn.execute(
                        "INSERT INTO devices (site_id, gateway_id, key, equipment_model) "
                        "VALUES (%s, %s, %s, 'BENCH') RETURNING id",
                        (site, gw, dev),
                    ).fetchone()  # type: ignore[misc]
                (sid,) = conn.execute(
                    "INSERT INTO series (device_id, tag) VALUES (%s, %s) RETURNING id", (dev_id, tag)
                ).fetchone()  # type: ignore[misc]
                series[(plan.gateway(g), dev, tag)] = sid
    return name, url, series


# --- child processes --------------------------------------------------------------------


def publisher_main(mqtt_url: str, plan: Plan, start_ms: int, go: mp.Event, done: mp.Queue) -> None:  # type: ignore[valid-type]
    """Encode every message first, then publish them all at QoS 1 and wait for the broker's PUBACKs."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from fwcore.contract import Batch, Point, encode_batch, topic
    from fwcore.settings import mqtt_parts

    payloads = []
    for g, seq, pts in plan.messages(start_ms):
        gw = plan.gateway(g)
        batch = Batch(gateway=gw, site=plan.site, seq=seq, points=[Point(*p) for p in pts], sent_at=start_ms)
        payloads.append((topic(plan.site, gw, "telemetry"), encode_batch(batch)))
    p = mqtt_parts(mqtt_url)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{plan.uid}", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(200)
    c.max_queued_messages_set(0)
    c.connect(p["host"], p["port"], 30)
    c.loop_start()
    go.wait()
    t0 = time.perf_counter()
    infos = [c.publish(t, data, qos=1) for t, data in payloads]
    for info in infos:
        info.wait_for_publish(60)
    done.put(
        {
            "messages": len(payloads),
            "bytes": sum(len(d) for _, d in payloads),
            "publish_s": time.perf_counter() - t0,
            "unacked": sum(1 for i in infos if not i.is_published()),
        }
    )
    c.disconnect()
    c.loop_stop()


def worker_main(
    db_url: str,
    mqtt_url: str,
    client_id: str,
    plan: Plan,
    args: dict,
    counter,
    ready: mp.Event,
    stop: mp.Event,  # type: ignore[valid-type]
) -> None:
    """One ingest worker process; mirrors its stored+duplicate point count into ``counter``."""
    from ingest.validate import Limits
    from ingest.worker import IngestWorker

    w = IngestWorker(
        db_url,
        mqtt_url,
        client_id=client_id,
        share_group=f"bench-{plan.uid}" if args["workers"] > 1 else None,
        batch_max_points=args["batch_points"],
        batch_max_wait_ms=args["batch_wait_ms"],
        queue_max_messages=args["queue"],
        session_expiry_s=60,
        site_filter=plan.site,
        limits=Limits(),
    )
    profile = None
    if args.get("cprofile"):
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    w.start()
    ready.set()
    while not stop.wait(0.05):
        s = w.stats
        counter.value = s.points + s.duplicates
    w.stop()
    s = w.stats
    counter.value = s.points + s.duplicates
    if profile is not None:
        import pstats

        profile.disable()
        pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)


# --- raw COPY ------------------------------------------------------------------------------


def raw_copy(url: str, plan: Plan, start_ms: int, series: dict[tuple[str, str, str], int], chunk: int) -> float:
    """Binary COPY of the same rows into a twin of ``telemetry``; returns rows/s (client encoding included)."""
    from ingest.schema import storage_of

    with psycopg.connect(url, autocommit=True) as conn:
        storage = storage_of(conn)
        if storage == "plain":
            conn.execute("CREATE TABLE raw_copy (LIKE telemetry INCLUDING ALL) PARTITION BY RANGE (time)")
            days = conn.execute(
                """SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i
                   JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'telemetry'::regclass"""
            ).fetchall()
            for rel, bound in days:
                conn.execute(f"CREATE TABLE raw_{rel} PARTITION OF raw_copy {bound}")
        else:
            conn.execute("CREATE TABLE raw_copy (LIKE telemetry INCLUDING ALL)")
            conn.execute("SELECT create_hypertable('raw_copy', 'time', chunk_time_interval => INTERVAL '1 day')")
        rows = []
        for g, _seq, pts in plan.messages(start_ms):
            gw = plan.gateway(g)
            rows.extend((series[(gw, d, t)], ts, v) for d, t, ts, v in pts)
        sql = "COPY raw_copy (series_id, time, value, quality) FROM STDIN (FORMAT BINARY)"
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        t0 = time.perf_counter()
        for i in range(0, len(rows), chunk):
            with conn.transaction(), conn.cursor() as cur, cur.copy(sql) as cp:
                cp.set_types(["int4", "timestamptz", "float8", "int2"])
                for sid, ts, v in rows[i : i + chunk]:
                    cp.write_row((sid, epoch + dt.timedelta(milliseconds=ts), v, 0))
        elapsed = time.perf_counter() - t0
        (n,) = conn.execute("SELECT count(*) FROM raw_copy").fetchone()  # type: ignore[misc]
        assert n == len(rows), f"raw COPY stored {n} of {len(rows)} rows"
    return len(rows) / elapsed


# --- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--gateways", type=int, default=10)
    ap.add_argument("--per-message", type=int, default=500, help="points per MQTT message (a gateway poll)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch-points", type=int, default=20_000, help="points per database transaction")
    ap.add_argument("--batch-wait-ms", type=int, default=100)
    ap.add_argument("--queue", type=int, default=1000, help="bounded queue (messages) per worker")
    ap.add_argument("--timeout", type=float, default=90.0)
    ap.add_argument("--keep", action="store_true", help="keep the bench database")
    ap.add_argument("--shared-broker", action="store_true", help="use FIELDWATCH_MQTT_URL, not a private Mosquitto")
    ap.add_argument("--cprofile", action="store_true", help="print a cProfile of the worker to stderr")
    ap.add_argument("--json", action="store_true", help="print only the JSON result line")
    args = ap.parse_args(argv)

    from fwcore.db import drop_database
    from fwcore.settings import DEFAULT_DATABASE_URL, DEFAULT_MQTT_URL

    admin = os.environ.get("FIELDWATCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    from tests.support.brokers import PrivateMosquitto

    broker = None
    if args.shared_broker:
        mqtt_url = os.environ.get("FIELDWATCH_MQTT_URL", DEFAULT_MQTT_URL)
    else:
        broker = PrivateMosquitto()
        broker.start()
        mqtt_url = broker.url
    plan = Plan(uuid.uuid4().hex[:8], args.gateways, args.series, args.points, args.per_message)
    sent = plan.steps * plan.gateways * plan.series_per_gateway
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    name, url, series = setup_database(admin, plan)
    ctx = mp.get_context("spawn")
    procs: list[mp.Process] = []
    try:
        start_ms = plan.start_ms
        # Partitions for the bench's days exist before the clock starts, as the scheduler makes them in service.
        with psycopg.connect(url, autocommit=True) as conn:
            for d in {start_ms // 86_400_000, (start_ms + plan.steps * 1000) // 86_400_000}:
                conn.execute("SELECT fw_ensure_telemetry_partition(date '1970-01-01' + %s)", (d,))
        stop = ctx.Event()
        counters = [ctx.Value("q", 0) for _ in range(args.workers)]
        readies = [ctx.Event() for _ in range(args.workers)]
        wargs = vars(args)
        for k in range(args.workers):
            p = ctx.Process(
                target=worker_main,
                args=(url, mqtt_url, f"bench-ingest-{plan.uid}-{k}", plan, wargs, counters[k], readies[k], stop),
            )
            p.start()
            procs.append(p)
        go, done = ctx.Event(), ctx.Queue()
        pub = ctx.Process(target=publisher_main, args=(mqtt_url, plan, start_ms, go, done))
        pub.start()
        procs.append(pub)
        for r in readies:
            if not r.wait(30):
                raise SystemExit("an ingest worker did not start within 30 s")
        say(f"publishing {sent} points ({plan.series} series, {plan.gateways} gateways) to {args.workers} worker(s)")
        time.sleep(2.0)  # let the publisher finish encoding
        t0 = time.perf_counter()
        go.set()
        deadline = t0 + args.timeout
        while sum(c.value for c in counters) < sent and time.perf_counter() < deadline:
            time.sleep(0.01)
        elapsed = time.perf_counter() - t0
        pub_stats = done.get(timeout=30)
        stop.set()
        for p in procs:
            p.join(30)
        say(f"end to end: {elapsed:.2f} s; publisher {pub_stats}")
        with psycopg.connect(url, autocommit=True) as conn:
            stored, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT (series_id, time)) FROM telemetry"
            ).fetchone()  # type: ignore[misc]
            dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]  # type: ignore[index]
            gaps = conn.execute("SELECT sum(seq_gaps)::int FROM gateways").fetchone()[0]  # type: ignore[index]
        say("raw binary COPY of the same rows …")
        raw = raw_copy(url, plan, start_ms, series, args.batch_points)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        if not args.keep:
            drop_database(admin, name)
        if broker is not None:
            broker.close()
        else:
            _forget_sessions(mqtt_url, [f"bench-ingest-{plan.uid}-{k}" for k in range(args.workers)])
    e2e = sent / elapsed
    result = {
        "points_per_s": round(e2e),
        "raw_copy_points_per_s": round(raw),
        "ratio": round(e2e / raw, 3),
        "points_sent": sent,
        "points_stored": stored,
        "lost": sent - distinct,
        "duplicated": stored - distinct,
        "dead_letters": dead,
        "seq_gaps": gaps,
        "broker": "shared" if args.shared_broker else "private",
        "workers": args.workers,
        "batch_points": args.batch_points,
        "seconds": round(elapsed, 2),
    }
    print(json.dumps(result))
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


def _forget_sessions(mqtt_url: str, client_ids: list[str]) -> None:
    """End the workers' persistent sessions so the shared broker stops queueing for them."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from fwcore.settings import mqtt_parts

    p = mqtt_parts(mqtt_url)
    for cid in client_ids:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        try:
            c.connect(p["host"], p["port"], 30, clean_start=True)
            c.loop_start()
            time.sleep(0.05)
            c.disconnect()
            c.loop_stop()
        except OSError:
            pass


if __name__ == "__main__":
    raise SystemExit(main())
