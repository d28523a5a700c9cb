-- Why an attempt is failing, written before its payment is cancelled: only the
-- cancellation reads it (its webhook may arrive first and says nothing of why). A payment
-- that goes on instead leaves it unread, and the attempt's next move clears it, so a
-- decline that never happened is never reported.
ALTER TABLE topup_attempts ADD COLUMN failing_code TEXT;
ALTER TABLE topup_attempts ADD COLUMN failing_message TEXT;
ALTER TABLE topup_attempts ADD COLUMN failing_flag BOOLEAN NOT NULL DEFAULT FALSE;
