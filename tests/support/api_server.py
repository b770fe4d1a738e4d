"""The API as users run it: uvicorn in its own process, on a free port, on a given database.

For tests and benches that measure the server itself (its memory, its latency) apart from the
client that loads it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from tests.support.ports import free_port
from tests.support.waits import wait_until

_SERVE = "from fieldwatch.api.server import serve; serve()"
#: The same, first confined to CPUs (before any thread exists, so every thread it starts inherits them).
_SERVE_ON = "import os; os.sched_setaffinity(0, {cpus!r}); " + _SERVE


@dataclass(frozen=True)
class ApiProcess:
    base: str  # http://127.0.0.1:PORT
    pid: int


@contextmanager
def api_process(
    db_url: str, *, host: str = "127.0.0.1", cpus: set[int] | None = None, **settings: object
) -> Iterator[ApiProcess]:
    """Run the API in a subprocess with ``settings`` (``FIELDWATCH_`` + upper-case name) until the block ends.

    ``cpus``: run it on these CPUs only (benches that keep their load generators off the server's cores).
    """
    port = free_port(host)
    env = {**os.environ, "FIELDWATCH_DATABASE_URL": db_url, "FIELDWATCH_API_HOST": host}
    env["FIELDWATCH_API_PORT"] = str(port)
    env.setdefault("FIELDWATCH_LOG_LEVEL", "WARNING")
    env.update({f"FIELDWATCH_{k.upper()}": str(v) for k, v in settings.items()})
    # stderr to a file: a pipe nobody reads could fill and block the server
    with tempfile.TemporaryFile() as errors:
        code = _SERVE if cpus is None else _SERVE_ON.format(cpus=sorted(cpus))
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=errors)
        base = f"http://{host}:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                errors.seek(0)
                raise RuntimeError(f"the API exited: {errors.read().decode(errors='replace')[-2000:]}")
            try:
                return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_until(up, timeout=30, what=f"the API on {base} to be ready")
            yield ApiProcess(base, proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
