-- A customer may ask to be told, a number of minutes ahead, of each automatic charge. The
-- scan then announces the charge (its credits and price) and makes it once its time has
-- come, unless the customer cancelled it.
ALTER TABLE accounts ADD COLUMN auto_topup_notice_minutes BIGINT;
ALTER TABLE accounts ADD COLUMN auto_topup_planned_at BIGINT;
ALTER TABLE accounts ADD COLUMN auto_topup_planned_credits BIGINT;
ALTER TABLE accounts ADD COLUMN auto_topup_planned_cents BIGINT;
