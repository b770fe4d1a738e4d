-- 0007: skill levels per equipment model, and auto-resolving tickets when their alarms clear.

-- A technician's level on one equipment model REPLACES their general level for that skill when a
-- ticket's device is that model (level 3 on "pump" in general, level 1 on "C200" chillers).
CREATE TABLE technician_model_skills (
    technician_id   integer NOT NULL REFERENCES technicians (id) ON DELETE CASCADE,
    skill_id        integer NOT NULL REFERENCES skills (id) ON DELETE CASCADE,
    equipment_model text NOT NULL CHECK (equipment_model <> ''),
    level           integer NOT NULL CHECK (level BETWEEN 1 AND 5),
    PRIMARY KEY (technician_id, skill_id, equipment_model)
);

-- Does the required level apply to the device's equipment model (true: a technician's
-- model-specific level, when recorded, counts instead of the general one) or only to the skill?
ALTER TABLE tickets
    ADD COLUMN level_per_model boolean NOT NULL DEFAULT true,
    -- set once when every attached alarm has cleared and ticketing acted on it (resolved the
    -- ticket or left a note); cleared again when a new alarm attaches.
    ADD COLUMN alarms_cleared_at timestamptz;

-- Auto-resolve when the alarm clears: per client segment, overridden per rule.
ALTER TABLE sla_segments ADD COLUMN auto_resolve_on_clear boolean NOT NULL DEFAULT false;
CREATE TABLE rule_ticket_settings (
    rule_id               integer PRIMARY KEY REFERENCES rules (id) ON DELETE CASCADE,
    auto_resolve_on_clear boolean NOT NULL
);
