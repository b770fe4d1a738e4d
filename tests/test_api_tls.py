"""The API over HTTPS (its own certificate) and behind a reverse proxy (forwarded headers from trusted proxies only)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request

from fieldwatch.api import run_api
from fieldwatch.api.server import ApiStartError
from fwcore.settings import Settings, SettingsError, load_settings
from tests.support.ports import free_port
from tests.support.tls import TestCA


@asynccontextmanager
async def serving(settings: Settings, app: FastAPI | None = None) -> AsyncIterator[int]:
    """run_api with ``settings`` (and ``app``) on a free port; yields the port, stops it afterwards."""
    port = free_port()
    settings = settings.model_copy(update={"api_port": port})
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_api(settings, ready=ready, stop=stop, app=app))
    waiting = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({task, waiting}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiting.cancel()
        task.result()
    assert ready.is_set(), "the API did not start in 10 s"
    try:
        yield port
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def _trusting(ca: TestCA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.ca_file))


def echo_app() -> FastAPI:
    """What the app sees of a request: its scheme, the client address, and a URL it would redirect to."""
    app = FastAPI()

    @app.get("/seen")
    async def seen(request: Request) -> dict[str, str]:
        client = request.client.host if request.client else ""
        return {"scheme": request.url.scheme, "client": client, "url": str(request.url_for("seen"))}

    return app


async def test_api_serves_https_with_its_certificate(db_url: str, tmp_path: Path) -> None:
    """With a certificate and key set, the real app answers over HTTPS verified against the test CA."""
    ca = TestCA(tmp_path)
    server = ca.server()
    settings = load_settings(database_url=db_url, api_tls_cert_file=server.cert, api_tls_key_file=server.key)
    async with serving(settings) as port, httpx.AsyncClient(verify=_trusting(ca), timeout=5) as client:
        r = await client.get(f"https://127.0.0.1:{port}/healthz")
        assert r.status_code == 200
        seen = await client.get(f"https://localhost:{port}/readyz")  # a name the certificate holds too
        assert seen.status_code == 200


async def test_https_api_is_refused_by_clients_of_another_ca_and_to_plain_http(db_url: str, tmp_path: Path) -> None:
    """A client trusting another CA cannot connect, and plain HTTP to the HTTPS port gets no response."""
    ca, other = TestCA(tmp_path / "a"), TestCA(tmp_path / "b", name="another CA")
    server = ca.server()
    settings = load_settings(database_url=db_url, api_tls_cert_file=server.cert, api_tls_key_file=server.key)
    async with serving(settings) as port:
        async with httpx.AsyncClient(verify=_trusting(other), timeout=5) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(f"https://127.0.0.1:{port}/healthz")
        async with httpx.AsyncClient(timeout=5) as client:
            with pytest.raises(httpx.TransportError):
                await client.get(f"http://127.0.0.1:{port}/healthz")


async def test_unusable_tls_files_stop_the_api_before_it_listens(db_url: str, tmp_path: Path) -> None:
    """A certificate whose key is missing is reported as ApiStartError naming the files, not a uvicorn traceback."""
    ca = TestCA(tmp_path)
    server = ca.server()
    settings = load_settings(
        database_url=db_url, api_port=free_port(), api_tls_cert_file=server.cert, api_tls_key_file=tmp_path / "gone.key"
    )
    with pytest.raises(ApiStartError, match=r"server\.crt.*gone\.key.*No such file"):
        await run_api(settings, stop=asyncio.Event())


def test_api_certificate_and_key_go_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """FIELDWATCH_API_TLS_CERT_FILE without its key stops at start, naming the key setting."""
    monkeypatch.setenv("FIELDWATCH_API_TLS_CERT_FILE", "/etc/fieldwatch/api.crt")
    with pytest.raises(SettingsError, match="FIELDWATCH_API_TLS_KEY_FILE"):
        load_settings()


@pytest.mark.parametrize("bad", ["proxy.example", "10.0.0.300", "10.0.0.0/33"])
def test_trusted_proxies_must_be_addresses(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    """A trusted proxy that is not an IP address or network is refused at start, naming the entry."""
    monkeypatch.setenv("FIELDWATCH_API_TRUSTED_PROXIES", f"127.0.0.1,{bad}")
    with pytest.raises(SettingsError, match="FIELDWATCH_API_TRUSTED_PROXIES"):
        load_settings()


def test_trusted_proxy_networks_are_normalised() -> None:
    """A network written with host bits set is kept as its network, the form uvicorn matches against."""
    assert load_settings(api_trusted_proxies=" 10.1.2.3/16, 127.0.0.2 ").api_trusted_proxies == "10.1.0.0/16,127.0.0.2"


FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.23"}


def _from(address: str) -> Callable[[], httpx.AsyncClient]:
    return lambda: httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=address), timeout=5)


@pytest.mark.parametrize(
    ("trusted", "source", "honoured"),
    [
        ("", "127.0.0.1", False),  # the default: no proxy is trusted, not even on loopback
        ("127.0.0.2", "127.0.0.1", False),  # an address that is not the proxy's
        ("127.0.0.2", "127.0.0.2", True),  # the proxy's own address
        ("127.0.0.0/29", "127.0.0.2", True),  # inside a trusted network
    ],
)
async def test_forwarded_headers_count_only_from_trusted_proxies(
    db_url: str, trusted: str, source: str, honoured: bool
) -> None:
    """X-Forwarded-Proto/-For change the scheme, client and URLs the app sees only when sent by a trusted proxy."""
    settings = load_settings(database_url=db_url, api_trusted_proxies=trusted)
    async with serving(settings, app=echo_app()) as port, _from(source)() as client:
        seen = (await client.get(f"http://127.0.0.1:{port}/seen", headers=FORWARDED)).json()
    if honoured:
        assert seen == {"scheme": "https", "client": "198.51.100.23", "url": f"https://127.0.0.1:{port}/seen"}
    else:
        assert seen == {"scheme": "http", "client": source, "url": f"http://127.0.0.1:{port}/seen"}
