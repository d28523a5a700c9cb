-- Whether an account's balance is below its auto top-up threshold, kept by the database on
-- every write. The due index names it instead of the balance: a partial index whose
-- predicate names `balance` makes every debit a non-HOT update (new entries in every index
-- of `accounts`), while a debit that leaves this flag as it was stays on its heap page.
-- Pages keep room for those updates.
ALTER TABLE accounts SET (fillfactor = 90);
ALTER TABLE accounts ADD COLUMN below_threshold BOOLEAN
    GENERATED ALWAYS AS (balance < auto_topup_threshold) STORED;
DROP INDEX accounts_auto_topup_due;
CREATE INDEX accounts_auto_topup_due ON accounts (auto_topup_window_ends_at, id)
    WHERE auto_topup_enabled AND auto_topup_paused_reason IS NULL AND below_threshold;
