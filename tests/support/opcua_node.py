"""A second OPC-UA server implementation for the tests: node-opcua, run by ``node tests/opcua_js/server.js``.

Our own simulator is asyncua, the same library as the gateway's client; two ends written
by one library agree on everything, including its mistakes. node-opcua revises
subscription parameters its own way (publishing interval at least 50 ms, keep-alive
count 2..12000, lifetime at least three keep-alives), and is what a field engineer meets
in many products. The address space is described in ``tests/opcua_js/server.js``::

    with NodeOpcUaServer(tmp_path) as server:
        ...  # server.endpoint, server.node("steady_1") -> "ns=1;s=steady_1"
        server.kill()  # the server goes away at once (SIGKILL)

The pinned packages are installed on first use (``npm ci`` from package-lock.json, as CI
does); without node/npm the tests that need the server skip and say why (as the Sparkplug
tests do for Tahu's codec). Fixtures, imported by the test modules that use them:
``node_opcua`` (one server per module, its ``ramp`` changing every 100 ms).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from tests.support.ports import free_port
from tests.support.waits import wait_until

JS_DIR = Path(__file__).resolve().parent.parent / "opcua_js"
#: How long node-opcua may take to load its standard nodeset and listen (a loaded 2-core box).
START_TIMEOUT = 60.0


class NodeOpcUaUnavailable(RuntimeError):
    """node or npm is not installed; the message says how to get them."""


def ensure_installed() -> None:
    """Install the pinned node-opcua packages if needed; raise :class:`NodeOpcUaUnavailable` without node/npm."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise NodeOpcUaUnavailable("node/npm not installed: cannot run the node-opcua test server (apt install npm)")
    if not (JS_DIR / "node_modules" / "node-opcua-server").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=JS_DIR, check=True, capture_output=True
        )


class NodeOpcUaServer:
    """One node-opcua server process on a free port of 127.0.0.1, its certificates under ``workdir``."""

    def __init__(self, workdir: Path, *, period_ms: int = 100, min_publishing_ms: int | None = None) -> None:
        """``period_ms``: how often ``ramp`` changes; ``min_publishing_ms``: the fastest publishing interval
        the server grants (node-opcua's own is 50 ms), so a shorter request is revised up to it."""
        self.workdir = workdir
        self.period_ms = period_ms
        self.min_publishing_ms = min_publishing_ms
        self.port = free_port()
        self.log_path = workdir / f"node-opcua-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    @staticmethod
    def node(name: str) -> str:
        """The NodeId string of variable ``name`` of the test address space."""
        return f"ns=1;s={name}"

    def start(self) -> None:
        """Start the process and wait until it listens (its output goes to :attr:`log_path`)."""
        ensure_installed()
        options: dict[str, object] = {
            "port": self.port,
            "pki": str(self.workdir / "node-opcua-pki"),
            "period": self.period_ms,
        }
        if self.min_publishing_ms is not None:
            options["minPublishingInterval"] = self.min_publishing_ms
        with self.log_path.open("wb") as out:
            self._proc = subprocess.Popen(
                ["node", "server.js", json.dumps(options)],
                cwd=JS_DIR,
                stdin=subprocess.PIPE,  # the server exits when this closes, even if the test process dies
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = self._proc
        try:
            wait_until(
                lambda: '"ready"' in self.output() or proc.poll() is not None,
                START_TIMEOUT,
                what=f"node-opcua to listen on port {self.port}",
                observe=self.output,
            )
        except BaseException:
            self.stop()
            raise
        if proc.poll() is not None:
            raise RuntimeError(f"node-opcua server exited with {proc.returncode} on start:\n{self.output()}")

    def output(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the server is gone without closing a session or a socket politely."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)

    def stop(self) -> None:
        """Stop the process (politely, then by force). Safe twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stdin is not None:
            proc.stdin.close()

    def __enter__(self) -> NodeOpcUaServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_or_skip(workdir: Path, **kw: int | None) -> NodeOpcUaServer:
    """A started :class:`NodeOpcUaServer`, or a pytest skip saying node/npm is missing."""
    try:
        ensure_installed()
    except NodeOpcUaUnavailable as exc:
        pytest.skip(str(exc))
    server = NodeOpcUaServer(workdir, **kw)
    server.start()
    return server


@pytest.fixture(scope="module")
def node_opcua(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeOpcUaServer]:
    """One node-opcua server for the module's tests (they only read it)."""
    server = start_or_skip(tmp_path_factory.mktemp("node-opcua"))
    try:
        yield server
    finally:
        server.stop()
