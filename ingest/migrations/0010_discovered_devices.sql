-- 0010: devices a gateway announces that nobody registered ("discovered"), the data they send while
-- they wait to be accepted ("held"), and dead letters that can be filtered, replayed and purged.
-- See docs/ingest.md "Discovered devices" and "Dead letters".

-- A gateway may register the devices it discovers by itself (off by default: a typo in a gateway
-- config would otherwise create assets).
ALTER TABLE gateways ADD COLUMN auto_accept boolean NOT NULL DEFAULT false;

CREATE TABLE discovered_devices (
    id          serial PRIMARY KEY,
    gateway_id  integer NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    key         text NOT NULL,                        -- the device name the gateway publishes
    profile     text NOT NULL DEFAULT '',             -- the profile the gateway announced (pump-p100@1)
    tags        jsonb NOT NULL DEFAULT '{}'::jsonb,   -- {tag: unit}, announced in the status or seen in data
    state       text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'accepted', 'rejected')),
    held_points bigint NOT NULL DEFAULT 0 CHECK (held_points >= 0),  -- its rows in held_points
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    device_id   integer REFERENCES devices (id) ON DELETE SET NULL,  -- the device it became (accepted)
    decided_at  timestamptz,
    decided_by  text,
    UNIQUE (gateway_id, key)
);

-- Readings of pending discovered devices, stored once accepted. The key makes a redelivery a no-op.
CREATE TABLE held_points (
    discovered_id integer NOT NULL REFERENCES discovered_devices (id) ON DELETE CASCADE,
    tag           text NOT NULL,
    time          timestamptz NOT NULL,
    value         double precision NOT NULL,
    quality       smallint NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (discovered_id, tag, time)
);
CREATE INDEX held_points_received_idx ON held_points (received_at);

-- Dead letters say whose they are (filters, the gateway's status) and how often they were replayed.
ALTER TABLE dead_letters
    ADD COLUMN site        text,                          -- from the topic; NULL when it has none
    ADD COLUMN gateway     text,
    ADD COLUMN devices     text[] NOT NULL DEFAULT '{}',  -- device keys of the points kept
    ADD COLUMN points      integer NOT NULL DEFAULT 0,    -- points in the payload (0: not readable)
    ADD COLUMN replays     integer NOT NULL DEFAULT 0,
    ADD COLUMN replayed_at timestamptz;

UPDATE dead_letters SET site = split_part(topic, '/', 3), gateway = split_part(topic, '/', 4)
 WHERE topic ~ '^fw/v1/[^/]+/[^/]+/[a-z]+$';

-- Point-level dead letters hold a valid telemetry batch of the refused points (ingest/writer.py).
CREATE FUNCTION pg_temp.fw_points_of(payload bytea) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN convert_from(payload, 'UTF8')::jsonb -> 'points';
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;
UPDATE dead_letters d
   SET points = jsonb_array_length(p.points),
       devices = ARRAY(SELECT DISTINCT e ->> 'device' FROM jsonb_array_elements(p.points) e
                       WHERE e ->> 'device' IS NOT NULL ORDER BY 1)
  FROM (SELECT id, pg_temp.fw_points_of(payload) AS points FROM dead_letters
         WHERE reason IN ('unknown_device', 'future_timestamp', 'too_old', 'invalid_name')) p
 WHERE d.id = p.id AND jsonb_typeof(p.points) = 'array';

CREATE INDEX dead_letters_gateway_idx ON dead_letters (gateway, received_at);
CREATE INDEX dead_letters_received_idx ON dead_letters (received_at);
CREATE INDEX dead_letters_devices_idx ON dead_letters USING gin (devices);
