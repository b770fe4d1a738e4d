-- 0005.1: repair of 0005_rules.sql for databases that applied an earlier release of it.
--
-- 0005 was edited after it landed: v1 (bdd2d3a), v2 (1042a43: flapping), v3 (9ac7ce4: 'no_data'
-- rules), final (5dab1d7: 'anomaly' rules and anomaly_models). The edits appended statements and
-- widened the rules_kind_check list. ingest/migrations/checksums.lock lists the earlier checksums;
-- this file brings such a database to exactly what the final 0005 creates. It runs right after
-- 0005 (before 0006, and before 0008 alters anomaly_models) and on every database: where the final
-- 0005 ran, it changes nothing, so it is safe everywhere.

-- The kinds of the final file. Re-created unconditionally: same name, same list (every earlier
-- list is a subset of it, so existing rules pass).
ALTER TABLE rules DROP CONSTRAINT IF EXISTS rules_kind_check;
ALTER TABLE rules ADD CONSTRAINT rules_kind_check
    CHECK (kind IN ('threshold', 'above', 'below', 'outside', 'inside', 'rate', 'no_data', 'anomaly'));

-- v2: flapping.
ALTER TABLE alarms ADD COLUMN IF NOT EXISTS flapping boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS alarms_pair_triggered_idx ON alarms (rule_id, device_id, triggered_at DESC);
CREATE INDEX IF NOT EXISTS alarms_suppressed_open_idx ON alarms (id) WHERE suppressed_by IS NOT NULL AND cleared_at IS NULL;

-- Final: anomaly models (0008 later adds stale_at/stale_reason; where 0008 already ran, the table
-- exists and this is skipped).
CREATE TABLE IF NOT EXISTS anomaly_models (
    id           bigserial PRIMARY KEY,
    rule_id      integer NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    subject      text NOT NULL,
    version      integer NOT NULL,
    rule_version integer NOT NULL,
    trained_at   timestamptz NOT NULL DEFAULT now(),
    trained_by   text NOT NULL DEFAULT '',
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('pca', 'iforest')),
    tags         text[] NOT NULL,
    threshold    double precision NOT NULL CHECK (threshold > 0),
    metrics      jsonb NOT NULL DEFAULT '{}',
    model        bytea NOT NULL,
    UNIQUE (rule_id, subject, version)
);
