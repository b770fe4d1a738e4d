-- 0004: what the registry API, the query API and storage upkeep need on top of 0001/0002.

-- The equipment profile a device is polled with (gateway/profiles/<profile>.yaml); '' when none.
ALTER TABLE devices ADD COLUMN profile text NOT NULL DEFAULT '';

-- ---------------------------------------------------------------------------------------------
-- Rollups: telemetry_1m and telemetry_1h, one row per (series_id, bucket) with
--   n (points), vmin, vmax, vsum (avg = vsum / n), vlast (value of the newest point), last_time.
-- Buckets are aligned on the Unix epoch (date_bin / time_bucket agree on that for 1 min and 1 h).
--
-- Two implementations behind the same names and columns (docs/ingest.md "Rollups"):
--   * TimescaleDB with the Timescale license: continuous aggregates with real-time aggregation
--     (materialized_only = false), refresh policies, compression of telemetry segmented by
--     series_id; fw_meta.rollups = 'continuous'.
--   * plain PostgreSQL, or TimescaleDB Apache edition (no caggs/compression/policies): tables kept
--     by fw_refresh_rollups(), which the scheduler runs every minute; fw_meta.rollups = 'tables'.
--
-- Table mode, how it stays exact: each run re-aggregates from floor_minute(previous run - lag)
-- onwards (no upper bound, so future-stamped rows are covered), plus every hour flagged in
-- telemetry_rollup_dirty. The ingest writer flags the hours of rows older than 5 minutes (late
-- and historical data) in the transaction that stores them; lag (10 minutes) > 5 minutes leaves
-- room for clock skew and slow transactions. telemetry_rollup_state.exact_before tells readers up
-- to where the rollups are complete: the query API reads rollup buckets before it (except dirty
-- hours) and raw telemetry for the rest, so results equal an aggregate over raw telemetry.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE telemetry_rollup_dirty (
    hour timestamptz PRIMARY KEY  -- an hour (epoch-aligned) whose rollups must be re-aggregated
);

CREATE TABLE telemetry_rollup_state (
    rollup       text PRIMARY KEY,            -- '1m' / '1h'
    watermark    timestamptz,                 -- start time of the last refresh (NULL: never ran)
    exact_before timestamptz NOT NULL         -- rollup buckets ending at or before this are complete
);

DO $rollups$
BEGIN
    IF (SELECT value FROM fw_meta WHERE key = 'storage') = 'timescale'
       AND current_setting('timescaledb.license', true) = 'timescale' THEN
        -- Continuous aggregates straight over the hypertable (not stacked, works on every 2.x
        -- with caggs); WITH NO DATA so this can run inside the migration's transaction.
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
        -- Real-time aggregation: buckets not materialized yet are computed from raw rows at query time.
        EXECUTE 'ALTER MATERIALIZED VIEW telemetry_1m SET (timescaledb.materialized_only = false)';
        EXECUTE 'ALTER MATERIALIZED VIEW telemetry_1h SET (timescaledb.materialized_only = false)';
        PERFORM add_continuous_aggregate_policy('telemetry_1m', start_offset => INTERVAL '3 days',
            end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
        PERFORM add_continuous_aggregate_policy('telemetry_1h', start_offset => INTERVAL '7 days',
            end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes');
        -- Compression: one segment per series, newest first inside it (queries are per series and
        -- time range). Chunks older than 7 days compress; late rows into them still insert.
        EXECUTE $sql$ ALTER TABLE telemetry SET (timescaledb.compress,
            timescaledb.compress_segmentby = 'series_id', timescaledb.compress_orderby = 'time DESC') $sql$;
        PERFORM add_compression_policy('telemetry', compress_after => INTERVAL '7 days');
        -- The retention policy depends on the retention_days setting: ingest.upkeep.drop_expired
        -- (daily job) installs/updates add_retention_policy on this edition.
        INSERT INTO telemetry_rollup_state (rollup, exact_before) VALUES ('1m', 'infinity'), ('1h', 'infinity');
        INSERT INTO fw_meta (key, value) VALUES ('rollups', 'continuous')
            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
    ELSE
        CREATE TABLE telemetry_1m (
            series_id integer NOT NULL, bucket timestamptz NOT NULL,
            n bigint NOT NULL, vmin double precision NOT NULL, vmax double precision NOT NULL,
            vsum double precision NOT NULL, vlast double precision NOT NULL, last_time timestamptz NOT NULL,
            PRIMARY KEY (series_id, bucket));
        CREATE TABLE telemetry_1h (LIKE telemetry_1m INCLUDING ALL);
        IF (SELECT value FROM fw_meta WHERE key = 'storage') = 'plain' THEN
            -- The refresh reads "all series, time >= X": a BRIN index answers that for pennies at
            -- insert time (rows arrive roughly in time order). Hypertables already index time.
            CREATE INDEX telemetry_time_brin ON telemetry USING brin (time);
        END IF;
        INSERT INTO telemetry_rollup_state (rollup, exact_before) VALUES ('1m', '-infinity'), ('1h', '-infinity');
        INSERT INTO fw_meta (key, value) VALUES ('rollups', 'tables')
            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
    END IF;
END $rollups$;

-- Re-aggregate [lo, hi) of telemetry_1m from raw rows, then every whole hour touching it of
-- telemetry_1h from the 1 min rows (table mode). Infinite bounds are allowed.
CREATE FUNCTION fw_rollup_range(lo timestamptz, hi timestamptz) RETURNS bigint
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

-- One refresh (table mode; a no-op returning 0 with continuous aggregates). Returns the number of
-- 1-minute rows written. Serialised by a transaction advisory lock, so overlapping calls queue.
CREATE FUNCTION fw_refresh_rollups(lag interval DEFAULT INTERVAL '10 minutes') RETURNS bigint
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
-- Gateway sequences still missing (ingest/sequences.py, docs/ingest.md "Sequences").
-- A batch above gateways.last_seq opens the range it skipped; a late or resent batch inside a
-- range closes or splits it. Written under the gateway's row lock (SELECT … FOR UPDATE) in the
-- transaction that stores the batch. gateways.seq_gaps = sequences in these ranges
--   = seq_skipped_total - seq_filled_total.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE gateway_seq_missing (
    gateway_id integer NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    seq_from   bigint NOT NULL,
    seq_to     bigint NOT NULL,
    opened_at  timestamptz NOT NULL DEFAULT now(),  -- when the range was first seen missing
    PRIMARY KEY (gateway_id, seq_from),
    CHECK (seq_from <= seq_to)
);

ALTER TABLE gateways
    ADD COLUMN seq_skipped_total bigint NOT NULL DEFAULT 0,  -- sequences ever skipped when seen
    ADD COLUMN seq_filled_total  bigint NOT NULL DEFAULT 0;  -- of those, arrived later
COMMENT ON COLUMN gateways.seq_gaps IS 'sequences currently missing: batches we have not seen yet';
-- Counts from before this table have no ranges: keep seq_gaps = skipped - filled.
UPDATE gateways SET seq_skipped_total = seq_gaps;
