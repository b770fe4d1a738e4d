-- Gateway provisioning (fieldwatch gateway provision): the MQTT credentials issued to each gateway.
-- Only the hash is stored, in Mosquitto's own $7$ format (PBKDF2-SHA512), so the same string can be
-- written to the broker's password file; the clear password exists only in the gateway's config file.
CREATE TABLE gateway_credentials (
    gateway_id     integer PRIMARY KEY REFERENCES gateways (id) ON DELETE CASCADE,
    mqtt_username  text NOT NULL UNIQUE,
    password_hash  text NOT NULL CHECK (password_hash LIKE '$7$%'),
    topic_prefix   text NOT NULL,           -- fw/v1/{site}/{gateway}/ : all the gateway may use
    issued_at      timestamptz NOT NULL DEFAULT now()
);
