"""Whether the API can use its database now: the check behind ``/readyz``.

It lives beside the pool, not in a router, so the routers stay free of the database driver
(an import-linter contract keeps ``fieldwatch.api.routes`` from importing psycopg).
"""

from __future__ import annotations

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from ingest.health import read_storage_health
from ingest.queries import ping


def storage_problem(pool: ConnectionPool, timeout_s: float) -> str | None:
    """None if the storage's background jobs are healthy (or it has none), else what is wrong, in one line.

    Failing TimescaleDB jobs (rollup refresh, compression, retention) do not make the API unready:
    they are reported beside the readiness (``ingest.storage_health``).
    """
    try:
        with pool.connection(timeout=min(timeout_s, pool.timeout)) as conn:
            health = read_storage_health(conn)
    except (PoolTimeout, psycopg.Error) as exc:
        return f"cannot read the storage's job statistics: {type(exc).__name__}: {exc}".strip()
    return None if health.status == "ok" else health.summary()


def database_problem(pool: ConnectionPool, timeout_s: float) -> str | None:
    """None if a pooled connection answers within ``timeout_s`` and the schema is migrated, else why not."""
    try:
        with pool.connection(timeout=min(timeout_s, pool.timeout)) as conn:
            ping(conn)
    except (PoolTimeout, psycopg.Error) as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None
