-- Spool's SQLite schema, version 3 (kept in PRAGMA user_version). Version 2 added
-- `jobs.parent_id`, `jobs.on_parent_failure`, the `jobs_parent` index and the `steps` table;
-- version 3 added `jobs.group_key`, the flow-control indexes and `rate_buckets`. `schema.rs`
-- adds the columns to an older file before running this.
--
-- Every statement is idempotent: `open` runs this file on every start, inside one
-- BEGIN IMMEDIATE transaction, so processes opening a fresh file at once cannot race.
--
-- State names are the kebab-case names of `JobState` and `Phase`. Queries spell them as
-- literals (never as parameters) so the planner can match the partial indexes below.

-- The last job id and event seq handed out. Ids come from here, not from SQLite's
-- max(rowid) + 1, so they are never reused, even after the newest rows are deleted: a job
-- id (and a lease naming it) always means one job, and a follower reading events `after` a
-- seq misses nothing. Read once and written once per transaction, where AUTOINCREMENT
-- would update sqlite_sequence for every row.
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

INSERT OR IGNORE INTO counters (name, value) VALUES ('job', 0), ('event', 0);

CREATE TABLE IF NOT EXISTS jobs (
    id               INTEGER PRIMARY KEY,
    queue            TEXT    NOT NULL,
    -- 'scheduled' | 'ready' | 'running' | 'waiting' | 'succeeded' | 'dead' | 'cancelled'.
    -- 'scheduled' and 'ready' are both claimable once run_at has passed; readers report
    -- the state from run_at.
    state            TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    enqueued_at      INTEGER NOT NULL,
    -- When the job last changed state: the claim time while running, the time it
    -- finished (succeeded, died, was cancelled) once finished.
    updated_at       INTEGER NOT NULL,
    -- Failed attempts (settled as retry or dead, or lease expired).
    attempts         INTEGER NOT NULL DEFAULT 0,
    -- Claims, delays included.
    started          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER,
    tenant           TEXT,
    key              TEXT,
    -- JSON array of [key, value] pairs; NULL when empty.
    metadata         TEXT,
    payload          BLOB    NOT NULL,
    output           BLOB,
    checkpoint       BLOB,
    -- The fencing token of the job's latest claim: every claim adds one, nothing resets
    -- it. A write for an attempt applies only while state = 'running' and token matches.
    token            INTEGER NOT NULL DEFAULT 0,
    lease_worker     TEXT,
    lease_expires_at INTEGER,
    last_error       TEXT,
    last_phase       TEXT,
    -- The job whose attempt enqueued this one (a flow), and what that parent does if this
    -- job dies while it waits: 'fail-parent' | 'report'.
    parent_id         INTEGER,
    on_parent_failure TEXT,
    -- The job's group: it never runs while another job of its queue and group runs.
    group_key         TEXT,
    -- The last progress an attempt reported (`host.progress`): JSON {percent, message}.
    -- Version 5 added it.
    progress          TEXT,
    -- The W3C traceparent the job was enqueued in (`00-<trace id>-<parent id>-<flags>`).
    -- Version 6 added it.
    traceparent       TEXT
);

-- A flow: a parent's children.
CREATE INDEX IF NOT EXISTS jobs_parent
    ON jobs (parent_id)
    WHERE parent_id IS NOT NULL;

-- The steps a job's attempts completed (`host.step-done`), in rowid order of first
-- completion; storing a name again replaces its output in place.
CREATE TABLE IF NOT EXISTS steps (
    job_id  INTEGER NOT NULL,
    name    TEXT    NOT NULL,
    output  BLOB    NOT NULL,
    attempt INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    UNIQUE (job_id, name)
);

-- Claim: the head of each queue's claimable jobs, in claim order.
CREATE INDEX IF NOT EXISTS jobs_claimable
    ON jobs (queue, priority DESC, run_at, id)
    WHERE state IN ('ready', 'scheduled');

-- The sweeper: running jobs by lease expiry.
CREATE INDEX IF NOT EXISTS jobs_leased
    ON jobs (lease_expires_at)
    WHERE state = 'running';

-- Idempotency keys: unique among unfinished jobs of a queue, free again once finished.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_key
    ON jobs (queue, key)
    WHERE key IS NOT NULL AND state NOT IN ('succeeded', 'dead', 'cancelled');

-- The dead-letter queue, most recently dead first.
CREATE INDEX IF NOT EXISTS jobs_dead
    ON jobs (updated_at)
    WHERE state = 'dead';

-- Retention: finished jobs by the time they finished.
CREATE INDEX IF NOT EXISTS jobs_finished
    ON jobs (updated_at)
    WHERE state IN ('succeeded', 'cancelled');

-- The history of every attempt. Keyed by the attempt's fencing token: each claim ends in at
-- most one record (its settle or its lease expiry), and tokens only grow, so the key is
-- also the order. WITHOUT ROWID: one b-tree per insert instead of two.
CREATE TABLE IF NOT EXISTS attempts (
    job_id      INTEGER NOT NULL,
    token       INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    worker      TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,
    phase       TEXT,
    error       TEXT,
    digest      TEXT,
    -- JSON array of log lines; NULL when there were none.
    logs        TEXT,
    -- JSON object of the attempt's outbound HTTP counts; NULL when it made no request.
    http        TEXT,
    PRIMARY KEY (job_id, token)
) WITHOUT ROWID;

-- The event log, in seq order. A job's events leave queue and tenant NULL (readers take
-- them from the job): they would repeat the job's row three times per run.
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    job_id      INTEGER,
    queue       TEXT,
    tenant      TEXT,
    attempt     INTEGER,
    phase       TEXT,
    message     TEXT,
    digest      TEXT,
    worker      TEXT,
    duration_ms INTEGER
);

-- A job's timeline.
CREATE INDEX IF NOT EXISTS events_job
    ON events (job_id, seq)
    WHERE job_id IS NOT NULL;

-- Flow control (version 3). Groups: the running job of a group, and a group's claimable jobs
-- in claim order (its head is the only one a claim may take).
CREATE INDEX IF NOT EXISTS jobs_group_running
    ON jobs (queue, group_key)
    WHERE state = 'running' AND group_key IS NOT NULL;

CREATE INDEX IF NOT EXISTS jobs_group_claimable
    ON jobs (queue, group_key, priority DESC, run_at, id)
    WHERE state IN ('ready', 'scheduled') AND group_key IS NOT NULL;

-- Concurrency limits: running jobs of a queue by tenant. Jobs without a tenant are left out
-- (they cost nothing here; running jobs without a tenant are counted through `jobs_leased`,
-- of which there are never more than the workers run).
CREATE INDEX IF NOT EXISTS jobs_tenant_running
    ON jobs (queue, tenant)
    WHERE state = 'running' AND tenant IS NOT NULL;

-- Fair claims: each tenant's claimable jobs in claim order, and the tenants that have any.
CREATE INDEX IF NOT EXISTS jobs_tenant_claimable
    ON jobs (queue, tenant, priority DESC, run_at, id)
    WHERE state IN ('ready', 'scheduled') AND tenant IS NOT NULL;

-- Fair claims: the claimable jobs without a tenant (one more tenant to a fair claim), in claim
-- order. Without it, asking whether a queue has any walked `jobs_claimable` past every other
-- tenant's job: a whole backlog per claim.
CREATE INDEX IF NOT EXISTS jobs_untenanted_claimable
    ON jobs (queue, priority DESC, run_at, id)
    WHERE state IN ('ready', 'scheduled') AND tenant IS NULL;

-- Rate limits: one token bucket per queue (`q:<queue>`) and per queue and tenant
-- (`t:<queue>:<tenant>`), refilled on read.
CREATE TABLE IF NOT EXISTS rate_buckets (
    scope  TEXT    PRIMARY KEY,
    tokens REAL    NOT NULL,
    at     INTEGER NOT NULL
) WITHOUT ROWID;

-- Schedules (version 4): one row per schedule, its definition as JSON beside the columns the
-- scheduler compares (`spec`: an upsert with the same spec keeps the next tick).
CREATE TABLE IF NOT EXISTS schedules (
    name        TEXT    PRIMARY KEY,
    spec        TEXT    NOT NULL,
    definition  TEXT    NOT NULL,
    next_run_at INTEGER NOT NULL,
    last_run_at INTEGER,
    last_job_id INTEGER
) WITHOUT ROWID;

-- Leader locks: the schedulers' (`scheduler`) is held by `holder` until `expires_at`.
CREATE TABLE IF NOT EXISTS leader_locks (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

-- The worker registry (version 6): one row per worker, written by its heartbeats, live until
-- `expires_at` (its last heartbeat plus its TTL). `queues` is a JSON array of names. Readers
-- skip rows past `expires_at`; the next heartbeat of any worker deletes them.
CREATE TABLE IF NOT EXISTS workers (
    id             TEXT    PRIMARY KEY,
    host           TEXT    NOT NULL,
    pid            INTEGER NOT NULL,
    version        TEXT    NOT NULL,
    queues         TEXT    NOT NULL,
    concurrency    INTEGER NOT NULL,
    running        INTEGER NOT NULL,
    started_at     INTEGER NOT NULL,
    last_heartbeat INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
) WITHOUT ROWID;
