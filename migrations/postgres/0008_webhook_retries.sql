-- Each stored webhook event is retried on its own schedule: its tries are counted, the next
-- one waits longer, and an event that keeps failing is set aside as dead for support,
-- instead of being retried for ever ahead of newer events.
ALTER TABLE webhook_events ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE webhook_events ADD COLUMN next_attempt_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE webhook_events ADD COLUMN dead_at BIGINT;
UPDATE webhook_events SET next_attempt_at = received_at;
DROP INDEX webhook_events_unprocessed;
CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at)
    WHERE processed_at IS NULL AND dead_at IS NULL;
CREATE INDEX webhook_events_dead ON webhook_events (dead_at) WHERE dead_at IS NOT NULL;
