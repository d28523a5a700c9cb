-- The account directory: the host's own id for an account (unique) and its metadata, and
-- a number in creation order that listings page by.
ALTER TABLE accounts ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY;
CREATE UNIQUE INDEX accounts_by_seq ON accounts (seq);
ALTER TABLE accounts ADD COLUMN external_id TEXT;
ALTER TABLE accounts ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
CREATE UNIQUE INDEX accounts_by_external_id ON accounts (external_id);
CREATE INDEX accounts_by_email ON accounts (lower(email));
