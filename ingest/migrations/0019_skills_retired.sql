-- Issue 14: skills are managed (created, renamed, retired) from the CLI and the API, and technicians
-- can be retired.
--
-- * A retired skill cannot be newly required by a rule or newly given to a technician; rules,
--   tickets and technicians that already have it keep it (history is never rewritten).
-- * A retired technician is off duty for good: dispatch never picks them, their past assignments stay.
ALTER TABLE skills ADD COLUMN retired_at timestamptz;
ALTER TABLE technicians ADD COLUMN retired_at timestamptz;
