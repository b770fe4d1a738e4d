-- 0005: rules as code (a validated definition per rule, every version kept), richer alarms
-- (severity ladders, latch, comments) and silences / maintenance windows.

-- The full rule (pydantic RuleSpec as JSON). NULL for rules written through the original
-- columns only; those are read as a one-level above/below rule. The original columns stay
-- filled with a summary so older readers keep working; operator/threshold are NULL for
-- kinds they cannot express (bands, rates).
ALTER TABLE rules ADD COLUMN definition jsonb;
ALTER TABLE rules ADD COLUMN updated_by text NOT NULL DEFAULT '';
ALTER TABLE rules ALTER COLUMN operator DROP NOT NULL;
ALTER TABLE rules ALTER COLUMN threshold DROP NOT NULL;
ALTER TABLE rules DROP CONSTRAINT rules_kind_check;
ALTER TABLE rules ADD CONSTRAINT rules_kind_check
    CHECK (kind IN ('threshold', 'above', 'below', 'outside', 'inside', 'rate', 'no_data', 'anomaly'));

-- Every version of every rule, with who and when. Version 1 is the first.
CREATE TABLE rule_versions (
    rule_id    integer NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    version    integer NOT NULL,
    definition jsonb NOT NULL,
    author     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_id, version)
);
UPDATE rules SET definition = jsonb_build_object(
    'name', name, 'tag', tag,
    'condition', jsonb_build_object(
        'kind', CASE WHEN operator LIKE '>%' THEN 'above' ELSE 'below' END,
        'inclusive', operator LIKE '%=',
        'levels', jsonb_build_array(jsonb_build_object('severity', severity, 'threshold', threshold))),
    'for_s', duration_s,
    'scope', jsonb_build_object('equipment_models',
        CASE WHEN equipment_model IS NULL THEN '[]'::jsonb ELSE jsonb_build_array(equipment_model) END),
    'problem_code', problem_code, 'required_skill', required_skill, 'enabled', enabled);
INSERT INTO rule_versions (rule_id, version, definition, author, created_at)
SELECT id, version, definition, 'migration', created_at FROM rules;

-- Alarms: the worst rung reached, latch, and "the condition is gone but the alarm waits for an ack".
ALTER TABLE alarms ADD COLUMN peak_severity text;
UPDATE alarms SET peak_severity = severity;
ALTER TABLE alarms ADD COLUMN latched boolean NOT NULL DEFAULT false;
ALTER TABLE alarms ADD COLUMN condition_cleared_at timestamptz;
ALTER TABLE alarms ADD COLUMN suppressed_by text;   -- 'silence:ID', 'maintenance:ID', 'parent:ALARM_ID'
ALTER TABLE alarms ADD COLUMN cleared_by text;      -- NULL: the condition cleared it

CREATE TABLE alarm_comments (
    id         bigserial PRIMARY KEY,
    alarm_id   bigint NOT NULL REFERENCES alarms (id) ON DELETE CASCADE,
    author     text NOT NULL,
    body       text NOT NULL CHECK (length(body) > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alarm_comments_alarm_idx ON alarm_comments (alarm_id, id);

-- Silences and maintenance windows suppress alarms (not evaluation) for a device, a site or a rule.
CREATE TABLE silences (
    id         serial PRIMARY KEY,
    kind       text NOT NULL DEFAULT 'silence' CHECK (kind IN ('silence', 'maintenance')),
    device_id  integer REFERENCES devices (id) ON DELETE CASCADE,
    site_id    integer REFERENCES sites (id) ON DELETE CASCADE,
    rule_id    integer REFERENCES rules (id) ON DELETE CASCADE,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    reason     text NOT NULL DEFAULT '',
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at),
    CHECK (num_nonnulls(device_id, site_id, rule_id) >= 1)
);
CREATE INDEX silences_ends_idx ON silences (ends_at);

-- Flapping: the one visible alarm that stands for a burst of open/clear transitions; the openings
-- after it are recorded with suppressed_by = 'flapping:ID'. The index serves the flapping and
-- "previous alarm of this pair" look-ups done when an alarm opens.
ALTER TABLE alarms ADD COLUMN flapping boolean NOT NULL DEFAULT false;
CREATE INDEX alarms_pair_triggered_idx ON alarms (rule_id, device_id, triggered_at DESC);
CREATE INDEX alarms_suppressed_open_idx ON alarms (id) WHERE suppressed_by IS NOT NULL AND cleared_at IS NULL;

-- Anomaly models: every training of an anomaly rule is a new version per subject ('device:ID' or
-- 'model:EQUIPMENT_MODEL'); live evaluation and backtests use the newest. The fitted model is a
-- joblib pickle of rules.anomaly.AnomalyModel — written and read only by this code base.
CREATE TABLE anomaly_models (
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
