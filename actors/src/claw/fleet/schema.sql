-- Fleet, schema version 1: scheduled admin actions (SPEC §6) and the fleet-wide slots,
-- leases and audit of scheduled work (SPEC §8). All times are clock Unix milliseconds.

-- One row per scheduled action (the parent). Counters are updated in the same transaction as
-- the target whose outcome they count.
CREATE TABLE scheduled_actions (
    id           INTEGER PRIMARY KEY,
    -- scheduled_restart | version_change
    kind         TEXT NOT NULL,
    -- Target image of a version change (NULL for a restart).
    image_tag    TEXT,
    -- Pin override of a version change: 1 pin, 0 unpin, NULL unchanged.
    pin          INTEGER,
    -- scheduled -> running -> completed, or cancelled.
    status       TEXT NOT NULL,
    run_at       INTEGER NOT NULL,
    -- Lease of each claimed slot, milliseconds.
    lease_ms     INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    completed_at INTEGER,
    total        INTEGER NOT NULL,
    applied      INTEGER NOT NULL DEFAULT 0,
    skipped      INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    cancelled    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX actions_by_status ON scheduled_actions (status, id);

-- Stages of an action, run in index order: a stage's targets are claimable only once every
-- target of the earlier stages is terminal, and not before the stage's run_at.
CREATE TABLE scheduled_action_stages (
    action_id INTEGER NOT NULL,
    idx       INTEGER NOT NULL,
    name      TEXT NOT NULL,
    run_at    INTEGER NOT NULL,
    -- scheduled | completed | cancelled
    status    TEXT NOT NULL,
    PRIMARY KEY (action_id, idx)
) WITHOUT ROWID;

-- One row per (action, instance). The id orders the queue of targets waiting for a slot.
CREATE TABLE scheduled_action_targets (
    id               INTEGER PRIMARY KEY,
    action_id        INTEGER NOT NULL,
    stage_idx        INTEGER NOT NULL,
    instance_id      TEXT NOT NULL,
    -- The instance's image when the action was scheduled.
    source_tag       TEXT NOT NULL,
    -- pending -> running -> applied | skipped | failed, or pending -> cancelled | skipped.
    status           TEXT NOT NULL,
    -- The stage's run_at (moved to "now" by run-now).
    run_at           INTEGER NOT NULL,
    -- Interactive-pressure deferral: not claimable before this time.
    not_before       INTEGER NOT NULL DEFAULT 0,
    -- Total deferral so far, milliseconds (bounded by max-pressure-deferral).
    deferred_ms      INTEGER NOT NULL DEFAULT 0,
    -- 1: a forced run-now; the claim bypasses the cap.
    force            INTEGER NOT NULL DEFAULT 0,
    -- The slot: set by the claim, the lease cleared by the outcome.
    slot_claimed_at  INTEGER,
    lease_expires_at INTEGER,
    -- Host epoch of the claim: a running target of another epoch died with its process.
    claim_epoch      INTEGER,
    completed_at     INTEGER,
    -- lease_expired, provider_error, interrupted, instance_destroyed, ... (NULL: none).
    failure_reason   TEXT
);
CREATE INDEX targets_by_status ON scheduled_action_targets (status, id);
CREATE INDEX targets_by_action ON scheduled_action_targets (action_id, status, stage_idx);
CREATE INDEX targets_by_instance ON scheduled_action_targets (instance_id, status);
CREATE INDEX targets_running_lease ON scheduled_action_targets (lease_expires_at)
    WHERE status = 'running';

-- Who did what outside the normal rules (forced run-now), and when.
CREATE TABLE fleet_audit (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    what   TEXT NOT NULL,
    detail TEXT NOT NULL
);
