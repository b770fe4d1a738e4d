-- 0006: what the dispatch optimizer needs from the database (shifts and time off, tools, parts,
-- van and warehouse stock, ticket requirements and windows) and what it writes back (the plan:
-- sequence, planned times, pickups, explanations, locks and pins).
-- Times are timestamptz; ticketing.planning turns them into minutes from midnight (UTC) of the
-- day being planned.

-- Shifts: one row per technician and working period. A technician with NO shift rows at all
-- is available around the clock (so a fleet without a calendar keeps working).
CREATE TABLE technician_shifts (
    id            bigserial PRIMARY KEY,
    technician_id integer NOT NULL REFERENCES technicians (id) ON DELETE CASCADE,
    starts_at     timestamptz NOT NULL,
    ends_at       timestamptz NOT NULL,
    max_overtime_minutes integer NOT NULL DEFAULT 60 CHECK (max_overtime_minutes >= 0),
    CHECK (ends_at > starts_at)
);
CREATE INDEX technician_shifts_tech_idx ON technician_shifts (technician_id, starts_at);

-- Time off (leave, training, booked work elsewhere): the technician is not available then.
CREATE TABLE technician_time_off (
    id            bigserial PRIMARY KEY,
    technician_id integer NOT NULL REFERENCES technicians (id) ON DELETE CASCADE,
    starts_at     timestamptz NOT NULL,
    ends_at       timestamptz NOT NULL,
    reason        text NOT NULL DEFAULT '',
    CHECK (ends_at > starts_at)
);
CREATE INDEX technician_time_off_tech_idx ON technician_time_off (technician_id, starts_at);

CREATE TABLE tools (
    code text PRIMARY KEY,
    name text NOT NULL DEFAULT ''
);
CREATE TABLE technician_tools (
    technician_id integer NOT NULL REFERENCES technicians (id) ON DELETE CASCADE,
    tool_code     text NOT NULL REFERENCES tools (code) ON DELETE CASCADE,
    PRIMARY KEY (technician_id, tool_code)
);

CREATE TABLE parts (
    code text PRIMARY KEY,
    name text NOT NULL DEFAULT ''
);
CREATE TABLE van_stock (
    technician_id integer NOT NULL REFERENCES technicians (id) ON DELETE CASCADE,
    part_code     text NOT NULL REFERENCES parts (code) ON DELETE CASCADE,
    quantity      integer NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (technician_id, part_code)
);

CREATE TABLE warehouses (
    id             serial PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    latitude       double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude      double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    pickup_minutes integer NOT NULL DEFAULT 10 CHECK (pickup_minutes >= 0)
);
CREATE TABLE warehouse_stock (
    warehouse_id integer NOT NULL REFERENCES warehouses (id) ON DELETE CASCADE,
    part_code    text NOT NULL REFERENCES parts (code) ON DELETE CASCADE,
    quantity     integer NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (warehouse_id, part_code)
);

-- What a ticket needs. window_* is a hard time window (site open / agreed with the customer);
-- due_at (0001) is the soft SLA target.
ALTER TABLE tickets
    ADD COLUMN service_minutes integer NOT NULL DEFAULT 60 CHECK (service_minutes > 0),
    ADD COLUMN required_level integer NOT NULL DEFAULT 1 CHECK (required_level BETWEEN 1 AND 5),
    ADD COLUMN required_tools text[] NOT NULL DEFAULT '{}',
    ADD COLUMN window_start timestamptz,
    ADD COLUMN window_end timestamptz,
    ADD COLUMN pinned_technician_id integer REFERENCES technicians (id) ON DELETE SET NULL,
    ADD COLUMN unassigned_blockers jsonb NOT NULL DEFAULT '[]'::jsonb;

CREATE TABLE ticket_parts (
    ticket_id bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    part_code text NOT NULL REFERENCES parts (code),
    quantity  integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (ticket_id, part_code)
);

-- The plan. An active assignment is a stop on its technician's route for the day.
ALTER TABLE assignments
    ADD COLUMN sequence integer,                         -- position on the route (0 first)
    ADD COLUMN planned_start timestamptz,                -- service starts
    ADD COLUMN planned_end timestamptz,
    ADD COLUMN eta_at timestamptz,                       -- arrival at the site
    ADD COLUMN pickup_warehouse_id integer REFERENCES warehouses (id) ON DELETE SET NULL,
    ADD COLUMN locked boolean NOT NULL DEFAULT false,    -- re-optimisation never moves it
    ADD COLUMN origin text NOT NULL DEFAULT 'auto' CHECK (origin IN ('auto', 'reoptimize', 'dispatcher')),
    ADD COLUMN explanation jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN ended_at timestamptz;

-- One row per re-optimisation run: what it changed and what it saved.
CREATE TABLE plan_runs (
    id          bigserial PRIMARY KEY,
    ran_at      timestamptz NOT NULL DEFAULT now(),
    jobs        integer NOT NULL,
    moved       integer NOT NULL,
    cost_before double precision NOT NULL,
    cost_after  double precision NOT NULL,
    solve_s     double precision NOT NULL,
    accepted    boolean NOT NULL,
    note        text NOT NULL DEFAULT ''
);
