-- A notice is queued as facts (JSON) with its recipient's name, and rendered when it is
-- sent, so nothing is rendered inside the transaction that queues it. Notices queued
-- before keep the rendering they were queued with. SQLite cannot relax NOT NULL in place,
-- so the table is rebuilt with every row kept.
CREATE TABLE notices_facts (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT    NOT NULL UNIQUE,
    cause             TEXT    NOT NULL UNIQUE,
    kind              TEXT    NOT NULL,
    account_id        TEXT    NOT NULL REFERENCES accounts (id),
    recipient         TEXT    NOT NULL,
    recipient_name    TEXT,
    facts             TEXT,
    subject           TEXT,
    text_body         TEXT,
    html_body         TEXT,
    message_id        TEXT    NOT NULL UNIQUE,
    state             TEXT    NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    last_error        TEXT,
    created_at        INTEGER NOT NULL,
    sent_at           INTEGER,
    failed_at         INTEGER,
    CHECK ((facts IS NOT NULL AND recipient_name IS NOT NULL)
        OR (subject IS NOT NULL AND text_body IS NOT NULL AND html_body IS NOT NULL))
);
INSERT INTO notices_facts (seq, id, cause, kind, account_id, recipient, subject, text_body,
    html_body, message_id, state, attempts, next_attempt_at, lease_owner, lease_expires_at,
    last_error, created_at, sent_at, failed_at)
SELECT seq, id, cause, kind, account_id, recipient, subject, text_body, html_body, message_id,
    state, attempts, next_attempt_at, lease_owner, lease_expires_at, last_error, created_at,
    sent_at, failed_at
FROM notices;
DROP TABLE notices;
ALTER TABLE notices_facts RENAME TO notices;
CREATE INDEX notices_due ON notices (state, next_attempt_at);
CREATE INDEX notices_leased ON notices (state, lease_expires_at);
