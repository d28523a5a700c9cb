-- Every decision the scan took, not only the latest (auto_topup_decisions), so "why no
-- top-up last Tuesday" has an answer. Pruned after auto_topup.decision_retention_days.
CREATE TABLE auto_topup_decision_log (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id        TEXT    NOT NULL REFERENCES accounts (id),
    decision          TEXT    NOT NULL,
    balance           BIGINT  NOT NULL,
    threshold         BIGINT,
    target            BIGINT,
    next_eligible_at  BIGINT,
    attempt_id        TEXT,
    decided_at        BIGINT  NOT NULL,
    -- The decision in words, with its figures, as written when it was taken.
    reason            TEXT    NOT NULL
);
CREATE INDEX auto_topup_decision_log_by_account ON auto_topup_decision_log (account_id, id);
CREATE INDEX auto_topup_decision_log_by_time ON auto_topup_decision_log (decided_at);

ALTER TABLE auto_topup_decisions ADD COLUMN reason TEXT NOT NULL DEFAULT '';
