-- The daily check of the provider against the ledger reads the top-ups of a period, and
-- marks those whose charge and credit disagree with what it found, for support.
CREATE INDEX topup_attempts_by_created ON topup_attempts (created_at);
ALTER TABLE topup_attempts ADD COLUMN provider_mismatch TEXT;
CREATE INDEX topup_attempts_mismatched ON topup_attempts (flagged_at)
    WHERE provider_mismatch IS NOT NULL;
