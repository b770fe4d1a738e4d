"""Small database helpers shared by services and tests (URL handling, waiting, creating)."""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql


def with_database(url: str, dbname: str) -> str:
    """``url`` pointing at database ``dbname`` instead (same host, user, options)."""
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + dbname, p.query, p.fragment))


def database_name(url: str) -> str:
    """The database a URL names."""
    return urlsplit(url).path.lstrip("/") or "postgres"


def wait_for_db(url: str, timeout: float = 30.0) -> None:
    """Block until PostgreSQL at ``url`` accepts connections, or raise with advice."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError as exc:
            last = exc
            time.sleep(0.3)
    raise ConnectionError(
        f"PostgreSQL at {url} is not reachable ({last}). Start it (e.g. "
        "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`) "
        "or point FIELDWATCH_DATABASE_URL at a running server."
    )


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """Create database ``name`` (optionally from ``template``); returns its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        q = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            q = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
        conn.execute(q)
    return with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` if it exists, disconnecting its sessions (PostgreSQL 13+)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
