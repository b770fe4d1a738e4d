"""A gateway under test on the shared broker: unique names, its config, a pump to poll, a watcher on its topics.

Fixtures (``names``, ``sim``, ``watcher``) are imported by the test modules that use them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators import PumpModbusServer, PumpModel
from tests.support.mqtt import Watcher
from tests.support.names import site_and_gateway

#: The poll interval of :func:`config_data` gateways, in seconds.
POLL = 0.2


def config_data(names: tuple[str, str], state_dir: Path, *devices: dict[str, Any]) -> dict[str, Any]:
    """A gateway config (as parsed YAML) for site and gateway ``names``, polling every :data:`POLL` s."""
    return {
        "site": names[0],
        "gateway": names[1],
        "poll_interval": POLL,
        "state_dir": str(state_dir),
        "devices": list(devices),
    }


def pump(port: int, name: str = "pump-1", **kw: Any) -> dict[str, Any]:
    """A Modbus TCP pump device entry on 127.0.0.1:``port`` with the pump-p100 profile."""
    return {"name": name, "host": "127.0.0.1", "port": port, "profile": "pump-p100", **kw}


@pytest.fixture
def names() -> tuple[str, str]:
    """This test's (site, gateway) slugs."""
    return site_and_gateway()


@pytest.fixture
async def sim() -> AsyncIterator[PumpModbusServer]:
    """A Modbus pump simulator (unit 1, seed 1) on a free port, updating every 50 ms."""
    server = PumpModbusServer("127.0.0.1", 0, {1: PumpModel(seed=1)}, update_interval=0.05)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def watcher(names: tuple[str, str]) -> Iterator[Watcher]:
    """A :class:`Watcher` on everything under the gateway's topic prefix."""
    w = Watcher(f"fw/v1/{names[0]}/{names[1]}/#")
    yield w
    w.close()
