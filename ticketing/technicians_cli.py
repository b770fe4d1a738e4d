"""``fieldwatch technicians …``: add, list, change and retire technicians, and set their skills, directly
against the database (no running server needed)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ticketing.skills_cli import actor, connect, err, out

app = typer.Typer(help="Technicians: add, list, change, retire, skills.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Technicians: add, list, change, retire, skills."""


def _levels(items: list[str]) -> dict[str, int]:
    """``["pump_mech=3", "electrical"]`` → ``{"pump_mech": 3, "electrical": 1}``."""
    found: dict[str, int] = {}
    for item in items:
        code, _, level = item.partition("=")
        try:
            found[code.strip()] = int(level) if level else 1
        except ValueError:
            err.print(f"[red]--skill {escape(item)}: write CODE=LEVEL with a level 1..5, e.g. pump_mech=3[/]")
            raise typer.Exit(2) from None
    return found


SkillOpt = Annotated[
    list[str] | None, typer.Option("--skill", help="CODE=LEVEL (1..5; LEVEL defaults to 1), repeatable")
]


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="full name")],
    email: Annotated[str, typer.Option(help="e-mail (unique: it identifies the technician)")],
    lat: Annotated[float, typer.Option(help="home latitude")],
    lon: Annotated[float, typer.Option(help="home longitude")],
    phone: Annotated[str, typer.Option(help="phone number")] = "",
    skill: SkillOpt = None,
) -> None:
    """Add a technician, with skills (`--skill pump_mech=3 --skill electrical=2`)."""
    from ticketing.technicians import create_technician

    with connect() as conn:
        try:
            t = create_technician(
                conn,
                name=name,
                email=email,
                home_lat=lat,
                home_lon=lon,
                phone=phone,
                skills=_levels(skill or []),
                actor=actor(),
            )
        except ValueError as exc:  # a check constraint (coordinates); domain errors are reported by connect()
            from fwcore.errors import DomainError

            if isinstance(exc, DomainError):
                raise
            err.print(f"[red]{escape(str(exc))}: latitude is -90..90, longitude -180..180[/]")
            raise typer.Exit(1) from None
    out.print(f"added technician {t.id} {escape(t.name)} <{escape(t.email)}>", highlight=False)


def _row(t: Any) -> list[str]:
    skills = ", ".join(f"{k}={v}" for k, v in sorted(t.skills.items()))
    state = "retired" if t.retired_at else ("busy" if t.busy else ("available" if t.available else "off duty"))
    return [str(t.id), t.name, t.email, f"{t.home_lat:.4f},{t.home_lon:.4f}", skills, state]


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Every technician: id, name, e-mail, home, skills, and whether available, busy or retired."""
    from ticketing.technicians import list_technicians

    with connect() as conn:
        techs = list_technicians(conn)
    if as_json:
        print(json.dumps([t.model_dump(mode="json") for t in techs]))
        return
    table = Table("id", "name", "email", "home", "skills", "state")
    for t in techs:
        table.add_row(*_row(t))
    out.print(table)


@app.command("change")
def change(
    technician: Annotated[int, typer.Argument(help="technician id (`fieldwatch technicians list`)")],
    name: Annotated[str | None, typer.Option(help="new name")] = None,
    email: Annotated[str | None, typer.Option(help="new e-mail")] = None,
    phone: Annotated[str | None, typer.Option(help="new phone")] = None,
    lat: Annotated[float | None, typer.Option(help="new home latitude")] = None,
    lon: Annotated[float | None, typer.Option(help="new home longitude")] = None,
    available: Annotated[bool | None, typer.Option("--available/--off-duty", help="on or off duty")] = None,
) -> None:
    """Change a technician's details; options left out keep their value."""
    from ticketing.technicians import change_technician

    given = {"name": name, "email": email, "phone": phone, "home_lat": lat, "home_lon": lon, "available": available}
    fields = {k: v for k, v in given.items() if v is not None}
    if not fields:
        err.print("[red]nothing to change: give at least one option (see --help)[/]")
        raise typer.Exit(2)
    with connect() as conn:
        t = change_technician(conn, technician, fields, actor=actor())
    out.print(f"changed technician {t.id}: {', '.join(sorted(fields))}", highlight=False)


@app.command("retire")
def retire(technician: Annotated[int, typer.Argument(help="technician id")]) -> None:
    """Retire a technician: never dispatched again; their past work stays in the history."""
    from ticketing.technicians import retire_technician

    with connect() as conn:
        t = retire_technician(conn, technician, actor=actor())
    out.print(f"technician {t.id} {escape(t.name)} retired", highlight=False)


@app.command("skills")
def skills(
    technician: Annotated[int, typer.Argument(help="technician id")],
    skill: SkillOpt = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="skill code to take away, repeatable")] = None,
) -> None:
    """Show a technician's skills, or change them: `--skill CODE=LEVEL` sets a level, `--remove CODE` takes one
    away; levels per equipment model are kept."""
    from ticketing.technicians import get_skill_matrix, set_skill_matrix

    with connect() as conn:
        matrix = get_skill_matrix(conn, technician)
        if skill or remove:
            general = {k: v for k, v in matrix.skills.items() if k not in set(remove or [])} | _levels(skill or [])
            matrix = set_skill_matrix(conn, technician, general, matrix.models, actor=actor())
    shown = ", ".join(f"{k}={v}" for k, v in matrix.skills.items()) or "(none)"
    models = "".join(f", {m.skill}@{m.model}={m.level}" for m in matrix.models)
    out.print(f"technician {technician}: {shown}{models}", highlight=False)
