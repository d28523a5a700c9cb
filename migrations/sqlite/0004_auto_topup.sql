-- Auto top-up settings and state, on the account row: the scan's due predicate compares
-- them with the balance, and a partial index holds exactly the accounts below threshold.
ALTER TABLE accounts ADD COLUMN auto_topup_enabled BOOLEAN NOT NULL DEFAULT FALSE;
-- Millicredits; NULL until the customer first saves settings.
ALTER TABLE accounts ADD COLUMN auto_topup_threshold INTEGER;
ALTER TABLE accounts ADD COLUMN auto_topup_target INTEGER;
-- A saved card to charge instead of the default one.
ALTER TABLE accounts ADD COLUMN auto_topup_payment_method_id TEXT;
-- Who last turned it on, and when.
ALTER TABLE accounts ADD COLUMN auto_topup_enabled_by TEXT;
ALTER TABLE accounts ADD COLUMN auto_topup_enabled_at INTEGER;
ALTER TABLE accounts ADD COLUMN auto_topup_paused_reason TEXT
    CHECK (auto_topup_paused_reason IN ('payment_failed', 'authentication_required'));
ALTER TABLE accounts ADD COLUMN auto_topup_paused_code TEXT;
ALTER TABLE accounts ADD COLUMN auto_topup_paused_at INTEGER;
-- No automatic attempt starts before this: the last one's start plus the rate limit.
ALTER TABLE accounts ADD COLUMN auto_topup_window_ends_at INTEGER NOT NULL DEFAULT 0;

CREATE INDEX accounts_auto_topup_due ON accounts (auto_topup_window_ends_at, id)
    WHERE auto_topup_enabled AND auto_topup_paused_reason IS NULL AND balance < auto_topup_threshold;

-- The latest decision the scan took for each account it looked at.
CREATE TABLE auto_topup_decisions (
    account_id        TEXT   PRIMARY KEY REFERENCES accounts (id),
    decision          TEXT   NOT NULL,
    balance           INTEGER NOT NULL,
    threshold         INTEGER,
    target            INTEGER,
    next_eligible_at  INTEGER,
    attempt_id        TEXT,
    decided_at        INTEGER NOT NULL
);

-- Set when an attempt stayed unresolved too long: support looks at it.
ALTER TABLE topup_attempts ADD COLUMN flagged_at INTEGER;
CREATE INDEX topup_attempts_open ON topup_attempts (updated_at)
    WHERE state NOT IN ('succeeded', 'failed', 'canceled');
