-- The billing page. The host's backend asks for a link (POST /v1/portal-sessions) that
-- opens a session once; only a hash of its token is kept, so a database read gives no
-- working link.
CREATE TABLE portal_links (
    token_hash  TEXT   PRIMARY KEY,
    account_id  TEXT   NOT NULL REFERENCES accounts (id),
    return_url  TEXT,
    created_by  TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

-- A browser's session on the billing page, for one account; the cookie holds the id,
-- this table its hash. Forms carry csrf_token.
CREATE TABLE portal_sessions (
    id_hash       TEXT   PRIMARY KEY,
    account_id    TEXT   NOT NULL REFERENCES accounts (id),
    csrf_token    TEXT   NOT NULL,
    return_url    TEXT,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX portal_sessions_by_expiry ON portal_sessions (expires_at);

-- Keys made once and shared by every replica, such as the one that signs the links in
-- emails.
CREATE TABLE signing_keys (
    name        TEXT   PRIMARY KEY,
    secret      TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);
