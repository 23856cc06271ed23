-- registry.sql — the local backend's registry (<state dir>/registry/registry.db).
-- Same migration format as schema.sql.

-- migration: 1

-- Artifacts, one per workspace and name.
CREATE TABLE artifacts (
    id         INTEGER PRIMARY KEY,
    workspace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    type       TEXT NOT NULL,     -- type given when first logged
    project    TEXT NOT NULL,     -- project of the first version
    tags       TEXT NOT NULL DEFAULT '[]', -- artifact tags, JSON array
    created_ms INTEGER NOT NULL,
    UNIQUE (workspace, name)
);

-- Versions; the local registry writes them CLOSED in the transaction that creates them.
CREATE TABLE versions (
    id          INTEGER PRIMARY KEY,
    artifact    INTEGER NOT NULL REFERENCES artifacts(id),
    version     TEXT NOT NULL,    -- strict semver
    state       TEXT NOT NULL,    -- 'OPEN' | 'CLOSED' | 'ERROR'
    metadata    TEXT,             -- JSON object, or NULL
    experiment  TEXT NOT NULL,    -- source experiment key
    project     TEXT NOT NULL,
    size        INTEGER NOT NULL, -- sum of file asset sizes
    origin      TEXT UNIQUE,      -- '<queue instance>:<job id>': makes delivery idempotent
    created_ms  INTEGER NOT NULL,
    UNIQUE (artifact, version)
);

-- Aliases name one version per artifact; 'Latest' names the newest.
CREATE TABLE aliases (
    artifact INTEGER NOT NULL REFERENCES artifacts(id),
    alias    TEXT NOT NULL,
    version  INTEGER NOT NULL REFERENCES versions(id),
    PRIMARY KEY (artifact, alias)
);

-- Version tags.
CREATE TABLE version_tags (
    version INTEGER NOT NULL REFERENCES versions(id),
    tag     TEXT NOT NULL,
    PRIMARY KEY (version, tag)
);

-- Assets of a version; file content lives in blobs/<sha256[0:2]>/<sha256>.
CREATE TABLE assets (
    version      INTEGER NOT NULL REFERENCES versions(id),
    logical_path TEXT NOT NULL,
    size         INTEGER NOT NULL,
    sha256       TEXT,             -- content of a file asset
    remote       INTEGER NOT NULL, -- 1: a link only
    link         TEXT,             -- URI of a remote asset
    metadata     TEXT,             -- JSON object, or NULL
    asset_id     TEXT NOT NULL,
    PRIMARY KEY (version, logical_path)
);

-- migration: 2
-- The next automatic version is one more than the highest major: read it from
-- an index instead of walking every version of the artifact.
ALTER TABLE versions ADD COLUMN major INTEGER NOT NULL DEFAULT 0; -- the version's MAJOR
UPDATE versions SET major = CAST(substr(version, 1, instr(version, '.') - 1) AS INTEGER);
CREATE INDEX versions_major ON versions(artifact, major);
