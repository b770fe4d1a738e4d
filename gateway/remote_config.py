"""Remote configuration: a config published on ``fw/v1/{site}/{gateway}/config`` replaces the running one.

Life of a published config (JSON or YAML, the same document as the gateway's YAML
file plus a ``config_version``)::

    payload --parse_remote()--> rejected (invalid YAML/JSON, no config_version, invalid config,
       |                        or it changes a field that needs a restart)
       v
    diff_devices(old, new) --> added / removed / changed / unchanged devices
       |
       v
    Gateway.apply_devices(): build the new drivers first (a failure changes nothing), then stop
       removed + changed poll tasks and start added + changed ones. Unchanged devices keep their
       task, connection and state; the disk buffer and the batch sequence are never touched.
       |
       v
    verify: every added/changed device must answer within the new config's
       ``remote_apply_timeout`` seconds (null: skip) --fails--> roll back to the old config
       |                                                        (report ``rolled_back``)
       v
    persist the document as ``<config stem>.remote.yaml`` next to the config file (the previous
    one is kept as ``.remote.prev.yaml``); report ``applied``.

The outcome goes into the retained status message's ``config`` field (docs/contract.md).
A retained config is redelivered on every reconnect, so a version that is already
running, or whose outcome was already reported, is ignored.

Pure: :func:`parse_remote`, :func:`diff_devices`, :func:`remote_path`. I/O:
:func:`persist`, :func:`load_effective_config`, :class:`RemoteConfigManager`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml

from gateway.config import Device, GatewayConfig, load_config, parse_config
from gateway.errors import ConfigError
from gateway.health import DeviceHealth

log = logging.getLogger(__name__)

#: Fields a remote config may change. Everything else (identity, broker, buffer, state
#: directory, intervals, metrics) needs a local edit and a restart, so a change is refused.
REMOTE_FIELDS = frozenset({"devices", "config_version", "remote_apply_timeout"})

Outcome = Literal["applied", "rejected", "rolled_back"]


class RemoteConfigRejected(ValueError):
    """A published config cannot be used; the message says why (and which device/tag)."""


@dataclass(frozen=True, slots=True)
class DeviceDiff:
    """Device names by what a new config does to them."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()

    @property
    def restarted(self) -> tuple[str, ...]:
        """Devices whose poll task (re)starts: added and changed."""
        return self.added + self.changed


@dataclass(frozen=True, slots=True)
class ConfigOutcome:
    """What became of one published config (sent in the status message's ``config.last``)."""

    version: str | None
    outcome: Outcome
    error: str = ""
    ts: int = 0
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fingerprint(device: Device) -> dict[str, Any]:
    """What makes two device definitions the same: every resolved field plus the profile version."""
    return {**device.model_dump(mode="json"), "__profile_version": device.profile_version}


def diff_devices(old: GatewayConfig, new: GatewayConfig) -> DeviceDiff:
    """Compare device by device (by name); order in the file does not matter."""
    before = {d.name: d for d in old.devices}
    after = {d.name: d for d in new.devices}
    added = tuple(n for n in after if n not in before)
    removed = tuple(n for n in before if n not in after)
    changed: list[str] = []
    unchanged: list[str] = []
    for name in (n for n in after if n in before):
        (unchanged if _fingerprint(before[name]) == _fingerprint(after[name]) else changed).append(name)
    return DeviceDiff(added, removed, tuple(changed), tuple(unchanged))


def _load_document(payload: bytes, what: str) -> tuple[dict[str, Any], Any]:
    """A config document's mapping and its ``config_version``, the checks the gateway and the server
    share; ``what`` names the document in the :class:`RemoteConfigRejected` message."""
    try:
        data = yaml.safe_load(payload.decode("utf-8"))  # YAML 1.1 reads JSON documents too
    except UnicodeDecodeError as exc:
        raise RemoteConfigRejected(f"{what} is not UTF-8: {exc}") from None
    except yaml.YAMLError as exc:
        raise RemoteConfigRejected(f"{what} is neither JSON nor YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RemoteConfigRejected(f"{what} must be a mapping (the gateway config document)")
    version = data.get("config_version")
    if version is None or version == "":
        raise RemoteConfigRejected(f"{what} has no config_version; give each config a new revision id")
    return data, version


def parse_remote(payload: bytes, current: GatewayConfig, *, base_dir: Path | None) -> tuple[GatewayConfig, Any]:
    """Validate a published config against the running one; return it and its parsed document.

    Raises :class:`RemoteConfigRejected` naming the problem: not UTF-8, not JSON/YAML, not a mapping,
    no ``config_version``, invalid (``devices[pump-1].tags[flow].data_type: …``), for another
    gateway, or changing a field that needs a restart.
    """
    data, version = _load_document(payload, "payload")
    try:
        new = parse_config(data, base_dir=base_dir, source=f"remote config {version}")
    except ConfigError as exc:
        raise RemoteConfigRejected(str(exc)) from None
    if (new.site, new.gateway) != (current.site, current.gateway):
        raise RemoteConfigRejected(
            f"remote config {version} is for {new.site}/{new.gateway}, "
            f"not this gateway {current.site}/{current.gateway}"
        )
    mine = current.model_dump(exclude=set(REMOTE_FIELDS))
    theirs = new.model_dump(exclude=set(REMOTE_FIELDS))
    differ = sorted(k for k in mine if mine[k] != theirs.get(k))
    if differ:
        raise RemoteConfigRejected(
            f"remote config {version} changes {', '.join(differ)}; only devices, config_version and "
            "remote_apply_timeout can change remotely — edit the config file on the gateway and restart it"
        )
    return new, data


#: Largest config document the server sends (the broker and the gateway take far more; a person's edit never needs it).
MAX_PUSH_BYTES = 256 * 1024


def check_push(document: str, *, site: str, gateway: str, previous: str | None) -> GatewayConfig:
    """Validate a config before the server publishes it to ``site``/``gateway``; return it parsed.

    The same checks as the gateway's :func:`parse_remote`, made before sending so a person sees the
    problem at once: JSON/YAML, a ``config_version``, a valid config (``devices[pump-1].tags[…]: …``),
    for this gateway. With ``previous`` (the last document pushed) it also refuses a change to a field
    that needs a restart, and a version already pushed (the gateway would ignore it). Raises
    :class:`RemoteConfigRejected` saying what to fix.
    """
    payload = document.encode("utf-8")
    if len(payload) > MAX_PUSH_BYTES:
        raise RemoteConfigRejected(f"the config is {len(payload)} bytes; at most {MAX_PUSH_BYTES} can be pushed")
    current: GatewayConfig | None = None
    if previous is not None:
        try:
            current = parse_config(yaml.safe_load(previous), source="the last pushed config")
        except (ConfigError, yaml.YAMLError):
            current = None  # pushed before a profile changed, say: check this one on its own
    if current is not None:
        new, data = parse_remote(payload, current, base_dir=None)
        if str(data.get("config_version")) == str(current.config_version):
            raise RemoteConfigRejected(
                f"config_version {current.config_version} was pushed already and the gateway ignores a version "
                "it has handled: give this config a new config_version"
            )
        return new
    data, version = _load_document(payload, "the config")
    if (data.get("site"), data.get("gateway")) != (site, gateway):
        raise RemoteConfigRejected(
            f"the config is for {data.get('site')}/{data.get('gateway')}, not this gateway {site}/{gateway}: "
            "set site and gateway as in the gateway's own file"
        )
    try:
        return parse_config(data, source=f"config {version}")
    except ConfigError as exc:
        raise RemoteConfigRejected(str(exc)) from None


def remote_path(config_path: Path) -> Path:
    """Where the accepted remote config of ``gw.yaml`` is kept: ``gw.remote.yaml`` beside it."""
    return config_path.with_name(f"{config_path.stem}.remote.yaml")


def persist(path: Path, data: Any) -> None:
    """Write ``data`` as YAML atomically (temp file, fsync, rename); keep the previous file as ``.prev``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as fh:
        fh.write("# Written by the gateway: the last remote config that applied (fw/v1/<site>/<gw>/config).\n")
        yaml.safe_dump(data, fh, sort_keys=False)
        fh.flush()
        os.fsync(fh.fileno())
    if path.exists():
        os.replace(path, path.with_name(f"{path.stem}.prev.yaml"))
    os.replace(tmp, path)


def load_effective_config(config_path: Path) -> GatewayConfig:
    """The config to run: the accepted remote config beside ``config_path`` when it loads, else the file.

    A remote file that no longer validates (e.g. a profile was removed by an upgrade) is skipped with a
    warning rather than keeping the gateway down; the original file is the fallback.
    """
    original = load_config(config_path)
    remote = remote_path(config_path)
    if not remote.exists():
        return original
    try:
        cfg = load_config(remote)
    except ConfigError as exc:
        log.warning("ignoring the saved remote config (%s); running %s instead", exc, config_path)
        return original
    if (cfg.site, cfg.gateway) != (original.site, original.gateway):
        log.warning(
            "ignoring %s: it is for %s/%s, not %s/%s", remote, cfg.site, cfg.gateway, original.site, original.gateway
        )
        return original
    log.info("running remote config %s from %s", cfg.config_version, remote)
    return cfg


class _Stats(Protocol):
    @property
    def devices(self) -> Mapping[str, DeviceHealth]: ...


class ConfigTarget(Protocol):
    """What the manager needs of the running gateway (:class:`gateway.agent.Gateway` is one).

    A protocol, not an import: the agent owns the manager, so the manager must not import the agent.
    """

    @property
    def config(self) -> GatewayConfig: ...

    @property
    def buffer_path(self) -> Path: ...

    @property
    def stats(self) -> _Stats: ...

    async def apply_devices(self, new: GatewayConfig, diff: DeviceDiff) -> None: ...

    def publish_status(self) -> None: ...


class RemoteConfigManager:
    """Applies published configs to one running gateway (a :class:`ConfigTarget`), one at a time."""

    def __init__(self, gateway: ConfigTarget, config_path: Path | None) -> None:
        self.gateway = gateway
        self.config_path = config_path
        self.base_dir = config_path.parent if config_path is not None else None
        self.last: ConfigOutcome | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[ConfigOutcome | None]] = set()

    @property
    def persist_path(self) -> Path:
        if self.config_path is not None:
            return remote_path(self.config_path)
        cfg = self.gateway.config
        return Path(self.gateway.buffer_path.parent) / f"config-{cfg.site}-{cfg.gateway}.remote.yaml"

    def submit(self, payload: bytes) -> None:
        """Handle a config message in the background (called on the event loop)."""
        task = asyncio.create_task(self.handle(payload), name="remote-config")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, payload: bytes) -> ConfigOutcome | None:
        """Validate, apply, verify, persist or roll back; report. None: a version already handled."""
        async with self._lock:
            gw = self.gateway
            current = gw.config
            try:
                new, data = parse_remote(payload, current, base_dir=self.base_dir)
            except RemoteConfigRejected as exc:
                version = _peek_version(payload)
                if self.last is not None and self.last.version == version and version is not None:
                    return None
                return self._report(ConfigOutcome(version, "rejected", str(exc), ts=_now_ms()))
            version = new.config_version
            if version == current.config_version or (self.last is not None and self.last.version == version):
                log.debug("config %s already handled; ignoring the redelivery", version)
                return None
            diff = diff_devices(current, new)
            lists = {"added": list(diff.added), "removed": list(diff.removed), "changed": list(diff.changed)}
            log.info("applying remote config %s: %s", version, lists)
            try:
                await gw.apply_devices(new, diff)
                await self._verify(new, diff)
            except Exception as exc:
                reason = str(exc) or repr(exc)
                log.error("remote config %s failed (%s); rolling back to %s", version, reason, current.config_version)
                try:
                    await gw.apply_devices(current, diff_devices(gw.config, current))
                except Exception as again:  # report both; the gateway keeps polling what it can
                    log.exception("rolling back remote config %s failed too", version)
                    reason += f"; rollback also failed: {again}"
                return self._report(ConfigOutcome(version, "rolled_back", reason, ts=_now_ms(), **lists))
            try:
                persist(self.persist_path, data)
            except OSError as exc:
                # Running but not saved: say so, the next restart would run the old file.
                return self._report(
                    ConfigOutcome(version, "applied", f"not saved to {self.persist_path}: {exc}", _now_ms(), **lists)
                )
            return self._report(ConfigOutcome(version, "applied", "", ts=_now_ms(), **lists))

    async def _verify(self, new: GatewayConfig, diff: DeviceDiff) -> None:
        """Every added/changed device answers within ``remote_apply_timeout`` (None: no wait)."""
        limit = new.remote_apply_timeout
        if limit is None or not diff.restarted:
            return
        deadline = time.monotonic() + limit
        health = self.gateway.stats.devices
        while True:
            silent = [n for n in diff.restarted if not health[n].online]
            if not silent:
                return
            if time.monotonic() >= deadline:
                why = "; ".join(f"{n}: {health[n].error or 'no answer yet'}" for n in silent)
                raise RuntimeError(f"device(s) {', '.join(silent)} did not answer within {limit:g} s ({why})")
            await asyncio.sleep(0.05)

    def _report(self, outcome: ConfigOutcome) -> ConfigOutcome:
        self.last = outcome
        level = logging.INFO if outcome.outcome == "applied" and not outcome.error else logging.ERROR
        log.log(
            level, "remote config %s %s%s", outcome.version, outcome.outcome, f": {outcome.error}" * bool(outcome.error)
        )
        self.gateway.publish_status()
        return outcome

    async def aclose(self) -> None:
        """Cancel a config still being applied (gateway stop)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)


def _peek_version(payload: bytes) -> str | None:
    """The config_version of a payload that failed validation, if it can be read at all."""
    try:
        data = yaml.safe_load(payload.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        return None
    version = data.get("config_version") if isinstance(data, dict) else None
    return None if version is None else str(version)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
