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

-- SLA policies per client segment: targets by priority (falling back to sla_segments' minutes),
-- business hours and holidays (no business_hours rows: around the clock), statuses that pause the
-- clock, how early a predicted breach escalates.
ALTER TABLE sla_segments
    ADD COLUMN timezone text NOT NULL DEFAULT 'UTC',
    ADD COLUMN paused_statuses text[] NOT NULL DEFAULT '{}',
    ADD COLUMN warn_minutes integer NOT NULL DEFAULT 30 CHECK (warn_minutes >= 0);
CREATE TABLE sla_targets (
    segment            text NOT NULL REFERENCES sla_segments (name) ON DELETE CASCADE,
    priority           integer NOT NULL CHECK (priority BETWEEN 1 AND 5),
    response_minutes   integer NOT NULL CHECK (response_minutes > 0),
    resolution_minutes integer NOT NULL CHECK (resolution_minutes > 0),
    PRIMARY KEY (segment, priority)
);
CREATE TABLE business_hours (
    segment text NOT NULL REFERENCES sla_segments (name) ON DELETE CASCADE,
    weekday integer NOT NULL CHECK (weekday BETWEEN 0 AND 6),   -- 0 = Monday
    opens   time NOT NULL,
    closes  time NOT NULL CHECK (closes > opens),
    PRIMARY KEY (segment, weekday)
);
CREATE TABLE holidays (
    id      serial PRIMARY KEY,
    segment text REFERENCES sla_segments (name) ON DELETE CASCADE,   -- NULL: every segment
    day     date NOT NULL,
    name    text NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX holidays_day_idx ON holidays (COALESCE(segment, ''), day);

ALTER TABLE tickets
    ADD COLUMN resolution_due_at timestamptz,
    ADD COLUMN escalated_at timestamptz;

-- Every status a ticket passes through, whoever changes it (SLA clocks are computed from this).
CREATE TABLE ticket_status_history (
    id        bigserial PRIMARY KEY,
    ticket_id bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    status    text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ticket_status_history_idx ON ticket_status_history (ticket_id, at);
INSERT INTO ticket_status_history (ticket_id, status, at) SELECT id, status, created_at FROM tickets;
CREATE FUNCTION fw_ticket_status_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO ticket_status_history (ticket_id, status, at) VALUES (NEW.id, NEW.status, now());
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tickets_status_history AFTER INSERT OR UPDATE OF status ON tickets
    FOR EACH ROW EXECUTE FUNCTION fw_ticket_status_history();

CREATE TABLE sla_breaches (
    id          bigserial PRIMARY KEY,
    ticket_id   bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('response', 'resolution')),
    segment     text,
    priority    integer NOT NULL,
    due_at      timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (ticket_id, kind)
);

-- Dispatcher overrides of hard constraints: who, why, and what was broken.
CREATE TABLE dispatch_overrides (
    id            bigserial PRIMARY KEY,
    ticket_id     bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    technician_id integer NOT NULL REFERENCES technicians (id) ON DELETE CASCADE,
    actor         text NOT NULL,
    reason        text NOT NULL CHECK (reason <> ''),
    violations    jsonb NOT NULL,
    at            timestamptz NOT NULL DEFAULT now()
);

-- Field work: where a status change was reported from and by whom, notes, failure code, parts
-- used and photo evidence.
ALTER TABLE ticket_status_history
    ADD COLUMN actor text NOT NULL DEFAULT '',
    ADD COLUMN lat double precision CHECK (lat BETWEEN -90 AND 90),
    ADD COLUMN lon double precision CHECK (lon BETWEEN -180 AND 180);
ALTER TABLE tickets ADD COLUMN failure_code text;
CREATE TABLE ticket_notes (
    id        bigserial PRIMARY KEY,
    ticket_id bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    author    text NOT NULL DEFAULT '',
    body      text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE ticket_parts_used (
    id            bigserial PRIMARY KEY,
    ticket_id     bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    technician_id integer REFERENCES technicians (id) ON DELETE SET NULL,
    part_code     text NOT NULL REFERENCES parts (code),
    quantity      integer NOT NULL CHECK (quantity > 0),
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE ticket_photos (
    id           bigserial PRIMARY KEY,
    ticket_id    bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    content_type text NOT NULL,
    data         bytea NOT NULL,
    sha256       text NOT NULL,
    lat          double precision CHECK (lat BETWEEN -90 AND 90),
    lon          double precision CHECK (lon BETWEEN -180 AND 180),
    taken_at     timestamptz NOT NULL,
    uploaded_by  text NOT NULL DEFAULT '',
    uploaded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ticket_photos_ticket_idx ON ticket_photos (ticket_id);

-- Inbound work orders (CRM, accounting): idempotent by (external_source, external_id).
ALTER TABLE tickets
    ADD COLUMN external_source text,
    ADD COLUMN external_id text;
CREATE UNIQUE INDEX tickets_external_idx ON tickets (external_source, external_id) WHERE external_id IS NOT NULL;

-- Outbound webhooks: an outbox row per (endpoint, ticket status change), written by a trigger in
-- the same transaction as the change, delivered by a scheduled job; signed, retried with
-- backoff, dead-lettered after max_attempts.
CREATE TABLE webhook_endpoints (
    id           serial PRIMARY KEY,
    url          text NOT NULL,
    secret       text NOT NULL CHECK (length(secret) >= 16),
    events       text[] NOT NULL DEFAULT '{}',     -- e.g. {ticket.assigned}; empty: every event
    max_attempts integer NOT NULL DEFAULT 8 CHECK (max_attempts > 0),
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    endpoint_id     integer NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event           text NOT NULL,
    idempotency_key text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (endpoint_id, idempotency_key)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

CREATE FUNCTION fw_ticket_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ev text := CASE NEW.status WHEN 'new' THEN 'ticket.created' ELSE 'ticket.' || NEW.status END;
BEGIN
    INSERT INTO webhook_deliveries (endpoint_id, event, idempotency_key, payload)
    SELECT e.id, ev, 'ticket-' || NEW.ticket_id || '-status-' || NEW.id,
           jsonb_build_object('event', ev, 'ticket_id', NEW.ticket_id, 'status', NEW.status, 'at', NEW.at,
                              'external_id', t.external_id, 'external_source', t.external_source)
    FROM webhook_endpoints e JOIN tickets t ON t.id = NEW.ticket_id
    WHERE e.active AND (e.events = '{}' OR ev = ANY (e.events));
    RETURN NEW;
END $$;
CREATE TRIGGER ticket_status_webhooks AFTER INSERT ON ticket_status_history
    FOR EACH ROW EXECUTE FUNCTION fw_ticket_webhooks();

-- Planned maintenance per equipment model: every N days, or every N run-hours counted from a
-- telemetry tag (the pump publishes run_hours). Tickets are generated lead_days / lead_run_hours
-- ahead of the due point; maintenance_runs remembers each generated visit (the next one counts
-- from it).
CREATE TABLE maintenance_plans (
    id              serial PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    equipment_model text NOT NULL,
    every_days      integer CHECK (every_days > 0),
    every_run_hours double precision CHECK (every_run_hours > 0),
    run_hours_tag   text NOT NULL DEFAULT 'run_hours',
    lead_days       integer NOT NULL DEFAULT 7 CHECK (lead_days >= 0),
    lead_run_hours  double precision NOT NULL DEFAULT 0 CHECK (lead_run_hours >= 0),
    required_skill  text REFERENCES skills (code),
    service_minutes integer NOT NULL DEFAULT 60 CHECK (service_minutes > 0),
    priority        integer NOT NULL DEFAULT 4 CHECK (priority BETWEEN 1 AND 5),
    active          boolean NOT NULL DEFAULT true,
    CHECK ((every_days IS NULL) <> (every_run_hours IS NULL))
);
CREATE TABLE maintenance_runs (
    id            bigserial PRIMARY KEY,
    plan_id       integer NOT NULL REFERENCES maintenance_plans (id) ON DELETE CASCADE,
    device_id     integer NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    ticket_id     bigint REFERENCES tickets (id) ON DELETE SET NULL,
    due_at        timestamptz,
    due_run_hours double precision,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX maintenance_runs_idx ON maintenance_runs (plan_id, device_id, id DESC);
