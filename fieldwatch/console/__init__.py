"""The web console: served at ``/`` by the same process as the API (``/api/v1``), from Python packages
only (NiceGUI ships Vue, Quasar and Leaflet; no CDN, no Node build). See docs/ui.md.

:func:`mount_console` adds the sign-in/sign-out and action endpoints (:mod:`.session`) and the pages
(:mod:`.pages`) to the API's app, and starts the live events (:mod:`.live`) with it. NiceGUI keeps
one set of pages per process, so a process mounts the console on one app at most.
"""

from __future__ import annotations

from fastapi import FastAPI

from fwcore.settings import Settings

__all__ = ["mount_console"]

_mounted: FastAPI | None = None


def mount_console(app: FastAPI, settings: Settings) -> None:
    """Serve the console on ``app`` (once per process: a second call raises ``RuntimeError``)."""
    global _mounted
    if _mounted is not None:
        raise RuntimeError("the console is already mounted in this process (NiceGUI keeps one set of pages)")
    from nicegui import app as nicegui_app
    from nicegui import ui

    from . import device_page, gateway_config, gateways_page, pages, session, ticket_page  # noqa: F401 - pages register
    from .live import LiveEvents

    live = LiveEvents(settings.database_url)
    pages.STATE = pages.ConsoleState(app, settings, live)
    app.include_router(session.router)
    app.include_router(gateway_config.router)
    app.include_router(ticket_page.router)
    nicegui_app.on_startup(live.start)
    nicegui_app.on_shutdown(live.stop)
    ui.run_with(
        app,
        mount_path="/",
        title="fieldwatch",
        favicon="📡",
        dark=False,
        show_welcome_message=False,
        reconnect_timeout=10.0,
    )
    _mounted = app
