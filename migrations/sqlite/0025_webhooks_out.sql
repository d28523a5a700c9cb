-- Webhooks out to the host (Standard Webhooks). An endpoint subscribes to event types; each
-- event is a message, written in the transaction of the change it reports, with one
-- delivery per endpoint that wanted it. Deliveries are tried in order per endpoint and
-- account, each try recorded.
CREATE TABLE webhook_endpoints (
    seq                       INTEGER PRIMARY KEY AUTOINCREMENT,
    id                        TEXT    NOT NULL UNIQUE,
    url                       TEXT    NOT NULL,
    description               TEXT    NOT NULL,
    -- A JSON array of event types, or ["*"] for all of them.
    events                    TEXT    NOT NULL,
    secret                    TEXT    NOT NULL,
    -- After a rotation the previous secret also signs until it expires, so receivers can
    -- move to the new one without refusing a delivery.
    previous_secret           TEXT,
    previous_secret_until     INTEGER,
    enabled                   BOOLEAN NOT NULL,
    disabled_reason           TEXT,
    created_at                INTEGER    NOT NULL,
    updated_at                INTEGER    NOT NULL
);

CREATE TABLE webhook_messages (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    event_type  TEXT    NOT NULL,
    account_id  TEXT    NOT NULL REFERENCES accounts (id),
    -- The body exactly as it is sent and signed.
    body        TEXT    NOT NULL,
    created_at  INTEGER    NOT NULL
);

-- A refused debit asks whether the account's credits running out was already reported.
CREATE INDEX webhook_messages_of_account ON webhook_messages (account_id, event_type, created_at);

CREATE TABLE webhook_deliveries (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT    NOT NULL UNIQUE,
    endpoint_id       TEXT    NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    message_id        TEXT    NOT NULL REFERENCES webhook_messages (id),
    account_id        TEXT    NOT NULL,
    state             TEXT    NOT NULL CHECK (state IN ('pending', 'sending', 'delivered', 'failed')),
    attempts          INTEGER    NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER    NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    last_status       INTEGER,
    last_error        TEXT,
    created_at        INTEGER    NOT NULL,
    delivered_at      INTEGER,
    failed_at         INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_in_order ON webhook_deliveries (endpoint_id, account_id, seq);

CREATE TABLE webhook_attempts (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id  TEXT    NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at INTEGER    NOT NULL,
    -- The HTTP status, when there was an answer.
    status       INTEGER,
    error        TEXT,
    duration_ms  INTEGER    NOT NULL
);
CREATE INDEX webhook_attempts_of ON webhook_attempts (delivery_id, seq);
