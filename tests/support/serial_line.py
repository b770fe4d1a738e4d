"""A real serial line for Modbus RTU tests: a socat pseudo-terminal pair, and a pump served on one end.

Fixtures, imported by the test modules that use them (``pty_pair``, ``serial_pump``).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from simulators import PumpModbusServer, PumpModel
from tests.support.waits import wait_until


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals made by socat: what one end writes, the other reads."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is needed for the serial-line tests: apt-get install socat")
    a, b = tmp_path / "a", tmp_path / "b"
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def linked() -> bool:
        assert proc.poll() is None, f"socat exited with {proc.returncode} before creating the pty pair"
        return a.exists() and b.exists()

    try:
        wait_until(linked, 5, what="socat to create the pty pair", interval=0.02)
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.fixture
async def serial_pump(pty_pair: tuple[str, str]) -> AsyncIterator[PumpModbusServer]:
    """A pump at unit 1 served as Modbus RTU on the pty's first end; its registers stay put (no updates)."""
    server = PumpModbusServer(pumps={1: PumpModel(seed=3)}, update_interval=3600, serial_port=pty_pair[0])
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
