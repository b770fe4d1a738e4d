"""``fieldwatch skills …``: create, list, rename, retire and restore the skills rules require and
technicians hold, directly against the database (no running server needed)."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fwcore.clidb import cli_connection

app = typer.Typer(help="Skills: add, list, rename, retire, restore.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


@app.callback()
def _group() -> None:
    """Skills: add, list, rename, retire, restore."""


@contextmanager
def connect() -> Iterator[Any]:
    """A connection to FIELDWATCH_DATABASE_URL; a domain error inside the block is one red line and exit 1."""
    with cli_connection(err) as conn:
        yield conn


def actor() -> str:
    """Who runs the command, for the audit log: the operating-system user."""
    return getpass.getuser()


@app.command("add")
def add(
    code: Annotated[str, typer.Argument(help="lower-case code rules name, e.g. pump_mech")],
    name: Annotated[str, typer.Option(help="readable name, e.g. 'Pump mechanics'")] = "",
) -> None:
    """Add a skill."""
    from ticketing.skills import create_skill

    with connect() as conn:
        skill = create_skill(conn, code, name, actor=actor())
    out.print(f"added skill {escape(skill.code)} ({escape(skill.name) or 'no name'})", highlight=False)


@app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    active: Annotated[bool, typer.Option("--active", help="leave retired skills out")] = False,
) -> None:
    """Every skill: code, name, how many technicians hold it, retired or not."""
    from ticketing.skills import list_skills

    with connect() as conn:
        skills = list_skills(conn, include_retired=not active)
    if as_json:
        print(json.dumps([s.model_dump(mode="json") for s in skills]))
        return
    table = Table("code", "name", "technicians", "retired")
    for s in skills:
        table.add_row(s.code, s.name, str(s.technicians), s.retired_at.date().isoformat() if s.retired_at else "")
    out.print(table)


@app.command("rename")
def rename(
    code: Annotated[str, typer.Argument(help="the skill's code (it stays)")],
    name: Annotated[str, typer.Argument(help="the new readable name")],
) -> None:
    """Change a skill's readable name; rules keep naming it by its code."""
    from ticketing.skills import rename_skill

    with connect() as conn:
        skill = rename_skill(conn, code, name, actor=actor())
    out.print(f"skill {escape(skill.code)} is now named {escape(skill.name)!r}", highlight=False)


@app.command("retire")
def retire(code: Annotated[str, typer.Argument(help="the skill's code")]) -> None:
    """Retire a skill: no rule may newly require it and nobody new gets it; who has it keeps it."""
    from ticketing.skills import retire_skill

    with connect() as conn:
        skill = retire_skill(conn, code, actor=actor())
    out.print(f"skill {escape(skill.code)} retired ({skill.technicians} technician(s) keep it)", highlight=False)


@app.command("restore")
def restore(code: Annotated[str, typer.Argument(help="the skill's code")]) -> None:
    """Undo a retire: the skill may be required and given again."""
    from ticketing.skills import retire_skill

    with connect() as conn:
        skill = retire_skill(conn, code, restore=True, actor=actor())
    out.print(f"skill {escape(skill.code)} restored", highlight=False)
