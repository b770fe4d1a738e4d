"""``/healthz``, ``/readyz`` and ``/metrics`` for a standalone ingest worker (``fieldwatch ingest run``).

* ``/healthz`` — 200 while the process serves HTTP (liveness: restart me only if this fails).
* ``/readyz`` — 200 when the broker connection is up, the database answers ``SELECT 1`` and the
  writer thread is alive; else 503 with the failing checks, so an orchestrator stops routing to /
  counting on this worker while it waits for the broker or the database.
* ``/metrics`` — Prometheus text format of the default registry (all ingest metrics).

A plain ``ThreadingHTTPServer`` in a daemon thread: no web framework in the worker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

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


def readiness(checks: dict[str, Check]) -> tuple[bool, dict[str, str]]:
    """Run every check; ``(all fine, {name: "ok" | problem})`` (pure apart from the checks)."""
    out = {name: (check() or "ok") for name, check in checks.items()}
    return all(v == "ok" for v in out.values()), out


class HealthServer:
    """Serves the three endpoints on ``host:port`` (port 0 picks a free one, see :attr:`port`)."""

    def __init__(self, checks: dict[str, Check], port: int, host: str = "0.0.0.0") -> None:
        self._checks = checks
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    self._send(200, b'{"status": "ok"}\n', "application/json")
                elif path == "/readyz":
                    ok, detail = readiness(outer._checks)
                    body = json.dumps({"ready": ok, "checks": detail}).encode() + b"\n"
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
