-- The notice outbox: queued with the state change that causes it, delivered later.
CREATE TABLE notices (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                TEXT   NOT NULL UNIQUE,
    -- What caused the notice; the same cause never queues a second one.
    cause             TEXT   NOT NULL UNIQUE,
    kind              TEXT   NOT NULL,
    account_id        TEXT   NOT NULL REFERENCES accounts (id),
    recipient         TEXT   NOT NULL,
    subject           TEXT   NOT NULL,
    text_body         TEXT   NOT NULL,
    html_body         TEXT   NOT NULL,
    message_id        TEXT   NOT NULL UNIQUE,
    state             TEXT   NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts          BIGINT NOT NULL DEFAULT 0,
    next_attempt_at   BIGINT NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    last_error        TEXT,
    created_at        BIGINT NOT NULL,
    sent_at           BIGINT,
    failed_at         BIGINT
);
CREATE INDEX notices_due ON notices (state, next_attempt_at);
CREATE INDEX notices_leased ON notices (state, lease_expires_at);
