"""The fieldwatch edge gateway: poll Modbus and OPC-UA devices, decode, batch and publish over MQTT.

Needs only the ``edge`` extra (pymodbus, paho-mqtt); never imports database,
web or data-science packages. Typical use::

    from gateway import Gateway, load_config

    gw = Gateway(load_config("gateway.yaml"))
    await gw.start()
    ...
    await gw.stop()
"""

from gateway.agent import Gateway, GatewayStats
from gateway.buffer import DiskBuffer
from gateway.config import (
    BufferConfig,
    GatewayConfig,
    ModbusTcpDevice,
    OpcUaDevice,
    OpcUaTag,
    Profile,
    Tag,
    load_config,
    parse_config,
    resolve_profile,
)
from gateway.decode import decode, encode, register_count
from gateway.errors import (
    BrokerUnavailable,
    ConfigError,
    DecodeError,
    DeviceError,
    DeviceException,
    DeviceNotConnected,
    DeviceTimeout,
    DeviceUnreachable,
    DiskBufferError,
    GatewayError,
    SequenceError,
    TransactionMismatch,
)
from gateway.modbus import ModbusTcpDriver, TagValue
from gateway.planner import ReadRequest, plan_reads
from gateway.sequence import SequenceStore

__all__ = [
    "BrokerUnavailable",
    "BufferConfig",
    "ConfigError",
    "DecodeError",
    "DeviceError",
    "DeviceException",
    "DeviceNotConnected",
    "DeviceTimeout",
    "DeviceUnreachable",
    "DiskBuffer",
    "DiskBufferError",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "GatewayStats",
    "ModbusTcpDevice",
    "ModbusTcpDriver",
    "OpcUaDevice",
    "OpcUaTag",
    "Profile",
    "ReadRequest",
    "SequenceError",
    "SequenceStore",
    "Tag",
    "TagValue",
    "TransactionMismatch",
    "decode",
    "encode",
    "load_config",
    "parse_config",
    "plan_reads",
    "register_count",
    "resolve_profile",
]
