"""The devices rules watch: their scope and binding facts, and resolving a device named by a user.

Live evaluation, no-data checks, anomaly scoring, backtests and silences all need the same facts
about a device (key, equipment model, site, client, attributes, parent), read the same way; this
module is that one place, below every other module of the package that reads devices.
"""

from __future__ import annotations

import psycopg

from rules.model import DeviceInfo

_DEVICE_SQL = """SELECT d.id, d.key, d.equipment_model, s.slug AS site, c.name AS client, d.attributes, d.parent_id
                 FROM devices d JOIN sites s ON s.id = d.site_id JOIN clients c ON c.id = s.client_id
                 WHERE d.id = ANY(%s)"""
_COLUMNS = ("id", "key", "equipment_model", "site", "client", "attributes", "parent_id")


class UnknownDevice(LookupError, ValueError):
    """A device reference names no device, or several; the message says how to write it."""


def load_devices(conn: psycopg.Connection, ids: list[int]) -> dict[int, DeviceInfo]:
    """Scope and binding facts of the devices ``ids`` (missing ids are simply absent)."""
    rows = conn.execute(_DEVICE_SQL, (ids,)).fetchall()
    return {r[0]: DeviceInfo(**dict(zip(_COLUMNS, r, strict=True))) for r in rows}


def resolve_device(conn: psycopg.Connection, ref: str | int) -> DeviceInfo:
    """A device by id, key or ``site-slug/key``; ambiguous keys must be qualified by site."""
    ref = str(ref)
    if ref.isdigit():
        ids = [int(ref)]
    else:
        site, _, key = ref.rpartition("/")
        rows = conn.execute(
            "SELECT d.id FROM devices d JOIN sites s ON s.id = d.site_id WHERE d.key = %s AND (%s = '' OR s.slug = %s)",
            (key, site, site),
        ).fetchall()
        if len(rows) > 1:
            raise UnknownDevice(f"device key {key!r} exists at several sites; write it as SITE/{key}")
        ids = [r[0] for r in rows]
    found = load_devices(conn, ids)
    if not found:
        raise UnknownDevice(f"no device {ref!r}; `fieldwatch` API GET /api/v1/devices lists them")
    return next(iter(found.values()))
