"""``fieldwatch users``: the people who sign in to the web console (create, list, disable, reset-password).

Passwords are asked for on the terminal (twice, hidden) unless ``--password-stdin`` reads one line from
standard input (for scripts). psycopg is imported here, so on an edge install (no 'server' extra)
``fieldwatch`` mounts its stand-in, which names the extra for any ``fieldwatch users …``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import psycopg  # the 'server' extra; see the docstring
import typer
from rich.console import Console

app = typer.Typer(help="Console users: create, list, disable, reset-password.", no_args_is_help=True)
console = Console(stderr=True)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


def _run(action, debug: bool):
    """Run ``action(conn)``; a domain error becomes one line saying what to do next (--debug: traceback)."""
    from fwcore.errors import DomainError
    from fwcore.settings import SettingsError, load_settings

    try:
        settings = load_settings()
        with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
            return action(conn)
    except (DomainError, SettingsError, psycopg.OperationalError) as exc:
        if debug:
            raise
        message = getattr(exc, "message", None) or str(exc).strip().splitlines()[0]
        hint = " Check FIELDWATCH_DATABASE_URL." if isinstance(exc, psycopg.OperationalError) else ""
        console.print(f"[red]{message}[/]{hint}", highlight=False)
        raise typer.Exit(2) from None


def _actor() -> str:
    import getpass

    return getpass.getuser()


Debug = Annotated[bool, typer.Option("--debug", help="Show the traceback on errors.")]
FromStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input.")]


@app.command("create")
def create(
    username: Annotated[str, typer.Argument(help="Sign-in name: lower-case letters, digits, '.', '_' or '-'.")],
    role: Annotated[
        str, typer.Option(help="admin, dispatcher, reliability_engineer, field_engineer, technician or viewer")
    ],
    display_name: Annotated[str, typer.Option("--name", help="The name the console shows.")] = "",
    technician: Annotated[int | None, typer.Option(help="The technician id this user is (--role technician).")] = None,
    password_stdin: FromStdin = False,
    debug: Debug = False,
) -> None:
    """Create a console user with a role of the permission policy (docs/permissions.md)."""
    from fwcore.users import create_user

    password = _password(password_stdin)
    user = _run(
        lambda conn: create_user(
            conn, username, role, password, display_name=display_name, technician_id=technician, actor=_actor()
        ),
        debug,
    )
    console.print(f"Created user [bold]{user.username}[/] ({user.role}). They sign in at the console's /signin page.")


@app.command("list")
def list_(debug: Debug = False) -> None:
    """List console users (username, name, role, active, last sign-in)."""
    from rich.table import Table

    from fwcore.users import list_users

    users = _run(list_users, debug)
    table = Table("username", "name", "role", "technician", "active", "last sign-in")
    for u in users:
        table.add_row(
            u.username,
            u.display_name,
            u.role,
            str(u.technician_id or ""),
            "yes" if u.active else "no",
            u.last_signin_at.isoformat(timespec="seconds") if u.last_signin_at else "never",
        )
    Console().print(table)


@app.command("disable")
def disable(username: str, debug: Debug = False) -> None:
    """Disable a user: they cannot sign in, and their open sessions end now."""
    from fwcore.users import disable_user

    _run(lambda conn: disable_user(conn, username, actor=_actor()), debug)
    console.print(f"User [bold]{username}[/] disabled; their sessions ended.")


@app.command("reset-password")
def reset(username: str, password_stdin: FromStdin = False, debug: Debug = False) -> None:
    """Set a new password for a user; their open sessions end and failed sign-ins are forgotten."""
    from fwcore.users import reset_password

    password = _password(password_stdin)
    _run(lambda conn: reset_password(conn, username, password, actor=_actor()), debug)
    console.print(f"Password of [bold]{username}[/] reset; their sessions ended.")
