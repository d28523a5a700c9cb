-- A notice is queued as facts (JSON) with its recipient's name, and rendered when it is
-- sent, so nothing is rendered inside the transaction that queues it. Notices queued
-- before keep the rendering they were queued with.
ALTER TABLE notices ADD COLUMN recipient_name TEXT;
ALTER TABLE notices ADD COLUMN facts TEXT;
ALTER TABLE notices ALTER COLUMN subject DROP NOT NULL;
ALTER TABLE notices ALTER COLUMN text_body DROP NOT NULL;
ALTER TABLE notices ALTER COLUMN html_body DROP NOT NULL;
ALTER TABLE notices ADD CONSTRAINT notices_facts_or_rendering CHECK (
    (facts IS NOT NULL AND recipient_name IS NOT NULL)
    OR (subject IS NOT NULL AND text_body IS NOT NULL AND html_body IS NOT NULL));
