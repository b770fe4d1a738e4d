"""Typed settings, read from the environment (``FIELDWATCH_*``), a ``.env`` file and an
optional YAML file named by ``FIELDWATCH_CONFIG``.

Bad values fail at start with :class:`SettingsError`, whose message names the
key and the accepted form, instead of surfacing later as a connection error.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from fwcore.egress import ALLOW_LIST_FORM, EgressPolicy
from fwcore.redact import redact_value
from fwcore.tls import TlsFiles

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"

_FORMS = {
    "database_url": "postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME",
    "mqtt_url": "mqtt://[USER[:PASSWORD]@]HOST[:PORT] (or mqtts:// for TLS)",
    "api_port": "an integer 1-65535",
    "deployment_name": "1-64 letters, digits, '-' or '_' (e.g. plant-north)",
    "mqtt_protocol": '"5" or "3.1.1"',
    "log_level": "one of DEBUG, INFO, WARNING, ERROR",
    "ingest_batch_max_points": "an integer >= 1",
    "ingest_batch_max_wait_ms": "an integer >= 0",
    "webhook_allowed_targets": ALLOW_LIST_FORM,
    "broker_file_mode": "an octal mode with no permission for others, quoted, e.g. '0640'",
    "broker_file_owner": "a user name or number",
    "broker_file_group": "a group name or number",
    "broker_user": "a user name or number",
    "mqtt_cert_file": "a PEM file, given together with FIELDWATCH_MQTT_KEY_FILE",
    "mqtt_key_file": "a PEM file, given together with FIELDWATCH_MQTT_CERT_FILE",
    "api_tls_cert_file": "a PEM file, given together with FIELDWATCH_API_TLS_KEY_FILE",
    "api_tls_key_file": "a PEM file, given together with FIELDWATCH_API_TLS_CERT_FILE",
    "api_docs": "token, public or off",
    "api_trusted_proxies": "comma-separated IP addresses or networks (10.0.0.5,172.18.0.0/16), or *",
}

#: Each client-certificate/key setting and its partner (they are given together or not at all).
_PAIRS = {"mqtt_key_file": "mqtt_cert_file", "api_tls_key_file": "api_tls_cert_file"}


_DEPLOYMENT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _slug(name: str) -> str:
    """``name`` reduced to what an MQTT client id and share group safely hold."""
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")[:64] or "fieldwatch"


def default_deployment_name() -> str:
    """This host's name, as a deployment name (``deployment_name``'s default)."""
    return _slug(socket.gethostname().split(".")[0])


class SettingsError(ValueError):
    """A setting has a value we cannot use. The message says which and what is accepted."""


class _YamlSource(PydanticBaseSettingsSource):
    """Settings from the YAML file named by ``FIELDWATCH_CONFIG`` (lowest priority after defaults)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("FIELDWATCH_CONFIG")
        if not path:
            return {}
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise SettingsError(f"FIELDWATCH_CONFIG={path!r}: cannot read the file ({exc.strerror})") from None
        if not isinstance(data, dict):
            raise SettingsError(f"FIELDWATCH_CONFIG={path!r}: the file must hold a mapping of setting: value")
        return {str(k).lower(): v for k, v in data.items()}


class Settings(BaseSettings):
    """Every knob of a fieldwatch process. Environment names are ``FIELDWATCH_`` + upper-case field."""

    model_config = SettingsConfigDict(env_prefix="FIELDWATCH_", env_file=".env", extra="ignore")

    database_url: str = Field(DEFAULT_DATABASE_URL, description="PostgreSQL/TimescaleDB connection URL")
    mqtt_url: str = Field(DEFAULT_MQTT_URL, description="MQTT broker URL")
    #: MQTT protocol: "5" (shared subscriptions, session expiry) or "3.1.1" for older brokers.
    mqtt_protocol: str = "5"
    #: MQTT over TLS (``mqtts://`` URLs): the CA that signed the broker's certificate (unset: the
    #: system's CAs), and a client certificate and key for brokers that require one (fwcore/tls.py).
    mqtt_ca_file: Path | None = None
    mqtt_cert_file: Path | None = None
    mqtt_key_file: Path | None = Field(None, validate_default=True)
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    #: Serve the API over HTTPS itself (most deployments terminate TLS at a reverse proxy instead).
    api_tls_cert_file: Path | None = None
    api_tls_key_file: Path | None = Field(None, validate_default=True)
    #: Addresses of reverse proxies whose X-Forwarded-For/-Proto the API believes (client address,
    #: https scheme). Empty: none, the headers are ignored from everyone.
    api_trusted_proxies: str = ""
    #: Largest request body (bytes) of a JSON route; larger is refused 413 while it streams in.
    api_max_body_bytes: int = Field(1024 * 1024, ge=1024)
    #: Largest history CSV upload (bytes), read in constant memory as it streams in.
    api_max_import_bytes: int = Field(2 * 1024**3, ge=1024)
    #: Largest photo upload (bytes).
    api_max_photo_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    #: Failed authentications allowed per client address: a burst, refilled at this rate per minute (429 beyond).
    api_auth_failures_burst: int = Field(20, ge=1)
    api_auth_failures_per_min: float = Field(10.0, gt=0)
    #: Requests per token (and per client address without a valid token): a burst, refilled per second.
    api_requests_burst: int = Field(600, ge=1)
    api_requests_per_s: float = Field(50.0, gt=0)
    #: Expensive requests (history imports, backtests, CSV exports) per token: a burst, refilled per minute.
    api_expensive_burst: int = Field(10, ge=1)
    api_expensive_per_min: float = Field(30.0, gt=0)
    #: Refusals (400, 401, 403, 413, 429) per client address before they are held (a burst, refilled
    #: per minute); past it each is held up to ``api_refusal_delay_max_s`` (0: never), at most
    #: ``api_refusal_delay_slots`` at once (fieldwatch/api/tarpit.py).
    api_refusals_burst: int = Field(30, ge=1)
    api_refusals_per_min: float = Field(60.0, gt=0)
    api_refusal_delay_max_s: float = Field(2.0, ge=0, le=30)
    api_refusal_delay_slots: int = Field(64, ge=0, le=10_000)
    #: ``/metrics`` without a token (for a Prometheus on a private network); default: a token with ``metrics.read``.
    api_metrics_public: bool = False
    #: ``/docs``, ``/redoc`` and ``/openapi.json``: ``token`` (any valid token, the default), ``public`` or ``off``.
    api_docs: str = "token"
    #: One structured line per request on the ``fieldwatch.access`` logger.
    api_access_log: bool = True
    #: The web console at ``/`` beside the API (docs/ui.md): on or off, and its map's tile server
    #: (``{z}/{x}/{y}`` URL template; empty: a plain background, for sites without internet access).
    console_enabled: bool = True
    console_tile_url: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    #: A console session ends after this many idle minutes, and this many hours after sign-in at most.
    console_session_idle_minutes: int = Field(30, ge=1)
    console_session_max_hours: int = Field(12, ge=1)
    log_level: str = "INFO"
    #: Telemetry retention; older partitions are dropped and older points dead-lettered.
    retention_days: int = Field(90, ge=1)
    #: How far in the future a source timestamp may be before it is refused.
    max_future_seconds: int = Field(300, ge=0)
    #: Points held per discovered (unregistered) device until it is accepted; beyond, dead-lettered. 0: hold nothing.
    discovery_hold_max_points: int = Field(100_000, ge=0)
    #: Hours a held point waits for its device to be accepted before it is moved to the dead letters.
    discovery_hold_max_hours: float = Field(168.0, gt=0)
    #: Pending discovered devices per gateway; points of further unknown devices are dead-lettered.
    discovery_max_devices: int = Field(100, ge=0)
    #: Fill ratio of a device's hold at which ingest warns (log and metric) that it is near the bound.
    discovery_hold_warn_ratio: float = Field(0.8, gt=0, le=1)
    ingest_batch_max_points: int = Field(5000, ge=1)
    ingest_batch_max_wait_ms: int = Field(200, ge=0)
    #: Names this installation on a shared broker. The ingest client id and shared-subscription group
    #: derive from it, so two deployments on one broker never take each other's sessions or messages.
    #: Default: this host's name. Give every host of one deployment the same value.
    deployment_name: str = Field(default_factory=lambda: default_deployment_name(), min_length=1, max_length=64)
    #: Empty (default): ``fieldwatch-<deployment>-ingest`` (plus ``-<host>`` when the deployment is
    #: named apart from the host), unique per host of a deployment.
    ingest_client_id: str = ""
    #: Empty (default): ``fieldwatch-<deployment>``, shared by the deployment's ingest workers only.
    ingest_share_group: str = ""
    #: A gateway not heard from (no health message, no birth) for this long, or three of its health
    #: intervals if longer, is declared offline by ingest: the backstop when its Last Will never comes.
    gateway_silence_timeout_s: float = Field(60.0, gt=0)
    #: Average road speed and detour factor used for ETAs until a routing service is plugged in.
    travel_speed_kmh: float = Field(50.0, gt=0)
    travel_detour_factor: float = Field(1.3, ge=1.0)
    state_dir: Path = Path(".fieldwatch")
    #: Webhook targets allowed although not public (loopback, private, link-local …): host names, IP
    #: addresses or CIDR networks. Empty (the default): webhooks reach public addresses only.
    webhook_allowed_targets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The broker's gateway password and ACL files, which `fieldwatch gateway provision`, `revoke`,
    # `sparkplug` and `sync-broker` regenerate from the registry (docs/gateway.md); a command's
    # --password-file/--acl-file wins. Unset: the command leaves the broker's files alone.
    broker_password_file: Path | None = None
    broker_acl_file: Path | None = None
    #: Owner, group and mode of those files. Unset: an existing file keeps its own; a new one is
    #: owned by whoever runs the command, in the group of `broker_user`, mode 0640.
    broker_file_owner: str | None = None
    broker_file_group: str | None = None
    broker_file_mode: int | None = None
    #: The user the broker runs as: provisioning refuses to write a file this user could not read.
    broker_user: str = Field("mosquitto", min_length=1)
    #: How `--reload` makes the broker reread its files (run without a shell).
    broker_reload_command: str = "systemctl reload mosquitto"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, dotenv_settings, _YamlSource(settings_cls), file_secret_settings)

    @field_validator("deployment_name")
    @classmethod
    def _check_deployment(cls, v: str) -> str:
        if not _DEPLOYMENT_NAME.fullmatch(v):
            raise ValueError("letters, digits, '-' and '_' only")
        return v

    @model_validator(mode="after")
    def _derive_ingest_names(self) -> Settings:
        """Ingest's MQTT client id and share group from the deployment name, unless set explicitly."""
        if not self.ingest_share_group:
            self.ingest_share_group = f"fieldwatch-{self.deployment_name}"
        if not self.ingest_client_id:
            host = default_deployment_name()
            suffix = "" if host == self.deployment_name else f"-{host}"
            self.ingest_client_id = f"fieldwatch-{self.deployment_name}-ingest{suffix}"
        return self

    @field_validator("database_url")
    @classmethod
    def _check_db(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("postgresql", "postgres") or (not parts.hostname and "host=" not in v):
            raise ValueError("not a PostgreSQL URL")
        return v

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts", "tcp") or not parts.hostname:
            raise ValueError("not an MQTT URL")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("bad port") from None
        return v

    @field_validator(
        "mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file", "api_tls_cert_file", "api_tls_key_file", mode="before"
    )
    @classmethod
    def _empty_path_is_unset(cls, v: object) -> object:
        """``FIELDWATCH_MQTT_CA_FILE=`` (empty, as an env file leaves it) means unset, not the current directory."""
        return None if v == "" else v

    @field_validator("mqtt_key_file", "api_tls_key_file")
    @classmethod
    def _check_pair(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        cert_key = _PAIRS[str(info.field_name)]
        cert = info.data.get(cert_key)
        if v is None and cert is not None:
            raise ValueError(f"FIELDWATCH_{cert_key.upper()} is set: give the key of that certificate too")
        if v is not None and cert is None:
            raise ValueError(f"a key needs its certificate: set FIELDWATCH_{cert_key.upper()} too")
        return v

    @field_validator("api_trusted_proxies")
    @classmethod
    def _check_proxies(cls, v: str) -> str:
        """Each entry as uvicorn matches it: an address, a network without host bits, or ``*``."""
        entries = []
        for entry in (e.strip() for e in v.split(",")):
            if not entry:
                continue
            try:
                if entry == "*":
                    entries.append(entry)
                elif "/" in entry:
                    entries.append(str(ipaddress.ip_network(entry, strict=False)))
                else:
                    entries.append(str(ipaddress.ip_address(entry)))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return ",".join(entries)

    @property
    def mqtt_tls(self) -> TlsFiles | None:
        """The MQTT clients' TLS files, or None when none is set (``mqtts://`` then trusts the system's CAs)."""
        if self.mqtt_ca_file is None and self.mqtt_cert_file is None:
            return None
        return TlsFiles(self.mqtt_ca_file, self.mqtt_cert_file, self.mqtt_key_file)

    @field_validator("mqtt_protocol")
    @classmethod
    def _check_proto(cls, v: str) -> str:
        if v not in ("5", "3.1.1"):
            raise ValueError("unknown MQTT protocol")
        return v

    @field_validator("webhook_allowed_targets", mode="before")
    @classmethod
    def _split_targets(cls, v: object) -> object:
        return [e.strip() for e in v.split(",") if e.strip()] if isinstance(v, str) else v

    @field_validator("webhook_allowed_targets")
    @classmethod
    def _check_targets(cls, v: list[str]) -> list[str]:
        EgressPolicy.parse(v)  # names the first bad entry
        return v

    @field_validator("broker_file_owner", "broker_file_group", "broker_user")
    @classmethod
    def _check_account(cls, v: str | None) -> str | None:
        if v == "":  # FIELDWATCH_BROKER_FILE_GROUP= (empty) means unset
            return None
        if v is not None and any(c.isspace() or c == ":" for c in v):
            raise ValueError("not a user or group name")
        return v

    @field_validator("broker_file_mode", mode="before")
    @classmethod
    def _check_mode(cls, v: object) -> int | None:
        """Octal text ('0640', '640'); an int only as YAML's own octal (0640 there is 416)."""
        if v is None or v == "":
            return None
        if isinstance(v, str):
            try:
                mode = int(v, 8)
            except ValueError:
                raise ValueError("not an octal mode") from None
        elif isinstance(v, int) and not isinstance(v, bool):
            mode = v
        else:
            raise ValueError("not an octal mode")
        if not 0 <= mode <= 0o777:
            raise ValueError("not a file mode (write it quoted, in octal)")
        if mode & 0o007:
            raise ValueError("gives others access to the broker's password hashes and grants")
        return mode

    @field_validator("api_docs")
    @classmethod
    def _check_docs(cls, v: str) -> str:
        if v.lower() not in ("token", "public", "off"):
            raise ValueError("unknown documentation mode")
        return v.lower()

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, v: str) -> str:
        if v.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("unknown level")
        return v.upper()


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings`, turning pydantic's error into one that names key and form."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = str(err["loc"][0]) if err["loc"] else "?"
            form = _FORMS.get(key, "see docs/configuration.md")
            shown = redact_value(key, err.get("input"))
            lines.append(f"FIELDWATCH_{key.upper()}: {err['msg']} (got {shown!r}); expected {form}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once."""
    return load_settings()


def mqtt_parts(url: str) -> dict[str, Any]:
    """Split an MQTT URL into host, port, username, password and tls for paho-mqtt."""
    p = urlsplit(url)
    tls = p.scheme == "mqtts"
    return {
        "host": p.hostname or "127.0.0.1",
        "port": p.port or (8883 if tls else 1883),
        "username": p.username,
        "password": p.password,
        "tls": tls,
    }
