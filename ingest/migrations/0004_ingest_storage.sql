-- 0004: what the registry API, the query API and storage upkeep need on top of 0001/0002.

-- The equipment profile a device is polled with (gateway/profiles/<profile>.yaml); '' when none.
ALTER TABLE devices ADD COLUMN profile text NOT NULL DEFAULT '';
