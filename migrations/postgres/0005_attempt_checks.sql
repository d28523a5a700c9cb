-- When the reconciler next asks the provider about an open attempt, and how often it has
-- asked: checks back off so attempts that wait on a customer never crowd out the others.
ALTER TABLE topup_attempts ADD COLUMN next_check_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE topup_attempts ADD COLUMN check_count BIGINT NOT NULL DEFAULT 0;
DROP INDEX topup_attempts_open;
CREATE INDEX topup_attempts_to_check ON topup_attempts (next_check_at)
    WHERE state NOT IN ('succeeded', 'failed', 'canceled');
