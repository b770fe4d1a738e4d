"""Registering a gateway at a site and storing its MQTT credentials (the hash, never the password).

The application (``fieldwatch gateway provision``) makes the password, hashes it and writes the
broker's files; this module owns the rows: the gateway in ``gateways`` and its login in
``gateway_credentials``. Both are written in one transaction, so a refusal leaves nothing.
Refusals are :mod:`fwcore.errors` (the command line reports their message).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from fwcore.errors import Conflict, Invalid


@dataclass(frozen=True, slots=True)
class Registration:
    """The gateway's row id, and whether its credentials replaced earlier ones (a rotation)."""

    gateway_id: int
    rotated: bool


def register_gateway(
    conn: psycopg.Connection,
    site: str,
    gateway: str,
    *,
    name: str,
    mqtt_username: str,
    password_hash: str,
    topic_prefix: str,
) -> Registration:
    """Register ``gateway`` at ``site`` (slugs) with these credentials, or replace its credentials.

    The site must exist; the gateway slug must be free or already belong to that site (then
    provisioning again rotates its credentials). A new gateway is named ``name`` (or its slug).
    """
    with conn.transaction():
        row = conn.execute("SELECT id FROM sites WHERE slug = %s", (site,)).fetchone()
        if row is None:
            raise Invalid(f"site {site!r} does not exist; create it first (API POST /sites or the seed)", ("site",))
        site_id = row[0]
        existing = conn.execute("SELECT id, site_id FROM gateways WHERE slug = %s", (gateway,)).fetchone()
        if existing is not None and existing[1] != site_id:
            raise Conflict(f"gateway {gateway!r} already belongs to another site; pick another name")
        if existing is None:
            created = conn.execute(
                "INSERT INTO gateways (site_id, slug, name) VALUES (%s, %s, %s) RETURNING id",
                (site_id, gateway, name or gateway),
            ).fetchone()
            assert created is not None
            gw_id = created[0]
        else:
            gw_id = existing[0]
        issued = conn.execute(
            """INSERT INTO gateway_credentials (gateway_id, mqtt_username, password_hash, topic_prefix)
               VALUES (%s, %s, %s, %s)
               ON CONFLICT (gateway_id) DO UPDATE
               SET mqtt_username = EXCLUDED.mqtt_username, password_hash = EXCLUDED.password_hash,
                   topic_prefix = EXCLUDED.topic_prefix, issued_at = now()
               RETURNING (xmax <> 0)""",
            (gw_id, mqtt_username, password_hash, topic_prefix),
        ).fetchone()
        assert issued is not None
    return Registration(gateway_id=gw_id, rotated=bool(issued[0]))
