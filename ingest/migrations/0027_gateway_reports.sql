-- Issue 16: what the console's Gateways page shows of each gateway, kept by ingest.
--
-- * `report`: the gateway's own account in its last full status message (docs/contract.md, "Status
--   payload"): `devices` (name -> online/offline), `profiles` (name -> profile@version) and `config`
--   (`version` running, `last` = the outcome of the last remote config: applied, rejected or
--   rolled back, with the error). NULL until a full status arrives. `report_at`: when it arrived.
-- * `buffer_depth`, `buffer_oldest_age_s`, `health_at`: the disk buffer as the gateway's last health
--   message described it (batches waiting for ingest's ack, age of the oldest), and when ingest
--   stored it (it writes them at most every few seconds, from its heartbeat check).
-- * `gateway_configs`: every configuration pushed to a gateway (console or API), as sent: the
--   document, its config_version, who pushed it and when. The newest row is what the server last
--   asked the gateway to run; the gateway's answer arrives in `report.config.last`.
ALTER TABLE gateways
    ADD COLUMN report              jsonb,
    ADD COLUMN report_at           timestamptz,
    ADD COLUMN buffer_depth        bigint,
    ADD COLUMN buffer_oldest_age_s double precision,
    ADD COLUMN health_at           timestamptz;

CREATE TABLE gateway_configs (
    id          bigserial PRIMARY KEY,
    gateway_id  integer NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    version     text NOT NULL CHECK (version <> ''),
    document    text NOT NULL,
    pushed_by   text NOT NULL,
    pushed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gateway_configs_gateway ON gateway_configs (gateway_id, id DESC);
