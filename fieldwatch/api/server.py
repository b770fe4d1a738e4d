"""Running the API with uvicorn: inside someone else's asyncio loop, or in the foreground.

:func:`run_api` is for hosts such as ``fieldwatch demo`` that run several
services in one loop: it never touches signal handlers (the host owns them) and
stops when the host sets ``stop``. The listening socket is bound here, before
uvicorn starts, so a busy port raises :class:`ApiStartError` instead of uvicorn's
``sys.exit(1)``, which would take the host's whole event loop down with it.

HTTPS: with ``api_tls_cert_file``/``api_tls_key_file`` set, uvicorn serves TLS itself (the files
are checked before the socket is bound). Behind a reverse proxy that terminates TLS instead,
``api_trusted_proxies`` lists the proxies whose ``X-Forwarded-Proto``/``-For`` are believed, so
the app knows the request came over https and from whom; from anyone else the headers are
ignored (uvicorn's own default would believe any client on loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import FastAPI

from fwcore.settings import Settings, get_settings
from fwcore.tls import server_files_error

from .app import create_app

#: Seconds in-flight requests get to finish once a stop is asked for.
GRACEFUL_SHUTDOWN_S = 5


class ApiStartError(RuntimeError):
    """The API could not start (address in use, bad host, failed startup)."""


class _HostedServer(uvicorn.Server):
    """A uvicorn server that leaves signals to its host."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def uvicorn_config(app: FastAPI, settings: Settings, log_level: str) -> uvicorn.Config:
    """uvicorn's options from the settings: TLS files, trusted proxies, graceful shutdown."""
    trusted = settings.api_trusted_proxies
    return uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        access_log=False,  # the app logs each request itself (fieldwatch.access), without the query string
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        ssl_certfile=settings.api_tls_cert_file,
        ssl_keyfile=settings.api_tls_key_file,
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 picks a free one), or :class:`ApiStartError`."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        hint = (
            " — stop what listens there, or choose another port (`serve --port`)"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        raise ApiStartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from exc


async def run_api(
    settings: Settings | None = None,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event,
    app: FastAPI | None = None,
    log_level: str = "warning",
) -> None:
    """Serve the API until ``stop`` is set (or this task is cancelled), then shut down cleanly.

    ``ready`` is set once the socket listens and the app's startup (pool) has run.
    Raises :class:`ApiStartError` if the server cannot start.
    """
    settings = settings or get_settings()
    if settings.api_tls_cert_file is not None and settings.api_tls_key_file is not None:
        problem = server_files_error(settings.api_tls_cert_file, settings.api_tls_key_file)
        if problem is not None:
            raise ApiStartError(f"HTTPS (FIELDWATCH_API_TLS_CERT_FILE/_KEY_FILE): {problem}")
    app = app or create_app(settings, console=settings.console_enabled)
    sock = bind(settings.api_host, settings.api_port)
    server = _HostedServer(uvicorn_config(app, settings, log_level))
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="fieldwatch-api")
    stopping = asyncio.create_task(stop.wait(), name="fieldwatch-api-stop")
    try:
        while not server.started and not serving.done() and not stop.is_set():
            await asyncio.sleep(0.01)
        if server.started and ready is not None:
            ready.set()
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stopping.cancel()
        try:
            await serving
        finally:
            sock.close()
    if not server.started and not stop.is_set():
        raise ApiStartError(f"the API on {settings.api_host}:{settings.api_port} stopped during startup")


def serve(settings: Settings | None = None) -> None:
    """Serve in the foreground until SIGINT or SIGTERM (for ``fieldwatch api``)."""
    settings = settings or get_settings()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_api(settings, stop=stop, log_level=settings.log_level.lower())

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (the server extra brings it with ``uvicorn[standard]``),
    else asyncio's. Measured with bench/abuse.py on this project's 2-core machine: history imports
    run ~1.7x faster unloaded and the server spends ~0.4-0.57 ms instead of ~0.66-0.74 ms on each
    refused request, so legitimate work keeps more of the core under attack (docs/security/L.md)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
