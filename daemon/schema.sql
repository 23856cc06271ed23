-- schema.sql — ferryd's durable queue (<state dir>/queue.db).
-- Migrations are separated by "-- migration: N" lines; each is applied in one
-- transaction together with PRAGMA user_version = N. Never edit a migration
-- that has shipped: add the next one.

-- migration: 1

-- Facts about this queue database.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,  -- 'instance': random id naming this queue in backends' origin fields
    value TEXT NOT NULL
);

-- Experiments known on this node; keys are generated here so they exist offline.
CREATE TABLE experiments (
    key        TEXT PRIMARY KEY,           -- 32..50 letters and digits (Comet experimentKey)
    workspace  TEXT NOT NULL,              -- Comet workspace
    project    TEXT NOT NULL,              -- Comet project name
    name       TEXT,                       -- display name, or NULL
    registered INTEGER NOT NULL DEFAULT 0, -- 1 once the backend has acknowledged the key
    created_ms INTEGER NOT NULL            -- when it was created here
);

-- One row per logged artifact version: the unit of delivery.
CREATE TABLE jobs (
    id                INTEGER PRIMARY KEY,     -- the job id clients see
    experiment        TEXT NOT NULL REFERENCES experiments(key),
    workspace         TEXT NOT NULL,           -- where the version goes
    project           TEXT NOT NULL,
    name              TEXT NOT NULL,           -- artifact name
    type              TEXT NOT NULL,           -- artifact type
    version           TEXT,                    -- requested semver, NULL: next major
    aliases           TEXT NOT NULL,           -- JSON array of user aliases
    tags              TEXT NOT NULL,           -- JSON array of version tags
    metadata          TEXT,                    -- JSON object, or NULL
    state             TEXT NOT NULL,           -- 'queued' | 'failed' | 'done' (running lives in memory)
    attempts          INTEGER NOT NULL DEFAULT 0, -- transient failures so far
    next_attempt_ms   INTEGER NOT NULL DEFAULT 0, -- not before this time
    last_error        TEXT,                    -- the last failure's message (server's msg included)
    last_error_code   TEXT,                    -- its code (FERRY wire name or sdk_error_code)
    remote_version_id TEXT,                    -- backend's version id, committed as soon as it exists
    assigned_version  TEXT,                    -- the version the backend assigned
    bytes             INTEGER NOT NULL,        -- total size of file assets
    created_ms        INTEGER NOT NULL,        -- when it was logged
    done_ms           INTEGER                  -- when it was delivered or parked
);
CREATE INDEX jobs_by_state ON jobs(state, next_attempt_ms);
CREATE INDEX jobs_by_name ON jobs(workspace, name);

-- The assets of a job, in the order they were added.
CREATE TABLE assets (
    job          INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx          INTEGER NOT NULL,           -- position within the job
    logical_path TEXT NOT NULL,              -- path inside the artifact
    remote       INTEGER NOT NULL DEFAULT 0, -- 1: a URI recorded, not uploaded
    spool        TEXT,                       -- spool file name of a file asset
    size         INTEGER NOT NULL DEFAULT 0, -- bytes of a file asset
    uri          TEXT,                       -- link of a remote asset
    metadata     TEXT,                       -- JSON object, or NULL
    overwrite    INTEGER NOT NULL DEFAULT 0, -- Comet's overwrite flag
    asset_id     TEXT NOT NULL,              -- uuid4 hex chosen here (Comet assetId)
    done         INTEGER NOT NULL DEFAULT 0, -- 1 once the backend confirmed it
    PRIMARY KEY (job, idx)
);
