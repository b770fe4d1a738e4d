-- 0002 (TimescaleDB): narrow telemetry as a hypertable with 1-day chunks.
-- 1 day keeps the newest chunk and its (series_id, time) index comfortably in
-- memory at ~150k points/s on a small server (about 13 GB/day raw at peak;
-- shrink it for bigger fleets). Compression, continuous aggregates and retention
-- policies are added by a later migration, gated on timescaledb.license.
-- Checked on a TimescaleDB server outside CI (tests/test_timescale.py runs when
-- FIELDWATCH_TIMESCALE_URL is set).

CREATE TABLE telemetry (
    series_id integer NOT NULL,
    time      timestamptz NOT NULL,
    value     double precision NOT NULL,
    quality   smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (series_id, time)
);

-- The two-argument form with chunk_time_interval works on every TimescaleDB 2.x.
SELECT create_hypertable('telemetry', 'time', chunk_time_interval => INTERVAL '1 day');

-- Same signatures as the plain path so callers need not care: chunks are automatic
-- and retention belongs to add_retention_policy / drop_chunks.
CREATE FUNCTION fw_ensure_telemetry_partition(day date) RETURNS text
LANGUAGE sql AS $$ SELECT 'telemetry'::text $$;

CREATE FUNCTION fw_drop_telemetry_before(cutoff date) RETURNS integer
LANGUAGE sql AS $$
    SELECT count(*)::integer FROM drop_chunks('telemetry', older_than => cutoff::timestamptz)
$$;

INSERT INTO fw_meta (key, value) VALUES ('storage', 'timescale')
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
