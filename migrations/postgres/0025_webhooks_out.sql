-- Webhooks out to the host (Standard Webhooks). An endpoint subscribes to event types; each
-- event is a message, written in the transaction of the change it reports, with one
-- delivery per endpoint that wanted it. Deliveries are tried in order per endpoint and
-- account, each try recorded.
CREATE TABLE webhook_endpoints (
    seq                       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                        TEXT    NOT NULL UNIQUE,
    url                       TEXT    NOT NULL,
    description               TEXT    NOT NULL,
    -- A JSON array of event types, or ["*"] for all of them.
    events                    TEXT    NOT NULL,
    secret                    TEXT    NOT NULL,
    -- After a rotation the previous secret also signs until it expires, so receivers can
    -- move to the new one without refusing a delivery.
    previous_secret           TEXT,
    previous_secret_until     BIGINT,
    enabled                   BOOLEAN NOT NULL,
    disabled_reason           TEXT,
    created_at                BIGINT    NOT NULL,
    updated_at                BIGINT    NOT NULL
);

CREATE TABLE webhook_messages (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    event_type  TEXT    NOT NULL,
    account_id  TEXT    NOT NULL REFERENCES accounts (id),
    -- The body exactly as it is sent and signed.
    body        TEXT    NOT NULL,
    created_at  BIGINT    NOT NULL
);

-- A refused debit asks whether the account's credits running out was already reported.
CREATE INDEX webhook_messages_of_account ON webhook_messages (account_id, event_type, created_at);

CREATE TABLE webhook_deliveries (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                TEXT    NOT NULL UNIQUE,
    endpoint_id       TEXT    NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    message_id        TEXT    NOT NULL REFERENCES webhook_messages (id),
    account_id        TEXT    NOT NULL,
    state             TEXT    NOT NULL CHECK (state IN ('pending', 'sending', 'delivered', 'failed')),
    attempts          BIGINT    NOT NULL DEFAULT 0,
    next_attempt_at   BIGINT    NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    last_status       BIGINT,
    last_error        TEXT,
    created_at        BIGINT    NOT NULL,
    delivered_at      BIGINT,
    failed_at         BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_in_order ON webhook_deliveries (endpoint_id, account_id, seq);

CREATE TABLE webhook_attempts (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id  TEXT    NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at BIGINT    NOT NULL,
    -- The HTTP status, when there was an answer.
    status       BIGINT,
    error        TEXT,
    duration_ms  BIGINT    NOT NULL
);
CREATE INDEX webhook_attempts_of ON webhook_attempts (delivery_id, seq);
