-- A gateway's birth and death are ordered by its status session (one per MQTT connection, carried in
-- the birth and in the Last Will), not by their timestamps: the Will is composed before connecting, so
-- its ts is older than the birth's and a killed gateway stayed online. status_reason says why the
-- gateway has its status ('connected', 'connection lost', 'shutdown', or 'no heartbeat' when ingest
-- declared it offline because its health messages stopped).
ALTER TABLE gateways
    ADD COLUMN status_session bigint,
    ADD COLUMN status_reason  text NOT NULL DEFAULT '';

COMMENT ON COLUMN gateways.status_session IS
    'status session (MQTT connection) of the stored status; NULL for gateways that send none';
COMMENT ON COLUMN gateways.status_reason IS
    'why: connected, connection lost (Last Will), shutdown, no heartbeat (health messages stopped)';
