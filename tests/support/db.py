"""Databases for tests: the shared server's admin URL, a migrated template, a fresh copy per test,
and a throwaway PostgreSQL cluster for tests that must restart the server.

Each test gets its own database cloned from a migrated template (fast, isolated, dropped
afterwards). When the server is unreachable the fixtures fail with advice; they never skip.
psycopg is imported lazily so the edge-only test environment can still import this module.

PostgreSQL copies a database only while nobody else is connected to it. On a TimescaleDB server
the extension's background workers connect to every database that has it, the template too; so
the template's scheduler is stopped once it is migrated (``timescaledb_pre_restore()``, which
also keeps it from starting again there; the clones do not inherit that setting and run their
jobs), and a copy that still finds a session on the template ends the template's sessions and
tries again, for a bounded time. Set ``FIELDWATCH_DATABASE_URL`` to a TimescaleDB server to run
the whole suite on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from fwcore.settings import DEFAULT_DATABASE_URL
from tests.support.ports import free_port

#: The shared server's maintenance database; tests create their own databases through it.
ADMIN_URL = os.environ.get("FIELDWATCH_DATABASE_URL", DEFAULT_DATABASE_URL)


class DatabaseSetupError(RuntimeError):
    """PostgreSQL (or its driver) is not there; the message says how to get it."""


def reachable_admin_url(url: str = ADMIN_URL, timeout: float = 10.0) -> str:
    """``url`` once the server answers; :class:`DatabaseSetupError` with advice when it does not."""
    try:
        from fwcore.db import wait_for_db
    except ImportError as exc:  # the server extra is missing
        raise DatabaseSetupError(f"psycopg is not installed ({exc}); install with: pip install -e '.[dev]'") from exc
    try:
        wait_for_db(url, timeout=timeout)
    except ConnectionError as exc:
        raise DatabaseSetupError(str(exc)) from exc
    return url


@contextmanager
def template_database(admin_url: str) -> Iterator[str]:
    """A migrated database to clone per test; yields its name and drops it afterwards."""
    from fwcore.db import create_database, drop_database
    from ingest.schema import migrate

    name = f"fwtpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = create_database(admin_url, name)
    try:
        migrate(url)
        _quiet_timescale(url)
        yield name
    finally:
        drop_database(admin_url, name)


def _quiet_timescale(url: str) -> None:
    """On TimescaleDB, stop the background workers of the database at ``url`` and keep them away from it."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
            conn.execute("SELECT timescaledb_pre_restore()")


#: How long a copy may wait for the template's other sessions to go.
CLONE_TIMEOUT_S = 30.0


def clone_database(admin_url: str, name: str, template: str, timeout: float = CLONE_TIMEOUT_S) -> str:
    """``CREATE DATABASE name TEMPLATE template``, ending the template's other sessions while it is in use."""
    import psycopg

    from fwcore.db import create_database
    from tests.support.waits import wait_until

    def others() -> int:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (template,)
            ).fetchone()
            return int(row[0]) if row else 0

    deadline = time.monotonic() + timeout
    while True:
        try:
            return create_database(admin_url, name, template=template)
        except psycopg.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (template,),
            )
        left = max(deadline - time.monotonic(), 0.5)
        wait_until(others, left, done=lambda n: n == 0, what=f"the sessions on template {template} to end")


@contextmanager
def fresh_database(admin_url: str, template: str, prefix: str = "fwt_") -> Iterator[str]:
    """A new database cloned from ``template``; yields its URL and drops it (sessions and all) afterwards."""
    from fwcore.db import drop_database

    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    url = clone_database(admin_url, name, template)
    try:
        yield url
    finally:
        drop_database(admin_url, name)


def storage_of_template(admin_url: str, template: str) -> str:
    """``plain`` or ``timescale``: the telemetry storage the migrations chose on this server."""
    import psycopg

    from fwcore.db import with_database

    with psycopg.connect(with_database(admin_url, template), autocommit=True) as conn:
        row = conn.execute("SELECT value FROM fw_meta WHERE key = 'storage'").fetchone()
        return str(row[0]) if row else "plain"


def scalar(db_url: str, query: str, params: tuple = ()) -> object:
    """The first column of the first row (None when there is no row), on a connection of its own."""
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None


class PrivatePostgres:
    """A throwaway PostgreSQL 15 cluster (initdb/pg_ctl as user postgres) on a port of its own, restartable.

    Fault tests restart *this* server, never the shared one. fsync is off: the tests kill
    the server, not the operating system, so the WAL in the page cache survives.
    """

    BIN = "/usr/lib/postgresql/15/bin"

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="fw-pg-")
        shutil.chown(self.dir, "postgres")
        self._run(f"{self.BIN}/initdb", "-D", f"{self.dir}/data", "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        """Start the server; ``pg_ctl -w`` returns once it accepts connections."""
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} -c fsync=off"
        self._run(f"{self.BIN}/pg_ctl", "-D", f"{self.dir}/data", "-o", opts, "-l", f"{self.dir}/log", "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: a crash, recovery on the next start)."""
        self._run(f"{self.BIN}/pg_ctl", "-D", f"{self.dir}/data", "-m", mode, "-w", "stop")

    def close(self) -> None:
        """Stop the server if it runs and remove the cluster."""
        pg_ctl = [f"{self.BIN}/pg_ctl", "-D", f"{self.dir}/data", "-m", "immediate", "stop"]
        subprocess.run(["runuser", "-u", "postgres", "--", *pg_ctl], capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)
