-- The payment's client secret, which the provider's redirect back to the return page
-- carries: only the customer sent there by the provider holds it, and the page shows a
-- payment's outcome to nobody else.
ALTER TABLE topup_attempts ADD COLUMN client_secret TEXT;
