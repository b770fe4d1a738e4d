"""TLS on the gateway's broker connection, and why a TLS connection attempt failed, said once.

Both publishers (:class:`gateway.publisher.MqttPublisher` and
:class:`gateway.sparkplug.SparkplugNode`) connect in paho's own thread and let paho retry for
ever; paho reports a failed attempt only at DEBUG, so a gateway trusting the wrong CA would sit
offline with nothing in its log. :class:`ConnectFailures` is paho's ``on_connect_fail`` hook:
paho calls it inside its ``except OSError`` block, so the exception is still at hand, and a TLS
failure is logged at ERROR with what to fix, once until a connection succeeds (other failures,
such as a broker that is down, stay as quiet as before).
"""

from __future__ import annotations

import logging
import sys

import paho.mqtt.client as mqtt

from fwcore.tls import TlsFiles, explain_handshake_failure, mqtt_tls_context

log = logging.getLogger(__name__)

#: Where a gateway's CA is configured, for the error that says to change it.
CA_HINT = "mqtt_tls.ca_file in the gateway config (or FIELDWATCH_MQTT_CA_FILE)"


def use_tls(client: mqtt.Client, url: str, files: TlsFiles | None) -> None:
    """Give ``client`` the verifying context of an ``mqtts://`` URL (nothing for ``mqtt://``)."""
    ctx = mqtt_tls_context(url, files)
    if ctx is not None:
        client.tls_set_context(ctx)


class ConnectFailures:
    """paho's ``on_connect_fail``: logs a TLS failure's explanation once, until :meth:`connected`."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        #: The explanation of the last failed attempt (None: connected, or not a TLS failure).
        self.last: str | None = None

    def __call__(self, client: mqtt.Client, userdata: object) -> None:
        exc = sys.exc_info()[1]  # paho calls this from inside its `except OSError:`
        reason = None if exc is None else explain_handshake_failure(exc, self.host, self.port, ca_hint=CA_HINT)
        if reason is not None and reason != self.last:
            log.error("%s; retrying", reason)
        self.last = reason

    def connected(self) -> None:
        """A connection succeeded: the next failure is news again."""
        if self.last is not None:
            log.info("TLS connection to the MQTT broker at %s:%d established", self.host, self.port)
        self.last = None
