"""``fieldwatch devices …``: devices a gateway announced that nobody registered — list, accept, reject, forget."""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer

app = typer.Typer(help="Discovered devices: accept or reject what gateways announce.", no_args_is_help=True)
T = TypeVar("T")


@app.callback()
def _group() -> None:
    """Discovered devices: accept or reject what gateways announce."""


@contextmanager
def _connection() -> Iterator[Any]:
    import psycopg

    from fwcore.settings import SettingsError, load_settings

    try:
        s = load_settings()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    try:
        with psycopg.connect(s.database_url, autocommit=True, connect_timeout=5) as conn:
            yield conn
    except psycopg.OperationalError as exc:
        typer.echo(f"cannot reach the database ({exc}); check FIELDWATCH_DATABASE_URL", err=True)
        raise typer.Exit(1) from None


def _call(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """Run a domain function; its errors become one line saying what to do, and exit 1."""
    from fwcore.errors import Conflict, Invalid, NotFound

    try:
        return fn(*args, **kw)
    except NotFound as exc:
        typer.echo(f"{exc}; list them with `fieldwatch devices discovered`", err=True)
    except (Conflict, Invalid) as exc:
        typer.echo(str(exc), err=True)
    raise typer.Exit(1)


def _me() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@app.command("discovered")
def discovered(
    gateway: Annotated[str | None, typer.Option(help="only this gateway (slug)")] = None,
    state: Annotated[str | None, typer.Option(help="pending, accepted or rejected")] = None,
    limit: Annotated[int, typer.Option(min=1, help="most rows shown")] = 100,
) -> None:
    """List devices gateways announced (or sent data for) that were not registered, newest first."""
    from rich.console import Console
    from rich.table import Table

    from ingest.discovery import list_discovered

    with _connection() as conn:
        page = _call(list_discovered, conn, gateway=gateway, state=state, limit=limit)
    table = Table("id", "gateway", "device", "profile", "state", "held", "oldest held", "tags (unit)")
    for d in page.items:
        tags = ", ".join(f"{t} ({u})" if u else t for t, u in sorted(d.tags.items()))
        oldest = d.oldest_held.isoformat(timespec="seconds") if d.oldest_held else "-"
        table.add_row(str(d.id), d.gateway, d.key, d.profile or "-", d.state, str(d.held_points), oldest, tags)
    Console(width=200).print(table)
    typer.echo(f"{len(page.items)} of {page.total}; accept one with `fieldwatch devices accept ID`")


@app.command("accept")
def accept(
    discovered_id: Annotated[int, typer.Argument(help="id from `fieldwatch devices discovered`")],
    name: Annotated[str | None, typer.Option(help="display name of the device")] = None,
    model: Annotated[str | None, typer.Option(help="equipment model (default: the announced profile's name)")] = None,
    serial: Annotated[str | None, typer.Option(help="serial number")] = None,
) -> None:
    """Register the device at its gateway's site and store the points it held, once, in time order."""
    from ingest.discovery import accept as accept_device
    from ingest.discovery import get_discovered

    fields = {k: v for k, v in {"name": name, "equipment_model": model, "serial": serial}.items() if v}
    with _connection() as conn:
        found = _call(get_discovered, conn, discovered_id)
        done = _call(accept_device, conn, discovered_id, fields, by=_me())
    if not done.stored and not done.created and found.state == "accepted":
        typer.echo(f"discovered device {discovered_id} ({found.key!r}) was accepted already: device {done.device_id}")
        return
    typer.echo(
        f"{found.key!r} on gateway {found.gateway!r} accepted as device {done.device_id} at site {found.site!r}: "
        f"{done.stored} held points stored" + (f" ({done.duplicates} were stored already)" if done.duplicates else "")
    )


@app.command("reject")
def reject(discovered_id: Annotated[int, typer.Argument(help="id from `fieldwatch devices discovered`")]) -> None:
    """Refuse the device: its held points and every later one go to the dead letters (rejected_device)."""
    from ingest.discovery import reject as reject_device

    with _connection() as conn:
        found = _call(reject_device, conn, discovered_id, by=_me())
    typer.echo(
        f"{found.key!r} on gateway {found.gateway!r} rejected; its points are in the dead letters "
        f"(`fieldwatch dead-letters list --gateway {found.gateway} --reason rejected_device`)"
    )


@app.command("forget")
def forget(discovered_id: Annotated[int, typer.Argument(help="id from `fieldwatch devices discovered`")]) -> None:
    """Delete the discovered device (held points go to the dead letters); its next announcement finds it again."""
    from ingest.discovery import forget as forget_device

    with _connection() as conn:
        moved = _call(forget_device, conn, discovered_id)
    typer.echo(f"discovered device {discovered_id} forgotten; {moved} held points moved to the dead letters")
