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


def server_of(url: str) -> str:
    """``host:port`` of a URL, for messages (never the URL: it may carry a password)."""
    p = urlsplit(url)
    return f"{p.hostname or 'localhost'}:{p.port or 5432}"


def user_of(url: str) -> str:
    """The user a URL connects as (libpq's default: the operating-system user)."""
    import getpass

    return urlsplit(url).username or getpass.getuser()


class DatabaseMissing(ConnectionError):
    """The server answers, but has no database of the name the URL gives."""

    def __init__(self, url: str) -> None:
        self.name = database_name(url)
        super().__init__(
            f"database {self.name!r} does not exist on {server_of(url)} — run `fieldwatch db create` "
            "(or check the name in FIELDWATCH_DATABASE_URL)"
        )


def is_missing_database(exc: BaseException) -> bool:
    """``exc`` is libpq's 'database "…" does not exist' (it carries no SQLSTATE at connect time)."""
    text = str(exc)
    return isinstance(exc, psycopg.OperationalError) and 'database "' in text and "does not exist" in text


def _first_line(exc: BaseException) -> str:
    """libpq's message without its 'connection failed:' prefix and hint lines."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.removeprefix("connection failed: ")


def wait_for_db(url: str, timeout: float = 30.0) -> None:
    """Block until PostgreSQL at ``url`` accepts connections, or raise with advice.

    A server that answers but lacks the database raises :class:`DatabaseMissing` at once.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError as exc:
            if is_missing_database(exc):
                raise DatabaseMissing(url) from None
            last = exc
            time.sleep(0.3)
    raise ConnectionError(
        f"PostgreSQL at {server_of(url)} is not reachable ({_first_line(last) if last else 'timed out'}) — "
        "start it (`systemctl start postgresql`) or point FIELDWATCH_DATABASE_URL at a running server"
    )


class CreateRefused(PermissionError):
    """This user may not create databases; the message gives the command an administrator runs."""


def create_named_database(url: str) -> bool:
    """Create the database ``url`` names, connecting to the server's maintenance database with the
    same credentials. Returns False if it already existed. Raises :class:`CreateRefused` (with the
    ``createdb`` command to run) when the user may not create databases."""
    name = database_name(url)
    last: psycopg.OperationalError | None = None
    for maintenance in ("postgres", "template1"):
        try:
            conn = psycopg.connect(with_database(url, maintenance), autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            if is_missing_database(exc) or "permission denied" in str(exc):
                last = exc
                continue
            raise ConnectionError(
                f"PostgreSQL at {server_of(url)} is not reachable ({_first_line(exc)}) — "
                "start it (`systemctl start postgresql`) or fix the host in FIELDWATCH_DATABASE_URL"
            ) from None
        with conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return False
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.InsufficientPrivilege:
                break
            return True
    user = user_of(url)
    reason = f" ({_first_line(last)})" if last else ""
    raise CreateRefused(
        f"{user!r} may not create database {name!r} on {server_of(url)}{reason} — as an administrator run "
        f"`sudo -u postgres createdb --owner {user} {name}`, then `fieldwatch db migrate`"
    )


def server_clock(url: str) -> tuple[float, float]:
    """(database server's clock − this host's clock, round trip), both in seconds."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        conn.execute("SELECT 1")
        before = time.time()
        row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
        after = time.time()
    assert row is not None
    return float(row[0]) - (before + after) / 2, after - before


def timescaledb_version(url: str) -> tuple[str | None, bool]:
    """(installed TimescaleDB version in this database or None, whether the server offers the extension)."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        avail = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    return (row[0] if row else None), avail is not None


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """Create database ``name`` (optionally from ``template``); returns its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        q = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            q = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
        conn.execute(q)
    return with_database(admin_url, name)


def database_comment(admin_url: str, name: str) -> tuple[bool, str | None]:
    """(whether database ``name`` exists on the server, its COMMENT ON DATABASE or None)."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
    return (row is not None), (row[0] if row else None)


def comment_database(admin_url: str, name: str, comment: str) -> None:
    """Set database ``name``'s comment (a mark saying who created it and why)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(comment)))


def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` if it exists, disconnecting its sessions (PostgreSQL 13+)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
