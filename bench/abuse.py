"""The API under abuse: does a flood of oversized, malformed and unauthenticated requests hurt it?

    python bench/abuse.py                  # 30 s of attack by 20 clients
    python bench/abuse.py --seconds 10 --clients 8
    python bench/abuse.py --no-pin         # every process on every CPU (see below)
    python bench/abuse.py --py-spy /tmp/server.json   # and a profile of the server under attack

Runs the real server (uvicorn in its own process, ``tests.support.api_server``) on a throwaway
database on FIELDWATCH_DATABASE_URL's server, with the settings of the environment (the refusal
tarpit of fieldwatch/api/tarpit.py on, unless FIELDWATCH_API_REFUSAL_DELAY_MAX_S=0). A legitimate
client imports history CSVs from 127.0.0.1 all along, while a probe polls ``/healthz``. The run
alternates phases: ``--baseline`` seconds of importing alone, then ``--seconds``/``--rounds``
seconds during which ``--clients`` attackers (another process, from 127.0.0.2) send 100 MB bodies
without a token (with a length and chunked), wrong tokens, oversized chunked JSON with a valid
token, malformed JSON and oversized imports for a role that may not import; then alone again, and
so on: ``--rounds`` attack phases, each between two alone phases. The attackers idle between their
phases and keep what the server remembers of them (a rate limit's debt), like one long attack.

Why interleaved: on this machine the import rate alone drifts down as the table grows and swings by
±20 % between 10 s windows (PostgreSQL's WAL-triggered checkpoints among others: ``--clients 0``
shows it, an attack of nobody). One alone phase before one attack phase measured that noise as
much as the attack; phases that alternate see the same drift and swings on both sides.

CPUs. A real attacker does not run on the server's cores, but here the attackers, the server, the
legitimate client and PostgreSQL share one machine, and without care part of the drop in the
ingest rate is the attackers' own CPU. So by default (both phases alike) the attackers' process is
pinned to the last CPU and everything else the bench starts — the server, the legitimate client,
the probe, and the bench database's PostgreSQL backends (pinned as soon as the backend sampler sees
them, every 50 ms) — to the other CPUs: the server side gets the same CPUs unloaded and under attack,
and the attack costs it only what the server spends answering it. ``--no-pin`` lets every process
run anywhere (then the attackers' CPU competes with the server's). Other processes on the machine
are not pinned: ``cpu_busy_pct`` shows how busy each CPU was, theirs included.

The last stdout line is one JSON object: ``rss_growth_mb`` (the server's peak RSS during the
run minus its RSS before; goal < 50), ``healthz_p99_ms`` (probes during the attack phases; goal
< 100), ``server_errors`` (5xx answers and failed probes; goal 0), ``ingest_ratio`` (mean points/s
imported in the attack phases over the mean of the alone phases; goal >= 0.9), with every phase's
rate (``ingest_alone_phases_points_per_s``, ``ingest_attack_phases_points_per_s``) and the attack's
answers by status; ``pinned``, ``server_cpus`` and ``attacker_cpus``; and where the CPU went:
``server_cpu_s``, ``attacker_cpu_s``, ``client_cpu_s`` and ``postgres_cpu_s`` in the attack phases
(``baseline_cpu`` and ``attack_cpu`` hold the alone and attack phases' seconds, the bench's other
threads and each CPU's busy share), and ``server_cpu_ms_per_attack_request``: the server's CPU
under attack beyond what the points it imported cost at the unloaded CPU per point, per attack
request.
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
import resource
import statistics
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

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


async def _attacker(i: int, base: str, device: int, viewer: str, go: Any, done: Any, counts: Counter[str]) -> None:
    """One attacker: request after request while ``go`` is set, idle while it is not, until ``done``."""
    attacks = _attacks(base, device, viewer)
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(transport=transport, timeout=10) as client:
        n = i
        while not done.is_set():
            if not go.is_set():
                await asyncio.sleep(0.02)
                continue
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


def _attack_process(
    base: str, device: int, viewer: str, clients: int, go: Any, done: Any, cpus: list[int] | None, out: mp.Queue
) -> None:
    """The attackers' process: their answers by kind and status, and the CPU seconds the process used."""
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    counts: Counter[str] = Counter()

    async def attack() -> None:
        await asyncio.gather(*(_attacker(i, base, device, viewer, go, done, counts) for i in range(clients)))

    asyncio.run(attack())
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    out.put((dict(counts), cpu.ru_utime + cpu.ru_stime))


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


def _probe(
    base: str, stop: threading.Event, attacking: Any, calm: list[float], loaded: list[float], failures: list[int]
) -> None:
    """Poll ``/healthz``: each latency goes to ``loaded`` while ``attacking`` is set, else to ``calm``."""
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            under_attack = attacking.is_set()
            t0 = time.perf_counter()
            try:
                ok = client.get(f"{base}/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            (loaded if under_attack else calm).append((time.perf_counter() - t0) * 1000)
            failures[0] += not ok
            stop.wait(0.05)  # the probe's period


class Backends:
    """CPU seconds of the PostgreSQL backends serving the bench's database, sampled every ``period`` s.

    The backends are found in ``pg_stat_activity`` (``datname``); each one's CPU is its last sample minus
    its first (or, for one started after :meth:`start`, all of it). A backend that lives less than one
    period, and the CPU of a backend after its last sample, are missed: a lower bound. With ``cpus``,
    each backend is confined to them as soon as it is seen.
    """

    def __init__(self, admin_url: str, database: str, cpus: list[int] | None, period: float = 0.05) -> None:
        self.admin_url, self.database, self.cpus, self.period = admin_url, database, cpus, period
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self, conn: psycopg.Connection, *, initial: bool = False) -> None:
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.database,))]
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                if pid not in self._first and self.cpus is not None:
                    proc.cpu_affinity(self.cpus)
                used = _cpu(proc.cpu_times())
            except psutil.Error:  # gone since the query
                continue
            self._first.setdefault(pid, used if initial else 0.0)
            self._last[pid] = used

    def _run(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            self._sample(conn, initial=True)
            self._started.set()
            while not self._stop.wait(self.period):
                self._sample(conn)
            self._sample(conn)

    def start(self) -> None:
        self._first.clear()
        self._last.clear()
        self._stop.clear()
        self._started.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._started.wait(10)

    def stop(self) -> float:
        """CPU seconds used since :meth:`start`."""
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        return sum(self._last[pid] - first for pid, first in self._first.items())


class Phase:
    """CPU seconds used during one phase by each party, and how busy each CPU of the machine was.

    ``server``: the API process (all its threads); ``client``: the legitimate importer (the bench's main
    thread); ``bench_other``: the bench's other threads (the ``/healthz`` probe, the RSS sampler, the
    backend sampler); ``postgres``: the bench database's backends (:class:`Backends`). ``cpu_busy_pct``
    is each CPU's busy share over the phase, everyone's work included (other processes on the machine too).
    """

    def __init__(self, server_pid: int, backends: Backends) -> None:
        self.server = psutil.Process(server_pid)
        self.me = psutil.Process()
        self.backends = backends

    def start(self) -> None:
        self.backends.start()
        self.t0 = time.monotonic()
        self.machine0 = psutil.cpu_times(percpu=True)
        self.server0 = _cpu(self.server.cpu_times())
        self.me0 = _cpu(self.me.cpu_times())
        self.client0 = time.thread_time()

    def stop(self) -> dict[str, Any]:
        client = time.thread_time() - self.client0
        me = _cpu(self.me.cpu_times()) - self.me0
        server = _cpu(self.server.cpu_times()) - self.server0
        machine = psutil.cpu_times(percpu=True)
        seconds = time.monotonic() - self.t0
        postgres = self.backends.stop()
        busy = []
        for before, after in zip(self.machine0, machine, strict=True):
            total = sum(after) - sum(before)
            idle = (after.idle + after.iowait) - (before.idle + before.iowait)
            busy.append(round(100 * (total - idle) / total) if total else 0)
        return {
            "seconds": round(seconds, 1),
            "server_cpu_s": round(server, 2),
            "client_cpu_s": round(client, 2),
            "bench_other_cpu_s": round(me - client, 2),
            "postgres_cpu_s": round(postgres, 2),
            "cpu_busy_pct": busy,
        }


def _cpu(times: Any) -> float:
    """User + system seconds of a psutil ``cpu_times()``."""
    return float(times.user + times.system)


def _sample_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        stop.wait(0.05)  # the sampling period


def _cpus(pin: bool) -> tuple[list[int] | None, list[int] | None]:
    """(server's CPUs, attackers' CPUs): the last CPU for the attackers, the others for the server side;
    (None, None) without pinning or on one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return cpus[:-1], cpus[-1:]


def _total(phases: list[dict[str, Any]]) -> dict[str, Any]:
    """Several :meth:`Phase.stop` results as one: seconds summed, each CPU's busy share weighted by time."""
    seconds = sum(p["seconds"] for p in phases)
    total: dict[str, Any] = {"seconds": round(seconds, 1)}
    for key in ("server_cpu_s", "client_cpu_s", "bench_other_cpu_s", "postgres_cpu_s"):
        total[key] = round(sum(p[key] for p in phases), 2)
    cpus = len(phases[0]["cpu_busy_pct"])
    total["cpu_busy_pct"] = [
        round(sum(p["cpu_busy_pct"][c] * p["seconds"] for p in phases) / seconds) if seconds else 0 for c in range(cpus)
    ]
    return total


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1) if ordered else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="attack in all, over the rounds (default 30)")
    ap.add_argument("--rounds", type=int, default=3, help="attack phases, each between two alone phases (default 3)")
    ap.add_argument("--baseline", type=float, default=10.0, help="seconds of each alone phase (default 10)")
    ap.add_argument("--clients", type=int, default=20, help="concurrent attackers (default 20)")
    ap.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let every process run on every CPU (default: attackers on the last CPU, the rest on the others)",
    )
    ap.add_argument("--py-spy", metavar="FILE", help="record the server under attack with py-spy (speedscope JSON)")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    slice_s = args.seconds / args.rounds

    server_cpus, attacker_cpus = _cpus(args.pin)
    if server_cpus is not None:
        os.sched_setaffinity(0, server_cpus)  # the legitimate client, the probe and the samplers
    admin_url = load_settings().database_url
    name = f"fw_bench_abuse_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_url, name)
    try:
        migrate(url)
        device, admin, viewer = _seed(url)
        backends = Backends(admin_url, name, server_cpus)
        # The bench measures the guard, not the per-token limit on imports: the importer may import freely.
        with api_process(
            url,
            cpus=set(server_cpus) if server_cpus is not None else None,
            api_expensive_per_min=1_000_000,
            api_expensive_burst=1_000_000,
        ) as server:
            legit = Legit(server.base, device, admin)
            spawn = mp.get_context("spawn")
            go, done = spawn.Event(), spawn.Event()
            results: mp.Queue = spawn.Queue()
            attackers = spawn.Process(
                target=_attack_process,
                args=(server.base, device, viewer, args.clients, go, done, attacker_cpus, results),
            )
            attackers.start()  # idle until the first attack phase
            legit.run(2.0)  # warm up: connections, caches, the first partitions
            server_proc = psutil.Process(server.pid)
            before = server_proc.memory_info().rss

            stop = threading.Event()
            peak, calm_latencies, latencies, failures = [before], list[float](), list[float](), [0]
            threads = [
                threading.Thread(target=_sample_rss, args=(server.pid, stop, peak), daemon=True),
                threading.Thread(
                    target=_probe, args=(server.base, stop, go, calm_latencies, latencies, failures), daemon=True
                ),
            ]
            for t in threads:
                t.start()
            spy = None
            phase = Phase(server.pid, backends)
            alone_rates, attack_rates = list[float](), list[float]()
            alone_cpu, attack_cpu = list[dict[str, Any]](), list[dict[str, Any]]()
            for round_ in range(args.rounds + 1):
                phase.start()
                alone_rates.append(legit.run(args.baseline))
                alone_cpu.append(phase.stop())
                if round_ == args.rounds:
                    break
                if args.py_spy and spy is None:
                    py_spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
                    record = ["record", "--pid", str(server.pid), "--duration", str(int(slice_s)), "--threads"]
                    spy = subprocess.Popen(
                        [py_spy, *record, "--format", "speedscope", "--output", args.py_spy, "--nonblocking"],
                        stdout=subprocess.DEVNULL,
                    )
                go.set()
                phase.start()
                attack_rates.append(legit.run(slice_s))
                attack_cpu.append(phase.stop())
                go.clear()
            done.set()
            counts, attacker_cpu = results.get(timeout=60)
            attackers.join()
            stop.set()
            for t in threads:
                t.join()
            if spy is not None:
                spy.wait(timeout=60)
        server_errors = (
            legit.errors + failures[0] + sum(v for k, v in counts.items() if k.split(":")[1].startswith("5"))
        )
        unloaded = statistics.fmean(alone_rates)
        loaded = statistics.fmean(attack_rates)
        baseline, attacked = _total(alone_cpu), _total(attack_cpu)
        attack_requests = sum(counts.values())
        # The server's CPU beyond what the points imported under attack cost at the unloaded rate of CPU per point.
        per_point = baseline["server_cpu_s"] / (unloaded * baseline["seconds"]) if unloaded else 0.0
        attack_share = attacked["server_cpu_s"] - per_point * loaded * attacked["seconds"]
        result = {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "clients": args.clients,
            "pinned": server_cpus is not None,
            "server_cpus": server_cpus,
            "attacker_cpus": attacker_cpus,
            "rss_growth_mb": round((peak[0] - before) / MB, 1),
            "healthz_p99_ms": _p99(latencies),
            "healthz_median_ms": round(statistics.median(latencies), 1) if latencies else 0.0,
            "healthz_p99_unloaded_ms": _p99(calm_latencies),
            "server_cpu_s": attacked["server_cpu_s"],
            "attacker_cpu_s": round(attacker_cpu, 2),
            "client_cpu_s": attacked["client_cpu_s"],
            "postgres_cpu_s": attacked["postgres_cpu_s"],
            "server_cpu_ms_per_attack_request": round(1000 * attack_share / attack_requests, 3)
            if attack_requests
            else None,
            "baseline_cpu": baseline,
            "attack_cpu": attacked,
            "load_average_1m": round(os.getloadavg()[0], 1),
            "server_errors": server_errors,
            "ingest_unloaded_points_per_s": round(unloaded),
            "ingest_attack_points_per_s": round(loaded),
            "ingest_alone_phases_points_per_s": [round(r) for r in alone_rates],
            "ingest_attack_phases_points_per_s": [round(r) for r in attack_rates],
            "ingest_ratio": round(loaded / unloaded, 3) if unloaded else None,
            "attack_requests": attack_requests,
            "attack_answers": dict(sorted(counts.items())),
        }
    finally:
        drop_database(admin_url, name)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
