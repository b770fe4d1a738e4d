-- 0020: rule errors. A (rule, device) pair the engine cannot evaluate — a threshold bound to a device
-- attribute that is missing or not a number — raises a "rule error" for the rule's owner (who last
-- changed it): one open per pair, cleared when the device is evaluated again. Rule errors are not
-- alarms of the equipment, so they never open a ticket or dispatch anyone.
CREATE TABLE rule_errors (
    id         bigserial PRIMARY KEY,
    rule_id    integer NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    device_id  integer NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    reason     text NOT NULL,
    owner      text NOT NULL DEFAULT '',
    opened_at  timestamptz NOT NULL DEFAULT now(),
    cleared_at timestamptz
);
CREATE UNIQUE INDEX rule_errors_one_open_idx ON rule_errors (rule_id, device_id) WHERE cleared_at IS NULL;
CREATE INDEX rule_errors_rule_idx ON rule_errors (rule_id, device_id, id DESC);

-- Since when a pair has been evaluated (rows that exist already: from now on).
ALTER TABLE rule_states ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
