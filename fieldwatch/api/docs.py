"""The API's documentation pages, with no request leaving the server (an offline site still gets them).

FastAPI's own ``/docs`` and ``/redoc`` load Swagger UI and ReDoc from a CDN, so they are blank on a
network without the internet. Here the same pages point at the assets the ``fastapi-offline``
package ships, served under :data:`ASSETS_URL`.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
#: Where Swagger UI's and ReDoc's scripts, styles and icon are served from.
ASSETS_URL = "/docs-assets"
#: Every path these pages add (none of them is an API route, so none declares a policy action).
PATHS = frozenset({DOCS_URL, REDOC_URL, ASSETS_URL})


def add_offline_docs(app: FastAPI) -> None:
    """Serve ``/docs`` (Swagger UI) and ``/redoc`` from local assets; ``app`` must have ``docs_url=None``."""
    assert app.docs_url is None and app.redoc_url is None, "FastAPI's CDN pages would shadow the offline ones"
    app.mount(ASSETS_URL, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", ""))

    async def swagger(request: Request) -> HTMLResponse:
        base = root(request) + ASSETS_URL
        return get_swagger_ui_html(
            openapi_url=root(request) + str(app.openapi_url),
            title=f"{app.title} — API",
            swagger_js_url=f"{base}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}/swagger-ui.css",
            swagger_favicon_url=f"{base}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    async def redoc(request: Request) -> HTMLResponse:
        base = root(request) + ASSETS_URL
        return get_redoc_html(
            openapi_url=root(request) + str(app.openapi_url),
            title=f"{app.title} — API",
            redoc_js_url=f"{base}/redoc.standalone.js",
            redoc_favicon_url=f"{base}/favicon.png",
            with_google_fonts=False,
        )

    app.add_route(DOCS_URL, swagger, methods=["GET"], include_in_schema=False)
    app.add_route(REDOC_URL, redoc, methods=["GET"], include_in_schema=False)
