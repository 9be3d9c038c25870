-- Counter, schema version 1.
-- Every accepted change, in order; `value` in the KV store is the running sum.
CREATE TABLE log (
    seq   INTEGER PRIMARY KEY,
    delta INTEGER NOT NULL,
    -- Clock time of the change, Unix milliseconds.
    at    INTEGER NOT NULL
);
-- Alarm fires the counter has seen, for tests of alarm timing and retries.
CREATE TABLE fires (
    seq          INTEGER PRIMARY KEY,
    scheduled_at INTEGER NOT NULL,
    fired_at     INTEGER NOT NULL,
    retry_count  INTEGER NOT NULL,
    timers       TEXT NOT NULL
);
