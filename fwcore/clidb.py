"""The database connection of a CLI command, with its failures said in one line.

Every command that works on the registry directly (``fleet``, ``skills``, ``technicians``) opens the
database the same way and says the same things when it cannot: bad settings (exit 2), an unreachable
database (exit 2, what to check), a refusal from the domain (exit 1, the domain's own words). One
helper so that the wording and the exit codes cannot drift between commands.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape


@contextmanager
def cli_connection(err: Console) -> Iterator[Any]:
    """An autocommit connection to ``FIELDWATCH_DATABASE_URL``; failures are one red line on ``err``.

    A :class:`fwcore.errors.DomainError` raised inside the block ends the command with exit 1.
    psycopg is imported here, not at module level: an edge install has the CLI but not psycopg.
    """
    import psycopg

    from fwcore.errors import DomainError
    from fwcore.settings import SettingsError, load_settings

    try:
        url = load_settings().database_url
    except SettingsError as exc:
        err.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from None
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        err.print(f"[red]cannot connect to the database: {escape(str(exc).strip())}[/]\nCheck FIELDWATCH_DATABASE_URL.")
        raise typer.Exit(2) from None
    with conn:
        try:
            yield conn
        except DomainError as exc:
            err.print(f"[red]{escape(str(exc))}[/]", soft_wrap=True)
            raise typer.Exit(1) from None
