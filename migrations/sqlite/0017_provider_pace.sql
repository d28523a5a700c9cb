-- The pace of requests to the payment provider, shared by every replica. For each budget
-- (all requests, or one endpoint's): the moment its next request may be sent, and the
-- moment a 429 holds it back until, in microseconds since the epoch. A request reserves
-- the next free moment and moves it on.
CREATE TABLE provider_pace (
    budget TEXT PRIMARY KEY,
    next_free_us BIGINT NOT NULL,
    held_until_us BIGINT NOT NULL DEFAULT 0
);
