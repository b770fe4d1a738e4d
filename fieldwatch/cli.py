"""The ``fieldwatch`` command: one entry point for every user task.

Sub-commands that need the server stack (psycopg, FastAPI, …) import it lazily,
so ``fieldwatch --help`` and the gateway commands work on an edge install that
only has the ``edge`` extra. A missing extra is reported with the pip command
that installs it.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="fieldwatch",
    help="Equipment telemetry to dispatched service work.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Database schema: migrate and inspect.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens: create, list, revoke.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tokens_app, name="tokens")

console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from fieldwatch import __version__

        print(f"fieldwatch {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error, not one line.")] = False,
) -> None:
    """Equipment telemetry to dispatched service work."""
    from fieldwatch import clierrors

    clierrors.DEBUG = debug


def _missing_extra(extra: str, exc: ImportError) -> typer.Exit:
    from fieldwatch.clierrors import fail, missing_extra_line

    fail(missing_extra_line(extra, exc.name))
    return typer.Exit(2)


def _settings():
    from fwcore.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        from fieldwatch.clierrors import DEBUG, fail

        if DEBUG:
            raise
        fail(" ".join(str(exc).split()))
        raise typer.Exit(2) from None


def _logging(level: str) -> None:
    from rich.logging import RichHandler

    from fwcore.redact import redact_logging

    logging.basicConfig(level=level, format="%(name)s: %(message)s", handlers=[RichHandler(console=console)])
    redact_logging()  # URL passwords and API tokens never reach the log


def _mount_optional(module: str, name: str, help_text: str, extra: str) -> None:
    """Mount a package's typer sub-app, or a stand-in that explains which extra is missing."""
    try:
        sub = __import__(module, fromlist=["app"]).app
    except ImportError as exc:
        if exc.name and exc.name.startswith(module.split(".")[0]):
            raise  # our own bug, not a missing extra
        missing = exc

        # A command that takes any arguments, so `fieldwatch fleet import x.yaml` on an edge box names the
        # missing extra instead of answering "No such command 'import'".
        @app.command(
            name=name,
            help=f"{help_text} (needs the '{extra}' extra)",
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        )
        def _explain(ctx: typer.Context) -> None:
            raise _missing_extra(extra, missing)

        return
    app.add_typer(sub, name=name, help=help_text)


_mount_optional("gateway.cli", "gateway", "Edge gateway: run and inspect.", "edge")
__import__("fieldwatch.provision").provision.mount(app)  # adds `fieldwatch gateway provision`
_mount_optional(
    "ingest.cli",
    "ingest",
    "Ingest worker alone, without live rules (`fieldwatch serve` runs ingest with rules).",
    "server",
)
_mount_optional(
    "simulators.cli",
    "simulate",
    "Simulated pumps, chillers and compressors over Modbus and OPC-UA, with physics and faults.",
    "edge",
)
_mount_optional("rules.cli", "rules", "Rules: apply rules files, list, show, backtest on history.", "server")
_mount_optional("ingest.history_cli", "history", "Historical telemetry: import wide CSV exports.", "server")
_mount_optional(
    "ingest.discovery_cli", "devices", "Discovered devices: accept or reject what gateways announce.", "server"
)
_mount_optional(
    "ingest.deadletters_cli", "dead-letters", "Dead letters: list, show, replay after a fix, purge.", "server"
)
_mount_optional(
    "ingest.fleet_cli",
    "fleet",
    "The fleet: clients, sites, gateways, devices — add, list, change, retire, import.",
    "server",
)
_mount_optional("ticketing.skills_cli", "skills", "Skills: add, list, rename, retire, restore.", "server")
_mount_optional("ticketing.technicians_cli", "technicians", "Technicians: add, list, change, retire, skills.", "server")
_mount_optional("ticketing.cli", "report", "Reports: service KPIs as CSV or XLSX.", "server")
_mount_optional("fieldwatch.users_cli", "users", "Console users: create, list, disable, reset-password.", "server")


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (idempotent; safe when several processes run it at once)."""
    settings = _settings()
    try:
        from fwcore.db import wait_for_db
        from ingest.schema import migrate
    except ImportError as exc:
        raise _missing_extra("server", exc) from None
    wait_for_db(settings.database_url, timeout=10)  # a missing database says to run `db create`
    with console.status("Applying migrations…"):
        applied = migrate(settings.database_url)
    if applied:
        for name in applied:
            console.print(f"[green]applied[/] {name}")
    else:
        console.print("Schema is up to date.")


@db_app.command("create")
def db_create() -> None:
    """Create the database FIELDWATCH_DATABASE_URL names (through the server's maintenance database).

    Does nothing if it exists. When this user may not create databases, prints the `createdb`
    command an administrator runs instead.
    """
    settings = _settings()
    try:
        from fwcore.db import create_named_database, database_name, server_of
    except ImportError as exc:
        raise _missing_extra("server", exc) from None
    name, where = database_name(settings.database_url), server_of(settings.database_url)
    if create_named_database(settings.database_url):
        console.print(
            f"[green]created[/] database {name} on {where}; next: [bold]fieldwatch db migrate[/]", soft_wrap=True
        )
    else:
        console.print(
            f"Database {name} already exists on {where}; next: [bold]fieldwatch db migrate[/]", soft_wrap=True
        )


@db_app.command("status")
def db_status() -> None:
    """Show each migration (ok, repaired, changed, pending) and which telemetry storage is in use.

    Exits 1 when `db migrate` would refuse (a migration file changed after it was applied).
    """
    settings = _settings()
    try:
        import psycopg

        from ingest.schema import MigrationError, NotMigrated, migration_status, storage_of
    except ImportError as exc:
        raise _missing_extra("server", exc) from None
    from rich.table import Table

    try:
        with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
            states = migration_status(conn)
            storage = storage_of(conn)
    except NotMigrated:
        console.print("Not migrated yet: run [bold]fieldwatch db migrate[/].")
        raise typer.Exit(1) from None
    except MigrationError as exc:
        console.print(str(exc), style="red", markup=False)
        raise typer.Exit(1) from None
    except psycopg.OperationalError as exc:
        console.print(f"[red]Cannot reach the database: {exc}[/]Check FIELDWATCH_DATABASE_URL.")
        raise typer.Exit(1) from None
    styles = {"changed": "red", "to repair": "yellow", "pending": "cyan", "no file": "yellow"}
    table = Table("version", "name", "applied at", "state", title=f"storage: {storage}")
    for s in states:
        at = s.applied_at.isoformat(timespec="seconds") if s.applied_at else "-"
        table.add_row(s.version, s.name, at, s.describe(), style=styles.get(s.status))
    Console().print(table)
    problems = [s.problem for s in states if s.problem]
    if problems:
        console.print("\n".join(problems), style="red", markup=False)
        console.print("`fieldwatch db migrate` will refuse: restore the files as released (docs/upgrading.md).")
        raise typer.Exit(1)


def _cli_actor() -> str:
    """Who runs this command, for the audit log: the operating-system user (the CLI has no token; the
    rules commands record the same)."""
    import getpass

    return getpass.getuser()


@tokens_app.command("create")
def tokens_create(
    role: Annotated[
        str, typer.Option(help="admin, dispatcher, reliability_engineer, field_engineer, technician or viewer")
    ],
    name: Annotated[str, typer.Option(help="Who or what holds the token, for listings and audit.")] = "cli",
    technician: Annotated[
        int | None,
        typer.Option(
            help="Bind the token to this technician id: it then acts only on their jobs and position "
            "(required for --role technician)."
        ),
    ] = None,
) -> None:
    """Create an API token. The token is printed once; only its hash is stored."""
    settings = _settings()
    try:
        import psycopg

        from fwcore.auth import create_token
    except ImportError as exc:
        raise _missing_extra("server", exc) from None
    try:
        with psycopg.connect(settings.database_url) as conn:
            token = create_token(conn, name=name, role=role, technician_id=technician, actor=_cli_actor())
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    bound = f", bound to technician {technician}" if technician is not None else ""
    console.print(f"Created a [bold]{role}[/] token for {name!r}{bound}. Keep it safe; it is not shown again.")
    print(token)


@tokens_app.command("list")
def tokens_list() -> None:
    """List tokens (name, role, prefix, created, last used, revoked)."""
    settings = _settings()
    import psycopg
    from rich.table import Table

    from fwcore.auth import list_tokens

    with psycopg.connect(settings.database_url) as conn:
        tokens = list_tokens(conn)
    table = Table("id", "name", "role", "technician", "prefix", "created", "last used", "revoked")
    for t in tokens:
        table.add_row(
            *(
                str(getattr(t, f, "") or "")
                for f in ("id", "name", "role", "technician_id", "prefix", "created_at", "last_used_at", "revoked_at")
            )
        )
    Console().print(table)


@tokens_app.command("revoke")
def tokens_revoke(token_id: int) -> None:
    """Revoke a token by id; requests using it get 401 from then on."""
    settings = _settings()
    import psycopg

    from fwcore.auth import revoke_token

    with psycopg.connect(settings.database_url) as conn:
        if not revoke_token(conn, token_id, actor=_cli_actor()):
            console.print(f"[red]No token with id {token_id}.[/]")
            raise typer.Exit(1)
    console.print(f"Token {token_id} revoked.")


@app.command("serve")
def serve(
    ingest: Annotated[bool, typer.Option(help="Run the ingest worker (with live rule evaluation).")] = True,
    ticketing: Annotated[bool, typer.Option(help="Run ticketing and dispatch.")] = True,
    api: Annotated[bool, typer.Option(help="Run the HTTP API.")] = True,
    scheduler: Annotated[bool, typer.Option(help="Run scheduled jobs (leader-elected; safe on several hosts).")] = True,
    migrate_first: Annotated[bool, typer.Option("--migrate/--no-migrate", help="Apply migrations first.")] = True,
    host: Annotated[
        str | None, typer.Option(help="Address the API listens on (default: FIELDWATCH_API_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="API port (default: FIELDWATCH_API_PORT, 8000).")
    ] = None,
) -> None:
    """Run the server side: ingest + rules, ticketing + dispatch, scheduled jobs and the HTTP API, until Ctrl-C."""
    settings = _settings()
    overrides = {k: v for k, v in (("api_host", host), ("api_port", port)) if v is not None}
    if overrides:
        settings = settings.model_copy(update=overrides)
    _logging(settings.log_level)
    try:
        from fieldwatch.api.server import ApiStartError, bind
        from fieldwatch.server import run_server
    except ImportError as exc:
        raise _missing_extra("server", exc) from None
    import asyncio

    from fwcore.tls import TlsConfigError

    try:
        if api:  # a busy port is said before anything starts (the API binds again when it starts)
            bind(settings.api_host, settings.api_port).close()
        asyncio.run(
            run_server(
                settings, ingest=ingest, ticketing=ticketing, api=api, scheduler=scheduler, migrate_first=migrate_first
            )
        )
    except KeyboardInterrupt:
        pass
    except (ConnectionError, TlsConfigError, ApiStartError) as exc:  # a broker, TLS file or port to fix first
        from fieldwatch.clierrors import DEBUG, fail

        if DEBUG:
            raise
        fail(" ".join(str(exc).split()))
        raise typer.Exit(1) from None


@app.command("demo")
def demo(
    exit_after_dispatch: Annotated[
        bool, typer.Option("--exit-after-dispatch", help="Exit 0 as soon as a ticket is assigned.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary as the last line.")] = False,
    timeout: Annotated[float, typer.Option(help="With --exit-after-dispatch: give up after this many seconds.")] = 180,
    fault_after: Annotated[float, typer.Option(help="Seconds before the bearing fault is injected.")] = 8,
    api_port: Annotated[int, typer.Option(help="Port of the demo API on 127.0.0.1 (0 picks a free one).")] = 8000,
    database: Annotated[
        str,
        typer.Option(
            help="With FIELDWATCH_DATABASE_URL: the database the demo creates, marks and recreates on each run "
            "(it never drops one it did not create)."
        ),
    ] = "fieldwatch_demo",
) -> None:
    """Run the whole path on this machine: simulators → gateways → MQTT → ingest → rules → ticket → dispatch.

    Uses an embedded PostgreSQL and MQTT broker unless FIELDWATCH_DATABASE_URL /
    FIELDWATCH_MQTT_URL point at real services (then the database ``--database``,
    ``fieldwatch_demo`` by default, is created and marked on that server; a database of
    that name the demo did not create is never dropped). Ctrl-C stops everything.
    """
    try:
        from fieldwatch.demo import DemoOptions, run_demo
    except ImportError as exc:
        raise _missing_extra("demo", exc) from None
    code = run_demo(
        DemoOptions(
            exit_after_dispatch=exit_after_dispatch,
            json_out=json_out,
            timeout=timeout,
            fault_after=fault_after,
            api_port=api_port,
            database=database,
        )
    )
    raise typer.Exit(code)


__import__("fieldwatch.doctor").doctor.mount(app)  # adds `fieldwatch doctor`


def main() -> None:
    """Console-script entry point: known failures print one line (``--debug``: the traceback)."""
    from fieldwatch.clierrors import run

    run(app)


if __name__ == "__main__":
    main()
