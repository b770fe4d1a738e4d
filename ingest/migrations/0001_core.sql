-- 0001: the asset registry, rules, alarms, tickets, technicians and API tokens.
-- Telemetry lives in 0002 (two variants: TimescaleDB and plain PostgreSQL).

CREATE TABLE sla_segments (
    name               text PRIMARY KEY,
    response_minutes   integer NOT NULL CHECK (response_minutes > 0),
    resolution_minutes integer NOT NULL CHECK (resolution_minutes > 0),
    weight             double precision NOT NULL DEFAULT 1.0   -- lateness weight in dispatch
);
INSERT INTO sla_segments (name, response_minutes, resolution_minutes, weight) VALUES
    ('platinum', 120, 480, 4.0),
    ('gold', 240, 1440, 2.0),
    ('standard', 1440, 4320, 1.0);

CREATE TABLE clients (
    id         serial PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    segment    text NOT NULL REFERENCES sla_segments (name),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sites (
    id        serial PRIMARY KEY,
    client_id integer NOT NULL REFERENCES clients (id) ON DELETE RESTRICT,
    slug      text NOT NULL UNIQUE,
    name      text NOT NULL,
    address   text NOT NULL DEFAULT '',
    latitude  double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180)
);

CREATE TABLE gateways (
    id            serial PRIMARY KEY,
    site_id       integer NOT NULL REFERENCES sites (id) ON DELETE RESTRICT,
    slug          text NOT NULL UNIQUE,
    name          text NOT NULL DEFAULT '',
    status        text NOT NULL DEFAULT 'unknown' CHECK (status IN ('unknown', 'online', 'offline')),
    status_at     timestamptz,
    last_seq      bigint,                       -- highest sequence committed from this gateway
    seq_gaps      bigint NOT NULL DEFAULT 0,    -- batches missing between sequences seen
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    id              serial PRIMARY KEY,
    site_id         integer NOT NULL REFERENCES sites (id) ON DELETE RESTRICT,
    gateway_id      integer REFERENCES gateways (id) ON DELETE SET NULL,
    key             text NOT NULL,               -- the device name the gateway publishes
    name            text NOT NULL DEFAULT '',
    equipment_model text NOT NULL,
    serial          text NOT NULL DEFAULT '',
    attributes      jsonb NOT NULL DEFAULT '{}'::jsonb,
    parent_id       integer REFERENCES devices (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (gateway_id, key)
);
CREATE INDEX devices_site_idx ON devices (site_id);

CREATE TABLE series (
    id        serial PRIMARY KEY,
    device_id integer NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    tag       text NOT NULL,
    unit      text NOT NULL DEFAULT '',
    UNIQUE (device_id, tag)
);

-- Bad input is kept, with its reason, never dropped silently.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL DEFAULT ''
);
CREATE INDEX dead_letters_reason_idx ON dead_letters (reason, received_at);

CREATE TABLE skills (
    id   serial PRIMARY KEY,
    code text NOT NULL UNIQUE,
    name text NOT NULL DEFAULT ''
);

CREATE TABLE rules (
    id              serial PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    kind            text NOT NULL DEFAULT 'threshold' CHECK (kind IN ('threshold')),
    equipment_model text,                      -- NULL: every model
    tag             text NOT NULL,
    operator        text NOT NULL CHECK (operator IN ('>', '>=', '<', '<=')),
    threshold       double precision NOT NULL,
    duration_s      double precision NOT NULL DEFAULT 0 CHECK (duration_s >= 0),
    severity        text NOT NULL DEFAULT 'major' CHECK (severity IN ('critical', 'major', 'minor', 'warning')),
    problem_code    text NOT NULL,
    required_skill  text REFERENCES skills (code),
    enabled         boolean NOT NULL DEFAULT true,
    version         integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Durable evaluation state: a duration half-elapsed before a restart continues after it.
CREATE TABLE rule_states (
    rule_id    integer NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    device_id  integer NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    state      jsonb NOT NULL,
    last_ts    timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_id, device_id)
);

CREATE TABLE alarms (
    id              bigserial PRIMARY KEY,
    rule_id         integer NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    device_id       integer NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    severity        text NOT NULL,
    state           text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'acknowledged', 'cleared')),
    message         text NOT NULL DEFAULT '',
    trigger_value   double precision,
    triggered_at    timestamptz NOT NULL,      -- source time of the reading that opened it
    opened_at       timestamptz NOT NULL DEFAULT now(),
    acknowledged_at timestamptz,
    acknowledged_by text,
    cleared_at      timestamptz,
    ticket_id       bigint
);
-- At most one alarm per rule and device that has not cleared.
CREATE UNIQUE INDEX alarms_one_open_idx ON alarms (rule_id, device_id) WHERE cleared_at IS NULL;
CREATE INDEX alarms_opened_idx ON alarms (opened_at DESC);

CREATE TABLE technicians (
    id           serial PRIMARY KEY,
    name         text NOT NULL,
    email        text NOT NULL UNIQUE,
    phone        text NOT NULL DEFAULT '',
    home_lat     double precision NOT NULL CHECK (home_lat BETWEEN -90 AND 90),
    home_lon     double precision NOT NULL CHECK (home_lon BETWEEN -180 AND 180),
    current_lat  double precision CHECK (current_lat BETWEEN -90 AND 90),
    current_lon  double precision CHECK (current_lon BETWEEN -180 AND 180),
    available    boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE technician_skills (
    technician_id integer NOT NULL REFERENCES technicians (id) ON DELETE CASCADE,
    skill_id      integer NOT NULL REFERENCES skills (id) ON DELETE CASCADE,
    level         integer NOT NULL DEFAULT 1 CHECK (level BETWEEN 1 AND 5),
    PRIMARY KEY (technician_id, skill_id)
);

CREATE TABLE tickets (
    id             bigserial PRIMARY KEY,
    device_id      integer NOT NULL REFERENCES devices (id) ON DELETE RESTRICT,
    problem_code   text NOT NULL,
    title          text NOT NULL,
    priority       integer NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 5),   -- 1 is most urgent
    status         text NOT NULL DEFAULT 'new'
                   CHECK (status IN ('new', 'assigned', 'en_route', 'on_site', 'resolved', 'closed', 'cancelled')),
    required_skill text REFERENCES skills (code),
    source         text NOT NULL DEFAULT 'alarm' CHECK (source IN ('alarm', 'api', 'planned')),
    alarm_id       bigint REFERENCES alarms (id) ON DELETE SET NULL,
    unassigned_reason text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    due_at         timestamptz
);
-- One open ticket per device and problem.
CREATE UNIQUE INDEX tickets_one_open_idx ON tickets (device_id, problem_code)
    WHERE status NOT IN ('resolved', 'closed', 'cancelled');
ALTER TABLE alarms ADD CONSTRAINT alarms_ticket_fk FOREIGN KEY (ticket_id) REFERENCES tickets (id) ON DELETE SET NULL;

CREATE TABLE assignments (
    id            bigserial PRIMARY KEY,
    ticket_id     bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    technician_id integer NOT NULL REFERENCES technicians (id) ON DELETE RESTRICT,
    assigned_at   timestamptz NOT NULL DEFAULT now(),
    distance_km   double precision,
    eta_minutes   double precision,
    reason        text NOT NULL DEFAULT '',
    active        boolean NOT NULL DEFAULT true
);
CREATE UNIQUE INDEX assignments_one_active_idx ON assignments (ticket_id) WHERE active;
CREATE INDEX assignments_tech_idx ON assignments (technician_id) WHERE active;

CREATE TABLE api_tokens (
    id           serial PRIMARY KEY,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('admin', 'dispatcher', 'reliability_engineer', 'field_engineer')),
    token_hash   bytea NOT NULL UNIQUE,   -- sha256 of the token; the token itself is never stored
    prefix       text NOT NULL,           -- first characters, to tell tokens apart in listings
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
