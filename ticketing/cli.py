"""``fieldwatch report …``: service KPIs as CSV or XLSX."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="Reports: service KPIs as CSV or XLSX.", no_args_is_help=True)
err = Console(stderr=True)


class Format(StrEnum):
    csv = "csv"
    xlsx = "xlsx"


@app.callback()
def _group() -> None:
    """Reports: service KPIs as CSV or XLSX."""


def _when(value: str | None, default: datetime) -> datetime:
    if value is None:
        return default
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        err.print(f"[red]{value!r} is not a date; use YYYY-MM-DD or an ISO timestamp[/]")
        raise typer.Exit(2) from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


@app.command("kpis")
def kpis(
    since: Annotated[str | None, typer.Option(help="period start (default: 30 days ago)")] = None,
    until: Annotated[str | None, typer.Option(help="period end (default: now)")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="csv or xlsx")] = Format.csv,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file (default: stdout for csv)")] = None,
) -> None:
    """MTTR, MTBF per model, SLA compliance per segment, first-time fix, utilization, travel share,
    alarms per ticket — one row per KPI and dimension."""
    import psycopg

    from fwcore.settings import SettingsError, load_settings
    from ticketing.export import to_csv, to_xlsx
    from ticketing.kpis import compute_kpis

    now = datetime.now(UTC)
    start, end = _when(since, now - timedelta(days=30)), _when(until, now)
    if fmt is Format.xlsx and output is None:
        err.print("[red]xlsx is binary: give --output FILE.xlsx[/]")
        raise typer.Exit(2)
    try:
        url = load_settings().database_url
        with psycopg.connect(url) as conn:
            rows = compute_kpis(conn, start, end)
    except SettingsError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    except psycopg.OperationalError as exc:
        err.print(f"[red]cannot connect to the database: {exc}[/]\nCheck FIELDWATCH_DATABASE_URL.")
        raise typer.Exit(2) from None
    if fmt is Format.csv:
        text = to_csv(rows)
        if output is None:
            typer.echo(text, nl=False)
        else:
            output.write_text(text)
    elif output is not None:  # always, for xlsx (refused above without --output)
        output.write_bytes(to_xlsx(rows))
    if output is not None:
        err.print(f"wrote {len(rows)} KPI rows to {output}")
