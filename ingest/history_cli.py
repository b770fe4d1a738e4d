"""``fieldwatch history import FILE --device D``: load a historian's wide CSV export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Historical telemetry: import wide CSV exports.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Historical telemetry: import wide CSV exports."""


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="the CSV file")],
    device: Annotated[str, typer.Option(help="device id, SITE/KEY, GATEWAY/KEY, or a KEY unique in the fleet")],
    separator: Annotated[str, typer.Option(help="column separator; `\\t` for tab")] = ",",
    time_column: Annotated[str | None, typer.Option(help="name of the time column (default: the first)")] = None,
    time_format: Annotated[
        str | None, typer.Option(help="strptime format, `epoch_s` or `epoch_ms` (default: ISO 8601)")
    ] = None,
    timezone: Annotated[str, typer.Option(help="IANA zone for times without an offset")] = "UTC",
    decimal: Annotated[str, typer.Option(help="decimal mark of the numbers (`,` for 12,5)")] = ".",
    ignore_retention: Annotated[
        bool,
        typer.Option(
            "--ignore-retention",
            help="import rows older than the retention too (they are dropped at the next retention run unless "
            "FIELDWATCH_RETENTION_DAYS is raised)",
        ),
    ] = False,
    rejects: Annotated[
        Path | None, typer.Option(help="also write bad rows here (line,reason,text); default FILE.rejected.csv")
    ] = None,
) -> None:
    """Store every good row through the ingest dedup path (re-importing is harmless); bad rows are listed with
    their line numbers, written to the rejects file and kept in dead_letters."""
    import csv

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from fwcore.settings import SettingsError, load_settings
    from ingest.errors import IngestError
    from ingest.history import CsvOptions, HistoryError, import_history

    console = Console(stderr=True)
    try:
        s = load_settings()
    except SettingsError as exc:
        console.print(str(exc))
        raise typer.Exit(2) from None
    opts = CsvOptions(
        separator="\t" if separator in ("\\t", "tab") else separator,
        time_column=time_column,
        time_format=time_format,
        timezone=timezone,
        decimal=decimal,
    )
    with file.open("rb") as fh:
        total = max(sum(1 for _ in fh) - 1, 0)
    try:
        with (
            file.open(newline="", encoding="utf-8-sig") as fh,
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
            ) as bar,
        ):
            task = bar.add_task(f"importing {file.name}", total=total)
            report = import_history(
                s.database_url,
                fh,
                device,
                opts,
                retention_days=s.retention_days,
                max_future_s=s.max_future_seconds,
                ignore_retention=ignore_retention,
                progress=lambda n: bar.advance(task, n),
            )
    except (HistoryError, IngestError, UnicodeDecodeError) as exc:
        console.print(f"[red]cannot import {file}:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(
        f"{report.rows} rows, {report.points} points for tags {', '.join(report.tags)}: "
        f"{report.inserted} new, {report.duplicates} already stored"
    )
    if report.conflicts:
        console.print(
            f"[yellow]{report.conflicts} point(s) differ from the value already stored[/yellow]: the stored values "
            "are kept; the others are in dead_letters (reason conflicting_value)"
        )
    if report.bad:
        out = rejects or file.with_name(file.name + ".rejected.csv")
        with out.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["line", "reason", "text"])
            w.writerows((b.line, b.reason, b.text) for b in report.bad)
        for b in report.bad[:10]:
            console.print(f"  row {b.line}: {b.reason}", markup=False, highlight=False)
        more = " (first 10 shown)" if len(report.bad) > 10 else ""
        console.print(
            f"[yellow]{len(report.bad)} bad row(s){more}[/yellow] written to {out} and kept as dead letters "
            "(`fieldwatch dead-letters list --reason history_bad_row` or `--reason history_too_old`)"
        )
        raise typer.Exit(3)
