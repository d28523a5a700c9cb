-- Accounts, API keys, the ledger, usage and the audit log.
-- Credits are integer millicredits; timestamps are integer Unix milliseconds (UTC).

CREATE TABLE accounts (
    id          TEXT    PRIMARY KEY,
    email       TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    balance     INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT    PRIMARY KEY,
    secret_hash  TEXT    NOT NULL,
    role         TEXT    NOT NULL CHECK (role IN ('customer', 'service', 'support', 'admin')),
    account_id   TEXT    REFERENCES accounts (id),
    label        TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    CHECK ((role = 'customer') = (account_id IS NOT NULL))
);

-- Append-only: every balance change, with the balance after it. (kind, reference) is
-- unique, so the same cause can never move money twice.
CREATE TABLE ledger_entries (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id     TEXT    NOT NULL REFERENCES accounts (id),
    kind           TEXT    NOT NULL CHECK (kind IN ('usage', 'refund', 'auto_topup', 'manual_topup', 'adjustment')),
    reference      TEXT    NOT NULL,
    amount         INTEGER NOT NULL CHECK (amount <> 0),
    balance_after  INTEGER NOT NULL CHECK (balance_after >= 0),
    description    TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    UNIQUE (kind, reference)
);
CREATE INDEX ledger_entries_by_account ON ledger_entries (account_id, id);

CREATE TRIGGER ledger_entries_append_only_update BEFORE UPDATE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger_entries is append-only');
END;
CREATE TRIGGER ledger_entries_append_only_delete BEFORE DELETE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger_entries is append-only');
END;

-- Priced and debited usage, one row per (account, caller's request id).
CREATE TABLE usage_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT    NOT NULL UNIQUE,
    account_id   TEXT    NOT NULL REFERENCES accounts (id),
    request_id   TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    service      TEXT    NOT NULL,
    quote        TEXT    NOT NULL,
    cost         INTEGER NOT NULL CHECK (cost > 0),
    created_at   INTEGER NOT NULL,
    refunded_at  INTEGER,
    UNIQUE (account_id, request_id)
);
CREATE INDEX usage_events_by_account ON usage_events (account_id, seq);

-- Who did what to which account. Append-only.
CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    actor_key_id  TEXT    NOT NULL,
    actor_role    TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    account_id    TEXT,
    detail        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX audit_log_by_account ON audit_log (account_id, id);

CREATE TRIGGER audit_log_append_only_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_append_only_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
