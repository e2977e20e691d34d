//! Schema migrations, applied in order, each in its own transaction. A database newer
//! than the build is refused rather than misread. Statements use types both SQLite and
//! PostgreSQL accept (TEXT, BIGINT, SMALLINT); table layouts (`WITHOUT ROWID`) are
//! SQLite's, which a PostgreSQL backend would express with its own clustering.

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
    (
        3,
        "
    -- Correlation, advisories and API users (issue 6).
    ALTER TABLE orgs ADD COLUMN addresses TEXT NOT NULL DEFAULT '[]';
    CREATE INDEX signals_by_time ON signals (last_seen);
    CREATE INDEX signals_by_kind_time ON signals (kind, last_seen);
    CREATE INDEX signals_by_agent_time ON signals (agent_id, last_seen);

    -- Every indicator of every stored signal: who else saw this value, and when.
    CREATE TABLE signal_indicators (
        value       TEXT NOT NULL,
        type        TEXT NOT NULL,
        signal_id   TEXT NOT NULL,
        org         TEXT NOT NULL,
        last_seen   BIGINT NOT NULL
    );
    CREATE INDEX signal_indicators_by_value ON signal_indicators (value, last_seen);

    -- One organisation's sightings of a correlatable indicator, kept up to date at
    -- ingest: the correlator reads these instead of scanning signals.
    CREATE TABLE sightings (
        type          TEXT NOT NULL,
        value         TEXT NOT NULL,
        org           TEXT NOT NULL,
        first_seen    BIGINT NOT NULL,
        last_seen     BIGINT NOT NULL,
        signals       BIGINT NOT NULL,
        kinds         TEXT NOT NULL,
        max_severity  SMALLINT NOT NULL,
        updated_at    BIGINT NOT NULL,
        PRIMARY KEY (type, value, org)
    );
    CREATE INDEX sightings_by_update ON sightings (updated_at);

    CREATE TABLE campaigns (
        id               TEXT PRIMARY KEY,
        indicator_type   TEXT NOT NULL,
        indicator_value  TEXT NOT NULL,
        status           TEXT NOT NULL,
        severity         SMALLINT NOT NULL,
        score            BIGINT NOT NULL,
        org_count        BIGINT NOT NULL,
        signals          BIGINT NOT NULL,
        first_seen       BIGINT NOT NULL,
        last_seen        BIGINT NOT NULL,
        opened_at        BIGINT NOT NULL,
        updated_at       BIGINT NOT NULL,
        closed_at        BIGINT,
        body             TEXT NOT NULL
    );
    CREATE UNIQUE INDEX campaigns_open_by_indicator ON campaigns (indicator_type, indicator_value)
        WHERE status = 'open';
    CREATE INDEX campaigns_by_status_time ON campaigns (status, updated_at);
    CREATE INDEX campaigns_by_status_opened ON campaigns (status, opened_at);
    CREATE INDEX campaigns_by_indicator ON campaigns (indicator_value);
    CREATE TABLE campaign_orgs (
        campaign_id  TEXT NOT NULL,
        org          TEXT NOT NULL,
        PRIMARY KEY (campaign_id, org)
    );
    CREATE INDEX campaign_orgs_by_org ON campaign_orgs (org);
    CREATE TABLE campaign_signals (
        campaign_id  TEXT NOT NULL,
        signal_id    TEXT NOT NULL,
        PRIMARY KEY (campaign_id, signal_id)
    );

    CREATE TABLE incidents (
        id          TEXT PRIMARY KEY,
        org         TEXT NOT NULL,
        chain       TEXT NOT NULL,
        key_type    TEXT NOT NULL,
        key_value   TEXT NOT NULL,
        status      TEXT NOT NULL,
        severity    SMALLINT NOT NULL,
        first_seen  BIGINT NOT NULL,
        last_seen   BIGINT NOT NULL,
        opened_at   BIGINT NOT NULL,
        updated_at  BIGINT NOT NULL,
        closed_at   BIGINT,
        body        TEXT NOT NULL
    );
    CREATE UNIQUE INDEX incidents_open_by_key ON incidents (org, chain, key_value)
        WHERE status = 'open';
    CREATE INDEX incidents_by_status_time ON incidents (status, updated_at);
    CREATE TABLE incident_signals (
        incident_id  TEXT NOT NULL,
        signal_id    TEXT NOT NULL,
        PRIMARY KEY (incident_id, signal_id)
    );

    -- The advisory feed. seq orders the feed agents follow; a withdrawal moves the
    -- advisory to a new seq so that agents hear of it.
    CREATE TABLE advisories (
        id               TEXT PRIMARY KEY,
        seq              BIGINT NOT NULL UNIQUE,
        indicator_type   TEXT NOT NULL,
        indicator_value  TEXT NOT NULL,
        severity         SMALLINT NOT NULL,
        description      TEXT NOT NULL,
        published_at     BIGINT NOT NULL,
        published_by     TEXT NOT NULL,
        expires_at       BIGINT NOT NULL,
        withdrawn_at     BIGINT,
        campaign_id      TEXT
    );
    CREATE INDEX advisories_by_value ON advisories (indicator_value);

    -- People and scripts of the HTTP API. Only a hash of each token is kept.
    CREATE TABLE api_users (
        name        TEXT PRIMARY KEY,
        role        TEXT NOT NULL,
        org         TEXT REFERENCES orgs(id),
        token_hash  TEXT NOT NULL UNIQUE,
        created_at  BIGINT NOT NULL,
        revoked_at  BIGINT
    );
    ",
    ),
    (
        4,
        "
    -- Measured with 10 million signals (BENCHMARKS.md, issue 6). The indicator index
    -- becomes the table itself, clustered by value and time, and carries what the
    -- indicator report shows (org, kind, times) and what the incident chains read
    -- (severity): who else saw this, and what one source did, read one contiguous range
    -- whatever the size of the signals table.
    CREATE TABLE signal_indicators_v4 (
        value       TEXT NOT NULL,
        last_seen   BIGINT NOT NULL,
        signal_id   TEXT NOT NULL,
        type        TEXT NOT NULL,
        org         TEXT NOT NULL,
        kind        TEXT NOT NULL,
        severity    SMALLINT NOT NULL,
        first_seen  BIGINT NOT NULL,
        PRIMARY KEY (value, last_seen, signal_id)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO signal_indicators_v4
        SELECT i.value, i.last_seen, i.signal_id, i.type, i.org, s.kind, s.severity, s.first_seen
        FROM signal_indicators i JOIN signals s ON s.id = i.signal_id;
    DROP TABLE signal_indicators;
    ALTER TABLE signal_indicators_v4 RENAME TO signal_indicators;

    -- Filtered pages: organisation and kind together, with the severity in the index so
    -- that a filter matching few rows is decided without reading them.
    CREATE INDEX signals_by_org_kind_time ON signals (org, kind, last_seen, severity);
    DROP INDEX signals_by_kind_time;
    CREATE INDEX signals_by_kind_time ON signals (kind, last_seen, severity);
    ",
    ),
    (
        5,
        "
    -- Governance (issue 7). The audit log: append-only and hash-chained (collector/src/
    -- audit.rs). The triggers keep the product itself from changing it; the chain shows
    -- whoever changes it by other means.
    CREATE TABLE audit_log (
        seq        BIGINT PRIMARY KEY,
        at         BIGINT NOT NULL,
        actor      TEXT NOT NULL,
        role       TEXT NOT NULL,
        action     TEXT NOT NULL,
        route      TEXT,
        params     TEXT,
        status     BIGINT,
        results    BIGINT,
        detail     TEXT,
        prev_hash  TEXT NOT NULL,
        hash       TEXT NOT NULL
    );
    CREATE INDEX audit_log_by_time ON audit_log (at);
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

    -- Retention: days an organisation's signals are kept (NULL: the global setting).
    ALTER TABLE orgs ADD COLUMN retention_days BIGINT;

    -- Legal holds suspend purging for an organisation or a campaign's signals.
    CREATE TABLE legal_holds (
        id           TEXT PRIMARY KEY,
        scope        TEXT NOT NULL,
        target       TEXT NOT NULL,
        reason       TEXT NOT NULL,
        placed_by    TEXT NOT NULL,
        placed_at    BIGINT NOT NULL,
        released_by  TEXT,
        released_at  BIGINT
    );
    CREATE INDEX legal_holds_active ON legal_holds (scope, target) WHERE released_at IS NULL;
    -- The purge asks whether a signal belongs to a held campaign.
    CREATE INDEX campaign_signals_by_signal ON campaign_signals (signal_id);
    CREATE INDEX incident_signals_by_signal ON incident_signals (signal_id);
    ",
    ),
];

/// The newest schema this build knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |(version, _)| *version)
}
