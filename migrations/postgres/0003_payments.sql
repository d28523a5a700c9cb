-- Payment methods, top-up attempts and the provider's webhook events.

-- The provider's customer for the account, created on the first saved card.
ALTER TABLE accounts ADD COLUMN provider_customer_id TEXT;
-- Sequence of the account's top-up attempts; each attempt's idempotency key derives from it.
ALTER TABLE accounts ADD COLUMN topup_seq BIGINT NOT NULL DEFAULT 0;

CREATE TABLE payment_methods (
    id          TEXT    PRIMARY KEY,
    account_id  TEXT    NOT NULL REFERENCES accounts (id),
    brand       TEXT    NOT NULL,
    last4       TEXT    NOT NULL,
    exp_month   BIGINT  NOT NULL,
    exp_year    BIGINT  NOT NULL,
    is_default  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX payment_methods_by_account ON payment_methods (account_id);
CREATE UNIQUE INDEX payment_methods_one_default ON payment_methods (account_id) WHERE is_default;

-- One charge of an account's saved card, from claim to settlement. Each state is written
-- before the provider call it guards, so a restart knows what may have reached the provider.
CREATE TABLE topup_attempts (
    id                   TEXT   PRIMARY KEY,
    account_id           TEXT   NOT NULL REFERENCES accounts (id),
    seq                  BIGINT NOT NULL,
    trigger              TEXT   NOT NULL CHECK (trigger IN ('auto', 'manual', 'retry')),
    idempotency_key      TEXT   NOT NULL UNIQUE,
    -- The caller's Idempotency-Key header for manual top-ups, with its request.
    request_key          TEXT,
    request_fingerprint  TEXT,
    credits              BIGINT NOT NULL CHECK (credits > 0),
    amount_cents         BIGINT NOT NULL CHECK (amount_cents > 0),
    currency             TEXT   NOT NULL,
    payment_method_id    TEXT   NOT NULL,
    customer_id          TEXT   NOT NULL,
    state                TEXT   NOT NULL CHECK (state IN ('claimed', 'creating', 'created',
                             'confirming', 'requires_action', 'processing', 'succeeded',
                             'failed', 'canceled')),
    provider_payment_id  TEXT   UNIQUE,
    next_action_url      TEXT,
    decline_code         TEXT,
    failure_message      TEXT,
    amount_received      BIGINT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    settled_at           BIGINT,
    UNIQUE (account_id, seq),
    UNIQUE (account_id, request_key)
);
CREATE UNIQUE INDEX topup_attempts_one_open ON topup_attempts (account_id)
    WHERE state NOT IN ('succeeded', 'failed', 'canceled');

-- Every authentic event the provider sent, once per id.
CREATE TABLE webhook_events (
    id            TEXT   PRIMARY KEY,
    type          TEXT   NOT NULL,
    object_id     TEXT,
    payload       TEXT   NOT NULL,
    received_at   BIGINT NOT NULL,
    processed_at  BIGINT,
    last_error    TEXT
);
CREATE INDEX webhook_events_unprocessed ON webhook_events (received_at) WHERE processed_at IS NULL;
