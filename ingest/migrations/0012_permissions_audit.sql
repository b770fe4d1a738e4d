-- Issue 13: permissions in one place (fwcore/policy.py) and an append-only audit log (fwcore/audit.py).
--
-- Two roles join the four: `technician` acts only on the jobs assigned to it and its own position,
-- so its tokens name their technician; `viewer` reads and never writes. A token of any role may be
-- bound to a technician (a field engineer's phone), and — for the client users a later change
-- adds — to a client. A deleted technician or client takes its tokens with it.
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_role_check;
ALTER TABLE api_tokens
    ADD CONSTRAINT api_tokens_role_check CHECK (
        role IN ('admin', 'dispatcher', 'reliability_engineer', 'field_engineer', 'technician', 'viewer')),
    ADD COLUMN technician_id integer REFERENCES technicians (id) ON DELETE CASCADE,
    ADD COLUMN client_id integer REFERENCES clients (id) ON DELETE CASCADE,
    ADD CONSTRAINT api_tokens_technician_bound CHECK (role <> 'technician' OR technician_id IS NOT NULL);

-- Who changed what and when, with the state before and after. Written in the transaction that
-- makes the change; never updated, deleted or truncated (the triggers refuse). No foreign keys:
-- an entry outlives the token, ticket or rule it names.
CREATE TABLE audit_log (
    id             bigserial PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    actor          text NOT NULL,                -- the token's name, or the CLI user / job
    actor_role     text NOT NULL DEFAULT '',
    actor_token_id integer,
    action         text NOT NULL,                -- ticket.status, ticket.assign, rule.apply, token.create, ...
    object_type    text NOT NULL,
    object_id      text NOT NULL,
    before         jsonb,                        -- null for a creation
    after          jsonb
);
CREATE INDEX audit_log_object_idx ON audit_log (object_type, object_id, id);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, id);
CREATE INDEX audit_log_at_idx ON audit_log (at);

CREATE FUNCTION fw_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege', HINT = 'entries are corrected by appending a new one';
END
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION fw_audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION fw_audit_log_append_only();
