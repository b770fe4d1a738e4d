"""The gateway's own exceptions; lower libraries' errors are translated into these at the boundary.

::

    GatewayError
     ├── ConfigError            a gateway config or profile cannot be used (message names the entry)
     ├── DecodeError            registers arrived but cannot be decoded as configured
     ├── SequenceError          the persisted sequence cannot be read safely
     ├── DiskBufferError        the store-and-forward buffer cannot be opened or written
     ├── BrokerUnavailable      the MQTT broker cannot be reached
     └── DeviceError            a device did not give us data (``device`` names it)
          ├── DeviceNotConnected   no TCP connection to the device
          ├── DeviceTimeout        the device did not answer in time
          │    └── TransactionMismatch  a reply carried another request's transaction id
          └── DeviceException      the device answered with a Modbus exception code
               └── DeviceUnreachable   a Modbus gateway answered for its device: 0x0A / 0x0B

Each device error carries the :class:`fwcore.contract.Quality` its points get,
so the poll loop never has to know which library failed.
"""

from __future__ import annotations

from fwcore.contract import Quality


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError, ValueError):
    """A config or profile is invalid; the message names the device/tag and the problem."""


class DecodeError(GatewayError, ValueError):
    """Registers cannot be turned into a value as configured."""

    quality = Quality.BAD_DECODE


class SequenceError(GatewayError):
    """The persisted batch sequence is unreadable; refusing to restart at 0 and break monotonicity."""


class DiskBufferError(GatewayError):
    """The on-disk buffer cannot be opened or written; the message says which file and what to do."""


class BrokerUnavailable(GatewayError):
    """The MQTT broker refused or dropped us."""


class DeviceError(GatewayError):
    """A device did not deliver data."""

    quality: Quality = Quality.BAD

    def __init__(self, device: str, detail: str) -> None:
        super().__init__(f"device {device!r}: {detail}")
        self.device = device
        self.detail = detail


class DeviceNotConnected(DeviceError):
    """No connection to the device (refused, unreachable, dropped)."""

    quality = Quality.BAD_NOT_CONNECTED


class DeviceTimeout(DeviceError):
    """The device did not answer within its timeout."""

    quality = Quality.BAD_TIMEOUT


class TransactionMismatch(DeviceTimeout):
    """A reply carried another request's transaction id: the connection is out of step and is reset."""


class DeviceException(DeviceError):
    """The device answered with a Modbus exception (e.g. 2 = illegal data address)."""

    quality = Quality.BAD_EXCEPTION

    def __init__(self, device: str, detail: str, code: int) -> None:
        super().__init__(device, detail)
        self.code = code


class DeviceUnreachable(DeviceException):
    """A Modbus gateway (TCP to serial) answered *for* the device behind it: it is not there.

    Other exception codes refuse one read (an address, a function) and mark that read's tags;
    0x0A (gateway path unavailable) and 0x0B (gateway target device failed to respond) say the
    device itself is gone, so the whole poll fails and the device goes offline, as on a timeout.
    """

    def __init__(self, device: str, detail: str, code: int) -> None:
        super().__init__(device, detail, code)
        self.quality = Quality.BAD_TIMEOUT if code == GATEWAY_TARGET_FAILED else Quality.BAD_NOT_CONNECTED


#: Modbus exception codes a gateway answers for an absent device (Modbus application protocol, 7).
GATEWAY_PATH_UNAVAILABLE = 0x0A
GATEWAY_TARGET_FAILED = 0x0B
_GATEWAY_CODES = {
    GATEWAY_PATH_UNAVAILABLE: "gateway path unavailable",
    GATEWAY_TARGET_FAILED: "gateway target device failed to respond",
}


def exception_error(device: str, code: int, what: str) -> DeviceException:
    """The error for Modbus exception ``code`` answered to the read ``what`` (e.g. ``"10 input at 0"``)."""
    meaning = _GATEWAY_CODES.get(code)
    if meaning is None:
        return DeviceException(device, f"exception {code} reading {what}", code)
    return DeviceUnreachable(device, f"exception {code} ({meaning}) reading {what}", code)
