-- A closed account is charged no more, by any path, and keeps its balance and history.
ALTER TABLE accounts ADD COLUMN closed_at BIGINT;
ALTER TABLE accounts ADD COLUMN closed_reason TEXT;
