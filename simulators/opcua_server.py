"""OPC-UA server exposing simulated equipment (pump, chiller, compressor models), one object per device.

Address space (namespace ``urn:fieldwatch:sim``, index 2 on a fresh server)::

    Objects/
      2:pump-1/                       object, NodeId ns=2;s=pump-1
        2:flow, 2:discharge_pressure, 2:motor_current, 2:bearing_temp, 2:vibration   Double
        2:status                      UInt16 (the model's status word)
        2:run_hours                   Double
        2:starts                      UInt32 (chiller and compressor)
        2:fault_rate                  Double, writable: > 0 starts the model's fault at that rate, 0 clears it
        2:InjectFault(kind, rate)     method; 2:ClearFault() method
        2:SetFault(kind, tag, a, b)   method: a generic fault (simulators.faults): drift (a = rate),
                                      spike (a = probability, b = magnitude), stuck, step
                                      (a = magnitude), variance (a = sigma), decouple, comms_loss
        2:ClearFaults()               method: clears every generic fault of the object
      2:types/                        with ``types=True``: one variable per OPC-UA type
                                      (simulators.typetest.OPCUA_VALUES)

A chiller object has the chiller's measurements (``chw_supply_temp`` …), a
compressor object the compressor's (``loaded`` is a Boolean). Variables have
string NodeIds ``ns=2;s=<device>.<measurement>`` so configs can use node ids or
browse paths (``2:pump-1/2:flow``). Values carry the model time as their source
timestamp.

Generic faults per object (:attr:`EquipmentOpcUaServer.faults`): drift, spike
and stuck change values; ``comms_loss`` turns the object's variables
``BadNoCommunication`` and freezes them, as an aggregating server does when
its field device is gone. Faults about the *server* are Python methods for
tests: :meth:`EquipmentOpcUaServer.set_status` (a variable turns Bad/Uncertain),
:meth:`EquipmentOpcUaServer.drop_subscriptions` (the server forgets every
subscription: a client's subscription goes silent), ``max_subscriptions=0``
(a server that refuses subscriptions, so clients must poll) and
:meth:`stop`/:meth:`start` on the same port (a server restart, or the whole
server unplugged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

from asyncua import Node, Server, ua
from asyncua.common.methods import uamethod
from asyncua.crypto import uacrypto
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from simulators.faults import SENSOR_FAULTS, FaultSet, apply_fault
from simulators.pump import MEASUREMENTS

NAMESPACE = "urn:fieldwatch:sim"
#: Variables of a pump object, in address-space order.
VARIABLES = (*MEASUREMENTS, "status", "run_hours", "fault_rate")


def variables_of(model: Any) -> tuple[str, ...]:
    """The variables of a model's object: its measurements, status, counters, fault_rate."""
    counters = ("run_hours", "starts") if hasattr(model, "starts") else ("run_hours",)
    return (*model.measurements, "status", *counters, "fault_rate")


def _variant_type(var: str) -> ua.VariantType:
    return {"status": ua.VariantType.UInt16, "starts": ua.VariantType.UInt32, "loaded": ua.VariantType.Boolean}.get(
        var, ua.VariantType.Double
    )


def _variant(var: str, value: float) -> ua.Variant:
    vtype = _variant_type(var)
    if vtype == ua.VariantType.Boolean:
        return ua.Variant(bool(value), vtype)
    if vtype in (ua.VariantType.UInt16, ua.VariantType.UInt32):
        return ua.Variant(max(0, int(value)), vtype)
    return ua.Variant(float(value), vtype)


def _status(code: int) -> ua.StatusCode:
    """A StatusCode of ``code`` (asyncua types its value as its ``ua.UInt32`` int subclass)."""
    return ua.StatusCode(ua.UInt32(code))


log = logging.getLogger(__name__)

_POLICIES = {
    "None": "NoSecurity",
    "Basic256Sha256_Sign": "Basic256Sha256_Sign",
    "Basic256Sha256_SignAndEncrypt": "Basic256Sha256_SignAndEncrypt",
}


class _UserManager(UserManager):
    """Accepts only the configured username/password pairs or user certificates (no anonymous)."""

    def __init__(self, users: dict[str, str], fingerprints: set[bytes]) -> None:
        self.users = users
        self.fingerprints = fingerprints

    def get_user(
        self, iserver: object, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        if certificate is not None:
            cert = (
                certificate
                if isinstance(certificate, x509.Certificate)
                else x509.load_der_x509_certificate(certificate)
            )
            if cert.fingerprint(hashes.SHA256()) in self.fingerprints:
                return User(role=UserRole.User, name="certificate")
        return None


class EquipmentOpcUaServer:
    """An asyncua server stepping one model (pump, chiller, compressor) per device every ``update_interval`` s."""

    def __init__(
        self,
        host: str,
        port: int,
        devices: dict[str, Any],
        *,
        faults: dict[str, FaultSet] | None = None,
        types: bool = False,
        update_interval: float = 0.1,
        max_subscriptions: int = 100,
        security: Sequence[str] = ("None",),
        certificate: Path | None = None,
        private_key: Path | None = None,
        users: dict[str, str] | None = None,
        user_certificates: Sequence[Path] = (),
    ) -> None:
        """``security``: any of "None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt" (these
        need ``certificate``/``private_key``). With ``users`` or ``user_certificates`` anonymous
        sessions are refused and only those usernames/passwords or certificates are accepted."""
        self.host = host
        self.port = port
        self.devices = devices
        #: Generic faults per object name (see :mod:`simulators.faults`).
        self.faults: dict[str, FaultSet] = {n: FaultSet(seed=i) for i, n in enumerate(devices)} | (faults or {})
        self.types = types
        self.update_interval = update_interval
        self.max_subscriptions = max_subscriptions
        self.security = tuple(security)
        self.certificate = certificate
        self.private_key = private_key
        self.users = users
        self.user_certificates = tuple(user_certificates)
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._vars: dict[tuple[str, str], Node] = {}
        self._status: dict[tuple[str, str], ua.StatusCode] = {}
        self._rates: dict[str, float] = {}
        self.ns = 2

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}"

    async def start(self) -> None:
        """Build the address space and listen (again, after :meth:`stop`)."""
        restricted = self.users is not None or bool(self.user_certificates)
        manager = _UserManager(self.users or {}, await self._fingerprints()) if restricted else None
        server = Server(user_manager=manager)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("fieldwatch equipment simulator")
        await server.set_application_uri("urn:fieldwatch:sim:server")
        server.set_security_policy([getattr(ua.SecurityPolicyType, _POLICIES[p]) for p in self.security])
        if self.certificate is not None and self.private_key is not None:
            await server.load_certificate(str(self.certificate))
            await server.load_private_key(str(self.private_key))
        if restricted:
            tokens: list[type] = [ua.UserNameIdentityToken] if self.users else []
            if self.user_certificates:
                tokens.append(ua.X509IdentityToken)
            server.set_identity_tokens(tokens)
        server.iserver.max_subscriptions = self.max_subscriptions
        self.ns = await server.register_namespace(NAMESPACE)
        self._vars.clear()
        for name, model in self.devices.items():
            obj = await server.nodes.objects.add_object(self._node_id(name), ua.QualifiedName(name, self.ns))
            for var in variables_of(model):
                node = await obj.add_variable(
                    self._node_id(f"{name}.{var}"), ua.QualifiedName(var, self.ns), _variant(var, 0.0)
                )
                if var == "fault_rate":
                    await node.set_writable()
                self._vars[(name, var)] = node
            methods: tuple[tuple[str, Callable[..., Any], list[ua.VariantType]], ...] = (
                ("InjectFault", self._inject_method(model), [ua.VariantType.String, ua.VariantType.Double]),
                ("ClearFault", self._clear_method(model), []),
                ("SetFault", self._set_fault_method(name), [ua.VariantType.String, ua.VariantType.String]
                 + [ua.VariantType.Double] * 2),
                ("ClearFaults", self._clear_faults_method(name), []),
            )  # fmt: skip
            for method, func, args in methods:
                await obj.add_method(
                    self._node_id(f"{name}.{method}"), ua.QualifiedName(method, self.ns), func, args, []
                )
        if self.types:
            from simulators.typetest import OPCUA_VALUES

            obj = await server.nodes.objects.add_object(self._node_id("types"), ua.QualifiedName("types", self.ns))
            for var, vtype, value in OPCUA_VALUES:
                await obj.add_variable(
                    self._node_id(f"types.{var}"), ua.QualifiedName(var, self.ns), ua.Variant(value, vtype)
                )
        await server.start()
        self._server = server
        await self._update()
        self._task = asyncio.create_task(self._run(), name=f"opcua-sim-{self.port}")

    async def _fingerprints(self) -> set[bytes]:
        out = set()
        for path in self.user_certificates:
            cert = await uacrypto.load_certificate(path)
            out.add(cert.fingerprint(hashes.SHA256()))
        return out

    def _node_id(self, name: str) -> ua.NodeId:
        """The string NodeId ``ns=<our namespace>;s=<name>``."""
        return ua.NodeId(ua.String(name), ua.Int16(self.ns))

    def _set_fault_method(self, name: str) -> Callable[..., Any]:
        @uamethod
        def set_fault(parent: ua.NodeId, kind: str, tag: str, a: float, b: float) -> None:
            params: dict[str, float | str] = {"tag": tag or "*"} if kind in SENSOR_FAULTS else {}
            params |= {
                "drift": {"rate": a},
                "spike": {"probability": a, "magnitude": b},
                "step": {"magnitude": a},
                "variance": {"sigma": a},
            }.get(kind, {})
            if kind not in (*SENSOR_FAULTS, "comms_loss"):
                raise ua.UaStatusCodeError(ua.StatusCodes.BadInvalidArgument)
            apply_fault(self.faults[name], kind, params)

        return set_fault

    def _clear_faults_method(self, name: str) -> Callable[..., Any]:
        @uamethod
        def clear_faults(parent: ua.NodeId) -> None:
            self.faults[name].clear()

        return clear_faults

    @staticmethod
    def _inject_method(model: Any) -> Callable[..., Any]:
        @uamethod
        def inject(parent: ua.NodeId, kind: str, rate: float) -> None:
            model.inject_fault(kind, rate)

        return inject

    @staticmethod
    def _clear_method(model: Any) -> Callable[..., Any]:
        @uamethod
        def clear(parent: ua.NodeId) -> None:
            model.clear_fault()

        return clear

    async def stop(self) -> None:
        """Stop the update loop and close the listening socket (clients see the connection drop)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    def set_status(self, device: str, var: str, status: int | None) -> None:
        """Publish ``var`` with this StatusCode from now on (``None``: Good again)."""
        if status is None:
            self._status.pop((device, var), None)
        else:
            self._status[(device, var)] = _status(status)

    async def drop_subscriptions(self) -> int:
        """Forget every subscription server-side, as a misbehaving server would; returns how many."""
        assert self._server is not None
        service = self._server.iserver.subscription_service
        ids = list(service.subscriptions)
        await service.delete_subscriptions(ids)
        return len(ids)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.update_interval)
            try:
                await self._update()
            except Exception:  # keep simulating: a test must see the server's faults, not ours
                log.exception("OPC-UA simulator update failed")

    async def _update(self) -> None:
        now = time.time()
        stamp = ua.DateTime.fromtimestamp(now, UTC)
        for name, model in self.devices.items():
            rate_node = self._vars[(name, "fault_rate")]
            rate_value = (await rate_node.read_data_value(raise_on_bad_status=False)).Value
            raw_rate = None if rate_value is None else rate_value.Value
            rate = model.fault_rate if raw_rate is None else float(raw_rate)
            if rate != self._rates.get(name, 0.0):  # a client wrote it
                model.inject_fault(model.faults[0], rate) if rate > 0 else model.clear_fault()
            reading = model.step(now)
            self._rates[name] = model.fault_rate
            faults = self.faults[name]
            if faults.comms_loss:  # the field device is gone: the last values go bad and stay
                for var in variables_of(model)[:-1]:  # not fault_rate: it is the simulator's control
                    node = self._vars[(name, var)]
                    dv = await node.read_data_value(raise_on_bad_status=False)
                    if dv.StatusCode is None or dv.StatusCode.is_good():
                        bad = _status(ua.StatusCodes.BadNoCommunication)
                        await node.write_value(ua.DataValue(dv.Value, StatusCode=bad, SourceTimestamp=stamp))
                continue
            values = faults.apply(now, {**reading, "status": model.status_word(reading), "run_hours": model.run_hours})
            if hasattr(model, "starts"):
                values["starts"] = model.starts
            values["fault_rate"] = model.fault_rate
            for var, value in values.items():
                status = self._status.get((name, var), _status(ua.StatusCodes.Good))
                dv = ua.DataValue(_variant(var, value), StatusCode=status, SourceTimestamp=stamp, ServerTimestamp=stamp)
                await self._vars[(name, var)].write_value(dv)


#: The pump-only name, kept for existing callers: any model works.
PumpOpcUaServer = EquipmentOpcUaServer
