"""The fieldwatch HTTP API (FastAPI; OpenAPI at ``/docs``).

Public surface::

    create_app(settings=None) -> FastAPI          build the app (pool opens at startup)
    await run_api(settings, ready=..., stop=...)   serve inside a running asyncio loop until ``stop`` is set
    serve(settings=None)                           serve in the foreground until SIGINT/SIGTERM
"""

from .app import API_PREFIX, create_app
from .server import run_api, serve

__all__ = ["API_PREFIX", "create_app", "run_api", "serve"]
