"""One way to name a device, everywhere a user names one: its numeric id, ``site-slug/key``,
``gateway-slug/key``, or a bare key when it is unique in the fleet.

History import, backtests, rule scopes, silences and the API all resolve a reference here, so a
reference that works in one place works in every other. Devices belong to ``ingest`` (which
writes them); every domain reads them, and the domains cannot import each other, so the one
resolver lives in the foundation they all share. A reference that names several devices (a key at
two sites, or a slug that is both a site and a gateway naming two devices) is refused with the
ways to write it unambiguously.
"""

from __future__ import annotations

import psycopg

from fwcore.errors import Invalid, NotFound

#: How a device may be written, for help texts and messages.
DEVICE_REF_HELP = "device id, SITE/KEY, GATEWAY/KEY, or a KEY unique in the fleet"


class UnknownDeviceRef(NotFound):
    """The reference names no device."""

    def __init__(self, ref: str) -> None:
        Exception.__init__(self, f"no device {ref!r}; write it as {DEVICE_REF_HELP} (`fieldwatch fleet devices list`)")
        self.what, self.ident = "device", ref


class AmbiguousDeviceRef(Invalid):
    """The reference names several devices."""

    loc = ("query", "device")


def resolve_device_ref(conn: psycopg.Connection, ref: str | int) -> int:
    """The id of the one device ``ref`` names (see the module docstring).

    :class:`UnknownDeviceRef` (a :class:`~fwcore.errors.NotFound`) if none, :class:`AmbiguousDeviceRef`
    (an :class:`~fwcore.errors.Invalid`) listing the candidates as ``site/key`` if several.
    """
    text = str(ref).strip()
    if text.isascii() and text.isdigit():
        if len(text) > 18:  # beyond bigint: no such id (and PostgreSQL would refuse the number)
            raise UnknownDeviceRef(text)
        row = conn.execute("SELECT id FROM devices WHERE id = %s", (int(text),)).fetchone()
        if row is None:
            raise UnknownDeviceRef(text)
        return int(row[0])
    prefix, slash, key = text.rpartition("/")
    rows = conn.execute(
        """SELECT DISTINCT d.id, s.slug, d.key, g.slug
           FROM devices d JOIN sites s ON s.id = d.site_id LEFT JOIN gateways g ON g.id = d.gateway_id
           WHERE d.key = %(key)s AND (NOT %(qualified)s OR s.slug = %(prefix)s OR g.slug = %(prefix)s)
           ORDER BY d.id""",
        {"key": key, "qualified": bool(slash), "prefix": prefix},
    ).fetchall()
    if not rows:
        raise UnknownDeviceRef(text)
    if len(rows) > 1:
        names = ", ".join(f"{site}/{k} (id {i})" for i, site, k, _ in rows)
        raise AmbiguousDeviceRef(f"device {text!r} is ambiguous: it names {names}; write SITE/KEY or the id")
    return int(rows[0][0])
