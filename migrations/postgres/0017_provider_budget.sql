-- The provider's rate is a budget the replicas share: each holds a lease, renewed every
-- second, and sends at its share (the budget divided by the live leases). A 429 holds
-- every replica back until `held_until` (milliseconds since the epoch).
CREATE TABLE provider_budget_leases (
    replica TEXT PRIMARY KEY,
    renewed_at BIGINT NOT NULL
);

CREATE TABLE provider_budget_hold (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    held_until BIGINT NOT NULL
);
