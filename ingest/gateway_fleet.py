"""The gateway fleet as the people who look after it see it: one :class:`GatewayView` per gateway.

Everything ingest knows of a gateway in one read: its state and since when (births, deaths and the
heartbeat, :mod:`ingest.liveness`), when it was last heard, sequence gaps, the disk buffer of its
last health message, and its own report of devices, profile versions and the last remote config's
outcome (:mod:`ingest.gateway_report`), with the devices registered behind it. The console's
Gateways page reads this; so can any other reader that wants the whole picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row


@dataclass(frozen=True, slots=True)
class GatewayDevice:
    """A registered device read by the gateway; ``state`` is what the gateway last said of it (or the gateway's)."""

    id: int
    key: str
    name: str
    state: str  # online | offline | unknown
    profile: str | None


@dataclass(frozen=True, slots=True)
class ConfigOutcome:
    """What became of the last remote config the gateway received (``gateway.remote_config.ConfigOutcome``)."""

    version: str | None
    outcome: str  # applied | rejected | rolled_back
    error: str
    at: datetime | None
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class GatewayView:
    id: int
    slug: str
    name: str
    site: str
    site_name: str
    status: str  # unknown | online | offline
    status_at: datetime | None  # since when
    status_reason: str
    last_seen: datetime | None  # the newest of: status change, full status, health stored
    last_seq: int | None
    seq_gaps: int
    buffer_depth: int | None
    buffer_oldest_age_s: float | None
    config_version: str | None  # running, as the gateway reported
    last_config: ConfigOutcome | None
    pushed_version: str | None  # the newest config pushed from the server
    pushed_at: datetime | None
    devices: list[GatewayDevice]
    unregistered: list[str]  # devices the gateway reports that nobody registered


def _outcome(last: Any) -> ConfigOutcome | None:
    if not isinstance(last, dict) or "outcome" not in last:
        return None
    ts = last.get("ts")
    at = datetime.fromtimestamp(ts / 1000).astimezone() if isinstance(ts, int) else None
    return ConfigOutcome(
        last.get("version"),
        str(last["outcome"]),
        str(last.get("error") or ""),
        at,
        list(last.get("added") or []),
        list(last.get("removed") or []),
        list(last.get("changed") or []),
    )


def _device_state(gateway_status: str, said: dict[str, str], key: str) -> str:
    """A device is offline with its gateway; while the gateway is online, what the gateway said of it."""
    if gateway_status != "online":
        return "offline" if gateway_status == "offline" else "unknown"
    return said.get(key, "unknown")


def gateway_views(conn: psycopg.Connection, gateway_id: int | None = None) -> list[GatewayView]:
    """Every gateway (or the one ``gateway_id``), offline first, then by site and slug."""
    with conn.cursor(row_factory=dict_row) as cur:
        gateways = cur.execute(
            """SELECT g.id, g.slug, g.name, s.slug AS site, s.name AS site_name, g.status, g.status_at,
                      COALESCE(g.status_reason, '') AS status_reason, g.last_seq, g.seq_gaps,
                      g.buffer_depth, g.buffer_oldest_age_s, g.report,
                      GREATEST(g.status_at, g.report_at, g.health_at) AS last_seen,
                      p.version AS pushed_version, p.pushed_at
               FROM gateways g JOIN sites s ON s.id = g.site_id
               LEFT JOIN LATERAL (SELECT version, pushed_at FROM gateway_configs c WHERE c.gateway_id = g.id
                                  ORDER BY c.id DESC LIMIT 1) p ON true
               WHERE %(one)s::int IS NULL OR g.id = %(one)s
               ORDER BY g.status = 'offline' DESC, s.slug, g.slug""",
            {"one": gateway_id},
        ).fetchall()
        devices = cur.execute(
            """SELECT id, key, COALESCE(NULLIF(name, ''), key) AS name, gateway_id FROM devices
               WHERE gateway_id = ANY(%s) ORDER BY key""",
            ([g["id"] for g in gateways],),
        ).fetchall()
    by_gateway: dict[int, list[dict[str, Any]]] = {}
    for d in devices:
        by_gateway.setdefault(d["gateway_id"], []).append(d)
    views = []
    for g in gateways:
        report = g.pop("report") or {}
        said = report.get("devices") or {}
        profiles = report.get("profiles") or {}
        config = report.get("config") or {}
        registered = by_gateway.get(g["id"], [])

        views.append(
            GatewayView(
                **g,
                config_version=config.get("version"),
                last_config=_outcome(config.get("last")),
                devices=[
                    GatewayDevice(
                        d["id"], d["key"], d["name"], _device_state(g["status"], said, d["key"]), profiles.get(d["key"])
                    )
                    for d in registered
                ],
                unregistered=sorted(set(said) - {d["key"] for d in registered}),
            )
        )
    return views
