"""``fieldwatch gateway check``: read every tag of every device once, as the agent would, and judge it.

What a field engineer runs on site before leaving: the config is validated (the
caller loads it with :func:`gateway.config.load_config`, whose errors name file,
device and tag), then every device is connected to **concurrently**, each within
its own time limit, and polled once through the same driver, read planner and
block decoder the agent uses (:func:`gateway.drivers.make_driver`). An OPC-UA
device configured to subscribe is read with one poll instead (a subscription's
first notification may take a publishing interval; the values are the same).

Values are shown as received: an Uncertain value with its value and the server's status
name (it is not good, so the exit code is 2, but it is not hidden as bad either), an
OPC-UA ``BadOutOfRange`` with the server's value and status, never as a clamped 0.

Split as elsewhere in the gateway:

- pure: :class:`TagResult`, :class:`DeviceResult`, :class:`CheckReport`,
  :func:`device_result` (driver output -> result), :func:`quality_text`,
  :attr:`CheckReport.exit_code`, :func:`report_json`, :func:`render`;
- I/O: :func:`probe_device` and :func:`run_check`.

Exit codes: 0 every device online and every tag good; 1 the config is invalid
(decided by the CLI before any I/O); 2 some device offline or some tag not good.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from fwcore.contract import Quality
from gateway.blockdecode import TagValue
from gateway.config import Device, GatewayConfig, ModbusRtuDevice, ModbusTcpDevice, OpcUaDevice
from gateway.drivers import import_drivers, make_driver
from gateway.errors import DeviceError

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_BAD = 2

#: Why a point is bad, in the words a field engineer reads (per :class:`Quality`).
_REASONS = {
    Quality.BAD: "bad",
    Quality.BAD_TIMEOUT: "timeout",
    Quality.BAD_EXCEPTION: "exception response",
    Quality.BAD_DECODE: "cannot decode",
    Quality.BAD_NOT_CONNECTED: "not connected",
    Quality.BAD_OUT_OF_RANGE: "out of range (clamped)",
}


#: Qualities whose value means something and is shown (the device's, or ours clamped to min/max).
_SHOWN = {Quality.GOOD, Quality.UNCERTAIN, Quality.BAD_OUT_OF_RANGE}


def quality_text(quality: int, status: str = "") -> str:
    """``good``, ``uncertain`` or ``bad: <reason>`` for a contract quality code.

    ``status`` is the device's own word for it (an OPC-UA StatusCode name): when it is not
    Good it is the reason, as received (``uncertain: UncertainLastUsableValue``,
    ``bad: BadNodeIdUnknown``); a Good status with a bad quality was judged by us (clamped).
    """
    if quality == Quality.GOOD:
        return "good"
    own = status if status and not status.startswith("Good") else ""
    if quality == Quality.UNCERTAIN:
        return f"uncertain: {own}" if own else "uncertain"
    if own:
        return f"bad: {own}"
    try:
        return f"bad: {_REASONS[Quality(quality)]}"
    except (ValueError, KeyError):
        return f"bad: quality {quality}"


@dataclass(frozen=True, slots=True)
class TagResult:
    """One tag's single reading. ``value`` is None when the device gave nothing for it."""

    tag: str
    value: float | None
    unit: str
    quality: int
    reason: str  # "good", "uncertain…", or "bad: …" naming the failure
    status: str = ""  # the device's own status for the value, as received (OPC-UA StatusCode name)

    @property
    def good(self) -> bool:
        return self.quality == Quality.GOOD


@dataclass(frozen=True, slots=True)
class DeviceResult:
    """One device: reachable or not, how fast, and each tag's reading."""

    device: str
    protocol: str
    address: str
    profile: str | None
    online: bool
    latency_s: float | None
    error: str
    tags: list[TagResult] = field(default_factory=list)

    @property
    def good(self) -> bool:
        return self.online and all(t.good for t in self.tags)


@dataclass(frozen=True, slots=True)
class CheckReport:
    """Everything ``gateway check`` found for one config file."""

    source: str
    gateway: str
    site: str
    config_version: str | None
    devices: list[DeviceResult]

    @property
    def exit_code(self) -> int:
        return EXIT_OK if all(d.good for d in self.devices) else EXIT_BAD


def device_address(device: Device) -> str:
    """Where a device is reached, as written on a commissioning sheet."""
    if isinstance(device, OpcUaDevice):
        return device.endpoint
    if isinstance(device, ModbusRtuDevice):
        return f"{device.serial_port} unit {device.unit_id} ({device.baudrate} {device.parity})"
    assert isinstance(device, ModbusTcpDevice)
    framing = " rtu-over-tcp" if device.framer == "rtu" else ""
    return f"{device.host}:{device.port} unit {device.unit_id}{framing}"


def device_result(
    device: Device,
    values: Sequence[TagValue] | None,
    error: str,
    latency_s: float | None,
    quality: int = Quality.BAD_NOT_CONNECTED,
    statuses: Mapping[str, str] | None = None,
) -> DeviceResult:
    """Combine a device's config with what one poll returned (``values``, and the device's own
    ``statuses`` per tag name, if it gives any) or why it failed (``error``, with the ``quality``
    the agent would publish for its tags).

    Every configured tag appears exactly once, in config order: a tag the driver did not return
    (it never should) or a device that failed shows as bad with the reason, never disappears.
    """
    got = {v.tag.name: v for v in values or ()}
    statuses = statuses or {}
    tags = []
    for tag in device.tags:
        v = got.get(tag.name)
        if values is None:
            tags.append(TagResult(tag.name, None, tag.unit, int(quality), quality_text(quality)))
        elif v is None:
            tags.append(TagResult(tag.name, None, tag.unit, int(Quality.BAD), "bad: no value returned"))
        else:
            value = v.value if v.quality in _SHOWN else None
            status = statuses.get(tag.name, "")
            reason = quality_text(v.quality, status)
            tags.append(TagResult(tag.name, value, tag.unit, int(v.quality), reason, status))
    return DeviceResult(
        device=device.name,
        protocol=device.protocol,
        address=device_address(device),
        profile=device.profile_label,
        online=values is not None,
        latency_s=latency_s,
        error=error,
        tags=tags,
    )


def report_json(report: CheckReport) -> dict[str, Any]:
    """The ``--json`` document: the report as plain data plus the exit code."""
    return {
        "source": report.source,
        "gateway": report.gateway,
        "site": report.site,
        "config_version": report.config_version,
        "ok": report.exit_code == EXIT_OK,
        "exit_code": report.exit_code,
        "devices": [{**asdict(d), "good": d.good} for d in report.devices],
    }


def _value_text(t: TagResult) -> str:
    if t.value is None:
        return "-"
    text = f"{t.value:.6g}"
    return f"{text} {t.unit}" if t.unit else text


def render(report: CheckReport, console: Console) -> None:
    """Print the table of live values and one summary line per device."""
    table = Table(title=f"{report.source}: gateway {report.gateway} at site {report.site}")
    for col in ("device", "tag", "value", "quality"):
        table.add_column(col)
    for d in report.devices:
        for t in d.tags:
            style = "green" if t.good else "yellow" if t.quality == Quality.UNCERTAIN else "red"
            table.add_row(d.device, t.tag, _value_text(t), f"[{style}]{t.reason}[/{style}]")
    console.print(table)
    for d in report.devices:
        profile = f" profile {d.profile}" if d.profile else ""
        if d.online:
            bad = sum(not t.good for t in d.tags)
            latency = f"{d.latency_s * 1000:.0f} ms" if d.latency_s is not None else "-"
            tail = f"{len(d.tags)} tags, {bad} not good" if bad else f"{len(d.tags)} tags good"
            console.print(f"[green]online [/green] {d.device} ({d.protocol} {d.address}{profile}): {latency}, {tail}")
        else:
            console.print(f"[red]offline[/red] {d.device} ({d.protocol} {d.address}{profile}): {d.error}")
    verdict = (
        "[green]all devices online, all tags good[/green]"
        if report.exit_code == EXIT_OK
        else ("[red]some devices or tags are not good[/red]")
    )
    console.print(verdict)


async def probe_device(device: Device, timeout: float, buses: dict[str, Any] | None = None) -> DeviceResult:
    """Connect to ``device`` and poll it once within ``timeout`` seconds; never raises for device trouble."""
    if isinstance(device, OpcUaDevice) and device.mode == "subscribe":
        device = device.model_copy(update={"mode": "poll"})
    driver = make_driver(device, buses if buses is not None else {})
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            await driver.connect()
            values = await driver.poll()
        latency = time.perf_counter() - started
        statuses: Mapping[str, str] = getattr(driver, "statuses", {})  # OPC-UA: the StatusCode names
    except TimeoutError:
        return device_result(device, None, f"timeout: no answer within {timeout:g} s", None, Quality.BAD_TIMEOUT)
    except DeviceError as exc:
        return device_result(device, None, f"{type(exc).__name__}: {exc.detail}", None, exc.quality)
    except Exception as exc:  # a bug in a driver must not hide the other devices' results
        return device_result(device, None, f"unexpected error: {exc!r}", None, Quality.BAD)
    finally:
        try:
            async with asyncio.timeout(2.0):
                await driver.close()
        except Exception:  # closing a half-open connection may fail; the result stands
            pass
    return device_result(device, values, "", latency, statuses=statuses)


async def run_check(config: GatewayConfig, *, timeout: float, source: str) -> CheckReport:
    """Probe every device of ``config`` at once; one slow device costs at most ``timeout``."""
    buses: dict[str, Any] = {}  # RTU devices on one serial port share its bus, as in the agent
    await import_drivers(config.devices)  # before the clocks start: an import on the loop would count as latency
    results = await asyncio.gather(*(probe_device(d, timeout, buses) for d in config.devices))
    return CheckReport(source, config.gateway, config.site, config.config_version, list(results))
