-- Accounts, API keys, the ledger, usage and the audit log.
-- Credits are integer millicredits; timestamps are integer Unix milliseconds (UTC).

CREATE TABLE accounts (
    id          TEXT   PRIMARY KEY,
    email       TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    balance     BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT   PRIMARY KEY,
    secret_hash  TEXT   NOT NULL,
    role         TEXT   NOT NULL CHECK (role IN ('customer', 'service', 'support', 'admin')),
    account_id   TEXT   REFERENCES accounts (id),
    label        TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    CHECK ((role = 'customer') = (account_id IS NOT NULL))
);

-- Append-only: every balance change, with the balance after it. (kind, reference) is
-- unique, so the same cause can never move money twice.
CREATE TABLE ledger_entries (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id     TEXT   NOT NULL REFERENCES accounts (id),
    kind           TEXT   NOT NULL CHECK (kind IN ('usage', 'refund', 'auto_topup', 'manual_topup', 'adjustment')),
    reference      TEXT   NOT NULL,
    amount         BIGINT NOT NULL CHECK (amount <> 0),
    balance_after  BIGINT NOT NULL CHECK (balance_after >= 0),
    description    TEXT   NOT NULL,
    created_at     BIGINT NOT NULL,
    UNIQUE (kind, reference)
);
CREATE INDEX ledger_entries_by_account ON ledger_entries (account_id, id);

CREATE FUNCTION reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION reject_change();

-- Priced and debited usage, one row per (account, caller's request id).
CREATE TABLE usage_events (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           TEXT   NOT NULL UNIQUE,
    account_id   TEXT   NOT NULL REFERENCES accounts (id),
    request_id   TEXT   NOT NULL,
    fingerprint  TEXT   NOT NULL,
    service      TEXT   NOT NULL,
    quote        TEXT   NOT NULL,
    cost         BIGINT NOT NULL CHECK (cost > 0),
    created_at   BIGINT NOT NULL,
    refunded_at  BIGINT,
    UNIQUE (account_id, request_id)
);
CREATE INDEX usage_events_by_account ON usage_events (account_id, seq);

-- Who did what to which account. Append-only.
CREATE TABLE audit_log (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor_key_id  TEXT   NOT NULL,
    actor_role    TEXT   NOT NULL,
    action        TEXT   NOT NULL,
    account_id    TEXT,
    detail        TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX audit_log_by_account ON audit_log (account_id, id);

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION reject_change();
