-- A monthly spend cap on automatic top-ups, counted in the account's time zone. Reaching
-- it pauses auto top-up until the month ends (`auto_topup_paused_until`), when the scan
-- lifts the pause.
ALTER TABLE accounts ADD COLUMN time_zone TEXT NOT NULL DEFAULT 'UTC';
-- Cents; NULL is no cap.
ALTER TABLE accounts ADD COLUMN auto_topup_monthly_cap_cents BIGINT
    CHECK (auto_topup_monthly_cap_cents > 0);
ALTER TABLE accounts ADD COLUMN auto_topup_paused_until BIGINT;
ALTER TABLE accounts DROP CONSTRAINT accounts_auto_topup_paused_reason_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_auto_topup_paused_reason_check
    CHECK (auto_topup_paused_reason IN ('payment_failed', 'authentication_required', 'disputed',
        'refunded', 'spend_cap_reached'));
CREATE INDEX accounts_pauses_ending ON accounts (auto_topup_paused_until)
    WHERE auto_topup_paused_until IS NOT NULL;
