-- The customer's backup cards for auto top-up, in the order they are tried (a JSON array
-- of saved cards' ids) when the card charged first is declined; each try is an attempt of
-- its own, chained to the first by `backup_of`, and together they are one top-up.
ALTER TABLE accounts ADD COLUMN auto_topup_backup_cards TEXT;
ALTER TABLE topup_attempts ADD COLUMN backup_of TEXT;
