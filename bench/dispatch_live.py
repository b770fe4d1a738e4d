"""Live dispatch latency: tickets placed by ``TicketingService.dispatch_ticket`` against PostgreSQL
(load today's problem, cheapest insertion with bumping, explanation, write the plan).

    python bench/dispatch_live.py --json                 # 300 tickets, 40 technicians
    python bench/dispatch_live.py --tickets 100 --techs 20

Uses a throwaway database on FIELDWATCH_DATABASE_URL's server (created and dropped). The last
stdout line is one JSON object: ``insert_p50_ms``, ``insert_p99_ms``, ``assigned``, ``unassigned``.
"""

from __future__ import annotations

import os
import sys

# Run as a script, bench/ comes first on sys.path and bench/ingest.py would shadow the ``ingest``
# package (same fix as bench/ingest.py).
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import random
import time
import uuid
from datetime import UTC, datetime

import orjson
import psycopg

from fwcore.db import create_database, drop_database
from fwcore.settings import load_settings
from ingest.schema import migrate
from ticketing import TicketingService, create_technician, ensure_skill


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tickets", type=int, default=300)
    ap.add_argument("--techs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="only the JSON line")
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    admin = load_settings().database_url
    name = f"fw_bench_dispatch_{uuid.uuid4().hex[:8]}"
    url = create_database(admin, name)
    try:
        migrate(url)
        with psycopg.connect(url) as conn:
            for code in ("pump", "electrical"):
                ensure_skill(conn, code)
            for i in range(args.techs):
                lat, lon = 40.4 + rnd.uniform(-0.5, 0.5), -3.7 + rnd.uniform(-0.5, 0.5)
                skills = {code: 3 for code in rnd.sample(["pump", "electrical"], rnd.choice([1, 2]))}
                create_technician(conn, name=f"T{i}", email=f"t{i}@x", home_lat=lat, home_lon=lon, skills=skills)
            client = conn.execute("INSERT INTO clients (name, segment) VALUES ('c', 'gold') RETURNING id").fetchone()[0]
            devices = []
            for i in range(args.tickets):
                lat, lon = 40.4 + rnd.uniform(-0.5, 0.5), -3.7 + rnd.uniform(-0.5, 0.5)
                site = conn.execute(
                    "INSERT INTO sites (client_id, slug, name, latitude, longitude) "
                    "VALUES (%s, %s, 's', %s, %s) RETURNING id",
                    (client, f"s{i}", lat, lon),
                ).fetchone()[0]
                devices.append(
                    conn.execute(
                        "INSERT INTO devices (site_id, key, equipment_model) VALUES (%s, 'p', 'P') RETURNING id",
                        (site,),
                    ).fetchone()[0]
                )
            tickets = [
                conn.execute(
                    "INSERT INTO tickets (device_id, problem_code, title, priority, required_skill, source, "
                    "service_minutes) VALUES (%s, 'X', 'x', %s, %s, 'api', %s) RETURNING id",
                    (d, rnd.randint(1, 5), rnd.choice(["pump", "electrical"]), rnd.choice([30, 45, 60])),
                ).fetchone()[0]
                for d in devices
            ]
        now = datetime.now(UTC).replace(hour=6, minute=0)
        times = []
        assigned = 0
        with TicketingService(url, clock=lambda: now) as svc:
            for t in tickets:
                t0 = time.perf_counter()
                d = svc.dispatch_ticket(t)
                times.append((time.perf_counter() - t0) * 1000)
                assigned += d is not None and d.technician is not None
        times.sort()
        result = {
            "tickets": args.tickets,
            "techs": args.techs,
            "assigned": assigned,
            "unassigned": args.tickets - assigned,
            "insert_p50_ms": round(times[len(times) // 2], 1),
            "insert_p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 1),
            "insert_max_ms": round(times[-1], 1),
        }
    finally:
        drop_database(admin, name)
    if not args.json:
        print(f"placed {result['assigned']}/{args.tickets} tickets live; p99 {result['insert_p99_ms']} ms")
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
