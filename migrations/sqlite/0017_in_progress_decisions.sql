-- The scan's decision for an account with a top-up in progress is named as the account's
-- state is everywhere else: in_progress.
UPDATE auto_topup_decisions SET decision = 'in_progress' WHERE decision = 'attempt_open';
UPDATE auto_topup_decision_log SET decision = 'in_progress' WHERE decision = 'attempt_open';
