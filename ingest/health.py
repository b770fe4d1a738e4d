"""``/healthz``, ``/readyz`` and ``/metrics`` for a standalone ingest worker (``fieldwatch ingest run``).

* ``/healthz`` — 200 while the process serves HTTP (liveness: restart me only if this fails).
* ``/readyz`` — 200 when the broker connection is up, the database answers ``SELECT 1`` and the
  writer thread is alive; else 503 with the failing checks, so an orchestrator stops routing to /
  counting on this worker while it waits for the broker or the database. With a ``storage`` check
  the body also says whether the storage's background jobs are healthy (``"storage": "ok"`` or
  ``"degraded: …"``, :mod:`ingest.storage_health`): reported, never a reason for 503.
* ``/metrics`` — Prometheus text format of the default registry (all ingest metrics).

A plain ``ThreadingHTTPServer`` in a daemon thread: no web framework in the worker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ingest.storage_health import JobState, StorageHealth, judge_jobs

#: A check returns None when fine, else what is wrong (shown in the /readyz body).
Check = Callable[[], str | None]


def database_check(db_url: str, timeout_s: int = 2) -> Check:
    """A fresh short connection per probe (the writer's connection belongs to the writer thread)."""

    def check() -> str | None:
        try:
            with psycopg.connect(db_url, connect_timeout=timeout_s, autocommit=True) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return f"database unreachable: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
        return None

    return check


_JOBS = """
    SELECT j.job_id, j.proc_name, coalesce(c.view_name::text, j.hypertable_name::text, ''), j.scheduled,
           j.schedule_interval, s.last_run_status,
           CASE WHEN isfinite(s.last_run_started_at) THEN s.last_run_started_at END,
           CASE WHEN isfinite(s.next_start) THEN s.next_start END,
           coalesce(s.total_failures, 0)
    FROM timescaledb_information.jobs j
    LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
    LEFT JOIN timescaledb_information.continuous_aggregates c
           ON c.materialization_hypertable_schema = j.hypertable_schema
          AND c.materialization_hypertable_name = j.hypertable_name
    ORDER BY j.job_id"""
#: Consecutive failures are only in the catalog table; the last error in job_history (2.15+) or job_errors.
_CONSECUTIVE = "SELECT job_id, consecutive_failures FROM _timescaledb_internal.bgw_job_stat"
_ERRORS = {
    "timescaledb_information.job_history": """
        SELECT DISTINCT ON (job_id) job_id, err_message FROM timescaledb_information.job_history
        WHERE NOT succeeded ORDER BY job_id, id DESC""",
    "timescaledb_information.job_errors": """
        SELECT DISTINCT ON (job_id) job_id, err_message FROM timescaledb_information.job_errors
        ORDER BY job_id, start_time DESC""",
}


def read_storage_health(conn: psycopg.Connection, now: datetime | None = None) -> StorageHealth:
    """The storage's background jobs, judged (:func:`ingest.storage_health.judge_jobs`); ``ok`` without TimescaleDB."""
    if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
        return StorageHealth("ok")
    rows = conn.execute(_JOBS).fetchall()

    def exists(rel: str) -> bool:
        return conn.execute("SELECT to_regclass(%s)", (rel,)).fetchone() != (None,)

    consecutive: dict[int, int] = (
        dict(conn.execute(_CONSECUTIVE).fetchall()) if exists("_timescaledb_internal.bgw_job_stat") else {}
    )
    errors: dict[int, str] = {}
    for rel, query in _ERRORS.items():
        if exists(rel):
            errors = dict(conn.execute(query).fetchall())
            break
    jobs = [
        JobState(
            job_id=r[0],
            proc=r[1],
            target=r[2],
            scheduled=r[3],
            schedule_interval=r[4],
            last_run_status=r[5],
            last_run_started_at=r[6],
            next_start=r[7],
            total_failures=r[8],
            consecutive_failures=consecutive.get(r[0]),
            last_error=errors.get(r[0]) if r[5] == "Failed" else None,
        )
        for r in rows
    ]
    return judge_jobs(jobs, now or datetime.now(UTC))


def storage_check(db_url: str, timeout_s: int = 2) -> Check:
    """``None`` when the storage's background jobs are healthy, else what is wrong (a fresh short connection)."""

    def check() -> str | None:
        try:
            with psycopg.connect(db_url, connect_timeout=timeout_s, autocommit=True) as conn:
                health = read_storage_health(conn)
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            return f"cannot read the storage's job statistics: {first}"
        return None if health.status == "ok" else health.summary()

    return check


def readiness(checks: dict[str, Check]) -> tuple[bool, dict[str, str]]:
    """Run every check; ``(all fine, {name: "ok" | problem})`` (pure apart from the checks)."""
    out = {name: (check() or "ok") for name, check in checks.items()}
    return all(v == "ok" for v in out.values()), out


class HealthServer:
    """Serves the three endpoints on ``host:port`` (port 0 picks a free one, see :attr:`port`)."""

    def __init__(
        self, checks: dict[str, Check], port: int, host: str = "0.0.0.0", *, storage: Check | None = None
    ) -> None:
        self._checks = checks
        self._storage = storage
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    self._send(200, b'{"status": "ok"}\n', "application/json")
                elif path == "/readyz":
                    ok, detail = readiness(outer._checks)
                    report: dict[str, object] = {"ready": ok, "checks": detail}
                    if outer._storage is not None:
                        report["storage"] = outer._storage() or "ok"  # reported, never a reason for 503
                    body = json.dumps(report).encode() + b"\n"
                    self._send(200 if ok else 503, body, "application/json")
                elif path == "/metrics":
                    self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                else:
                    self._send(404, b'{"detail": "try /healthz, /readyz or /metrics"}\n', "application/json")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: no access log
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ingest-health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (safe twice)."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
