"""A device poll task that crashes on an unexpected exception is restarted, and the crash is logged once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway import Gateway, ModbusTcpDriver, TagValue, parse_config
from simulators import PumpModbusServer, PumpModel
from tests.support.waits import wait_until_async

CRASHES = 3


async def test_crashed_poll_task_is_restarted_and_logged_once(
    tmp_path: Path, mqtt_url: str, uid: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A driver bug raising RuntimeError three times restarts the task; the device then reports again, one ERROR."""
    real_poll = ModbusTcpDriver.poll
    calls = 0

    async def buggy_poll(self: ModbusTcpDriver) -> list[TagValue]:
        nonlocal calls
        calls += 1
        if calls <= CRASHES:
            raise RuntimeError("driver bug")  # not a DeviceError: the poll loop does not handle it
        return await real_poll(self)

    monkeypatch.setattr(ModbusTcpDriver, "poll", buggy_poll)
    caplog.set_level(logging.DEBUG, logger="gateway.agent")
    async with PumpModbusServer(pumps={1: PumpModel(seed=1)}, update_interval=0.1) as sim:
        config = parse_config(
            {
                "gateway": f"gw-{uid}",
                "site": f"s-{uid[:8]}",
                "poll_interval": 0.1,
                "state_dir": str(tmp_path),
                "devices": [{"name": "pump-1", "host": "127.0.0.1", "port": sim.port, "profile": "pump-p100"}],
            }
        )
        async with Gateway(config, mqtt_url=mqtt_url) as gw:
            await wait_until_async(
                lambda: gw.stats.devices["pump-1"].online and gw.stats.points_published > 0,
                10,
                what="the device to come back and publish",
                observe=lambda: gw.stats,
            )
            assert gw.stats.task_restarts == CRASHES
    crashes = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert [r.levelno for r in crashes] == [logging.ERROR] + [logging.DEBUG] * (CRASHES - 1)
    assert crashes[0].exc_info is not None and "driver bug" in str(crashes[0].exc_info[1])
