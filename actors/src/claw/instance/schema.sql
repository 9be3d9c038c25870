-- Instance, schema version 1. The record itself is one codec-encoded KV value ("record").
-- Every state change and analytics-style event, in order; also sent to watchers and tracing.
CREATE TABLE events (
    seq    INTEGER PRIMARY KEY,
    -- Clock time, Unix milliseconds.
    at     INTEGER NOT NULL,
    -- e.g. instance.status_changed, instance.machine_state_drift
    kind   TEXT NOT NULL,
    -- Status after the event.
    status TEXT NOT NULL,
    detail TEXT NOT NULL
);
