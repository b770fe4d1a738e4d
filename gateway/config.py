"""Gateway configuration: pydantic models, equipment profiles and YAML loading.

A gateway config names the gateway and site, the broker, the poll interval and
its devices. A device either lists its ``tags`` inline or points at an equipment
``profile`` (a register map per equipment model, reused across sites) with
optional per-instance ``overrides``. See ``docs/gateway.md`` and
``gateway/examples/site-gateway.yaml``.

Profiles are versioned (``version:``, required for the built-in ones in
``gateway/profiles/``); a device may pin one with ``profile: pump-p100@1`` and a
mismatch is refused naming the device and both versions (:func:`version_matches`).

Errors name the bad entry: pydantic's ``devices.0.tags.3.address`` is rewritten
as ``gw.yaml: devices[pump-1].tags[flow].address: …`` by :func:`load_config`.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic import Tag as PydTag

from fwcore.contract import check_slug
from fwcore.tls import TlsFiles
from gateway.decode import DataType, WordOrder, register_count
from gateway.errors import ConfigError
from gateway.report import DeadbandMode, ReportPolicy
from gateway.sparkplug_session import SparkplugConfig

#: Where ``profile: <name>`` is looked up when it is not a path.
PROFILE_DIR = Path(__file__).parent / "profiles"

RegisterType = Literal["holding", "input", "coil", "discrete"]
BIT_TABLES = ("coil", "discrete")
MAX_REGISTERS_PER_READ = 125  # Modbus' limit for FC 3/4
MAX_BITS_PER_READ = 2000  # Modbus' limit for FC 1/2


class Tag(BaseModel):
    """One value read from a device: where it lives and how to decode it."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    #: Written ``register:`` in YAML (``register`` itself would shadow a pydantic attribute).
    register_type: RegisterType = Field("holding", alias="register")
    address: int = Field(ge=0, le=65535)
    data_type: DataType = "uint16"
    word_order: WordOrder = "ABCD"
    bit: int | None = Field(None, ge=0, le=15, description="for data_type bit: 0 = least significant")
    scale: float = 1.0
    offset: float = 0.0
    #: Clamp limits: a value outside is clamped and published BAD_OUT_OF_RANGE.
    min: float | None = None
    max: float | None = None
    unit: str = ""
    #: Report-by-exception (:mod:`gateway.report`): 0 sends every reading.
    deadband: float = Field(0.0, ge=0, description="send only when the value moves more than this")
    deadband_mode: DeadbandMode = "absolute"
    max_interval: float | None = Field(None, gt=0, description="send at least every N seconds anyway")

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        return check_slug(v, "tag name")

    @property
    def report(self) -> ReportPolicy:
        """This tag's report-by-exception policy."""
        return ReportPolicy(self.deadband, self.deadband_mode, self.max_interval)

    @property
    def count(self) -> int:
        """Registers (or bits, on a coil/discrete table) this tag occupies."""
        return register_count(self.data_type)

    @model_validator(mode="after")
    def _fits(self) -> Tag:
        where = f"tag {self.name!r}"
        if self.register_type in BIT_TABLES and self.data_type != "bool":
            raise ValueError(f"{where}: a {self.register_type} holds one bit; use data_type bool")
        if (self.data_type == "bit") != (self.bit is not None):
            raise ValueError(f"{where}: 'bit' (0-15) goes with data_type bit, and only with it")
        if self.data_type == "string":
            raise ValueError(
                f"{where}: string tags cannot be published (telemetry v1 carries numbers); "
                "map the text to a code register instead"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"{where}: min {self.min} is above max {self.max}")
        if self.address + self.count > 65536:
            raise ValueError(f"tag {self.name!r}: {self.data_type} at {self.address} runs past address 65535")
        return self


class Profile(BaseModel):
    """An equipment model's register map (``gateway/profiles/*.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    profile: str
    #: Revision of this register map ("1", "1.2.0"); bump it whenever a tag changes.
    version: str | None = None
    description: str = ""
    manufacturer: str = ""
    model: str = ""
    tags: list[Tag] | list[OpcUaTag]

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, v: object) -> object:
        """``version: 1`` in YAML is an int; keep every version as text so pins compare as written."""
        if isinstance(v, bool):
            raise ValueError("version must be a number or text like 1 or 1.2.0, not a boolean")
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, str) and not v.strip():
            raise ValueError("version must not be empty")
        return v

    @model_validator(mode="after")
    def _unique(self) -> Profile:
        _check_unique([t.name for t in self.tags], f"profile {self.profile!r}: duplicate tag")
        return self


def version_matches(pin: str, version: str) -> bool:
    """Does a device's pin accept a profile version? ``1`` accepts ``1``, ``1.0`` and ``1.4.2``; ``1.2``
    accepts ``1.2`` and ``1.2.7`` but not ``1.20``; a full version must match exactly."""
    return version == pin or version.startswith(pin + ".")


def split_profile_ref(ref: str) -> tuple[str, str | None]:
    """``pump-p100@1`` -> ``("pump-p100", "1")``; a ref without ``@`` is not pinned."""
    name, at, pin = ref.rpartition("@")
    if not at or "/" in pin or "\\" in pin:
        return ref, None
    if not pin or not name:
        raise ValueError(f"profile {ref!r}: write a pin as <profile>@<version>, e.g. pump-p100@1")
    return name, pin


def _check_unique(names: list[str], what: str) -> None:
    dupes = sorted(name for name, n in Counter(names).items() if n > 1)
    if dupes:
        raise ValueError(f"{what} name(s) {', '.join(repr(d) for d in dupes)}")


@lru_cache(maxsize=64)
def _load_profile_file(path: Path) -> Profile:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read profile {str(path)!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"profile {str(path)!r} is not valid YAML: {exc}") from None
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"profile {str(path)!r} is invalid: {exc}") from None
    if profile.version is None and path.parent == PROFILE_DIR.resolve():
        raise ValueError(f"built-in profile {str(path)!r} has no 'version:'; add e.g. 'version: 1'")
    return profile


def resolve_profile(ref: str, base_dir: Path | None = None) -> Profile:
    """Load a profile by name (``pump-p100`` -> ``gateway/profiles/pump-p100.yaml``) or by path."""
    if "/" not in ref and "\\" not in ref and not ref.endswith((".yaml", ".yml")):
        path = PROFILE_DIR / f"{ref}.yaml"
    else:
        path = Path(ref)
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
        raise ValueError(f"profile {ref!r} not found (looked for {str(path)!r}; built-in profiles: {known})")
    return _load_profile_file(path.resolve())


class DeviceBase(BaseModel):
    """What every device has, whatever its protocol. Protocol models extend this."""

    model_config = ConfigDict(extra="forbid")
    #: The tag model of this device kind (a profile must use the same kind).
    _tag_class: ClassVar[type[BaseModel]] = Tag

    name: str
    timeout: float = Field(1.0, gt=0, description="seconds to wait for one answer (and to connect)")
    poll_interval: float | None = Field(None, gt=0, description="overrides the gateway's poll_interval")
    #: A profile name or path, optionally pinned to a version: ``pump-p100@1``.
    profile: str | None = None
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    tags: list[Tag] = Field(default_factory=list)
    #: The version of the profile the tags came from (None: inline tags or an unversioned profile file).
    _profile_version: str | None = PrivateAttr(None)

    @property
    def profile_name(self) -> str | None:
        """The profile's own name (``pump-p100``), without a pin; None for inline tags."""
        return split_profile_ref(self.profile)[0] if self.profile else None

    @property
    def profile_version(self) -> str | None:
        """The version of the profile actually loaded (reported in status and by ``gateway check``)."""
        return self._profile_version

    @property
    def profile_label(self) -> str | None:
        """``pump-p100@1`` (or the bare name of an unversioned profile); None for inline tags."""
        if not self.profile:
            return None
        return f"{self.profile_name}@{self._profile_version}" if self._profile_version else self.profile_name

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        return check_slug(v, "device name")

    @model_validator(mode="after")
    def _resolve_tags(self, info: ValidationInfo) -> DeviceBase:
        """Expand the profile and apply overrides, so the rest of the gateway sees plain tags."""
        where = f"device {self.name!r}"
        if self.profile and self.tags:
            raise ValueError(f"{where}: give either 'profile' or 'tags', not both")
        if self.profile:
            base_dir = (info.context or {}).get("base_dir")
            try:
                ref, pin = split_profile_ref(self.profile)
                profile = resolve_profile(ref, base_dir)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            if pin is not None and (profile.version is None or not version_matches(pin, profile.version)):
                raise ValueError(
                    f"{where}: pins profile {ref!r} at version {pin} but the installed profile is "
                    f"version {profile.version or '(none)'}; check the register map, then pin "
                    f"@{profile.version or '<version>'} or install the pinned version"
                )
            self._profile_version = profile.version
            if not all(isinstance(t, self._tag_class) for t in profile.tags):
                raise ValueError(f"{where}: profile {self.profile!r} is for another protocol")
            by_name = {t.name: t for t in profile.tags}
            unknown = sorted(set(self.overrides) - set(by_name))
            if unknown:
                raise ValueError(
                    f"{where}: overrides name tag(s) {', '.join(map(repr, unknown))} "
                    f"that profile {self.profile!r} does not have"
                )
            tags = []
            for tag in profile.tags:
                if tag.name in self.overrides:
                    try:
                        tag = type(tag).model_validate({**tag.model_dump(by_alias=True), **self.overrides[tag.name]})
                    except ValidationError as exc:
                        raise ValueError(f"{where}: override of tag {tag.name!r} is invalid: {exc}") from None
                tags.append(tag)
            # OpcUaDevice narrows ``tags`` to OpcUaTag (its override below); the profile's tags were
            # checked to be of this device's ``_tag_class``, and overrides keep each tag's class.
            self.tags = tags  # type: ignore[assignment]
        elif self.overrides:
            raise ValueError(f"{where}: 'overrides' only applies to a device with a 'profile'")
        if not self.tags:
            raise ValueError(f"{where}: has no tags; give 'tags' or a 'profile'")
        _check_unique([t.name for t in self.tags], f"{where}: duplicate tag")
        return self


class ModbusTcpDevice(DeviceBase):
    """A Modbus TCP device (or a TCP-to-serial gateway with ``unit_id`` behind it)."""

    protocol: Literal["modbus_tcp"] = "modbus_tcp"
    host: str
    port: int = Field(502, ge=1, le=65535)
    unit_id: int = Field(1, ge=0, le=255)
    max_registers: int = Field(MAX_REGISTERS_PER_READ, ge=1, le=MAX_REGISTERS_PER_READ)
    max_gap: int = Field(16, ge=0, description="unused registers a merged read may span")
    framer: Literal["socket", "rtu"] = Field(
        "socket", description="socket: Modbus TCP; rtu: RTU frames over TCP (serial device servers)"
    )
    request_interval: float = Field(0.0, ge=0, description="pause between requests (pacing for slow devices)")


class ModbusRtuDevice(DeviceBase):
    """A Modbus RTU device on a serial port (RS-485/RS-232). Devices naming the same ``serial_port``
    share one bus: one connection, one request at a time (see :mod:`gateway.serialbus`)."""

    protocol: Literal["modbus_rtu"]
    serial_port: str = Field(description="serial device, e.g. /dev/ttyUSB0")
    baudrate: int = Field(19200, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit_id: int = Field(1, ge=1, le=247)
    max_registers: int = Field(MAX_REGISTERS_PER_READ, ge=1, le=MAX_REGISTERS_PER_READ)
    max_gap: int = Field(16, ge=0, description="unused registers a merged read may span")
    request_interval: float = Field(0.0, ge=0, description="pause between requests to this device (pacing)")


class OpcUaTag(BaseModel):
    """One OPC-UA variable: a node id (``ns=2;s=pump-1.flow``) or a browse path, and how to scale it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    node: str | None = Field(None, description="absolute NodeId, e.g. ns=2;s=pump-1.flow")
    path: str | None = Field(
        None, description="browse path of QualifiedNames, e.g. 2:flow (under the device's root, else Objects)"
    )
    scale: float = 1.0
    offset: float = 0.0
    min: float | None = None
    max: float | None = None
    unit: str = ""
    #: Server-side data-change deadband (absolute, in the variable's raw units); None: the device's.
    data_change_deadband: float | None = Field(None, ge=0)
    #: Report-by-exception on the gateway, as for Modbus tags (:mod:`gateway.report`).
    deadband: float = Field(0.0, ge=0)
    deadband_mode: DeadbandMode = "absolute"
    max_interval: float | None = Field(None, gt=0)

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        return check_slug(v, "tag name")

    @property
    def report(self) -> ReportPolicy:
        """This tag's report-by-exception policy."""
        return ReportPolicy(self.deadband, self.deadband_mode, self.max_interval)

    @model_validator(mode="after")
    def _one_address(self) -> OpcUaTag:
        if (self.node is None) == (self.path is None):
            raise ValueError(f"tag {self.name!r}: give exactly one of 'node' (a NodeId) or 'path' (a browse path)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"tag {self.name!r}: min {self.min} is above max {self.max}")
        return self


class OpcUaDevice(DeviceBase):
    """An OPC-UA server (or one object of it): subscribed to, or polled when it cannot be."""

    _tag_class: ClassVar[type[BaseModel]] = OpcUaTag

    protocol: Literal["opcua"]
    endpoint: str = Field(description="opc.tcp://host:port[/path]")
    root: str | None = Field(None, description="browse path of the device's object under Objects, e.g. 2:pump-1")
    tags: list[OpcUaTag] = Field(default_factory=list)  # type: ignore[assignment]  # narrows DeviceBase.tags
    mode: Literal["subscribe", "poll"] = "subscribe"
    publishing_interval: float = Field(0.5, gt=0, description="seconds between the server's notifications")
    keepalive_count: int = Field(10, ge=1, description="publishing intervals without data before a keep-alive")
    data_change_deadband: float = Field(0.0, ge=0, description="absolute server-side deadband for every tag")
    #: Security: "None", or Basic256Sha256 with Sign / SignAndEncrypt (needs the client certificate + key).
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    certificate: Path | None = Field(None, description="the gateway's application certificate (DER or PEM)")
    private_key: Path | None = Field(None, description="its private key (PEM)")
    server_certificate: Path | None = Field(None, description="pin the server's certificate; else taken from it")
    #: Identity: anonymous, username/password, or a user certificate + key.
    username: str | None = None
    password: str | None = None
    user_certificate: Path | None = None
    user_private_key: Path | None = None

    @model_validator(mode="after")
    def _security(self, info: ValidationInfo) -> OpcUaDevice:
        where = f"device {self.name!r}"
        if self.security_policy != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"{where}: security_policy {self.security_policy} needs 'certificate' and 'private_key'")
        if (self.user_certificate is None) != (self.user_private_key is None):
            raise ValueError(f"{where}: give 'user_certificate' and 'user_private_key' together")
        if self.user_certificate is not None and self.username is not None:
            raise ValueError(f"{where}: give one identity: username/password or a user certificate")
        base_dir = (info.context or {}).get("base_dir")
        if base_dir is not None:  # relative paths are relative to the config file
            for attr in ("certificate", "private_key", "server_certificate", "user_certificate", "user_private_key"):
                value = getattr(self, attr)
                if value is not None and not value.is_absolute():
                    setattr(self, attr, Path(base_dir) / value)
        return self


def _device_kind(value: Any) -> str:
    """The union member of a device entry: ``opcua``, ``modbus_rtu``, else Modbus TCP.

    Anything else goes to Modbus TCP, whose ``protocol`` field then names the bad value.
    """
    kind = value.get("protocol") if isinstance(value, dict) else getattr(value, "protocol", None)
    return kind if kind in ("opcua", "modbus_rtu") else "modbus_tcp"


#: Every device kind the gateway knows, chosen by ``protocol`` (default ``modbus_tcp``).
Device = Annotated[
    Annotated[ModbusTcpDevice, PydTag("modbus_tcp")]
    | Annotated[ModbusRtuDevice, PydTag("modbus_rtu")]
    | Annotated[OpcUaDevice, PydTag("opcua")],
    Discriminator(_device_kind),
]


class BufferConfig(BaseModel):
    """Store-and-forward settings (see :mod:`gateway.buffer` for the fsync and drop policies)."""

    model_config = ConfigDict(extra="forbid")

    max_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="payload bytes kept; oldest dropped beyond")
    max_age: float = Field(7 * 24 * 3600.0, gt=0, description="seconds a batch is kept unacknowledged")
    sync: Literal["full", "normal"] = Field("full", description="full: fsync every commit (power-loss safe)")
    replay_rate: float = Field(20.0, gt=0, description="backlog batches replayed per second, after live data")
    ack_timeout: float = Field(300.0, gt=0, description="seconds without ingest's ack before a batch is resent")
    replay_grace: float = Field(2.0, ge=0, description="seconds after a reconnect to wait for late acks")


class MqttTlsConfig(BaseModel):
    """``mqtt_tls:``: how the gateway checks the broker over ``mqtts://`` and proves who it is.

    Relative paths are relative to the config file. Unset, the settings' ``FIELDWATCH_MQTT_CA_FILE``
    etc. apply, and without those the system's CAs.
    """

    model_config = ConfigDict(extra="forbid")

    ca_file: Path | None = Field(None, description="the CA that signed the broker's certificate (PEM)")
    cert_file: Path | None = Field(None, description="the gateway's client certificate, if the broker requires one")
    key_file: Path | None = Field(None, description="the key of cert_file (PEM)")

    @model_validator(mode="after")
    def _paths(self, info: ValidationInfo) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give cert_file and key_file together (a client certificate and its key)")
        base_dir = (info.context or {}).get("base_dir")
        if base_dir is not None:
            for attr in ("ca_file", "cert_file", "key_file"):
                value = getattr(self, attr)
                if value is not None and not value.is_absolute():
                    setattr(self, attr, Path(base_dir) / value)
        return self

    def files(self) -> TlsFiles:
        return TlsFiles(self.ca_file, self.cert_file, self.key_file)


class GatewayConfig(BaseModel):
    """One gateway process: who it is, where it publishes, what it polls."""

    model_config = ConfigDict(extra="forbid")

    gateway: str
    site: str
    #: Revision id of this config (any text or number); required for a config published remotely.
    config_version: str | None = None
    #: After a remote config is applied, added/changed devices must answer within this many seconds or
    #: the gateway rolls back to the previous config; null: do not wait (an absent device is kept).
    remote_apply_timeout: float | None = Field(30.0, gt=0)
    mqtt_url: str | None = None
    mqtt_protocol: Literal["5", "3.1.1"] | None = None
    #: Seconds between MQTT keep-alives; the broker declares the gateway dead (publishes its Will,
    #: ``offline``) after 1.5 times this without hearing from it.
    mqtt_keepalive: int = Field(30, ge=2, le=65535)
    #: The broker's TLS (CA, client certificate) for an ``mqtts://`` URL; see :class:`MqttTlsConfig`.
    mqtt_tls: MqttTlsConfig | None = None
    poll_interval: float = Field(1.0, gt=0)
    publish_interval: float | None = Field(None, gt=0, description="defaults to poll_interval")
    state_dir: Path | None = None
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    health_interval: float = Field(10.0, gt=0, description="seconds between messages on the health topic")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="serve Prometheus metrics on this port")
    metrics_host: str = Field("127.0.0.1", description="address the metrics port listens on")
    #: Publish Sparkplug B (spBv1.0/...) instead of fieldwatch telemetry; see gateway/sparkplug.py.
    sparkplug: SparkplugConfig | None = None
    devices: list[Device] = Field(min_length=1)

    @field_validator("gateway")
    @classmethod
    def _gw(cls, v: str) -> str:
        return check_slug(v, "gateway")

    @field_validator("config_version", mode="before")
    @classmethod
    def _version_text(cls, v: object) -> object:
        if isinstance(v, bool):
            raise ValueError("config_version must be a number or text, not a boolean")
        return str(v) if isinstance(v, (int, float)) else v

    @field_validator("site")
    @classmethod
    def _site(cls, v: str) -> str:
        return check_slug(v, "site")

    @model_validator(mode="after")
    def _unique_devices(self) -> GatewayConfig:
        _check_unique([d.name for d in self.devices], "duplicate device")
        lines: dict[str, tuple[str, tuple[object, ...]]] = {}
        for d in self.devices:
            if isinstance(d, ModbusRtuDevice):
                line = (d.baudrate, d.parity, d.stopbits, d.bytesize)
                first = lines.setdefault(d.serial_port, (d.name, line))
                if first[1] != line:
                    raise ValueError(
                        f"devices {first[0]!r} and {d.name!r} share serial port {d.serial_port!r} "
                        "but not its baudrate/parity/stopbits/bytesize; one bus has one setting"
                    )
        return self

    @property
    def effective_publish_interval(self) -> float:
        return self.publish_interval or self.poll_interval


def mqtt_client_id(site: str, gateway: str, username: str | None) -> str:
    """The gateway's MQTT client id: its broker login when it has one, else ``fw-gw-{site}-{gateway}``.

    The gateway listener of a provisioned broker replaces every client id by the login
    (``use_username_as_clientid``: no login can take over another gateway's session), so connecting
    with the login keeps one fixed id, and one persistent session, behind any listener.
    """
    return username or f"fw-gw-{site}-{gateway}"


_DEVICE_KINDS = ("modbus_tcp", "modbus_rtu", "opcua")


def _named_loc(loc: tuple[int | str, ...], data: Any) -> str:
    """``('devices', 0, 'tags', 2, 'address')`` -> ``devices[pump-1].tags[flow].address``."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            node = node[part]
            label = node.get("name") if isinstance(node, dict) else None
            out += f"[{label if label else part}]"
        elif isinstance(part, str) and part in _DEVICE_KINDS and isinstance(node, dict) and part not in node:
            continue  # the union member pydantic tried: not a level of the YAML
        else:
            node = node.get(part) if isinstance(node, dict) else None
            out += f".{part}" if out else str(part)
    return out


def parse_config(data: Any, *, base_dir: Path | None = None, source: str = "config") -> GatewayConfig:
    """Validate an already-parsed mapping; raise :class:`ConfigError` naming each bad entry."""
    try:
        return GatewayConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = _named_loc(err["loc"], data)
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{loc}: {msg}" if loc else msg)
        # One line per problem, each starting with the file so it can be pasted into a ticket.
        raise ConfigError("\n".join(f"{source}: {line}" for line in lines)) from None


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a gateway YAML file; relative profile paths are relative to it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read gateway config {str(path)!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"gateway config {str(path)!r} is not valid YAML: {exc}") from None
    return parse_config(data, base_dir=path.parent, source=str(path))
