-- Issue 5: an anomaly model trained for a definition that has since changed (tags, training window,
-- target false-alarm rate, model kinds, grouping, scope) must stop scoring. `rules apply` marks such
-- versions stale in the transaction that writes the new rule version; scoring, backtests and the
-- retraining schedule use only versions that are not stale.
ALTER TABLE anomaly_models
    ADD COLUMN stale_at     timestamptz,
    ADD COLUMN stale_reason text;

CREATE INDEX anomaly_models_live_idx ON anomaly_models (rule_id, subject, version DESC) WHERE stale_at IS NULL;
