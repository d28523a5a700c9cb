-- A staff member's session on the support console, opened by signing in with a support or
-- admin key. The browser holds a random id; this table keeps its hash and the key it
-- stands for (never the key's secret), so revoking the key ends the session.
CREATE TABLE console_sessions (
    id_hash       TEXT   PRIMARY KEY,
    key_id        TEXT   NOT NULL REFERENCES api_keys (id),
    csrf_token    TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);
