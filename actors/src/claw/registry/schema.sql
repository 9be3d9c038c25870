-- Registry, schema version 1: the owner's instances.
CREATE TABLE routes (
    instance_id TEXT PRIMARY KEY,
    -- Clock time the route was added, Unix milliseconds.
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;
