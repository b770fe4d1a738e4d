#!/bin/sh
# Entry point of the compose stack's Mosquitto (docker-compose.yml): writes the password file from
# the logins in .env, adds a TLS listener when a certificate is mounted, then runs the broker.
#
# It runs as the image's mosquitto user on a read-only root filesystem: the only place it writes is
# $FW_MQTT_RUN (a tmpfs), so the password file never lands on a disk or in the image. The FW_MQTT_*
# paths exist so that tests can run this very script against a local Mosquitto.
set -eu

conf="${FW_MQTT_CONF:-/mosquitto/config/mosquitto.conf}"
run="${FW_MQTT_RUN:-/mosquitto/run}"
certs="${FW_MQTT_CERTS:-/mosquitto/certs}"
tls_listener="${FW_MQTT_TLS_LISTENER:-8883}"

: "${MQTT_INGEST_PASSWORD:?set MQTT_INGEST_PASSWORD in .env (see .env.example)}"
: "${MQTT_GATEWAY_PASSWORD:?set MQTT_GATEWAY_PASSWORD in .env (see .env.example)}"

umask 077
mosquitto_passwd -c -b "$run/passwd" ingest "$MQTT_INGEST_PASSWORD"
mosquitto_passwd -b "$run/passwd" compose-site.gw-compose "$MQTT_GATEWAY_PASSWORD"

cp "$conf" "$run/mosquitto.conf"
if [ -r "$certs/server.crt" ] && [ -r "$certs/server.key" ]; then
    {
        echo ""
        echo "# added by compose-start.sh: certificates found in $certs"
        echo "listener $tls_listener"
        echo "certfile $certs/server.crt"
        echo "keyfile $certs/server.key"
        echo "tls_version tlsv1.2"
        if [ -r "$certs/ca.crt" ] && [ "${MQTT_REQUIRE_CLIENT_CERTIFICATE:-false}" = "true" ]; then
            echo "cafile $certs/ca.crt"
            echo "require_certificate true"
        fi
    } >> "$run/mosquitto.conf"
    echo "compose-start.sh: TLS listener on $tls_listener with $certs/server.crt"
elif [ -e "$certs/server.crt" ] || [ -e "$certs/server.key" ]; then
    echo "compose-start.sh: $certs/server.crt and server.key must both be readable by uid $(id -u); no TLS listener" >&2
    exit 1
else
    echo "compose-start.sh: no certificate in $certs: plaintext listener only (see docs/security.md)"
fi
exec mosquitto -c "$run/mosquitto.conf"
