"""The API under abuse: does a flood of oversized, malformed and unauthenticated requests hurt it?

    python bench/abuse.py                  # 30 s of attack by 20 clients
    python bench/abuse.py --seconds 10 --clients 8

Runs the real server (uvicorn in its own process, ``tests.support.api_server``) on a throwaway
database on FIELDWATCH_DATABASE_URL's server. First a legitimate client imports history CSVs alone
for ``--baseline`` seconds (the unloaded ingest rate); then, for ``--seconds``, ``--clients``
attackers (in another process, from 127.0.0.2) send 100 MB bodies without a token (with a length
and chunked), wrong tokens, oversized chunked JSON with a valid token, malformed JSON and
oversized imports for a role that may not import, while the legitimate client keeps importing
(from 127.0.0.1) and a probe polls ``/healthz``.

The last stdout line is one JSON object: ``rss_growth_mb`` (the server's peak RSS during the
attack minus its RSS before; goal < 50), ``healthz_p99_ms`` (goal < 100), ``server_errors`` (5xx
answers and failed probes; goal 0), ``ingest_ratio`` (points/s imported under attack over
unloaded; goal >= 0.9), with the rates and the attack's answers by status.
"""

from __future__ import annotations

import os
import sys

# Run as a script, bench/ comes first on sys.path and bench/ingest.py would shadow the ``ingest``
# package (same fix as bench/ingest.py).
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # for tests.support

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import psutil
import psycopg

from fwcore.auth import create_token
from fwcore.db import create_database, drop_database
from fwcore.settings import load_settings
from ingest.schema import migrate
from tests.support.api_server import api_process

MB = 1024 * 1024
CHUNK = b"x" * (256 * 1024)
ROWS_PER_IMPORT = 2000
TAGS = ("flow", "bearing_temp")


def _seed(url: str) -> tuple[int, str, str]:
    """A device, an admin token (the legitimate importer) and a viewer token (an attacker's)."""
    with psycopg.connect(url, autocommit=True) as conn:
        client = conn.execute("INSERT INTO clients (name, segment) VALUES ('c', 'gold') RETURNING id").fetchone()
        site = conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude) VALUES (%s, 's', 's', 48, 11) RETURNING id",
            (client[0],),  # type: ignore[index]
        ).fetchone()
        gw = conn.execute("INSERT INTO gateways (site_id, slug) VALUES (%s, 'gw') RETURNING id", (site[0],)).fetchone()  # type: ignore[index]
        device = conn.execute(
            "INSERT INTO devices (site_id, gateway_id, key, equipment_model) VALUES (%s, %s, 'pump', 'P') RETURNING id",
            (site[0], gw[0]),  # type: ignore[index]
        ).fetchone()
        admin = create_token(conn, "bench-importer", "admin")
        viewer = create_token(conn, "bench-attacker", "viewer")
    return device[0], admin, viewer  # type: ignore[index]


def _csv(batch: int) -> bytes:
    """One import: ROWS_PER_IMPORT rows of two tags, at times no other batch uses."""
    start = datetime.now(UTC) - timedelta(hours=1) - timedelta(seconds=batch * ROWS_PER_IMPORT)
    lines = ["time," + ",".join(TAGS)]
    for i in range(ROWS_PER_IMPORT):
        t = (start - timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(f"{t},{i % 50 + 0.5},{60 + i % 7}")
    return ("\n".join(lines) + "\n").encode()


# --- the attackers (a separate process, so their CPU is not the legitimate client's) ------------


async def _big(n: int) -> AsyncIterator[bytes]:
    for _ in range(n // len(CHUNK)):
        yield CHUNK


def _attacks(base: str, device: int, viewer: str) -> list[tuple[str, dict]]:
    wrong = {"Authorization": "Bearer fw_" + "W" * 43}
    valid = {"Authorization": f"Bearer {viewer}", "content-type": "application/json"}
    return [
        (
            "unauth_sized",
            {"method": "POST", "url": f"{base}/api/v1/workorders", "headers": {"content-length": str(100 * MB)}},
        ),
        ("unauth_chunked", {"method": "POST", "url": f"{base}/api/v1/devices/{device}/history"}),
        ("wrong_token", {"method": "POST", "url": f"{base}/api/v1/workorders", "headers": wrong}),
        ("oversized_json", {"method": "POST", "url": f"{base}/api/v1/workorders", "headers": valid}),
        (
            "malformed_json",
            {"method": "POST", "url": f"{base}/api/v1/workorders", "headers": valid, "content": b'{"x": [1, 2'},
        ),
        ("forbidden_import", {"method": "POST", "url": f"{base}/api/v1/devices/{device}/history", "headers": valid}),
    ]


async def _attacker(i: int, base: str, device: int, viewer: str, until: float, counts: Counter[str]) -> None:
    attacks = _attacks(base, device, viewer)
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(transport=transport, timeout=10) as client:
        n = i
        while time.monotonic() < until:
            name, req = attacks[n % len(attacks)]
            n += 1
            req = dict(req)
            if "content" not in req:
                req["content"] = _big(100 * MB)
            try:
                r = await client.request(**req)
                counts[f"{name}:{r.status_code}"] += 1
            except httpx.HTTPError:  # the server refused and closed while the body was still going
                counts[f"{name}:closed"] += 1


def _attack_process(base: str, device: int, viewer: str, clients: int, seconds: float, out: mp.Queue) -> None:
    counts: Counter[str] = Counter()
    until = time.monotonic() + seconds

    async def main() -> None:
        await asyncio.gather(*(_attacker(i, base, device, viewer, until, counts) for i in range(clients)))

    asyncio.run(main())
    out.put(dict(counts))


# --- the legitimate client and the probe -------------------------------------------------------


class Legit:
    def __init__(self, base: str, device: int, admin: str) -> None:
        self.url = f"{base}/api/v1/devices/{device}/history"
        self.headers = {"Authorization": f"Bearer {admin}", "content-type": "text/csv"}
        self.batch = 0
        self.errors = 0

    def run(self, seconds: float) -> float:
        """Import for ``seconds``; points per second."""
        points = 0
        until = time.monotonic() + seconds
        start = time.monotonic()
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < until:
                body = _csv(self.batch)
                self.batch += 1
                r = client.post(self.url, content=body, headers=self.headers)
                if r.status_code >= 500:
                    self.errors += 1
                elif r.status_code == 200:
                    points += r.json()["points"]
        return points / (time.monotonic() - start)


def _probe(base: str, stop: threading.Event, latencies: list[float], failures: list[int]) -> None:
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                ok = client.get(f"{base}/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append((time.perf_counter() - t0) * 1000)
            failures[0] += not ok
            stop.wait(0.05)  # the probe's period


def _sample_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        stop.wait(0.05)  # the sampling period


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the attack (default 30)")
    ap.add_argument("--baseline", type=float, default=10.0, help="seconds of unloaded importing first (default 10)")
    ap.add_argument("--clients", type=int, default=20, help="concurrent attackers (default 20)")
    args = ap.parse_args()

    admin_url = load_settings().database_url
    name = f"fw_bench_abuse_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_url, name)
    try:
        migrate(url)
        device, admin, viewer = _seed(url)
        # The bench measures the guard, not the per-token limit on imports: the importer may import freely.
        with api_process(url, api_expensive_per_min=1_000_000, api_expensive_burst=1_000_000) as server:
            legit = Legit(server.base, device, admin)
            legit.run(2.0)  # warm up: connections, caches, the first partitions
            calm, calm_latencies = threading.Event(), []
            calm_probe = threading.Thread(target=_probe, args=(server.base, calm, calm_latencies, [0]), daemon=True)
            calm_probe.start()
            unloaded = legit.run(args.baseline)
            calm.set()
            calm_probe.join()
            server_proc = psutil.Process(server.pid)
            before = server_proc.memory_info().rss
            cpu_before = sum(server_proc.cpu_times()[:2])

            stop = threading.Event()
            peak, latencies, failures = [before], [], [0]
            threads = [
                threading.Thread(target=_sample_rss, args=(server.pid, stop, peak), daemon=True),
                threading.Thread(target=_probe, args=(server.base, stop, latencies, failures), daemon=True),
            ]
            spawn = mp.get_context("spawn")
            results: mp.Queue = spawn.Queue()
            attackers = spawn.Process(
                target=_attack_process, args=(server.base, device, viewer, args.clients, args.seconds, results)
            )
            for t in threads:
                t.start()
            attackers.start()
            loaded = legit.run(args.seconds)
            counts = results.get(timeout=args.seconds + 60)
            server_cpu = sum(server_proc.cpu_times()[:2]) - cpu_before
            attackers.join()
            stop.set()
            for t in threads:
                t.join()
        server_errors = (
            legit.errors + failures[0] + sum(v for k, v in counts.items() if k.split(":")[1].startswith("5"))
        )
        latencies.sort()
        calm_latencies.sort()
        result = {
            "seconds": args.seconds,
            "clients": args.clients,
            "rss_growth_mb": round((peak[0] - before) / MB, 1),
            "healthz_p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
            "healthz_median_ms": round(statistics.median(latencies), 1),
            "healthz_p99_unloaded_ms": round(
                calm_latencies[min(len(calm_latencies) - 1, int(len(calm_latencies) * 0.99))], 1
            ),
            "server_cpu_s": round(server_cpu, 1),
            "load_average_1m": round(os.getloadavg()[0], 1),
            "server_errors": server_errors,
            "ingest_unloaded_points_per_s": round(unloaded),
            "ingest_attack_points_per_s": round(loaded),
            "ingest_ratio": round(loaded / unloaded, 3) if unloaded else None,
            "attack_requests": sum(counts.values()),
            "attack_answers": dict(sorted(counts.items())),
        }
    finally:
        drop_database(admin_url, name)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
