-- Issue 15: anomaly rules a reliability engineer can trust.
--
-- * Alarms say why: `explanation` holds, for an anomaly alarm, the tags that drove its score (share of
--   the score, each tag's value against its normal range); ticketing copies it into the ticket.
-- * Alarms of a rule that is not validated (new anomaly rules, until `fieldwatch rules validate`) are
--   ticketed but not dispatched on their own: `auto_dispatch` records the rule's setting when it opened.
-- * A new model kind (`knn`). Models trained before this release (calibrated on too few rows, a PCA
--   that kept every component) are not loaded by the new code: the retraining job trains each subject
--   again, as a new version, on its next run (no data is changed here).
ALTER TABLE alarms
    ADD COLUMN explanation   jsonb,
    ADD COLUMN auto_dispatch boolean NOT NULL DEFAULT true;

ALTER TABLE anomaly_models DROP CONSTRAINT IF EXISTS anomaly_models_kind_check;
ALTER TABLE anomaly_models ADD CONSTRAINT anomaly_models_kind_check CHECK (kind IN ('pca', 'iforest', 'knn'));
