-- Registry, schema version 2: provision admission (SPEC §5).

-- A route is 'pending' from admission until the provision completed, then 'active'. Only
-- active routes count against the owner's instance limit. Routes of earlier versions were
-- written for created instances and become active.
ALTER TABLE routes ADD COLUMN state TEXT NOT NULL DEFAULT 'active'
    CHECK (state IN ('pending', 'active'));
-- The reservation that created the route (NULL for routes of earlier versions).
ALTER TABLE routes ADD COLUMN reservation_id INTEGER;

CREATE TABLE provision_reservations (
    id              INTEGER PRIMARY KEY,
    owner_key       TEXT NOT NULL,
    instance_id     TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    -- What was asked for (image, pin, explicit instance id): a retry with the same key must
    -- ask for the same thing.
    request         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('admitted', 'provider_started', 'completed',
                                                    'released', 'failed_requires_reconciliation')),
    error           TEXT,
    -- Clock times, Unix milliseconds.
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- At most one unresolved fresh provision per owner: a database fact, not a code path.
CREATE UNIQUE INDEX provision_reservations_one_unresolved ON provision_reservations (owner_key)
    WHERE status IN ('admitted', 'provider_started', 'failed_requires_reconciliation');
-- A retry with the same key finds its reservation.
CREATE UNIQUE INDEX provision_reservations_by_key ON provision_reservations (idempotency_key);
-- Completion, failure and destroy reports name the instance.
CREATE INDEX provision_reservations_by_instance ON provision_reservations (instance_id);
