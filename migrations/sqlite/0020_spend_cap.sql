-- A monthly spend cap on automatic top-ups, counted in the account's time zone. Reaching
-- it pauses auto top-up until the month ends (`auto_topup_paused_until`), when the scan
-- lifts the pause.
--
-- SQLite cannot change a CHECK in place, so `accounts` is rebuilt with every row kept, by
-- SQLite's documented procedure (migrations run with foreign keys off and checked
-- afterwards: see `migrate_sqlite`), with its indexes and trigger made again.

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
        CHECK (auto_topup_paused_reason IN ('payment_failed', 'authentication_required',
            'disputed', 'refunded', 'spend_cap_reached')),
    auto_topup_paused_code        TEXT,
    auto_topup_paused_at          INTEGER,
    auto_topup_window_ends_at     INTEGER NOT NULL DEFAULT 0,
    -- Raised by each change of email or name; the provider's customer carries the
    -- details up to customer_synced_version.
    details_version               INTEGER NOT NULL DEFAULT 0,
    customer_synced_version       INTEGER NOT NULL DEFAULT 0,
    seq                           INTEGER,
    external_id                   TEXT,
    metadata                      TEXT    NOT NULL DEFAULT '{}',
    email_links_revoked_at        BIGINT,
    closed_at                     BIGINT,
    closed_reason                 TEXT,
    below_threshold               BOOLEAN
        GENERATED ALWAYS AS (balance < auto_topup_threshold) VIRTUAL,
    time_zone                     TEXT    NOT NULL DEFAULT 'UTC',
    -- Cents; NULL is no cap.
    auto_topup_monthly_cap_cents  BIGINT  CHECK (auto_topup_monthly_cap_cents > 0),
    auto_topup_paused_until       BIGINT
);
-- The rowid is kept: an account's `seq` is its rowid, and new accounts take the next.
INSERT INTO accounts_rebuilt (rowid, id, email, name, balance, created_at, provider_customer_id,
    topup_seq, auto_topup_enabled, auto_topup_threshold, auto_topup_target,
    auto_topup_payment_method_id, auto_topup_enabled_by, auto_topup_enabled_at,
    auto_topup_paused_reason, auto_topup_paused_code, auto_topup_paused_at,
    auto_topup_window_ends_at, details_version, customer_synced_version, seq, external_id,
    metadata, email_links_revoked_at, closed_at, closed_reason)
SELECT rowid, id, email, name, balance, created_at, provider_customer_id, topup_seq,
    auto_topup_enabled, auto_topup_threshold, auto_topup_target, auto_topup_payment_method_id,
    auto_topup_enabled_by, auto_topup_enabled_at, auto_topup_paused_reason,
    auto_topup_paused_code, auto_topup_paused_at, auto_topup_window_ends_at, details_version,
    customer_synced_version, seq, external_id, metadata, email_links_revoked_at, closed_at,
    closed_reason
FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_rebuilt RENAME TO accounts;
CREATE UNIQUE INDEX accounts_by_seq ON accounts (seq);
CREATE TRIGGER accounts_numbered AFTER INSERT ON accounts FOR EACH ROW WHEN NEW.seq IS NULL
BEGIN
    UPDATE accounts SET seq = NEW.rowid WHERE rowid = NEW.rowid;
END;
CREATE UNIQUE INDEX accounts_by_external_id ON accounts (external_id);
CREATE INDEX accounts_by_email ON accounts (lower(email));
CREATE INDEX accounts_auto_topup_due ON accounts (auto_topup_window_ends_at, id)
    WHERE auto_topup_enabled AND auto_topup_paused_reason IS NULL AND below_threshold;
CREATE INDEX accounts_pauses_ending ON accounts (auto_topup_paused_until)
    WHERE auto_topup_paused_until IS NOT NULL;
