-- 0011: rollups stay exact after writes outside the live window, on both storages.
--
-- The ingest writer flags, in the transaction that stores them, the hours of rows older than five
-- minutes (late, replayed, imported or held data) in telemetry_rollup_dirty: with rollup tables as
-- before, and now with TimescaleDB continuous aggregates too, whose refresh policies only cover the
-- last 3 days (1 min) / 7 days (1 h), so rows older than that were never materialized and the
-- buckets query missed them. Readers take flagged hours from raw rows until the rollup job
-- (ingest.rollups.refresh_written: fw_refresh_rollups() for tables, refresh_continuous_aggregate()
-- per flagged range for continuous aggregates, which cannot run inside a transaction) has redone
-- them, and then clears exactly the flags it redid.
--
-- gen tells a flag the job read from one a writer set again since: a writer that flags an hour
-- already flagged bumps gen (ON CONFLICT DO UPDATE, which also makes it wait for a job deleting
-- that row), and the job deletes a flag only if gen is still what it read, so rows committed while
-- a refresh ran are never left unflagged.
ALTER TABLE telemetry_rollup_dirty ADD COLUMN gen bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN telemetry_rollup_dirty.gen IS
    'bumped each time a writer flags the hour again; the rollup job clears a flag only if unchanged since it read it';
COMMENT ON COLUMN telemetry_rollup_state.exact_before IS
    'rollup buckets ending at or before this are complete; infinity (continuous aggregates): complete up to '
    'the refresh lag before now, except flagged hours';
