-- Issue 16: the web console's people and sign-in.
--
-- * `users`: people who sign in to the console (username, display name, role of fwcore.policy,
--   active flag). The password is an argon2 hash (its own salt and parameters inside); a disabled
--   user cannot sign in and their sessions end.
-- * `user_sessions`: server-side sessions. The cookie holds a random id; only its SHA-256 is stored.
--   A session ends when idle too long (`last_seen_at`), at its absolute expiry (`expires_at`), at
--   sign-out (`ended_at`), or when the user is disabled or their password reset. `csrf_token` is
--   the synchronizer token every state-changing console request must echo.
-- * `signin_failures`: failed sign-ins, by account and by address, so repeated guesses are slowed
--   down (rows older than the throttle window are deleted as new ones are written).
CREATE TABLE users (
    id            serial PRIMARY KEY,
    username      text NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    display_name  text NOT NULL DEFAULT '',
    role          text NOT NULL CHECK (role IN ('admin', 'dispatcher', 'reliability_engineer',
                                                'field_engineer', 'technician', 'viewer')),
    technician_id integer REFERENCES technicians (id) ON DELETE SET NULL,
    password_hash text NOT NULL,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    last_signin_at timestamptz
);

CREATE TABLE user_sessions (
    id           bigserial PRIMARY KEY,
    user_id      integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   bytea NOT NULL UNIQUE,   -- sha256 of the cookie value; the value itself is never stored
    csrf_token   text NOT NULL,
    address      text,
    user_agent   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    ended_at     timestamptz
);
CREATE INDEX user_sessions_user_idx ON user_sessions (user_id) WHERE ended_at IS NULL;

CREATE TABLE signin_failures (
    id       bigserial PRIMARY KEY,
    username text NOT NULL,
    address  text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX signin_failures_username_idx ON signin_failures (username, at);
CREATE INDEX signin_failures_address_idx ON signin_failures (address, at);
