-- Issue 15: a new anomaly model kind, `residual` (each feature regressed on the other tags' features, scored by
-- its residual), the default for anomaly rules that leave `models` out. Models already stored keep their kind
-- and are still loaded; no data is changed here.
ALTER TABLE anomaly_models DROP CONSTRAINT IF EXISTS anomaly_models_kind_check;
ALTER TABLE anomaly_models ADD CONSTRAINT anomaly_models_kind_check
    CHECK (kind IN ('residual', 'pca', 'iforest', 'knn'));
