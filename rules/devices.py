"""The devices rules watch: their scope and binding facts, and resolving a device named by a user.

Live evaluation, no-data checks, anomaly scoring, backtests and silences all need the same facts
about a device (key, equipment model, site, client, attributes, parent), read the same way; this
module is that one place, below every other module of the package that reads devices.
"""

from __future__ import annotations

import psycopg

from fwcore.devices import resolve_device_ref
from fwcore.errors import DomainError
from rules.model import DeviceInfo

_DEVICE_SQL = """SELECT d.id, d.key, d.equipment_model, s.slug AS site, c.name AS client, d.attributes, d.parent_id,
                        g.slug AS gateway
                 FROM devices d JOIN sites s ON s.id = d.site_id JOIN clients c ON c.id = s.client_id
                 LEFT JOIN gateways g ON g.id = d.gateway_id
                 WHERE d.id = ANY(%s)"""
_COLUMNS = ("id", "key", "equipment_model", "site", "client", "attributes", "parent_id", "gateway")


class UnknownDevice(LookupError, ValueError):
    """A device reference names no device, or several; the message says how to write it."""


def load_devices(conn: psycopg.Connection, ids: list[int]) -> dict[int, DeviceInfo]:
    """Scope and binding facts of the devices ``ids`` (missing ids are simply absent)."""
    rows = conn.execute(_DEVICE_SQL, (ids,)).fetchall()
    return {r[0]: DeviceInfo(**dict(zip(_COLUMNS, r, strict=True))) for r in rows}


def resolve_device(conn: psycopg.Connection, ref: str | int) -> DeviceInfo:
    """A device by id, ``site/key``, ``gateway/key`` or a key unique in the fleet
    (:func:`fwcore.devices.resolve_device_ref`, the one resolver); :class:`UnknownDevice` saying how to write it."""
    try:
        device_id = resolve_device_ref(conn, ref)
    except DomainError as exc:
        raise UnknownDevice(str(exc)) from None
    return load_devices(conn, [device_id])[device_id]
