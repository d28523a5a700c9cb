-- Whether an account's balance is below its auto top-up threshold, computed as it is read.
-- The due index and query name it, as on PostgreSQL, where it keeps debits off the index.
ALTER TABLE accounts ADD COLUMN below_threshold BOOLEAN
    GENERATED ALWAYS AS (balance < auto_topup_threshold) VIRTUAL;
DROP INDEX accounts_auto_topup_due;
CREATE INDEX accounts_auto_topup_due ON accounts (auto_topup_window_ends_at, id)
    WHERE auto_topup_enabled AND auto_topup_paused_reason IS NULL AND below_threshold;
