"""OPC-UA driver: subscriptions (with a polling fallback) behind the same seam as the Modbus driver.

The agent calls ``connect()``, then ``poll()`` every poll interval, and
``close()`` on failure; this driver fits that loop:

- ``mode: subscribe`` creates one subscription with a monitored item per tag
  (an absolute data-change deadband when configured). Each item has its own
  client handle, so two tags on one NodeId are two items, each feeding its own
  tag. Notifications are queued as they arrive and ``poll()`` hands over
  everything queued since the last call (every change, not only the latest, so
  nothing is lost between polls). An item the server refuses (its per-item
  status, e.g. ``BadNodeIdUnknown``) is logged once and its tag reported once
  per connection with the quality of that status.
- ``mode: poll``, or a server that refuses subscriptions (e.g.
  ``BadTooManySubscriptions``), reads every tag's value in one Read per poll.
- Every value keeps the server's **source timestamp** and its StatusCode is
  mapped to :class:`fwcore.contract.Quality` by :func:`quality_of`; its name
  is kept per tag in :attr:`OpcUaDriver.statuses` (``gateway check`` shows it).

Subscription terms: the publishing interval, keep-alive count and lifetime count
are *requested* and the server may revise each of them (node-opcua grants no
interval under 50 ms and no keep-alive count over 12,000; many servers have a
slowest or fastest rate). The driver creates the subscription itself, so it
knows what was granted (:class:`SubscriptionTerms`) and watches those terms
rather than the ones it asked for. asyncua's ``Client.create_subscription``
would request a keep-alive derived from the session timeout (thousands of
intervals), then modify the subscription behind our back when the server
revised anything; a quiet subscription then sent no keep-alive for minutes and
the watchdog took it for dead.

Watchdog: a healthy subscription hears from the server at least every granted
``publishing_interval * keepalive_count`` (data or keep-alive). When ``poll()``
finds it silent for 1.5 times that (at least 1 s), it probes the server (read
ServerStatus): if the probe fails the device is reported not connected, and the
agent reconnects with its usual backoff (a restarted server gets a fresh session
and subscription); if the probe works, only the subscription died and it is
re-created on the spot; the current values the new subscription starts with are
not queued again when they are the ones already sent (same source timestamp, value
and quality: :attr:`OpcUaDriver.repeats`). asyncua's own auto-reconnect and stale-subscription
watchdog stay out of it (the subscription is not registered with the client), so
there is one retry policy, the agent's.

Logging: asyncua logs every publish at INFO and a traceback when a server goes
away. Its records are passed on at DEBUG only (:func:`gateway.liblog.demote`);
at INFO the driver says one line per state change itself (connected with the
granted terms; subscription refused or re-created; a node it cannot find), and
the agent logs a lost device once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncua import Client, Node, ua
from asyncua.common.subscription import Subscription
from asyncua.crypto import security_policies, uacrypto
from asyncua.ua import status_codes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509

from fwcore.contract import Quality
from gateway import liblog
from gateway.blockdecode import TagValue
from gateway.config import OpcUaDevice, OpcUaTag
from gateway.decode import clamp
from gateway.errors import DeviceError, DeviceNotConnected, DeviceTimeout

log = logging.getLogger(__name__)

#: Notifications kept between two polls; beyond it the oldest are dropped (counted, logged once).
MAX_QUEUED_CHANGES = 100_000
#: How long past the keep-alive a subscription may stay silent before the watchdog acts.
SILENCE_MARGIN = 1.5
#: Shortest silence the watchdog ever acts on, in seconds (a fast subscription's keep-alive
#: period is shorter than one busy moment of the event loop).
MIN_SILENCE_LIMIT = 1.0
#: Requested lifetime, in keep-alive periods: how long the server keeps a subscription nobody
#: asks to publish (a stalled or vanished gateway). The specification asks for at least 3.
LIFETIME_KEEPALIVES = 10
#: Notifications a server may queue per monitored item between two publishes.
QUEUE_SIZE = 100

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


def status_name(status: int) -> str:
    """The StatusCode's symbolic name (``Good``, ``UncertainLastUsableValue``, ``BadNodeIdUnknown`` …)."""
    return status_codes.get_name_and_doc(status & 0xFFFF0000)[0]


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


def status_of(dv: ua.DataValue) -> int:
    """A DataValue's StatusCode as an int (absent means Good)."""
    return dv.StatusCode.value if dv.StatusCode is not None else 0


def tag_value(tag: OpcUaTag, dv: ua.DataValue) -> TagValue:
    """One DataValue -> scaled, clamped value with quality and source timestamp (server time if none).

    A Bad value reads 0.0, except ``BadOutOfRange`` with a number: the server's value, scaled and
    not clamped, as received (clamping would hide what the server said is out of range).
    """
    ts = _ms(dv.SourceTimestamp) or _ms(dv.ServerTimestamp)
    quality = quality_of(status_of(dv))
    raw: Any = dv.Value.Value if dv.Value is not None else None
    if isinstance(raw, bool):
        raw = float(raw)
    numeric = isinstance(raw, int | float)
    if quality >= Quality.BAD:
        if quality == Quality.BAD_OUT_OF_RANGE and numeric:
            return TagValue(tag, float(raw) * tag.scale + tag.offset, quality, ts)
        return TagValue(tag, 0.0, quality, ts)
    if not numeric:
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


@dataclass(frozen=True, slots=True)
class SubscriptionTerms:
    """What a server granted for a subscription: each value may differ from the one requested."""

    publishing_interval: float  # seconds
    keepalive_count: int  # publishing intervals without data before the server sends a keep-alive
    lifetime_count: int  # publishing intervals without a publish request before the server drops it

    @property
    def silence_limit(self) -> float:
        """Seconds without data or keep-alive after which the subscription is taken for dead."""
        return max(MIN_SILENCE_LIMIT, self.publishing_interval * self.keepalive_count * SILENCE_MARGIN)


def requested_terms(device: OpcUaDevice) -> SubscriptionTerms:
    """What the driver asks for: the device's interval and keep-alive, a lifetime of :data:`LIFETIME_KEEPALIVES`."""
    keepalive = device.keepalive_count
    return SubscriptionTerms(device.publishing_interval, keepalive, keepalive * LIFETIME_KEEPALIVES)


def granted_terms(requested: SubscriptionTerms, result: ua.CreateSubscriptionResult) -> SubscriptionTerms:
    """The terms of a CreateSubscription result (a zero the server should not send keeps the request)."""
    return SubscriptionTerms(
        publishing_interval=(result.RevisedPublishingInterval or requested.publishing_interval * 1000) / 1000,
        keepalive_count=int(result.RevisedMaxKeepAliveCount or requested.keepalive_count),
        lifetime_count=int(result.RevisedLifetimeCount or requested.lifetime_count),
    )


def _monitor_request(node: ua.NodeId, handle: int, deadband: float) -> ua.MonitoredItemCreateRequest:
    """A monitored item on ``node``'s value, its notifications tagged with ``handle``."""
    params = ua.MonitoringParameters()
    params.ClientHandle = handle
    params.SamplingInterval = 0.0  # as fast as the server samples
    params.QueueSize = QUEUE_SIZE
    params.DiscardOldest = True
    if deadband:
        band = ua.DataChangeFilter()
        band.Trigger = ua.DataChangeTrigger.StatusValue  # a status change is always reported
        band.DeadbandType = ua.DeadbandType.Absolute
        band.DeadbandValue = ua.Double(deadband)
        params.Filter = band
    request = ua.MonitoredItemCreateRequest()
    request.ItemToMonitor = ua.ReadValueId(NodeId=node, AttributeId=ua.AttributeIds.Value)
    request.MonitoringMode = ua.MonitoringMode.Reporting
    request.RequestedParameters = params
    return request


#: Statuses that mean the tag's node is not there (wrong id, browse path or namespace index).
_MISSING = {ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadNodeIdInvalid, ua.StatusCodes.BadNoMatch}


class _Handler:
    """asyncua subscription callbacks: queue data changes, note a lost server."""

    def __init__(self, driver: OpcUaDriver) -> None:
        self.driver = driver

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        item = data.monitored_item
        tag = self.driver.tag_by_handle.get(item.ClientHandle)
        if tag is not None:
            dv = item.Value
            self.driver.statuses[tag.name] = status_name(status_of(dv))
            self.driver.queue(tag_value(tag, dv))

    def status_change_notification(self, status: Any) -> None:
        code = status.Status.value if hasattr(status, "Status") else int(status)
        if quality_of(code) >= Quality.BAD:
            self.driver.lost = f"subscription status {status_name(code)}"


class OpcUaDriver:
    """Reads one OPC-UA device's tags, by subscription or by polling."""

    def __init__(self, device: OpcUaDevice) -> None:
        liblog.demote("asyncua", log)
        self.device = device
        self.mode = device.mode  # "poll" after a server refused subscriptions
        #: The tag of each monitored item, by client handle (one item per tag, even on a shared node).
        self.tag_by_handle: dict[int, OpcUaTag] = {}
        #: The name of the StatusCode each tag last arrived with, as received (``gateway check`` shows it).
        self.statuses: dict[str, str] = {}
        #: What the server granted for the current subscription (None: none, or polling).
        self.terms: SubscriptionTerms | None = None
        self.lost: str | None = None
        #: Subscriptions re-created by the watchdog, changes dropped because polls fell behind, and
        #: values a server sent again unchanged (same source timestamp) and not queued twice.
        self.resubscribes = 0
        self.dropped_changes = 0
        self.repeats = 0
        self._last: dict[str, tuple[int, float, int]] = {}  # per tag: the last queued (ts, value, quality)
        self._client: Client | None = None
        self._nodes: list[tuple[OpcUaTag, Node]] = []
        self._unresolved: list[TagValue] = []
        self._missing_logged: set[str] = set()  # tags whose missing node was logged on this connection
        self._sub: Subscription | None = None
        self._sub_started = 0.0
        self._changes: list[TagValue] = []

    @property
    def connected(self) -> bool:
        return self._client is not None and self.lost is None

    @property
    def silence_limit(self) -> float:
        """Seconds of silence the watchdog tolerates: from the granted terms once subscribed."""
        return (self.terms or requested_terms(self.device)).silence_limit

    def queue(self, value: TagValue) -> None:
        """Keep a notification until the next poll (bounded; drops are counted and logged once).

        A value with the same source timestamp, value and quality as the last one of its tag in
        this session is the server re-sending it (a re-created subscription starts with every
        item's current value): it is counted in :attr:`repeats`, not queued twice.
        """
        if value.ts is not None:
            seen = (value.ts, value.value, value.quality)
            if self._last.get(value.tag.name) == seen:
                self.repeats += 1
                return
            self._last[value.tag.name] = seen
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
        self._missing_logged.clear()
        self._last.clear()  # a new session: its first values are sent even if unchanged (after an outage)
        with _translate(d.name):
            await self._resolve(client)
            if self.mode == "subscribe":
                await self._subscribe(client)
        if self._sub is not None and self.terms is not None:
            t, asked = self.terms, requested_terms(d)
            revised = "" if t == asked else (
                f" (asked for {asked.publishing_interval:g} s, {asked.keepalive_count}, {asked.lifetime_count})"
            )  # fmt: skip
            log.info(
                "device %r: connected to %s; %d tags subscribed, publishing every %g s, "
                "keep-alive after %d, lifetime %d intervals%s",
                d.name, d.endpoint, len(self.tag_by_handle), t.publishing_interval, t.keepalive_count,
                t.lifetime_count, revised,
            )  # fmt: skip
        else:
            log.info("device %r: connected to %s; reading %d tags every poll", d.name, d.endpoint, len(self._nodes))

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
                self._missing(tag, exc.code)
                continue
            self._nodes.append((tag, node))

    def _missing(self, tag: OpcUaTag, status: int) -> None:
        """A tag whose node the server does not have (or will not monitor): one bad point and one
        ERROR line per connection, as the troubleshooting table promises (quality 4 for an unknown node)."""
        self.statuses[tag.name] = status_name(status)
        self._unresolved.append(TagValue(tag, 0.0, quality_of(status)))
        self._log_missing(tag, status)

    def _log_missing(self, tag: OpcUaTag, status: int) -> None:
        if tag.name in self._missing_logged:
            return
        self._missing_logged.add(tag.name)
        what = "cannot find node" if status & 0xFFFF0000 in _MISSING else "server will not monitor node"
        log.error(
            "device %r tag %r: %s %s (%s); its points have quality %d",
            self.device.name, tag.name, what, tag.node or tag.path, status_name(status), quality_of(status),
        )  # fmt: skip

    async def _subscribe(self, client: Client) -> None:
        """Create the subscription with the device's terms, note what the server granted, monitor every tag."""
        d = self.device
        asked = requested_terms(d)
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = asked.publishing_interval * 1000
        params.RequestedMaxKeepAliveCount = asked.keepalive_count
        params.RequestedLifetimeCount = asked.lifetime_count
        params.MaxNotificationsPerPublish = 0  # no limit
        params.PublishingEnabled = True
        params.Priority = 0
        # Created directly (not client.create_subscription) to learn the granted terms, and so
        # asyncua neither modifies it afterwards nor watches it with a watchdog of its own.
        sub = Subscription(client.uaclient.session, params, _Handler(self))
        try:
            result = await sub.init()
        except UaStatusCodeError as exc:
            log.warning(
                "device %r: server refused a subscription (%s); polling every poll interval instead",
                d.name,
                exc,
            )
            self.mode = "poll"
            return
        terms = granted_terms(asked, result)
        sub.parameters.RequestedPublishingInterval = terms.publishing_interval * 1000  # asyncua's own view
        sub.parameters.RequestedMaxKeepAliveCount = terms.keepalive_count
        sub.parameters.RequestedLifetimeCount = terms.lifetime_count
        self.terms = terms
        self.tag_by_handle = {}
        requests = []
        for handle, (tag, node) in enumerate(self._nodes, start=1):
            band = tag.data_change_deadband if tag.data_change_deadband is not None else d.data_change_deadband
            requests.append(_monitor_request(node.nodeid, handle, band))
            self.tag_by_handle[handle] = tag
        results = await sub.create_monitored_items(requests) if requests else []
        for (handle, tag), outcome in zip(list(self.tag_by_handle.items()), results, strict=True):
            if isinstance(outcome, ua.StatusCode):  # refused item: its per-item status says why
                del self.tag_by_handle[handle]
                self._missing(tag, outcome.value)
        self._sub = sub
        self._sub_started = time.monotonic()

    async def close(self) -> None:
        """Drop the session (safe when not connected; never waits long on a dead server)."""
        client, self._client = self._client, None
        self._sub = None
        self.terms = None
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
            values = unresolved
            for (tag, _), dv in zip(self._nodes, dvs, strict=True):
                status = status_of(dv)
                self.statuses[tag.name] = status_name(status)
                if status & 0xFFFF0000 in _MISSING:
                    self._log_missing(tag, status)
                values.append(tag_value(tag, dv))
            return values
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
