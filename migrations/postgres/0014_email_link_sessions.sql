-- What a billing session may reach: 'account' (opened by the host's link: every page) or
-- 'payment' (opened by a notice's link: the payment waiting and the cards to pay it with).
ALTER TABLE portal_sessions ADD COLUMN scope TEXT NOT NULL DEFAULT 'account'
    CHECK (scope IN ('account', 'payment'));
-- Links in notices written at or before this moment no longer open the billing page (set
-- when the account's email changes: the old inbox loses its way in).
ALTER TABLE accounts ADD COLUMN email_links_revoked_at BIGINT;
