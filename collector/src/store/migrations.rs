//! Schema migrations, applied in order, each in its own transaction. A database newer
//! than the build is refused rather than misread. Statements use types both SQLite and
//! PostgreSQL accept (TEXT, BIGINT, SMALLINT).

/// `(version, statements)`, in order. Never edit a released migration: add a new one.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "
    CREATE TABLE orgs (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        created_at  BIGINT NOT NULL
    );
    CREATE TABLE enrollment_tokens (
        token_hash  TEXT PRIMARY KEY,
        org         TEXT NOT NULL REFERENCES orgs(id),
        created_at  BIGINT NOT NULL,
        expires_at  BIGINT NOT NULL,
        used_at     BIGINT,
        agent_id    TEXT
    );
    CREATE TABLE agents (
        id                TEXT PRIMARY KEY,
        org               TEXT NOT NULL REFERENCES orgs(id),
        label             TEXT NOT NULL,
        cert_fingerprint  TEXT NOT NULL,
        enrolled_at       BIGINT NOT NULL,
        revoked_at        BIGINT,
        last_seen         BIGINT,
        last_batch_seq    BIGINT NOT NULL DEFAULT 0,
        agent_version     TEXT,
        uptime_s          BIGINT,
        spool_depth       BIGINT,
        drops_total       BIGINT,
        source_errors     TEXT
    );
    CREATE TABLE signals (
        id           TEXT PRIMARY KEY,
        org          TEXT NOT NULL,
        agent_id     TEXT NOT NULL,
        kind         TEXT NOT NULL,
        severity     SMALLINT NOT NULL,
        first_seen   BIGINT NOT NULL,
        last_seen    BIGINT NOT NULL,
        count        BIGINT NOT NULL,
        received_at  BIGINT NOT NULL,
        body         TEXT NOT NULL
    );
    CREATE INDEX signals_by_org_time ON signals (org, last_seen);
    ",
    ),
    (
        2,
        "
    ALTER TABLE agents ADD COLUMN inventory TEXT;
    ",
    ),
];

/// The newest schema this build knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |(version, _)| *version)
}
