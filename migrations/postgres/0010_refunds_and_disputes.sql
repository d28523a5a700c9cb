-- Refunds and disputes made at the provider take credits back, even credits already
-- spent: a balance may now go below zero (usage is then refused), and the ledger gains the
-- entries that say why. Auto top-up may be paused by a dispute or a refund. Each top-up
-- keeps how much of it was refunded, and each dispute its held credits and outcome. An
-- account's email and name may change, and its provider customer follows.
ALTER TABLE accounts DROP CONSTRAINT accounts_balance_check;
ALTER TABLE accounts DROP CONSTRAINT accounts_auto_topup_paused_reason_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_auto_topup_paused_reason_check
    CHECK (auto_topup_paused_reason IN ('payment_failed', 'authentication_required', 'disputed', 'refunded'));
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_balance_after_check;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check
    CHECK (kind IN ('usage', 'refund', 'auto_topup', 'manual_topup', 'adjustment',
                    'payment_refund', 'dispute_hold', 'dispute_release'));

-- Raised by each change of email or name; the provider's customer carries the details
-- up to customer_synced_version.
ALTER TABLE accounts ADD COLUMN details_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN customer_synced_version BIGINT NOT NULL DEFAULT 0;

-- The part of each top-up's charge the provider has refunded, in cents: only ever grows.
ALTER TABLE topup_attempts ADD COLUMN refunded_cents BIGINT NOT NULL DEFAULT 0
    CHECK (refunded_cents >= 0);

-- Refunds and disputes name the charge.
CREATE INDEX topup_attempts_by_charge ON topup_attempts (provider_charge_id)
    WHERE provider_charge_id IS NOT NULL;

-- A dispute of a top-up's charge: the credits it holds, and what became of them.
CREATE TABLE disputes (
    id            TEXT   PRIMARY KEY,
    attempt_id    TEXT   NOT NULL REFERENCES topup_attempts (id),
    account_id    TEXT   NOT NULL REFERENCES accounts (id),
    charge_id     TEXT   NOT NULL,
    amount_cents  BIGINT NOT NULL CHECK (amount_cents > 0),
    credits_held  BIGINT NOT NULL CHECK (credits_held >= 0),
    status        TEXT   NOT NULL,
    -- NULL while open; `released` when won, `removed` when lost.
    outcome       TEXT   CHECK (outcome IN ('released', 'removed')),
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    closed_at     BIGINT
);
CREATE INDEX disputes_by_account ON disputes (account_id, created_at);
CREATE INDEX disputes_open ON disputes (created_at) WHERE outcome IS NULL;

-- How far the sweep of the provider's events has come (the newest event's creation time,
-- Unix seconds): webhooks lost for good are found by listing events from there.
CREATE TABLE event_sweeps (
    name     TEXT    PRIMARY KEY,
    through  BIGINT  NOT NULL
);
