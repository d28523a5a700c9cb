-- The account directory: the host's own id for an account (unique) and its metadata, and
-- a number in creation order that listings page by.
ALTER TABLE accounts ADD COLUMN seq INTEGER;
UPDATE accounts SET seq = rowid;
CREATE UNIQUE INDEX accounts_by_seq ON accounts (seq);
-- New accounts are numbered as they are inserted (PostgreSQL uses an identity column).
CREATE TRIGGER accounts_numbered AFTER INSERT ON accounts FOR EACH ROW WHEN NEW.seq IS NULL
BEGIN
    UPDATE accounts SET seq = NEW.rowid WHERE rowid = NEW.rowid;
END;
ALTER TABLE accounts ADD COLUMN external_id TEXT;
ALTER TABLE accounts ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
CREATE UNIQUE INDEX accounts_by_external_id ON accounts (external_id);
CREATE INDEX accounts_by_email ON accounts (lower(email));
