-- Refunds and disputes made at the provider take credits back, even credits already
-- spent: a balance may now go below zero (usage is then refused), and the ledger gains the
-- entries that say why. Auto top-up may be paused by a dispute or a refund. Each top-up
-- keeps how much of it was refunded, and each dispute its held credits and outcome. An
-- account's email and name may change, and its provider customer follows.
--
-- SQLite cannot change a CHECK in place, so `accounts` and `ledger_entries` are rebuilt
-- with every row kept, by SQLite's documented procedure (migrations run with foreign keys
-- off and checked afterwards: see `migrate_sqlite`).

CREATE TABLE accounts_rebuilt (
    id                            TEXT    PRIMARY KEY,
    email                         TEXT    NOT NULL,
    name                          TEXT    NOT NULL,
    balance                       INTEGER NOT NULL DEFAULT 0,
    created_at                    INTEGER NOT NULL,
    provider_customer_id          TEXT,
    topup_seq                     INTEGER NOT NULL DEFAULT 0,
    auto_topup_enabled            BOOLEAN NOT NULL DEFAULT FALSE,
    auto_topup_threshold          INTEGER,
    auto_topup_target             INTEGER,
    auto_topup_payment_method_id  TEXT,
    auto_topup_enabled_by         TEXT,
    auto_topup_enabled_at         INTEGER,
    auto_topup_paused_reason      TEXT
        CHECK (auto_topup_paused_reason IN ('payment_failed', 'authentication_required', 'disputed', 'refunded')),
    auto_topup_paused_code        TEXT,
    auto_topup_paused_at          INTEGER,
    auto_topup_window_ends_at     INTEGER NOT NULL DEFAULT 0,
    -- Raised by each change of email or name; the provider's customer carries the
    -- details up to customer_synced_version.
    details_version               INTEGER NOT NULL DEFAULT 0,
    customer_synced_version       INTEGER NOT NULL DEFAULT 0
);
INSERT INTO accounts_rebuilt (id, email, name, balance, created_at, provider_customer_id,
    topup_seq, auto_topup_enabled, auto_topup_threshold, auto_topup_target,
    auto_topup_payment_method_id, auto_topup_enabled_by, auto_topup_enabled_at,
    auto_topup_paused_reason, auto_topup_paused_code, auto_topup_paused_at,
    auto_topup_window_ends_at)
SELECT id, email, name, balance, created_at, provider_customer_id, topup_seq,
    auto_topup_enabled, auto_topup_threshold, auto_topup_target, auto_topup_payment_method_id,
    auto_topup_enabled_by, auto_topup_enabled_at, auto_topup_paused_reason,
    auto_topup_paused_code, auto_topup_paused_at, auto_topup_window_ends_at
FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_rebuilt RENAME TO accounts;
CREATE INDEX accounts_auto_topup_due ON accounts (auto_topup_window_ends_at, id)
    WHERE auto_topup_enabled AND auto_topup_paused_reason IS NULL AND balance < auto_topup_threshold;

CREATE TABLE ledger_entries_rebuilt (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id     TEXT    NOT NULL REFERENCES accounts (id),
    kind           TEXT    NOT NULL CHECK (kind IN ('usage', 'refund', 'auto_topup', 'manual_topup',
                       'adjustment', 'payment_refund', 'dispute_hold', 'dispute_release')),
    reference      TEXT    NOT NULL,
    amount         INTEGER NOT NULL CHECK (amount <> 0),
    balance_after  INTEGER NOT NULL,
    description    TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    UNIQUE (kind, reference)
);
INSERT INTO ledger_entries_rebuilt (id, account_id, kind, reference, amount, balance_after,
    description, created_at)
SELECT id, account_id, kind, reference, amount, balance_after, description, created_at
FROM ledger_entries;
DROP TABLE ledger_entries;
ALTER TABLE ledger_entries_rebuilt RENAME TO ledger_entries;
CREATE INDEX ledger_entries_by_account ON ledger_entries (account_id, id);
CREATE TRIGGER ledger_entries_append_only_update BEFORE UPDATE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger_entries is append-only');
END;
CREATE TRIGGER ledger_entries_append_only_delete BEFORE DELETE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger_entries is append-only');
END;

-- The part of each top-up's charge the provider has refunded, in cents: only ever grows.
ALTER TABLE topup_attempts ADD COLUMN refunded_cents INTEGER NOT NULL DEFAULT 0
    CHECK (refunded_cents >= 0);

-- Refunds and disputes name the charge.
CREATE INDEX topup_attempts_by_charge ON topup_attempts (provider_charge_id)
    WHERE provider_charge_id IS NOT NULL;

-- A dispute of a top-up's charge: the credits it holds, and what became of them.
CREATE TABLE disputes (
    id            TEXT    PRIMARY KEY,
    attempt_id    TEXT    NOT NULL REFERENCES topup_attempts (id),
    account_id    TEXT    NOT NULL REFERENCES accounts (id),
    charge_id     TEXT    NOT NULL,
    amount_cents  INTEGER NOT NULL CHECK (amount_cents > 0),
    credits_held  INTEGER NOT NULL CHECK (credits_held >= 0),
    status        TEXT    NOT NULL,
    -- NULL while open; `released` when won, `removed` when lost.
    outcome       TEXT    CHECK (outcome IN ('released', 'removed')),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    closed_at     INTEGER
);
CREATE INDEX disputes_by_account ON disputes (account_id, created_at);
CREATE INDEX disputes_open ON disputes (created_at) WHERE outcome IS NULL;

-- How far the sweep of the provider's events has come (the newest event's creation time,
-- Unix seconds): webhooks lost for good are found by listing events from there.
CREATE TABLE event_sweeps (
    name     TEXT    PRIMARY KEY,
    through  INTEGER  NOT NULL
);
