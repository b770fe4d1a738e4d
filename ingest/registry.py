"""A cache of the asset registry (gateways, devices) for validation, filled on demand.

Keys are looked up the first time they are needed, so a device registered a
second ago is found; a key that is still unknown is asked for again at most once
per ``retry_s`` so a flood of points from an unregistered device does not become a
flood of queries. Positive entries are dropped every ``max_age_s`` so renamed or
re-homed gateways and devices are picked up without a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import psycopg

from ingest.validate import GatewayRef


class RegistryCache:
    """A :class:`ingest.validate.RegistryView` backed by PostgreSQL. Owned by one thread."""

    def __init__(
        self, *, retry_s: float = 1.0, max_age_s: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._retry_s = retry_s
        self._max_age_s = max_age_s
        self._clock = clock
        self._gateways: dict[str, GatewayRef] = {}
        self._devices: dict[tuple[int, str], int] = {}
        self._asked: dict[tuple, float] = {}  # missing key -> when it was last looked up
        self._born = clock()

    def gateway(self, slug: str) -> GatewayRef | None:
        return self._gateways.get(slug)

    def device(self, gateway_id: int, key: str) -> int | None:
        return self._devices.get((gateway_id, key))

    def learn(self, gateway_id: int, key: str, device_id: int) -> None:
        """Remember a device registered by ingest itself (a discovered device accepted in a write)."""
        self._devices[(gateway_id, key)] = device_id
        self._asked.pop(("d", gateway_id, key), None)

    def clear(self) -> None:
        """Forget everything (e.g. after a write failed in a way stale entries could explain)."""
        self._gateways.clear()
        self._devices.clear()
        self._asked.clear()
        self._born = self._clock()

    def expire(self) -> None:
        """Drop every entry once they are older than ``max_age_s``."""
        if self._clock() - self._born > self._max_age_s:
            self.clear()

    def _due(self, keys: Iterable[tuple]) -> list[tuple]:
        """The keys not looked up within ``retry_s``, marked as looked up now."""
        now = self._clock()
        due = [k for k in keys if now - self._asked.get(k, -1e18) >= self._retry_s]
        for k in due:
            self._asked[k] = now
        return due

    def lookup(
        self, conn: psycopg.Connection, gateways: Iterable[str] = (), devices: Iterable[tuple[int, str]] = ()
    ) -> bool:
        """Look up the given missing keys (those not asked for recently); True if any was found."""
        found = False
        slugs = [k[1] for k in self._due(("g", s) for s in gateways if s not in self._gateways)]
        if slugs:
            rows = conn.execute(
                "SELECT g.slug, g.id, s.slug FROM gateways g JOIN sites s ON s.id = g.site_id WHERE g.slug = ANY(%s)",
                (slugs,),
            ).fetchall()
            for slug, gid, site in rows:
                self._gateways[slug] = GatewayRef(gid, site)
                self._asked.pop(("g", slug), None)
                found = True
        keys = [(k[1], k[2]) for k in self._due(("d", *d) for d in devices if d not in self._devices)]
        if keys:
            rows = conn.execute(
                """SELECT d.gateway_id, d.key, d.id FROM devices d
                   JOIN unnest(%s::int[], %s::text[]) AS w(gateway_id, key)
                     ON d.gateway_id = w.gateway_id AND d.key = w.key""",
                ([k[0] for k in keys], [k[1] for k in keys]),
            ).fetchall()
            for gid, key, did in rows:
                self._devices[(gid, key)] = did
                self._asked.pop(("d", gid, key), None)
                found = True
        return found
