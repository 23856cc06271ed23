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

-- migration: 2
-- The queue at scale: every hot statement reads an index, delivered history
-- stays out of the hot path, and counts are kept up to date by triggers
-- instead of being recounted.

-- A random id per version, chosen when it is logged (32 hex characters). It
-- names the version in its spool files' manifests and is the local
-- registry's origin, so a version re-queued from quarantine is recognised.
-- Versions logged before this migration keep the origin they had,
-- '<instance>:<job id>'.
ALTER TABLE jobs ADD COLUMN token TEXT;
UPDATE jobs SET token = (SELECT value FROM meta WHERE key = 'instance') || ':' || id;

-- How many assets the version has (ls shows it without counting rows).
ALTER TABLE jobs ADD COLUMN nassets INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET nassets = (SELECT COUNT(*) FROM assets WHERE assets.job = jobs.id);

-- The head of each artifact's lane: its oldest queued version that the
-- backend has not created yet. Versions of one artifact are created in log
-- order (so automatic version numbers follow it): only a head, or a version
-- already created, may be delivered. Kept by the triggers below.
CREATE TABLE heads (
    workspace       TEXT NOT NULL,    -- the artifact's workspace
    name            TEXT NOT NULL,    -- the artifact's name
    job             INTEGER NOT NULL, -- jobs.id of the head
    next_attempt_ms INTEGER NOT NULL, -- copy of the head's jobs.next_attempt_ms
    PRIMARY KEY (workspace, name)
) WITHOUT ROWID;
CREATE INDEX heads_due ON heads(next_attempt_ms, job);

-- Job counts and bytes per state ('queued', 'failed', 'done', 'cancelled'),
-- kept by the triggers below so that status never counts rows.
CREATE TABLE stats (
    state TEXT PRIMARY KEY,
    jobs  INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO stats(state, jobs, bytes) VALUES ('queued', 0, 0), ('failed', 0, 0), ('done', 0, 0),
    ('cancelled', 0, 0);
UPDATE stats SET jobs = (SELECT COUNT(*) FROM jobs WHERE jobs.state = stats.state),
    bytes = (SELECT COALESCE(SUM(bytes), 0) FROM jobs WHERE jobs.state = stats.state);

INSERT INTO heads(workspace, name, job, next_attempt_ms)
    SELECT j.workspace, j.name, j.id, j.next_attempt_ms FROM jobs j
    WHERE j.state = 'queued' AND j.remote_version_id IS NULL AND NOT EXISTS (
        SELECT 1 FROM jobs o WHERE o.workspace = j.workspace AND o.name = j.name
        AND o.state = 'queued' AND o.remote_version_id IS NULL AND o.id < j.id);

DROP INDEX jobs_by_state;
DROP INDEX jobs_by_name;
-- Queued versions of an artifact, oldest first: lane heads and read-your-own-writes look-ups.
CREATE INDEX jobs_queued ON jobs(workspace, name, id) WHERE state = 'queued';
-- Versions created on the backend and not yet delivered: due whatever their lane's head.
CREATE INDEX jobs_created ON jobs(next_attempt_ms, id)
    WHERE state = 'queued' AND remote_version_id IS NOT NULL;
-- Explicit versions still waiting (queued or failed): a second log of one is refused.
CREATE INDEX jobs_pending_version ON jobs(workspace, name, version)
    WHERE state IN ('queued', 'failed');
-- ls by state, newest first.
CREATE INDEX jobs_by_state ON jobs(state, id);
-- status: the newest failures; pruning: delivered history by age.
CREATE INDEX jobs_failed ON jobs(done_ms) WHERE state = 'failed';
CREATE INDEX jobs_done ON jobs(done_ms) WHERE state IN ('done', 'cancelled');
-- Start-up: which version does a spool file belong to.
CREATE INDEX assets_spool ON assets(spool) WHERE spool IS NOT NULL;

CREATE TRIGGER stats_insert AFTER INSERT ON jobs BEGIN
    UPDATE stats SET jobs = jobs + 1, bytes = bytes + new.bytes WHERE state = new.state;
END;
CREATE TRIGGER stats_update AFTER UPDATE OF state ON jobs WHEN old.state <> new.state BEGIN
    UPDATE stats SET jobs = jobs - 1, bytes = bytes - old.bytes WHERE state = old.state;
    UPDATE stats SET jobs = jobs + 1, bytes = bytes + new.bytes WHERE state = new.state;
END;
CREATE TRIGGER stats_delete AFTER DELETE ON jobs BEGIN
    UPDATE stats SET jobs = jobs - 1, bytes = bytes - old.bytes WHERE state = old.state;
END;

-- A new version heads its lane when the lane has none (ids only grow).
CREATE TRIGGER heads_insert AFTER INSERT ON jobs
WHEN new.state = 'queued' AND new.remote_version_id IS NULL BEGIN
    INSERT OR IGNORE INTO heads(workspace, name, job, next_attempt_ms)
        VALUES (new.workspace, new.name, new.id, new.next_attempt_ms);
END;
-- A version leaves the lane (created, delivered, failed, cancelled): the next one heads it.
CREATE TRIGGER heads_leave AFTER UPDATE OF state, remote_version_id ON jobs
WHEN old.state = 'queued' AND old.remote_version_id IS NULL
     AND NOT (new.state = 'queued' AND new.remote_version_id IS NULL) BEGIN
    DELETE FROM heads WHERE workspace = old.workspace AND name = old.name AND job = old.id;
    INSERT OR IGNORE INTO heads(workspace, name, job, next_attempt_ms)
        SELECT workspace, name, id, next_attempt_ms FROM jobs
        WHERE workspace = old.workspace AND name = old.name AND state = 'queued'
          AND remote_version_id IS NULL
        ORDER BY id LIMIT 1;
END;
-- A version comes back (a retried failure): it may be older than the head.
CREATE TRIGGER heads_enter AFTER UPDATE OF state, remote_version_id ON jobs
WHEN new.state = 'queued' AND new.remote_version_id IS NULL
     AND NOT (old.state = 'queued' AND old.remote_version_id IS NULL) BEGIN
    INSERT OR REPLACE INTO heads(workspace, name, job, next_attempt_ms)
        SELECT workspace, name, id, next_attempt_ms FROM jobs
        WHERE workspace = new.workspace AND name = new.name AND state = 'queued'
          AND remote_version_id IS NULL
        ORDER BY id LIMIT 1;
END;
-- The head waits for its backoff.
CREATE TRIGGER heads_reschedule AFTER UPDATE OF next_attempt_ms ON jobs
WHEN new.state = 'queued' AND new.remote_version_id IS NULL BEGIN
    UPDATE heads SET next_attempt_ms = new.next_attempt_ms
        WHERE workspace = new.workspace AND name = new.name AND job = new.id;
END;
-- A queued version removed outright: the next one heads the lane.
CREATE TRIGGER heads_delete AFTER DELETE ON jobs
WHEN old.state = 'queued' AND old.remote_version_id IS NULL BEGIN
    DELETE FROM heads WHERE workspace = old.workspace AND name = old.name AND job = old.id;
    INSERT OR IGNORE INTO heads(workspace, name, job, next_attempt_ms)
        SELECT workspace, name, id, next_attempt_ms FROM jobs
        WHERE workspace = old.workspace AND name = old.name AND state = 'queued'
          AND remote_version_id IS NULL
        ORDER BY id LIMIT 1;
END;

-- migration: 3
-- Read-your-own-writes covers parked versions too: a version the backend
-- refused is still only on this node, so look-ups by name search queued and
-- failed versions, newest first, through one index.
CREATE INDEX jobs_held ON jobs(workspace, name, id) WHERE state IN ('queued', 'failed');

-- migration: 4
-- add_remote with S3 sync (issue 13). An s3:// remote asset may wait to be
-- listed: listing is the first step of its version's delivery, after which the
-- asset is replaced by one remote asset per object (or by one unsynced asset
-- when the listing falls back). A version whose listing fell back keeps a
-- warning for get, wait and status.
ALTER TABLE assets ADD COLUMN sync_max INTEGER; -- list this s3:// uri before delivery, at most this many objects; NULL: a plain asset
ALTER TABLE assets ADD COLUMN sync_under TEXT;  -- logical path the listed objects go under (the logical_path the user gave), NULL: the version's root
ALTER TABLE jobs ADD COLUMN warning TEXT;       -- what the user should hear about the version (listings that fell back), one per line, or NULL
-- status: the newest versions with a warning.
CREATE INDEX jobs_warned ON jobs(id) WHERE warning IS NOT NULL;
