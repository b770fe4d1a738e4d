"""Registering a gateway at a site and storing its MQTT credentials (the hash, never the password).

The application (``fieldwatch gateway provision``) makes the password, hashes it and writes the
broker's files; this module owns the rows: the gateway in ``gateways`` and its login in
``gateway_credentials``, with the Sparkplug B node it may publish as, if any. Both are written in
one transaction, so a refusal leaves nothing. Refusals are :mod:`fwcore.errors` (the command line
reports their message).

The registry is the one source of the broker's password and ACL files: :func:`gateway_logins`
lists every login with its grants, and the application regenerates the files whole from it after
each change (provision, revoke, a Sparkplug node set or cleared).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import psycopg
from psycopg import errors as pg_errors

from fwcore.contract import check_slug
from fwcore.errors import Conflict, Invalid, NotFound

#: ``register_gateway(..., sparkplug=KEEP)``: leave the gateway's Sparkplug node as registered.
KEEP: Literal["keep"] = "keep"

#: Arbitrary, fixed: the advisory lock held while the logins and the broker's files change ("fwbr").
BROKER_FILES_LOCK = 0x66776272

#: A Sparkplug B node: (group id, edge node id).
SparkplugNode = tuple[str, str]


@dataclass(frozen=True, slots=True)
class GatewayLogin:
    """One gateway's broker login and grants, as the registry holds them."""

    site: str
    gateway: str
    username: str
    password_hash: str
    #: ``fw/v1/{site}/{gateway}/``: everything the gateway may publish and read there.
    topic_prefix: str
    #: The Sparkplug B node it publishes as (``spBv1.0/{group}/…/{node}``), or None.
    sparkplug: SparkplugNode | None = None


def check_sparkplug_node(node: SparkplugNode) -> SparkplugNode:
    """A Sparkplug node whose ids can stand in a topic level and in an ACL line (slugs), else ``Invalid``."""
    try:
        return check_slug(node[0], "Sparkplug group id"), check_slug(node[1], "Sparkplug edge node id")
    except ValueError as exc:
        raise Invalid(str(exc), ("sparkplug",)) from None


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
    sparkplug: SparkplugNode | Literal["keep"] | None = KEEP,
) -> Registration:
    """Register ``gateway`` at ``site`` (slugs) with these credentials, or replace its credentials.

    The site must exist; the gateway slug must be free or already belong to that site (then
    provisioning again rotates its credentials). A new gateway is named ``name`` (or its slug).
    ``sparkplug``: the Sparkplug node it publishes as, None for none, :data:`KEEP` to leave it.
    """
    if sparkplug is not None and sparkplug != KEEP:
        sparkplug = check_sparkplug_node(sparkplug)
    with conn.transaction():
        row = conn.execute("SELECT id FROM sites WHERE slug = %s", (site,)).fetchone()
        if row is None:
            raise Invalid(
                f"site {site!r} does not exist; create it first: `fieldwatch fleet sites add {site} --client CLIENT "
                "--name NAME --lat LAT --lon LON` (or `fieldwatch fleet import FILE`)",
                ("site",),
            )
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
        if sparkplug != KEEP:
            _set_sparkplug(conn, gw_id, gateway, sparkplug)
    return Registration(gateway_id=gw_id, rotated=bool(issued[0]))


def set_sparkplug(conn: psycopg.Connection, site: str, gateway: str, node: SparkplugNode | None) -> None:
    """Record the Sparkplug node a provisioned gateway publishes as (None: it publishes none).

    Its password is unchanged; the broker's ACL must be regenerated afterwards.
    """
    if node is not None:
        node = check_sparkplug_node(node)
    with conn.transaction():
        gw_id = _provisioned(conn, site, gateway)
        _set_sparkplug(conn, gw_id, gateway, node)


def revoke_gateway(conn: psycopg.Connection, site: str, gateway: str) -> GatewayLogin | None:
    """Delete the gateway's broker login; the login it had, or None if it had none (already revoked).

    The gateway itself stays (its telemetry, devices and history refer to it): provisioning it
    again issues a new login. The broker's files must be regenerated and the broker reloaded.
    """
    with conn.transaction():
        row = conn.execute(
            "SELECT g.id FROM gateways g JOIN sites s ON s.id = g.site_id WHERE s.slug = %s AND g.slug = %s",
            (site, gateway),
        ).fetchone()
        if row is None:
            raise NotFound("gateway", f"{gateway!r} at site {site!r}")
        gone = conn.execute(
            """DELETE FROM gateway_credentials WHERE gateway_id = %s
               RETURNING mqtt_username, password_hash, topic_prefix, sparkplug_group, sparkplug_node""",
            (row[0],),
        ).fetchone()
    if gone is None:
        return None
    return GatewayLogin(site, gateway, gone[0], gone[1], gone[2], (gone[3], gone[4]) if gone[3] is not None else None)


def gateway_logins(conn: psycopg.Connection) -> list[GatewayLogin]:
    """Every gateway's broker login with its grants, by username: what the broker's files hold."""
    rows = conn.execute(
        """SELECT s.slug, g.slug, c.mqtt_username, c.password_hash, c.topic_prefix, c.sparkplug_group, c.sparkplug_node
           FROM gateway_credentials c JOIN gateways g ON g.id = c.gateway_id JOIN sites s ON s.id = g.site_id
           ORDER BY c.mqtt_username"""
    ).fetchall()
    return [GatewayLogin(r[0], r[1], r[2], r[3], r[4], (r[5], r[6]) if r[5] is not None else None) for r in rows]


def _provisioned(conn: psycopg.Connection, site: str, gateway: str) -> int:
    """The id of a gateway at ``site`` that has a broker login, else ``Invalid`` saying what to do."""
    row = conn.execute(
        """SELECT g.id FROM gateways g JOIN sites s ON s.id = g.site_id
           JOIN gateway_credentials c ON c.gateway_id = g.id WHERE s.slug = %s AND g.slug = %s""",
        (site, gateway),
    ).fetchone()
    if row is None:
        raise Invalid(f"gateway {gateway!r} at site {site!r} has no broker login; provision it first", ("gateway",))
    return int(row[0])


def _set_sparkplug(conn: psycopg.Connection, gw_id: int, gateway: str, node: SparkplugNode | None) -> None:
    group, edge = node if node is not None else (None, None)
    owner = conn.execute(
        """SELECT g.slug FROM gateway_credentials c JOIN gateways g ON g.id = c.gateway_id
           WHERE c.sparkplug_group = %s AND c.sparkplug_node = %s AND c.gateway_id <> %s""",
        (group, edge, gw_id),
    ).fetchone()
    if owner is not None:
        raise Conflict(
            f"Sparkplug node {group}/{edge} already belongs to gateway {owner[0]!r}; "
            f"give gateway {gateway!r} another group or edge node id"
        )
    try:
        with conn.transaction():
            conn.execute(
                "UPDATE gateway_credentials SET sparkplug_group = %s, sparkplug_node = %s WHERE gateway_id = %s",
                (group, edge, gw_id),
            )
    except pg_errors.UniqueViolation:  # another gateway took it between the check and the update
        raise Conflict(f"Sparkplug node {group}/{edge} already belongs to another gateway") from None


@contextmanager
def broker_files_lock(conn: psycopg.Connection) -> Iterator[None]:
    """Hold the session advisory lock under which logins change and the broker's files are regenerated.

    Two provisioning commands at once would otherwise read the same file, each add their gateway,
    and the second write would drop the first one's. ``conn`` must be in autocommit mode.
    """
    conn.execute("SELECT pg_advisory_lock(%s)", (BROKER_FILES_LOCK,))
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (BROKER_FILES_LOCK,))
