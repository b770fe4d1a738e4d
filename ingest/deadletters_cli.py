"""``fieldwatch dead-letters …``: what ingest refused, with the reason — list, show, replay after a fix, purge."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

app = typer.Typer(help="Dead letters: list, show, replay after a fix, purge.", no_args_is_help=True)

Reason = Annotated[str | None, typer.Option(help="e.g. unknown_device, hold_full, invalid_json")]
Gateway = Annotated[str | None, typer.Option(help="gateway slug")]
Site = Annotated[str | None, typer.Option(help="site slug")]
Device = Annotated[str | None, typer.Option(help="a device key among the points kept")]
Since = Annotated[str | None, typer.Option(help="received at or after (ISO 8601; UTC without an offset)")]
Until = Annotated[str | None, typer.Option(help="received before (ISO 8601)")]


@app.callback()
def _group() -> None:
    """Dead letters: list, show, replay after a fix, purge."""


def _settings() -> Any:
    from fwcore.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@contextmanager
def _connection() -> Iterator[Any]:
    import psycopg

    try:
        with psycopg.connect(_settings().database_url, autocommit=True, connect_timeout=5) as conn:
            yield conn
    except psycopg.OperationalError as exc:
        typer.echo(f"cannot reach the database ({exc}); check FIELDWATCH_DATABASE_URL", err=True)
        raise typer.Exit(1) from None


def _time(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        typer.echo(f"{option} {text!r} is not an ISO 8601 time; write e.g. 2026-03-01T10:00:00Z", err=True)
        raise typer.Exit(2) from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def _filter(
    reason: str | None, gateway: str | None, site: str | None, device: str | None, since: str | None, until: str | None
) -> Any:
    from ingest.deadletters import DeadLetterFilter

    return DeadLetterFilter(
        reason=reason,
        gateway=gateway,
        site=site,
        device=device,
        since=_time(since, "--since"),
        until=_time(until, "--until"),
    )


@app.command("list")
def list_(
    reason: Reason = None,
    gateway: Gateway = None,
    site: Site = None,
    device: Device = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, typer.Option(min=1, help="most rows shown")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="rows skipped")] = 0,
) -> None:
    """List dead letters, newest first, narrowed by the filters."""
    from rich.console import Console
    from rich.table import Table

    from ingest.deadletters import list_dead_letters

    f = _filter(reason, gateway, site, device, since, until)
    with _connection() as conn:
        page = list_dead_letters(conn, f, limit=limit, offset=offset)
    table = Table("id", "received", "gateway", "reason", "points", "devices", "replays", "detail")
    for d in page.items:
        devices = ", ".join(d.devices[:3]) + (" …" if len(d.devices) > 3 else "")
        table.add_row(
            str(d.id),
            d.received_at.isoformat(timespec="seconds"),
            d.gateway or d.topic,
            d.reason,
            str(d.points),
            devices,
            str(d.replays),
            d.detail[:80],
        )
    Console(width=200).print(table)
    typer.echo(f"{len(page.items)} of {page.total}; `fieldwatch dead-letters show ID` prints one with its payload")


@app.command("show")
def show(letter_id: Annotated[int, typer.Argument(help="id from `fieldwatch dead-letters list`")]) -> None:
    """Print one dead letter: where it came from, why it was refused, and its payload."""
    import orjson

    from fwcore.errors import NotFound
    from ingest.deadletters import get_dead_letter

    with _connection() as conn:
        try:
            d = get_dead_letter(conn, letter_id)
        except NotFound as exc:
            typer.echo(f"{exc}; list them with `fieldwatch dead-letters list`", err=True)
            raise typer.Exit(1) from None
    typer.echo(f"id:        {d.id}\nreceived:  {d.received_at.isoformat()}\ntopic:     {d.topic}")
    typer.echo(f"reason:    {d.reason}\ndetail:    {d.detail}\npoints:    {d.points} ({', '.join(d.devices)})")
    typer.echo(f"replays:   {d.replays}" + (f" (last {d.replayed_at.isoformat()})" if d.replayed_at else ""))
    text = d.payload_text
    if text is None:
        typer.echo(f"payload:   {len(d.payload)} bytes, not UTF-8: {d.payload[:64]!r}")
        return
    try:
        text = orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        pass
    typer.echo("payload:\n" + text)


@app.command("replay")
def replay(
    reason: Reason = None,
    gateway: Gateway = None,
    site: Site = None,
    device: Device = None,
    since: Since = None,
    until: Until = None,
) -> None:
    """Validate and store the matching dead letters again (after registering the device, fixing the clock…).

    What is stored or held is removed from the dead letters; what still fails stays, with its new reason.
    """
    from ingest.deadletters import replay as run_replay
    from ingest.errors import IngestError
    from ingest.hold import HoldLimits
    from ingest.validate import Limits

    s = _settings()
    f = _filter(reason, gateway, site, device, since, until)
    try:
        r = run_replay(s.database_url, f, limits=Limits.from_settings(s), hold=HoldLimits.from_settings(s))
    except IngestError as exc:
        typer.echo(f"replay stopped: {exc}; what was done stays done, run it again for the rest", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"replayed {r.replayed} dead letters: {r.stored} points stored, {r.duplicates} already stored, "
        f"{r.held} held for unregistered devices; {r.resolved} dead letters resolved"
    )
    if r.not_replayable:
        typer.echo(f"{r.not_replayable} left as they are (not a gateway's telemetry: status messages, history rows)")
    if r.still_failing:
        typer.echo("still failing: " + ", ".join(f"{k}: {n}" for k, n in sorted(r.still_failing.items())))


@app.command("purge")
def purge(
    reason: Reason = None,
    gateway: Gateway = None,
    site: Site = None,
    device: Device = None,
    since: Since = None,
    until: Until = None,
    everything: Annotated[bool, typer.Option("--all", help="purge without any filter")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="really delete (nothing is deleted without it)")] = False,
) -> None:
    """Delete the matching dead letters for good (they are the only copy of that data)."""
    from fwcore.errors import Invalid
    from ingest.deadletters import list_dead_letters
    from ingest.deadletters import purge as run_purge

    f = _filter(reason, gateway, site, device, since, until)
    with _connection() as conn:
        if not yes:
            n = list_dead_letters(conn, f, limit=1).total
            typer.echo(f"this would delete {n} dead letter(s); run again with --yes to delete them", err=True)
            raise typer.Exit(2)
        try:
            n = run_purge(conn, f, everything=everything)
        except Invalid as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
    typer.echo(f"purged {n} dead letter(s)")
