"""OPC-UA driver: subscriptions (with a polling fallback) behind the same seam as the Modbus driver.

The agent calls ``connect()``, then ``poll()`` every poll interval, and
``close()`` on failure; this driver fits that loop:

- ``mode: subscribe`` creates one subscription with a monitored item per tag
  (an absolute data-change deadband when configured). Notifications are queued
  as they arrive and ``poll()`` hands over everything queued since the last call
  (every change, not only the latest, so nothing is lost between polls).
- ``mode: poll``, or a server that refuses subscriptions (e.g.
  ``BadTooManySubscriptions``), reads every tag's value in one Read per poll.
- Every value keeps the server's **source timestamp** and its StatusCode is
  mapped to :class:`fwcore.contract.Quality` by :func:`quality_of`.

Watchdog: a healthy subscription hears from the server at least every
``publishing_interval * keepalive_count`` (data or keep-alive). When ``poll()``
finds it silent for 1.5 times that, it probes the server (read ServerStatus):
if the probe fails the device is reported not connected, and the agent
reconnects with its usual backoff (a restarted server gets a fresh session and
subscription); if the probe works, only the subscription died and it is
re-created on the spot. asyncua's own auto-reconnect stays off, so there is one
retry policy, the agent's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from asyncua import Client, Node, ua
from asyncua.crypto import security_policies, uacrypto
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509

from fwcore.contract import Quality
from gateway.blockdecode import TagValue
from gateway.config import OpcUaDevice, OpcUaTag
from gateway.decode import clamp
from gateway.errors import DeviceError, DeviceNotConnected, DeviceTimeout

log = logging.getLogger(__name__)

#: Notifications kept between two polls; beyond it the oldest are dropped (counted, logged once).
MAX_QUEUED_CHANGES = 100_000
#: How long past the keep-alive a subscription may stay silent before the watchdog acts.
SILENCE_MARGIN = 1.5

_BAD_NOT_CONNECTED = {
    ua.StatusCodes.BadNotConnected,
    ua.StatusCodes.BadNoCommunication,
    ua.StatusCodes.BadCommunicationError,
    ua.StatusCodes.BadServerNotConnected,
    ua.StatusCodes.BadConnectionClosed,
    ua.StatusCodes.BadShutdown,
}
_BAD_TIMEOUT = {ua.StatusCodes.BadTimeout, ua.StatusCodes.BadRequestTimeout, ua.StatusCodes.BadWaitingForResponse}
_BAD_EXCEPTION = {
    ua.StatusCodes.BadNodeIdUnknown,
    ua.StatusCodes.BadNodeIdInvalid,
    ua.StatusCodes.BadAttributeIdInvalid,
    ua.StatusCodes.BadUserAccessDenied,
    ua.StatusCodes.BadNotReadable,
    ua.StatusCodes.BadNoMatch,
}


def quality_of(status: int) -> Quality:
    """Map an OPC-UA StatusCode to a contract quality (Part 4: the top two bits say good/uncertain/bad)."""
    severity = status >> 30
    if severity == 0:
        return Quality.GOOD
    if severity == 1:
        return Quality.UNCERTAIN
    code = status & 0xFFFF0000
    if code == ua.StatusCodes.BadOutOfRange:
        return Quality.BAD_OUT_OF_RANGE
    if code in _BAD_NOT_CONNECTED:
        return Quality.BAD_NOT_CONNECTED
    if code in _BAD_TIMEOUT:
        return Quality.BAD_TIMEOUT
    if code in _BAD_EXCEPTION:
        return Quality.BAD_EXCEPTION
    if code == ua.StatusCodes.BadTypeMismatch:
        return Quality.BAD_DECODE
    return Quality.BAD


def _ms(stamp: datetime | None) -> int | None:
    return None if stamp is None else int(stamp.timestamp() * 1000)


def tag_value(tag: OpcUaTag, dv: ua.DataValue) -> TagValue:
    """One DataValue -> scaled, clamped value with quality and source timestamp (server time if none)."""
    ts = _ms(dv.SourceTimestamp) or _ms(dv.ServerTimestamp)
    status = dv.StatusCode.value if dv.StatusCode is not None else 0
    quality = quality_of(status)
    raw = dv.Value.Value if dv.Value is not None else None
    if quality >= Quality.BAD:
        return TagValue(tag, 0.0, quality, ts)
    if isinstance(raw, bool):
        raw = float(raw)
    if not isinstance(raw, int | float):
        return TagValue(tag, 0.0, Quality.BAD_DECODE, ts)
    value, clamped = clamp(float(raw) * tag.scale + tag.offset, tag.min, tag.max)
    if value != value:  # NaN is not a reading
        return TagValue(tag, 0.0, Quality.BAD_DECODE, ts)
    return TagValue(tag, value, Quality.BAD_OUT_OF_RANGE if clamped else quality, ts)


@contextlib.contextmanager
def _translate(device: str) -> Iterator[None]:
    """Map asyncua/asyncio/OS errors to ours, keeping the cause."""
    try:
        yield
    except DeviceError:
        raise
    except TimeoutError as exc:
        raise DeviceTimeout(device, "no response") from exc
    except (ConnectionError, OSError) as exc:
        raise DeviceNotConnected(device, getattr(exc, "strerror", None) or str(exc) or "connection lost") from exc
    except UaError as exc:
        raise DeviceNotConnected(device, f"OPC-UA error: {exc}") from exc


class _Handler:
    """asyncua subscription callbacks: queue data changes, note a lost server."""

    def __init__(self, driver: OpcUaDriver) -> None:
        self.driver = driver

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        tag = self.driver.tag_by_node.get(node.nodeid)
        if tag is not None:
            self.driver.queue(tag_value(tag, data.monitored_item.Value))

    def status_change_notification(self, status: Any) -> None:
        code = status.Status.value if hasattr(status, "Status") else int(status)
        if quality_of(code) >= Quality.BAD:
            self.driver.lost = f"subscription status {ua.StatusCode(ua.UInt32(code)).name}"


class OpcUaDriver:
    """Reads one OPC-UA device's tags, by subscription or by polling."""

    def __init__(self, device: OpcUaDevice) -> None:
        self.device = device
        self.mode = device.mode  # "poll" after a server refused subscriptions
        self.tag_by_node: dict[ua.NodeId, OpcUaTag] = {}
        self.lost: str | None = None
        #: Subscriptions re-created by the watchdog, and changes dropped because polls fell behind.
        self.resubscribes = 0
        self.dropped_changes = 0
        self._client: Client | None = None
        self._nodes: list[tuple[OpcUaTag, Node]] = []
        self._unresolved: list[TagValue] = []
        self._sub: Any = None
        self._sub_started = 0.0
        self._changes: list[TagValue] = []

    @property
    def connected(self) -> bool:
        return self._client is not None and self.lost is None

    @property
    def silence_limit(self) -> float:
        d = self.device
        return max(1.0, d.publishing_interval * d.keepalive_count * SILENCE_MARGIN)

    def queue(self, value: TagValue) -> None:
        """Keep a notification until the next poll (bounded; drops are counted and logged once)."""
        if len(self._changes) >= MAX_QUEUED_CHANGES:
            if not self.dropped_changes:
                log.error(
                    "device %r: %d changes queued between polls; dropping the oldest",
                    self.device.name,
                    len(self._changes),
                )
            del self._changes[0]
            self.dropped_changes += 1
        self._changes.append(value)

    async def connect(self) -> None:
        """Open a session, resolve every tag's node and subscribe (or settle for polling)."""
        await self.close()
        d = self.device
        client = Client(d.endpoint, timeout=d.timeout)
        with _translate(d.name):
            try:
                await self._secure(client)
                await asyncio.wait_for(client.connect(), d.timeout * 4)
            except BaseException:
                with contextlib.suppress(Exception):
                    await client.disconnect()
                raise
        self._client = client
        self.lost = None
        with _translate(d.name):
            await self._resolve(client)
            if self.mode == "subscribe":
                await self._subscribe(client)

    async def _secure(self, client: Client) -> None:
        """Apply the device's security policy/mode and identity to a fresh client."""
        d = self.device
        if d.username is not None:
            client.set_user(d.username)
            client.set_password(d.password or "")
        if d.user_certificate is not None and d.user_private_key is not None:
            client.user_certificate = await uacrypto.load_certificate(d.user_certificate)
            client.user_private_key = await uacrypto.load_private_key(d.user_private_key)
        if d.security_policy == "None":
            return
        assert d.certificate is not None and d.private_key is not None  # checked by the config
        cert = await uacrypto.load_certificate(d.certificate)
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uri = next(iter(uris.get_values_for_type(x509.UniformResourceIdentifier)), None)
        if uri:
            client.application_uri = uri  # servers check it against the certificate
        mode = ua.MessageSecurityMode.Sign if d.security_mode == "Sign" else ua.MessageSecurityMode.SignAndEncrypt
        await client.set_security(
            security_policies.SecurityPolicyBasic256Sha256,
            str(d.certificate),
            str(d.private_key),
            server_certificate=str(d.server_certificate) if d.server_certificate else None,
            mode=mode,
        )

    async def _resolve(self, client: Client) -> None:
        d = self.device
        self._nodes.clear()
        self.tag_by_node.clear()
        self._unresolved = []
        for tag in d.tags:
            try:
                if tag.node is not None:
                    node = client.get_node(tag.node)
                else:
                    assert tag.path is not None
                    parts = [p for p in (d.root or "").split("/") + tag.path.split("/") if p]
                    node = await client.nodes.objects.get_child(parts)
            except UaStatusCodeError as exc:
                log.error("device %r tag %r: cannot find node %s: %s", d.name, tag.name, tag.node or tag.path, exc)
                self._unresolved.append(TagValue(tag, 0.0, Quality.BAD_EXCEPTION))
                continue
            self._nodes.append((tag, node))
            self.tag_by_node[node.nodeid] = tag

    async def _subscribe(self, client: Client) -> None:
        d = self.device
        try:
            sub = await client.create_subscription(d.publishing_interval * 1000, _Handler(self))
        except UaStatusCodeError as exc:
            log.warning(
                "device %r: server refused a subscription (%s); polling every poll interval instead",
                d.name,
                exc,
            )
            self.mode = "poll"
            return
        groups: dict[float, list[Node]] = {}
        for tag, node in self._nodes:
            band = tag.data_change_deadband if tag.data_change_deadband is not None else d.data_change_deadband
            groups.setdefault(band, []).append(node)
        for band, nodes in groups.items():
            if band:
                await sub.deadband_monitor(nodes, ua.Double(band), queuesize=100)
            else:
                await sub.subscribe_data_change(nodes, queuesize=100)
        self._sub = sub
        self._sub_started = time.monotonic()

    async def close(self) -> None:
        """Drop the session (safe when not connected; never waits long on a dead server)."""
        client, self._client = self._client, None
        self._sub = None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), self.device.timeout)

    async def poll(self) -> list[TagValue]:
        """Everything that changed since the last poll (subscribe) or every tag's current value (poll)."""
        client = self._client
        name = self.device.name
        if client is None:
            raise DeviceNotConnected(name, "not connected")
        if self.lost is not None:
            raise DeviceNotConnected(name, self.lost)
        unresolved, self._unresolved = self._unresolved, []
        if self.mode == "poll":
            with _translate(name):
                dvs = await asyncio.wait_for(
                    client.read_attributes([n for _, n in self._nodes]), self.device.timeout * 2
                )
            return unresolved + [tag_value(tag, dv) for (tag, _), dv in zip(self._nodes, dvs, strict=True)]
        await self._watchdog(client)
        changes, self._changes = self._changes, []
        return unresolved + changes

    async def _watchdog(self, client: Client) -> None:
        """Re-create a subscription silent past its keep-alive; report a dead server as not connected."""
        sub = self._sub
        if sub is None:
            return
        last = max(sub.last_publish_at or 0.0, self._sub_started)
        silent = time.monotonic() - last
        if silent < self.silence_limit:
            return
        name = self.device.name
        with _translate(name):
            await asyncio.wait_for(client.nodes.server_state.read_value(), self.device.timeout)
        log.warning("device %r: subscription silent for %.1f s; re-creating it", name, silent)
        self.resubscribes += 1
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sub.delete(), self.device.timeout)
        self._sub = None
        with _translate(name):
            await self._subscribe(client)
