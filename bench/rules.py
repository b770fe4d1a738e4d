"""Rules bench: state-machine throughput, and committed-reading → committed-alarm latency; or backtest speed.

    python bench/rules.py --json
    python bench/rules.py --backtest --json

* ``readings_per_s``: readings through :func:`rules.engine.evaluate` with 1,000 rules over
  10,000 series (each series watched by one rule; a mix of kinds, ladders, durations);
* ``alarm_p50_ms`` / ``alarm_p99_ms``: committed probe reading → committed alarm, under ingest load:
  a private Mosquitto (``tests.support.brokers``), the real :class:`IngestWorker` (in this process, with
  the :class:`RuleEvaluator` as its after-commit hook) consuming a separate publisher process's load
  (``--devices`` × 10 series, one reading each per second, each watched by a rule), while a probe
  device alternates 90/60 every 0.2 s under ``probe hot: above 80``. The reading's commit is stamped
  the moment the ingest writer's transaction returns (before acks and hooks run), the alarm's by a
  ``LISTEN fw_events`` process (NOTIFY is delivered at commit). ``ingest_points_per_s`` is what ingest
  committed meanwhile;
* ``alarm_e2e_p50_ms`` / ``alarm_e2e_p99_ms``: probe *published* → alarm committed, for context: it adds
  the broker, the ingest queue and batching wait (up to ``batch_max_wait_ms``) and the ingest commit.

``--backtest`` measures instead how fast history replays through a rule, on one core (BLAS and OpenMP
threads pinned to 1), on a seeded signal that goes in and out of alarm (two-level ladder, hysteresis,
``for_s``, ``count``, keep-firing-for):

* ``threshold_replay_rows_per_s``: :func:`rules.backtest.replay` over in-memory readings (the state machine,
  per-reading states for ``--output`` and the events);
* ``threshold_rows_per_s``: :func:`rules.workbench.run_backtest` from PostgreSQL (load, replay, episodes,
  summary, scores against labels), the path of ``fieldwatch rules backtest``;
* ``anomaly_rows_per_s_<kind>``: the same for an anomaly rule over 5 pump tags with a stored model of each kind
  (load the vectors, score, replay, score against labels); a row is one vector;
* ``small_draft_s``: one backtest of an unapplied anomaly draft over a file-sized window (1,100 vectors),
  training its model in memory — what one tuning step costs;
* ``*_cpu_rows_per_s``: the same rows per CPU-second of this process (robust to a busy machine; the
  database's own CPU is not in it).

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

if "--backtest" in sys.argv:  # one core: set before numpy (and its BLAS) is first imported
    os.environ.update({v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rules import NORMAL, RuleSpec, compile_rule, evaluate

KINDS = [
    {
        "kind": "above",
        "levels": [{"severity": "major", "threshold": 80, "clear": 75}, {"severity": "critical", "threshold": 95}],
    },
    {"kind": "below", "threshold": 10},
    {"kind": "outside", "low": 20, "high": 80},
    {"kind": "rate", "direction": "either", "per": "s", "threshold": 5},
]


def throughput(n_rules: int = 1000, n_series: int = 10_000, readings_per_series: int = 30) -> float:
    rng = random.Random(1)
    rules = [
        compile_rule(
            RuleSpec(
                name=f"r{i}",
                tag="t",
                problem_code="P",
                condition=KINDS[i % 4],  # type: ignore[arg-type]
                for_s=(i % 3) * 5,
                count=1 + i % 2,
            ),
            i,
        )
        for i in range(n_rules)
    ]
    states = [NORMAL] * n_series
    data = [[50 + 40 * rng.random() for _ in range(readings_per_series)] for _ in range(64)]
    t0 = time.perf_counter()
    n = 0
    for k in range(readings_per_series):
        ts = 1_000_000 + k * 1000
        for s in range(n_series):
            states[s], _ = evaluate(rules[s % n_rules], states[s], ts, data[s % 64][k])
            n += 1
    return n / (time.perf_counter() - t0)


# --- alarm latency under ingest load --------------------------------------------------------

TAGS = 10


def setup(admin: str, uid: str, devices: int) -> tuple[str, str, int]:
    """A throwaway database: ``devices`` load devices × 10 tags, one probe device, 10 load rules + 1 probe rule."""
    import psycopg

    from fwcore.db import create_database
    from ingest.schema import migrate
    from rules.rulesfile import apply_plan, load_rules_file, plan

    name = f"fwbench_rules_{uid}"
    url = create_database(admin, name)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        c = conn.execute("INSERT INTO clients (name, segment) VALUES ('B', 'gold') RETURNING id").fetchone()[0]
        site = conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude) VALUES (%s, %s, 'B', 1, 1) RETURNING id",
            (c, f"s-{uid}"),
        ).fetchone()[0]
        for gw in ("load", "probe"):
            conn.execute("INSERT INTO gateways (site_id, slug) VALUES (%s, %s)", (site, f"{gw}-{uid}"))
        conn.execute(
            """INSERT INTO devices (site_id, gateway_id, key, equipment_model)
                        SELECT %s, g.id, 'dev-' || n, 'LOAD' FROM gateways g, generate_series(0, %s - 1) n
                        WHERE g.slug = %s""",
            (site, devices, f"load-{uid}"),
        )
        conn.execute(
            """INSERT INTO devices (site_id, gateway_id, key, equipment_model)
                        SELECT %s, id, 'probe', 'PROBE' FROM gateways WHERE slug = %s""",
            (site, f"probe-{uid}"),
        )
        conn.execute(
            """INSERT INTO series (device_id, tag) SELECT d.id, 't' || n FROM devices d,
                        generate_series(0, %s - 1) n WHERE d.equipment_model = 'LOAD'""",
            (TAGS,),
        )
        conn.execute("INSERT INTO series (device_id, tag) SELECT id, 'probe' FROM devices WHERE key = 'probe'")
        conn.execute(
            "SELECT fw_ensure_telemetry_partition(now()::date)"
            " WHERE to_regproc('fw_ensure_telemetry_partition') IS NOT NULL"
        )
        text = "".join(
            f"- {{name: load{i}, tag: t{i}, condition: {{kind: above, threshold: 1.0e9}}, for_s: 5,"
            f" scope: {{equipment_models: [LOAD]}}, problem_code: P}}\n"
            for i in range(TAGS)
        ) + (
            "- {name: probe hot, tag: probe, condition: {kind: above, threshold: 80},"
            " scope: {equipment_models: [PROBE]}, problem_code: P}\n"
        )
        apply_plan(conn, plan(conn, load_rules_file(text)), author="bench")
    return name, url, devices * TAGS


def load_publisher(mqtt_url: str, uid: str, devices: int, seconds: float, go, done) -> None:  # type: ignore[no-untyped-def]
    """A separate process: every second, one reading of every load series (200-point QoS 1 batches)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from fwcore.contract import Batch, encode_batch, topic
    from fwcore.contract import Point as WirePoint
    from fwcore.settings import mqtt_parts

    p = mqtt_parts(mqtt_url)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-rules-load-{uid}", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(200)
    c.connect(p["host"], p["port"], 30)
    c.loop_start()
    gw, site = f"load-{uid}", f"s-{uid}"
    names = [(f"dev-{d}", f"t{t}") for d in range(devices) for t in range(TAGS)]
    go.wait()
    t0, seq, sent, step = time.time(), 0, 0, 0
    while time.time() - t0 < seconds:
        ts = int((t0 + step) * 1000)
        for i in range(0, len(names), 200):
            seq += 1
            pts = [WirePoint(d, t, ts, 50.0) for d, t in names[i : i + 200]]
            c.publish(
                topic(site, gw, "telemetry"),
                encode_batch(Batch(gateway=gw, site=site, seq=seq, points=pts, sent_at=ts)),
                qos=1,
            )
            sent += len(pts)
        step += 1
        time.sleep(max(0.0, t0 + step - time.time()))
    done.put(sent)
    c.disconnect()
    c.loop_stop()


def alarm_listener(url: str, stop, ready, out) -> None:  # type: ignore[no-untyped-def]
    """A separate process: ``LISTEN fw_events``; returns {alarm id: perf_counter when its NOTIFY arrived}."""
    import psycopg

    from fwcore.events import AlarmOpenedEvent, EventListener

    seen: dict[int, float] = {}
    listener = EventListener()  # the same parsing and validation as the ticketing service's
    listener.on(AlarmOpenedEvent, lambda e: seen.__setitem__(e.alarm_id, time.perf_counter()))
    with psycopg.connect(url, autocommit=True) as conn:
        listener.listen(conn)
        ready.set()
        while not stop.is_set():
            listener.poll(conn, 0.2)
    if listener.bad_payloads:
        print(f"alarm listener: {listener.bad_payloads} bad fw_events payloads", file=sys.stderr)
    out.put(seen)


WARMUP_S = 2  # seconds of load before probes count (see the warm-up comment below)


def latency_under_load(seconds: float = 30.0, devices: int = 1000, warmup_s: float = WARMUP_S) -> dict[str, float]:
    """Committed probe reading → committed alarm (NOTIFY received), while ingest consumes a steady load.

    The ingest worker runs in this process with two after-commit hooks: a timestamp of each committed
    probe reading, then the :class:`RuleEvaluator`. A listener process on ``fw_events`` timestamps each alarm
    as PostgreSQL delivers it (at commit). A probe reading alternates 90 (opens) / 60 (clears) every 0.2 s.
    """
    import multiprocessing as mp

    import paho.mqtt.client as mqtt
    import psycopg
    from paho.mqtt.enums import CallbackAPIVersion

    from fwcore.contract import Batch, encode_batch, topic
    from fwcore.contract import Point as WirePoint
    from fwcore.db import drop_database
    from fwcore.gctune import tune_gc
    from fwcore.settings import load_settings, mqtt_parts
    from ingest.worker import IngestWorker
    from rules import RuleEvaluator
    from tests.support.brokers import PrivateMosquitto

    admin = load_settings().database_url
    uid = uuid.uuid4().hex[:8]
    name, url, n_series = setup(admin, uid, devices)
    committed: dict[int, float] = {}  # probe ts_ms → when its reading was committed
    published: dict[int, float] = {}  # probe ts_ms → when it was published
    alarms: dict[int, float] = {}  # alarm id → when its NOTIFY arrived
    counted = [0]
    last_commit = [0.0]  # when the ingest writer's latest transaction returned (committed)

    def stamp(points: list) -> None:  # type: ignore[type-arg]
        # The hook runs after acks are published; the commit happened at last_commit (same thread).
        counted[0] += len(points)
        for p in points:
            if p.tag == "probe" and p.value > 80:
                committed[p.ts_ms] = last_commit[0]

    # The alarm observer is a separate process (like ticketing), so its clock reading does not wait for
    # this process's GIL; perf_counter is CLOCK_MONOTONIC, comparable across processes on Linux.
    ctx = mp.get_context("spawn")
    stop, ready, got = ctx.Event(), ctx.Event(), ctx.Queue()
    observer = ctx.Process(target=alarm_listener, args=(url, stop, ready, got))
    observer.start()
    if not ready.wait(30):
        raise SystemExit("the alarm listener did not start")
    try:
        with PrivateMosquitto() as broker:
            ev = RuleEvaluator(url)
            ev.warm()  # as `fieldwatch serve` does before ingest starts
            worker = IngestWorker(
                url,
                broker.url,
                client_id=f"bench-rules-ingest-{uid}",
                site_filter=f"s-{uid}",
                on_commit=[stamp, ev],
                session_expiry_s=60,
            )
            write = worker._writer.write  # stamp the commit itself, not the later hook call

            def timed_write(*a, **kw):  # type: ignore[no-untyped-def]
                result = write(*a, **kw)
                last_commit[0] = time.perf_counter()
                return result

            worker._writer.write = timed_write  # type: ignore[method-assign]
            tune_gc()  # as `fieldwatch serve` does when it starts ingest
            worker.start()
            go, done = ctx.Event(), ctx.Queue()
            pub = ctx.Process(target=load_publisher, args=(broker.url, uid, devices, seconds + warmup_s, go, done))
            pub.start()
            p = mqtt_parts(broker.url)
            probe = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-rules-probe-{uid}", protocol=mqtt.MQTTv5)
            probe.connect(p["host"], p["port"], 30)
            probe.loop_start()
            k = 0

            def send_probe() -> int:
                nonlocal k
                k += 1
                ts = int(time.time() * 1000)
                pt = WirePoint("probe", "probe", ts, 90.0 if k % 2 else 60.0)
                published[ts] = time.perf_counter()
                probe.publish(
                    topic(f"s-{uid}", f"probe-{uid}", "telemetry"),
                    encode_batch(Batch(gateway=f"probe-{uid}", site=f"s-{uid}", seq=k, points=[pt], sent_at=ts)),
                    qos=1,
                )
                return ts

            # Warm-up, the first WARMUP_S of the load: the process's first alarm and the first batches of the
            # load pay one-time costs (every (rule, device) pair of 10,000 new series is bound and its state
            # read once; the first probe alarm waited ~180 ms behind that). The warm-up probes are reported on
            # their own (warmup_alarm_ms, the slowest) and kept out of the percentiles, which describe the
            # steady state.
            go.set()
            warmup: set[int] = set()
            while len(warmup) < 2 * warmup_s:
                warmup.add(send_probe())
                time.sleep(0.5)
            t_start = time.perf_counter()
            while time.perf_counter() - t_start < seconds:
                send_probe()
                time.sleep(0.2)
            sent = done.get(timeout=60)
            pub.join(30)
            deadline = time.time() + 30
            while counted[0] < sent + k and time.time() < deadline:
                time.sleep(0.2)
            elapsed = time.perf_counter() - t_start
            time.sleep(0.5)
            probe.loop_stop()
            probe.disconnect()
            worker.stop()
            ev.close()
        time.sleep(0.5)
        stop.set()
        alarms.update(got.get(timeout=30))
        observer.join(10)
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT id, (extract(epoch FROM triggered_at) * 1000)::bigint FROM alarms WHERE id = ANY(%s)",
                (list(alarms),),
            ).fetchall()
        warm = sorted((alarms[i] - committed[ts]) * 1000 for i, ts in rows if ts in warmup and ts in committed)
        lat = sorted((alarms[i] - committed[ts]) * 1000 for i, ts in rows if ts in committed and ts not in warmup)
        e2e = sorted((alarms[i] - published[ts]) * 1000 for i, ts in rows if ts in published and ts not in warmup)
        if not lat or not e2e:
            raise SystemExit("no probe alarm was observed: check the worker and evaluator logs")

        def p99(xs: list[float]) -> float:
            return xs[min(len(xs) - 1, int(len(xs) * 0.99))]

        return {
            "alarm_p50_ms": statistics.median(lat),
            "alarm_p99_ms": p99(lat),
            "alarm_e2e_p50_ms": statistics.median(e2e),
            "alarm_e2e_p99_ms": p99(e2e),
            "alarm_samples": len(lat),
            "warmup_alarm_ms": round(warm[-1], 2) if warm else None,
            "alarm_max_ms": lat[-1],
            "alarm_over_100ms": sum(x > 100 for x in lat),
            "ingest_points_per_s": counted[0] / elapsed,
            "load_series": n_series,
            "probes_sent": (k + 1) // 2,
        }
    finally:
        stop.set()
        if observer.is_alive():
            observer.terminate()
        drop_database(admin, name)


# --- backtest speed -------------------------------------------------------------------------

BT_RULE = {
    "name": "bt hot",
    "tag": "temp",
    "condition": {
        "kind": "above",
        "levels": [{"severity": "major", "threshold": 80, "clear": 78}, {"severity": "critical", "threshold": 90}],
    },
    "for_s": 20,
    "count": 3,
    "keep_firing_for_s": 30,
    "scope": {"equipment_models": ["P100"]},
    "problem_code": "P",
}
BT_T0 = 1_700_000_000_000
PUMP_TAGS = ("flow", "discharge_pressure", "motor_current", "bearing_temp", "vibration")


def _walk(n: int, seed: int = 1) -> list[float]:
    """A seeded mean-reverting temperature around 70 that spends a few percent of its time above 80."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = np.empty(n)
    level = 70.0
    noise = rng.normal(0.0, 0.35, n)
    for i in range(n):
        level += 0.002 * (70.0 - level) + noise[i]
        x[i] = level
    return x.tolist()


def _pump_vectors(n: int, step_s: int, seed: int, fault_every: int) -> list[tuple[int, list[float]]]:
    """Pump physics every ``step_s`` s with a mild bearing-wear fault for 600 s every ``fault_every`` vectors."""
    from simulators.pump import PumpModel

    pump = PumpModel(seed)
    out = []
    for i in range(n):
        if i % fault_every == fault_every // 2:
            pump.inject_fault("bearing_wear", rate=0.05)
        elif i % fault_every == fault_every // 2 + 600 // step_s:
            pump.clear_fault()
        r = pump.step(float(i * step_s))
        out.append((BT_T0 + i * step_s * 1000, [r[t] for t in PUMP_TAGS]))
    return out


def _copy(url: str, series: dict[str, int], rows: list[tuple[int, list[float]]], tags: tuple[str, ...]) -> None:
    """Store vectors straight into telemetry (as ingest would have committed them)."""
    from datetime import UTC, datetime

    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        days = {datetime.fromtimestamp(ts / 1000, UTC).date() for ts, _ in rows}
        for day in sorted(days):
            conn.execute(
                "SELECT fw_ensure_telemetry_partition(%s)"
                " WHERE to_regproc('fw_ensure_telemetry_partition') IS NOT NULL",
                (day,),
            )
        with conn.cursor() as cur, cur.copy("COPY telemetry (series_id, time, value, quality) FROM STDIN") as cp:
            for ts, values in rows:
                at = datetime.fromtimestamp(ts / 1000, UTC)
                for tag, v in zip(tags, values, strict=True):
                    cp.write_row((series[tag], at, v, 0))


def _timed(fn):  # type: ignore[no-untyped-def]
    """(result, wall seconds, CPU seconds of this process)."""
    w, c = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - w, time.process_time() - c


def backtest_speed(threshold_rows: int = 300_000, anomaly_rows: int = 60_000) -> dict[str, float | int | None]:
    """Rows per second of backtests: in memory, from PostgreSQL for a threshold rule and an anomaly rule."""
    import psycopg

    from fwcore.db import create_database, drop_database
    from fwcore.settings import load_settings
    from ingest.schema import migrate
    from rules import RuleSpec, compile_rule, find_rule
    from rules.anomaly_rules import train_rule
    from rules.backtest import Incident, replay
    from rules.rulesfile import apply_plan, parse_rules, plan
    from rules.workbench import run_backtest

    out: dict[str, float | int | None] = {}
    values = _walk(threshold_rows)
    readings = [(BT_T0 + i * 1000, v, 0) for i, v in enumerate(values)]
    compiled = compile_rule(RuleSpec.model_validate(BT_RULE), 1)
    rep, wall, cpu = _timed(lambda: replay(compiled, readings))
    out["threshold_replay_rows_per_s"] = round(len(readings) / wall)
    out["threshold_replay_cpu_rows_per_s"] = round(len(readings) / cpu)
    out["threshold_rows"] = len(readings)
    out["threshold_episodes"] = sum(1 for e in rep.events if type(e).__name__ == "AlarmOpened")
    out["threshold_fraction_active"] = round(sum(r.phase == "active" for r in rep.rows) / len(readings), 4)

    admin = load_settings().database_url
    name = f"fwbench_backtest_{uuid.uuid4().hex[:8]}"
    url = create_database(admin, name)
    try:
        migrate(url)
        step_s = 5
        train_n = 4 * 3600 // step_s  # four hours of healthy pump to train on
        vectors = _pump_vectors(train_n + anomaly_rows, step_s, seed=1, fault_every=2000)
        with psycopg.connect(url, autocommit=True) as conn:
            c = conn.execute("INSERT INTO clients (name, segment) VALUES ('B', 'gold') RETURNING id").fetchone()[0]
            site = conn.execute(
                "INSERT INTO sites (client_id, slug, name, latitude, longitude)"
                " VALUES (%s, 'b', 'B', 1, 1) RETURNING id",
                (c,),
            ).fetchone()[0]
            dev = conn.execute(
                "INSERT INTO devices (site_id, key, equipment_model) VALUES (%s, 'pump-1', 'P100') RETURNING id",
                (site,),
            ).fetchone()[0]
            series = {}
            for tag in ("temp", *PUMP_TAGS):
                series[tag] = conn.execute(
                    "INSERT INTO series (device_id, tag) VALUES (%s, %s) RETURNING id", (dev, tag)
                ).fetchone()[0]
            training_end = BT_T0 + train_n * step_s * 1000
            specs = [BT_RULE] + [
                {
                    "name": f"bt {kind}",
                    "condition": {
                        "kind": "anomaly",
                        "tags": list(PUMP_TAGS),
                        "training": {"start": BT_T0, "end": training_end},
                        "target_far": 0.01,
                        "models": [kind],
                    },
                    "for_s": 30,
                    "count": 3,
                    "scope": {"equipment_models": ["P100"]},
                    "problem_code": "P",
                }
                for kind in ("pca", "iforest")
            ]
            apply_plan(conn, plan(conn, parse_rules(specs)), author="bench")
        _copy(url, {"temp": series["temp"]}, [(ts, [v]) for ts, v, _ in readings], ("temp",))
        _copy(url, series, vectors, PUMP_TAGS)
        # Incidents every 2,000 vectors (the bearing faults), so scores against labels are part of the run.
        fault_ms = 600_000
        incidents = [
            Incident(ts, ts + fault_ms, "bearing")
            for i, (ts, _) in enumerate(vectors)
            if i >= train_n and i % 2000 == 1000
        ]
        end = BT_T0 + (train_n + anomaly_rows) * step_s * 1000
        t_end = BT_T0 + threshold_rows * 1000
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE telemetry")
            run_backtest(conn, "bt hot", "pump-1", BT_T0, BT_T0 + 60_000)  # connection and plan warm-up
            res, wall, cpu = _timed(lambda: run_backtest(conn, "bt hot", "pump-1", BT_T0, t_end, incidents=[]))
            out["threshold_rows_per_s"] = round(res.readings / wall)
            out["threshold_cpu_rows_per_s"] = round(res.readings / cpu)
            for kind in ("pca", "iforest"):
                report = train_rule(conn, find_rule(conn, f"bt {kind}"), now_ms=end, author="bench")
                assert report.trained, report.failed
                run_backtest(conn, f"bt {kind}", "pump-1", training_end, training_end + 60_000)  # load the model
                res, wall, cpu = _timed(
                    lambda kind=kind: run_backtest(conn, f"bt {kind}", "pump-1", training_end, end, incidents=incidents)
                )
                out[f"anomaly_rows_per_s_{kind}"] = round(res.readings / wall)
                out[f"anomaly_cpu_rows_per_s_{kind}"] = round(res.readings / cpu)
                out[f"anomaly_recall_{kind}"] = res.score.recall if res.score else None
            out["anomaly_rows"] = res.readings
            draft = parse_rules(
                [{**specs[1], "name": "bt draft", "condition": {**specs[1]["condition"], "models": ["pca", "iforest"]}}]
            )[0]
            small_end = training_end + 1100 * step_s * 1000
            res, wall, _ = _timed(
                lambda: run_backtest(
                    conn, "bt draft", "pump-1", training_end, small_end, draft=draft, incidents=incidents
                )
            )
            out["small_draft_rows"] = res.readings
            out["small_draft_s"] = round(wall, 3)
    finally:
        drop_database(admin, name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON result line")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the loaded latency run")
    ap.add_argument("--devices", type=int, default=1000, help="load devices (10 series each, 1 reading/s)")
    ap.add_argument(
        "--warmup",
        type=float,
        default=WARMUP_S,
        help="seconds of load whose probes are reported apart (warmup_alarm_ms); 0: none",
    )
    ap.add_argument("--backtest", action="store_true", help="measure backtest speed instead (one core)")
    args = ap.parse_args()
    if args.backtest:
        bt = backtest_speed()
        if not args.json:
            print(
                f"backtest: threshold {bt['threshold_rows_per_s']:,} rows/s from PostgreSQL "
                f"({bt['threshold_replay_rows_per_s']:,} in memory); anomaly {bt['anomaly_rows_per_s_pca']:,} (pca), "
                f"{bt['anomaly_rows_per_s_iforest']:,} (iforest) rows/s; a 1,100-row draft: {bt['small_draft_s']} s"
            )
        print(json.dumps({"mode": "backtest", **bt}))
        return
    rps = throughput()
    lat = latency_under_load(args.seconds, args.devices, args.warmup)
    result = {
        "readings_per_s": round(rps),
        "rules": 1000,
        "series": 10_000,
        "alarm_p50_ms": round(lat["alarm_p50_ms"], 2),
        "alarm_p99_ms": round(lat["alarm_p99_ms"], 2),
        "alarm_samples": lat["alarm_samples"],
        "alarm_max_ms": round(lat["alarm_max_ms"], 2),
        "alarm_over_100ms": lat["alarm_over_100ms"],
        "warmup_alarm_ms": lat["warmup_alarm_ms"],
        "alarm_e2e_p50_ms": round(lat["alarm_e2e_p50_ms"], 2),
        "alarm_e2e_p99_ms": round(lat["alarm_e2e_p99_ms"], 2),
        "under_ingest_load": True,
        "ingest_points_per_s": round(lat["ingest_points_per_s"]),
        "load_series": lat["load_series"],
    }
    if not args.json:
        print(
            f"state machine: {rps:,.0f} readings/s; alarm latency under {result['ingest_points_per_s']:,} "
            f"points/s of ingest: p50 {result['alarm_p50_ms']} ms, p99 {result['alarm_p99_ms']} ms"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
