"""Rules bench: state-machine throughput, and committed-reading → committed-alarm latency.

    python bench/rules.py --json

* ``readings_per_s``: readings through :func:`rules.engine.evaluate` with 1,000 rules over
  10,000 series (each series watched by one rule; a mix of kinds, ladders, durations);
* ``alarm_p50_ms`` / ``alarm_p99_ms``: wall time of :meth:`RuleEvaluator.process` for batches of
  200 committed readings in which one alarm opens (evaluation, state writes, alarm insert and
  NOTIFY, committed). Measured on a throwaway database WITHOUT a concurrent ingest load yet
  (``"under_ingest_load": false`` in the output says so).

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rules import NORMAL, RuleSpec, compile_rule, evaluate

KINDS = [
    {"kind": "above", "levels": [{"severity": "major", "threshold": 80, "clear": 75},
                                 {"severity": "critical", "threshold": 95}]},
    {"kind": "below", "threshold": 10},
    {"kind": "outside", "low": 20, "high": 80},
    {"kind": "rate", "direction": "either", "per": "s", "threshold": 5},
]


def throughput(n_rules: int = 1000, n_series: int = 10_000, readings_per_series: int = 30) -> float:
    rng = random.Random(1)
    rules = [
        compile_rule(RuleSpec(name=f"r{i}", tag="t", problem_code="P", condition=KINDS[i % 4],  # type: ignore[arg-type]
                              for_s=(i % 3) * 5, count=1 + i % 2), i)
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


@dataclass(frozen=True)
class Point:
    device_id: int
    tag: str
    ts_ms: int
    value: float
    quality: int = 0


def latency(samples: int = 200) -> tuple[float, float]:
    import psycopg

    from fieldwatch.db import create_database, drop_database
    from fieldwatch.settings import load_settings
    from ingest.schema import migrate
    from rules import RuleEvaluator, create_rule

    admin = load_settings().database_url
    name = f"fwbench_rules_{uuid.uuid4().hex[:8]}"
    url = create_database(admin, name)
    try:
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            c = conn.execute("INSERT INTO clients (name, segment) VALUES ('B', 'gold') RETURNING id").fetchone()[0]
            site = conn.execute("INSERT INTO sites (client_id, slug, name, latitude, longitude)"
                                " VALUES (%s, 'b', 'B', 1, 1) RETURNING id", (c,)).fetchone()[0]
            devices = [conn.execute("INSERT INTO devices (site_id, key, equipment_model) VALUES (%s, %s, 'P')"
                                    " RETURNING id", (site, f"d{i}")).fetchone()[0] for i in range(200)]
            create_rule(conn, name="hot", tag="temp", operator=">", threshold=80, problem_code="P")
        out: list[float] = []
        with RuleEvaluator(url) as ev:
            for k in range(samples):
                ts = 1_000_000 + k * 2000
                batch = [Point(d, "temp", ts, 60.0) for d in devices]
                hot = devices[k % len(devices)]
                batch[k % len(devices)] = Point(hot, "temp", ts, 90.0 if k % 2 == 0 else 60.0)
                t0 = time.perf_counter()
                ev.process(batch)
                out.append((time.perf_counter() - t0) * 1000)
        out.sort()
        return statistics.median(out), out[min(len(out) - 1, int(len(out) * 0.99))]
    finally:
        drop_database(admin, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON result line")
    args = ap.parse_args()
    rps = throughput()
    p50, p99 = latency()
    result = {"readings_per_s": round(rps), "rules": 1000, "series": 10_000, "alarm_p50_ms": round(p50, 2),
              "alarm_p99_ms": round(p99, 2), "under_ingest_load": False}
    if not args.json:
        print(f"state machine: {rps:,.0f} readings/s; alarm latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
