-- 0002 (plain PostgreSQL): narrow telemetry, range-partitioned by day on time.
-- Partitions are created ahead by fw_ensure_telemetry_partition(), which ingest
-- calls for every day it has not seen yet and the scheduler calls for the days ahead;
-- retention drops whole partitions (cheap, no vacuum debt).
-- The primary key doubles as the dedup key: a redelivered point is a no-op.

CREATE TABLE telemetry (
    series_id integer NOT NULL,
    time      timestamptz NOT NULL,
    value     double precision NOT NULL,
    quality   smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (series_id, time)
) PARTITION BY RANGE (time);

CREATE FUNCTION fw_ensure_telemetry_partition(day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('telemetry_p%s', to_char(day, 'YYYYMMDD'));
BEGIN
    IF to_regclass(part) IS NULL THEN
        -- Two workers may race here; the loser's "already exists" is harmless.
        BEGIN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF telemetry FOR VALUES FROM (%L) TO (%L)',
                part, (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
        EXCEPTION WHEN duplicate_table THEN
            NULL;
        END;
    END IF;
    RETURN part;
END $$;

CREATE FUNCTION fw_drop_telemetry_before(cutoff date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'telemetry'::regclass
          AND c.relname ~ '^telemetry_p[0-9]{8}$'
          AND to_date(substr(c.relname, 12), 'YYYYMMDD') < cutoff
    LOOP
        EXECUTE format('DROP TABLE %I', r.relname);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

INSERT INTO fw_meta (key, value) VALUES ('storage', 'plain')
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
