-- 0006.1: repair of 0006_ticketing.sql for databases that applied an earlier release of it.
--
-- 0006 was edited after it landed, each time by appending: v1 (7af2ccc), v2 (f22c57f: SLA
-- policies, ticket status history), v3 (049a885: dispatcher overrides, field work), v4 (6ef749f:
-- inbound work orders, webhooks), final (70b27cf: planned maintenance). ingest/migrations/
-- checksums.lock lists the earlier checksums; this file is the appended parts with guards, and
-- brings such a database to exactly what the final 0006 creates. It runs right after 0006 (before
-- 0007, which needs the final 0006) and on every database: where the final 0006 ran, it changes
-- nothing, so it is safe everywhere.

-- ---- v2: SLA policies per client segment --------------------------------------------------------
ALTER TABLE sla_segments
    ADD COLUMN IF NOT EXISTS timezone text NOT NULL DEFAULT 'UTC',
    ADD COLUMN IF NOT EXISTS paused_statuses text[] NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS warn_minutes integer NOT NULL DEFAULT 30 CHECK (warn_minutes >= 0);
CREATE TABLE IF NOT EXISTS sla_targets (
    segment            text NOT NULL REFERENCES sla_segments (name) ON DELETE CASCADE,
    priority           integer NOT NULL CHECK (priority BETWEEN 1 AND 5),
    response_minutes   integer NOT NULL CHECK (response_minutes > 0),
    resolution_minutes integer NOT NULL CHECK (resolution_minutes > 0),
    PRIMARY KEY (segment, priority)
);
CREATE TABLE IF NOT EXISTS business_hours (
    segment text NOT NULL REFERENCES sla_segments (name) ON DELETE CASCADE,
    weekday integer NOT NULL CHECK (weekday BETWEEN 0 AND 6),   -- 0 = Monday
    opens   time NOT NULL,
    closes  time NOT NULL CHECK (closes > opens),
    PRIMARY KEY (segment, weekday)
);
CREATE TABLE IF NOT EXISTS holidays (
    id      serial PRIMARY KEY,
    segment text REFERENCES sla_segments (name) ON DELETE CASCADE,   -- NULL: every segment
    day     date NOT NULL,
    name    text NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS holidays_day_idx ON holidays (COALESCE(segment, ''), day);

ALTER TABLE tickets
    ADD COLUMN IF NOT EXISTS resolution_due_at timestamptz,
    ADD COLUMN IF NOT EXISTS escalated_at timestamptz;

-- Every status a ticket passes through. Where the table is new, it starts with each ticket's
-- current status at its creation time, as 0006 v2 did (the history before is unknown).
DO $history$
BEGIN
    IF to_regclass('ticket_status_history') IS NULL THEN
        CREATE TABLE ticket_status_history (
            id        bigserial PRIMARY KEY,
            ticket_id bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
            status    text NOT NULL,
            at        timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX ticket_status_history_idx ON ticket_status_history (ticket_id, at);
        INSERT INTO ticket_status_history (ticket_id, status, at) SELECT id, status, created_at FROM tickets;
    END IF;
END $history$;
CREATE OR REPLACE FUNCTION fw_ticket_status_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO ticket_status_history (ticket_id, status, at) VALUES (NEW.id, NEW.status, now());
    END IF;
    RETURN NEW;
END $$;
DO $trigger$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'tickets'::regclass AND tgname = 'tickets_status_history') THEN
        CREATE TRIGGER tickets_status_history AFTER INSERT OR UPDATE OF status ON tickets
            FOR EACH ROW EXECUTE FUNCTION fw_ticket_status_history();
    END IF;
END $trigger$;

CREATE TABLE IF NOT EXISTS sla_breaches (
    id          bigserial PRIMARY KEY,
    ticket_id   bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('response', 'resolution')),
    segment     text,
    priority    integer NOT NULL,
    due_at      timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (ticket_id, kind)
);

-- ---- v3: dispatcher overrides, field work -----------------------------------------------------
CREATE TABLE IF NOT EXISTS dispatch_overrides (
    id            bigserial PRIMARY KEY,
    ticket_id     bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    technician_id integer NOT NULL REFERENCES technicians (id) ON DELETE CASCADE,
    actor         text NOT NULL,
    reason        text NOT NULL CHECK (reason <> ''),
    violations    jsonb NOT NULL,
    at            timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE ticket_status_history
    ADD COLUMN IF NOT EXISTS actor text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS lat double precision CHECK (lat BETWEEN -90 AND 90),
    ADD COLUMN IF NOT EXISTS lon double precision CHECK (lon BETWEEN -180 AND 180);
ALTER TABLE tickets ADD COLUMN IF NOT EXISTS failure_code text;
CREATE TABLE IF NOT EXISTS ticket_notes (
    id        bigserial PRIMARY KEY,
    ticket_id bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    author    text NOT NULL DEFAULT '',
    body      text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ticket_parts_used (
    id            bigserial PRIMARY KEY,
    ticket_id     bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    technician_id integer REFERENCES technicians (id) ON DELETE SET NULL,
    part_code     text NOT NULL REFERENCES parts (code),
    quantity      integer NOT NULL CHECK (quantity > 0),
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ticket_photos (
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
CREATE INDEX IF NOT EXISTS ticket_photos_ticket_idx ON ticket_photos (ticket_id);

-- ---- v4: inbound work orders, outbound webhooks -----------------------------------------------
ALTER TABLE tickets
    ADD COLUMN IF NOT EXISTS external_source text,
    ADD COLUMN IF NOT EXISTS external_id text;
CREATE UNIQUE INDEX IF NOT EXISTS tickets_external_idx ON tickets (external_source, external_id)
    WHERE external_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id           serial PRIMARY KEY,
    url          text NOT NULL,
    secret       text NOT NULL CHECK (length(secret) >= 16),
    events       text[] NOT NULL DEFAULT '{}',     -- e.g. {ticket.assigned}; empty: every event
    max_attempts integer NOT NULL DEFAULT 8 CHECK (max_attempts > 0),
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
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
CREATE INDEX IF NOT EXISTS webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

CREATE OR REPLACE FUNCTION fw_ticket_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
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
DO $trigger$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'ticket_status_history'::regclass AND tgname = 'ticket_status_webhooks') THEN
        CREATE TRIGGER ticket_status_webhooks AFTER INSERT ON ticket_status_history
            FOR EACH ROW EXECUTE FUNCTION fw_ticket_webhooks();
    END IF;
END $trigger$;

-- ---- final: planned maintenance ---------------------------------------------------------------
CREATE TABLE IF NOT EXISTS maintenance_plans (
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
CREATE TABLE IF NOT EXISTS maintenance_runs (
    id            bigserial PRIMARY KEY,
    plan_id       integer NOT NULL REFERENCES maintenance_plans (id) ON DELETE CASCADE,
    device_id     integer NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    ticket_id     bigint REFERENCES tickets (id) ON DELETE SET NULL,
    due_at        timestamptz,
    due_run_hours double precision,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS maintenance_runs_idx ON maintenance_runs (plan_id, device_id, id DESC);
