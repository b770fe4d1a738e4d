"""Pushing a configuration to a gateway: record it, then publish it retained on ``…/config``.

The server is the sender of ``fw/v1/{site}/{gateway}/config`` (docs/contract.md, "Config payload").
A push is recorded (``gateway_configs``: the document, its version, who and when, with a
``gateway_config`` event ``pushed``) in a transaction that commits only once the broker confirmed
the retained QoS 1 publish, so a gateway that is offline gets it when it reconnects, and a push the
broker never took leaves no record. The gateway answers in its status (``config.last``), which ingest
stores (:mod:`ingest.gateway_report`); the console shows that answer as it arrives.

Validation is the gateway's own (:func:`gateway.remote_config.check_push`), made by the caller
before :func:`push`: this module does not import the gateway package (domains stay apart).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from fwcore.contract import topic
from fwcore.events import GatewayConfigEvent, publish
from fwcore.settings import mqtt_parts
from fwcore.tls import TlsFiles, mqtt_tls_context
from ingest.errors import BrokerUnavailable


@dataclass(frozen=True, slots=True)
class PushedConfig:
    id: int
    gateway_id: int
    version: str
    document: str
    pushed_by: str
    pushed_at: datetime


@dataclass(frozen=True, slots=True)
class GatewayRef:
    id: int
    slug: str
    site: str


def gateway_ref(conn: psycopg.Connection, gateway_id: int) -> GatewayRef | None:
    """The gateway's slug and site slug (what its topics are named by), or None."""
    row = conn.execute(
        "SELECT g.id, g.slug, s.slug FROM gateways g JOIN sites s ON s.id = g.site_id WHERE g.id = %s", (gateway_id,)
    ).fetchone()
    return GatewayRef(*row) if row else None


def last_pushed(conn: psycopg.Connection, gateway_id: int) -> PushedConfig | None:
    """The newest config pushed to the gateway, or None."""
    row = conn.execute(
        """SELECT id, gateway_id, version, document, pushed_by, pushed_at FROM gateway_configs
           WHERE gateway_id = %s ORDER BY id DESC LIMIT 1""",
        (gateway_id,),
    ).fetchone()
    return PushedConfig(*row) if row else None


def record_push(
    conn: psycopg.Connection, gateway_id: int, version: str, document: str, by: str, then: Callable[[], None]
) -> PushedConfig:
    """Store a validated config as pushed, announce it, and call ``then`` (the publish) before committing:
    if ``then`` raises, nothing is recorded."""
    with conn.transaction():
        row = conn.execute(
            """INSERT INTO gateway_configs (gateway_id, version, document, pushed_by) VALUES (%s, %s, %s, %s)
               RETURNING id, gateway_id, version, document, pushed_by, pushed_at""",
            (gateway_id, version, document, by),
        ).fetchone()
        assert row is not None  # INSERT … RETURNING of one row
        publish(conn, GatewayConfigEvent(gateway_id=gateway_id, version=version, outcome="pushed"))
        then()
    return PushedConfig(*row)


def send(
    mqtt_url: str,
    gw: GatewayRef,
    document: str,
    *,
    protocol: str = "5",
    tls_files: TlsFiles | None = None,
    timeout: float = 10.0,
) -> None:
    """Publish ``document`` retained at QoS 1 on the gateway's config topic; raises :class:`BrokerUnavailable`."""
    parts = mqtt_parts(mqtt_url)
    if protocol == "5":
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    else:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311, clean_session=True)
    if parts["username"]:
        client.username_pw_set(parts["username"], parts["password"])
    context = mqtt_tls_context(mqtt_url, tls_files)
    if context is not None:
        client.tls_set_context(context)
    connected = threading.Event()
    answer: list[object] = []

    def on_connect(_c: object, _u: object, _f: object, reason: object, _p: object = None) -> None:
        answer.append(reason)
        connected.set()

    client.on_connect = on_connect
    where = f"{parts['host']}:{parts['port']}"
    try:
        client.connect(parts["host"], parts["port"], keepalive=30)
        client.loop_start()
        if not connected.wait(timeout):
            raise BrokerUnavailable(f"the broker at {where} did not accept a connection within {timeout:g} s")
        if getattr(answer[0], "is_failure", False):
            raise BrokerUnavailable(
                f"the broker at {where} refused the server's login ({answer[0]}): check FIELDWATCH_MQTT_URL"
            )
        info = client.publish(topic(gw.site, gw.slug, "config"), document.encode("utf-8"), qos=1, retain=True)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise BrokerUnavailable(f"the broker at {where} did not confirm the config within {timeout:g} s")
    except BrokerUnavailable:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        raise BrokerUnavailable(f"cannot publish the config to the broker at {where}: {exc}") from exc
    finally:
        client.loop_stop()
        client.disconnect()
