-- A customer whose auto top-up is off may ask to be emailed when the balance falls below
-- the low-balance line: once per crossing (`low_balance_told` is set when told, and
-- cleared once the balance is back at or above the line).
ALTER TABLE accounts ADD COLUMN low_balance_email BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE accounts ADD COLUMN low_balance_told BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX accounts_low_balance_email ON accounts (id) WHERE low_balance_email;
