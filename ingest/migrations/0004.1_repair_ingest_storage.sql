-- 0004.1: repair of 0004_ingest_storage.sql for databases that applied an earlier release of it.
--
-- 0004 was edited after it landed: v1 (eb6fa32) had only devices.profile; v2 (c8ef647) added the
-- 1 min / 1 h rollups; the final file (cb8e5af) added gateway_seq_missing. ingest/migrations/
-- checksums.lock lists both earlier checksums; this file brings such a database to exactly what
-- the final 0004 creates. It runs right after 0004 (before 0005) and on every database: where the
-- final 0004 ran, every statement here is a no-op (guards below), so it is safe everywhere.
-- Read beside 0004_ingest_storage.sql: the bodies are copied from it, not changed.

-- v1 already had it; kept for completeness.
ALTER TABLE devices ADD COLUMN IF NOT EXISTS profile text NOT NULL DEFAULT '';

-- ---------------------------------------------------------------------------------------------
-- Rollups (v2). The whole block runs only where 0004 v1 was applied: fw_meta.rollups is written
-- by the final and v2 files in the same transaction as the rollup objects, so its absence means
-- none of them exist.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS telemetry_rollup_dirty (
    hour timestamptz PRIMARY KEY  -- an hour (epoch-aligned) whose rollups must be re-aggregated
);

CREATE TABLE IF NOT EXISTS telemetry_rollup_state (
    rollup       text PRIMARY KEY,            -- '1m' / '1h'
    watermark    timestamptz,                 -- start time of the last refresh (NULL: never ran)
    exact_before timestamptz NOT NULL         -- rollup buckets ending at or before this are complete
);

DO $rollups$
BEGIN
    IF EXISTS (SELECT 1 FROM fw_meta WHERE key = 'rollups') THEN
        RETURN;  -- 0004 v2 or final ran: the rollups exist
    END IF;
    IF (SELECT value FROM fw_meta WHERE key = 'storage') = 'timescale'
       AND current_setting('timescaledb.license', true) = 'timescale' THEN
        -- Exactly as 0004: continuous aggregates straight over the hypertable, WITH NO DATA so this
        -- can run inside the migration's transaction. Rows already in telemetry are read by
        -- real-time aggregation until a refresh materializes them; see docs/upgrading.md for the
        -- one-off refresh of older history.
        EXECUTE $sql$
            CREATE MATERIALIZED VIEW telemetry_1m WITH (timescaledb.continuous) AS
            SELECT series_id, time_bucket(INTERVAL '1 minute', time) AS bucket,
                   count(*) AS n, min(value) AS vmin, max(value) AS vmax, sum(value) AS vsum,
                   last(value, time) AS vlast, max(time) AS last_time
            FROM telemetry GROUP BY series_id, time_bucket(INTERVAL '1 minute', time)
            WITH NO DATA $sql$;
        EXECUTE $sql$
            CREATE MATERIALIZED VIEW telemetry_1h WITH (timescaledb.continuous) AS
            SELECT series_id, time_bucket(INTERVAL '1 hour', time) AS bucket,
                   count(*) AS n, min(value) AS vmin, max(value) AS vmax, sum(value) AS vsum,
                   last(value, time) AS vlast, max(time) AS last_time
            FROM telemetry GROUP BY series_id, time_bucket(INTERVAL '1 hour', time)
            WITH NO DATA $sql$;
        EXECUTE 'ALTER MATERIALIZED VIEW telemetry_1m SET (timescaledb.materialized_only = false)';
        EXECUTE 'ALTER MATERIALIZED VIEW telemetry_1h SET (timescaledb.materialized_only = false)';
        PERFORM add_continuous_aggregate_policy('telemetry_1m', start_offset => INTERVAL '3 days',
            end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
        PERFORM add_continuous_aggregate_policy('telemetry_1h', start_offset => INTERVAL '7 days',
            end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes');
        EXECUTE $sql$ ALTER TABLE telemetry SET (timescaledb.compress,
            timescaledb.compress_segmentby = 'series_id', timescaledb.compress_orderby = 'time DESC') $sql$;
        PERFORM add_compression_policy('telemetry', compress_after => INTERVAL '7 days');
        INSERT INTO telemetry_rollup_state (rollup, exact_before) VALUES ('1m', 'infinity'), ('1h', 'infinity');
        INSERT INTO fw_meta (key, value) VALUES ('rollups', 'continuous')
            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
    ELSE
        -- Tables kept by fw_refresh_rollups(): watermark NULL, so its first run aggregates all the
        -- telemetry already stored.
        CREATE TABLE telemetry_1m (
            series_id integer NOT NULL, bucket timestamptz NOT NULL,
            n bigint NOT NULL, vmin double precision NOT NULL, vmax double precision NOT NULL,
            vsum double precision NOT NULL, vlast double precision NOT NULL, last_time timestamptz NOT NULL,
            PRIMARY KEY (series_id, bucket));
        CREATE TABLE telemetry_1h (LIKE telemetry_1m INCLUDING ALL);
        IF (SELECT value FROM fw_meta WHERE key = 'storage') = 'plain' THEN
            CREATE INDEX telemetry_time_brin ON telemetry USING brin (time);
        END IF;
        INSERT INTO telemetry_rollup_state (rollup, exact_before) VALUES ('1m', '-infinity'), ('1h', '-infinity');
        INSERT INTO fw_meta (key, value) VALUES ('rollups', 'tables')
            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
    END IF;
END $rollups$;

-- The two functions as the final 0004 defines them (same text: a no-op where they exist).
CREATE OR REPLACE FUNCTION fw_rollup_range(lo timestamptz, hi timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    written bigint;
    h_lo timestamptz := CASE WHEN isfinite(lo) THEN date_bin(INTERVAL '1 hour', lo, timestamptz 'epoch') ELSE lo END;
    h_hi timestamptz := CASE WHEN isfinite(hi)
                             THEN date_bin(INTERVAL '1 hour', hi - INTERVAL '1 microsecond', timestamptz 'epoch')
                                  + INTERVAL '1 hour'
                             ELSE hi END;
BEGIN
    DELETE FROM telemetry_1m WHERE bucket >= lo AND bucket < hi;
    INSERT INTO telemetry_1m (series_id, bucket, n, vmin, vmax, vsum, vlast, last_time)
    SELECT series_id, date_bin(INTERVAL '1 minute', time, timestamptz 'epoch'),
           count(*), min(value), max(value), sum(value), (array_agg(value ORDER BY time DESC))[1], max(time)
    FROM telemetry WHERE time >= lo AND time < hi GROUP BY 1, 2;
    GET DIAGNOSTICS written = ROW_COUNT;
    DELETE FROM telemetry_1h WHERE bucket >= h_lo AND bucket < h_hi;
    INSERT INTO telemetry_1h (series_id, bucket, n, vmin, vmax, vsum, vlast, last_time)
    SELECT series_id, date_bin(INTERVAL '1 hour', bucket, timestamptz 'epoch'),
           sum(n), min(vmin), max(vmax), sum(vsum), (array_agg(vlast ORDER BY last_time DESC))[1], max(last_time)
    FROM telemetry_1m WHERE bucket >= h_lo AND bucket < h_hi
    GROUP BY 1, 2;
    RETURN written;
END $$;

CREATE OR REPLACE FUNCTION fw_refresh_rollups(lag interval DEFAULT INTERVAL '10 minutes') RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    wm timestamptz;
    from_t timestamptz;
    hours timestamptz[];
    h timestamptz;
    total bigint := 0;
BEGIN
    IF (SELECT value FROM fw_meta WHERE key = 'rollups') IS DISTINCT FROM 'tables' THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('fw_refresh_rollups'));
    SELECT watermark INTO wm FROM telemetry_rollup_state WHERE rollup = '1m';
    -- First run: everything. Later: from one lag before the previous run, to the end of time.
    from_t := CASE WHEN wm IS NULL THEN '-infinity'::timestamptz
                   ELSE date_bin(INTERVAL '1 minute', wm - lag, timestamptz 'epoch') END;
    WITH taken AS (DELETE FROM telemetry_rollup_dirty RETURNING hour)
    SELECT coalesce(array_agg(hour ORDER BY hour), '{}') INTO hours FROM taken;
    -- Flagged hours before the window (the window itself comes last: it rebuilds the 1 h row of
    -- the hour it starts in after that hour's flagged minutes were redone).
    FOREACH h IN ARRAY hours LOOP
        IF h < from_t THEN
            total := total + fw_rollup_range(h, least(h + INTERVAL '1 hour', from_t));
        END IF;
    END LOOP;
    total := total + fw_rollup_range(from_t, 'infinity');
    UPDATE telemetry_rollup_state
       SET watermark = now(), exact_before = date_bin(INTERVAL '1 minute', now() - lag, timestamptz 'epoch');
    RETURN total;
END $$;

-- ---------------------------------------------------------------------------------------------
-- Gateway sequences still missing (final 0004).
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS gateway_seq_missing (
    gateway_id integer NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    seq_from   bigint NOT NULL,
    seq_to     bigint NOT NULL,
    opened_at  timestamptz NOT NULL DEFAULT now(),  -- when the range was first seen missing
    PRIMARY KEY (gateway_id, seq_from),
    CHECK (seq_from <= seq_to)
);

DO $seq$
BEGIN
    -- Only where the counters are new: their first value keeps seq_gaps = skipped - filled.
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = 'gateways'::regclass AND attname = 'seq_skipped_total' AND NOT attisdropped) THEN
        ALTER TABLE gateways
            ADD COLUMN seq_skipped_total bigint NOT NULL DEFAULT 0,
            ADD COLUMN seq_filled_total  bigint NOT NULL DEFAULT 0;
        UPDATE gateways SET seq_skipped_total = seq_gaps;
    END IF;
END $seq$;
COMMENT ON COLUMN gateways.seq_gaps IS 'sequences currently missing: batches we have not seen yet';
