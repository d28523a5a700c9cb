-- The provider's charge of each top-up (a payment's latest_charge): refunds and disputes
-- name the charge, not the payment.
ALTER TABLE topup_attempts ADD COLUMN provider_charge_id TEXT;
