-- The notice outbox: queued with the state change that causes it, delivered later.
CREATE TABLE notices (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT    NOT NULL UNIQUE,
    -- What caused the notice; the same cause never queues a second one.
    cause             TEXT    NOT NULL UNIQUE,
    kind              TEXT    NOT NULL,
    account_id        TEXT    NOT NULL REFERENCES accounts (id),
    recipient         TEXT    NOT NULL,
    subject           TEXT    NOT NULL,
    text_body         TEXT    NOT NULL,
    html_body         TEXT    NOT NULL,
    message_id        TEXT    NOT NULL UNIQUE,
    state             TEXT    NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    last_error        TEXT,
    created_at        INTEGER NOT NULL,
    sent_at           INTEGER,
    failed_at         INTEGER
);
CREATE INDEX notices_due ON notices (state, next_attempt_at);
CREATE INDEX notices_leased ON notices (state, lease_expires_at);
