"""Pushing a configuration to a gateway, the same way from the API and the console.

Three steps, each a domain's: :func:`gateway.remote_config.check_push` validates the document with
the gateway's own rules (against the last pushed one, so a field that needs a restart cannot
change); :func:`preview` shows it as a unified diff of the last pushed document; :func:`push`
records it (:func:`ingest.config_push.record_push`) and publishes it retained
(:func:`ingest.config_push.send`). A document that does not validate raises :class:`Invalid` and
changes nothing; a broker that does not take it raises :class:`BrokerDown` and records nothing.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import psycopg

from fwcore.errors import Invalid, NotFound
from fwcore.settings import Settings
from ingest.config_push import GatewayRef, PushedConfig, gateway_ref, last_pushed, record_push, send
from ingest.errors import BrokerUnavailable

#: Largest document accepted from a person (``gateway.remote_config.MAX_PUSH_BYTES`` checks it again).
MAX_DOCUMENT = 256 * 1024


class BrokerDown(RuntimeError):
    """The broker did not take the config; nothing was recorded: push it again when the broker is back."""


@dataclass(frozen=True, slots=True)
class Preview:
    """A validated config: its version and the unified diff against the last pushed document."""

    gateway: GatewayRef
    version: str
    diff: str  # empty: the same text as the last push
    previous_version: str | None


def _gateway(conn: psycopg.Connection, gateway_id: int) -> GatewayRef:
    gw = gateway_ref(conn, gateway_id)
    if gw is None:
        raise NotFound("gateway", gateway_id)
    return gw


def preview(conn: psycopg.Connection, gateway_id: int, document: str) -> Preview:
    """Validate ``document`` for the gateway and diff it against the last push; raises :class:`Invalid`."""
    # Imported here: the gateway package brings its drivers (pymodbus, asyncua), which a server only
    # needs when someone pushes a config.
    from gateway.remote_config import RemoteConfigRejected, check_push

    gw = _gateway(conn, gateway_id)
    before = last_pushed(conn, gateway_id)
    try:
        cfg = check_push(document, site=gw.site, gateway=gw.slug, previous=before.document if before else None)
    except RemoteConfigRejected as exc:
        raise Invalid(str(exc), loc=("body", "document")) from None
    old = before.document if before else ""
    diff = "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            document.splitlines(keepends=True),
            fromfile=f"pushed {before.version}" if before else "nothing pushed yet",
            tofile=f"new {cfg.config_version}",
        )
    )
    return Preview(gw, str(cfg.config_version), diff, before.version if before else None)


def push(conn: psycopg.Connection, settings: Settings, gateway_id: int, document: str, by: str) -> PushedConfig:
    """Validate, record and publish ``document``; raises :class:`Invalid`, :class:`NotFound` or :class:`BrokerDown`."""
    seen = preview(conn, gateway_id, document)

    def publish() -> None:
        send(settings.mqtt_url, seen.gateway, document, protocol=settings.mqtt_protocol, tls_files=settings.mqtt_tls)

    try:
        return record_push(conn, gateway_id, seen.version, document, by, then=publish)
    except BrokerUnavailable as exc:
        raise BrokerDown(f"config {seen.version} was not sent: {exc}. Nothing changed; push it again") from exc
