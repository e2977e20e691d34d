//! `vedetta-agent status`: what the agent is doing, gathered from its state directory
//! (the lock, `enrollment.json`, `uplink.json`, the spool, `sources.json` and the
//! advisories files) into a [`Status`], shown as text for people ([`render`]) or as JSON
//! for scripts (the field names are documented on the command, in `cli.rs`).
//!
//! Only [`gather`] reads files; what is shown of the sources ([`sources_status`]) and the
//! text are pure functions of what was read and of the time.

use crate::advisories::{self, AdvisoryFiles, FileCount, Origin};
use crate::config::AgentConfig;
use crate::health::{SourceHealth, SourceId, SourceKind, SourceState, SourcesReport};
use crate::spool::{Spool, SpoolStats};
use crate::state::{Enrollment, StateLock, StatePaths};
use crate::uplink::UplinkStatus;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use vedetta_common::Timestamp;

/// Everything `status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub running: bool,
    pub enrollment: Option<Enrollment>,
    pub uplink: Option<UplinkStatus>,
    pub spool: Option<SpoolStats>,
    pub spool_capacity: u64,
    pub sources: Vec<SourceStatus>,
    /// When the agent last wrote `sources.json`.
    pub sources_reported_at: Option<Timestamp>,
    /// Errors counted outside the sources (`spool`), as last reported.
    pub other_errors: BTreeMap<String, u64>,
    pub advisories: AdvisoriesStatus,
}

/// A source's state as `status` can tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShownState {
    Starting,
    Running,
    Waiting,
    Failed,
    Stopped,
    /// No agent runs.
    NotRunning,
    /// An agent runs but has not reported this source (yet).
    Unknown,
}

impl From<SourceState> for ShownState {
    fn from(state: SourceState) -> Self {
        match state {
            SourceState::Starting => Self::Starting,
            SourceState::Running => Self::Running,
            SourceState::Waiting => Self::Waiting,
            SourceState::Failed => Self::Failed,
            SourceState::Stopped => Self::Stopped,
        }
    }
}

impl ShownState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
            Self::NotRunning => "not running",
            Self::Unknown => "unknown",
        }
    }
}

/// One source: what it is now, and what the agent last reported about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    pub name: String,
    pub kind: SourceKind,
    pub watches: String,
    pub state: ShownState,
    pub reason: Option<String>,
    pub since: Option<Timestamp>,
    pub reported_state: Option<SourceState>,
    pub reported_at: Option<Timestamp>,
    pub events: u64,
    pub last_event_at: Option<Timestamp>,
    pub errors: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
}

impl SourceStatus {
    fn of(
        id: &SourceId,
        state: ShownState,
        reported: Option<&SourceHealth>,
        reported_at: Option<Timestamp>,
    ) -> Self {
        Self {
            name: id.name.clone(),
            kind: id.kind,
            watches: id.watches.clone(),
            state,
            reason: reported.and_then(|r| r.reason.clone()),
            since: reported.map(|r| r.since),
            reported_state: reported.map(|r| r.state),
            reported_at: reported.and(reported_at),
            events: reported.map_or(0, |r| r.events),
            last_event_at: reported.and_then(|r| r.last_event_at),
            errors: reported.map_or(0, |r| r.errors),
            last_error: reported.and_then(|r| r.last_error.clone()),
            last_error_at: reported.and_then(|r| r.last_error_at),
        }
    }
}

/// What is shown of the sources. While an agent runs, what it reported (the sources it
/// runs, whatever the configuration says now); otherwise the configured sources, not
/// running, each with the last report about it if there is one.
pub fn sources_status(
    configured: &[SourceId],
    running: bool,
    report: Option<&SourcesReport>,
) -> Vec<SourceStatus> {
    let reported_at = report.map(|r| r.updated_at);
    match report {
        Some(report) if running => report
            .sources
            .iter()
            .map(|source| {
                SourceStatus::of(&source.id, source.state.into(), Some(source), reported_at)
            })
            .collect(),
        _ => configured
            .iter()
            .map(|id| {
                let reported = report.and_then(|r| r.sources.iter().find(|s| s.id.name == id.name));
                let state = if running {
                    ShownState::Unknown
                } else {
                    ShownState::NotRunning
                };
                SourceStatus::of(id, state, reported, reported_at)
            })
            .collect(),
    }
}

/// The advisories the agent holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AdvisoriesStatus {
    /// Entries matched now, in all files.
    pub in_force: u64,
    /// Entries past their expiry, no longer matched.
    pub expired: u64,
    /// Lines that cannot be used.
    pub unusable: u64,
    /// The highest sequence number of the collector's feed applied (0: none yet).
    pub last_seq: u64,
    pub files: Vec<FileCount>,
}

impl AdvisoriesStatus {
    pub fn of(files: Vec<FileCount>, last_seq: u64) -> Self {
        Self {
            in_force: files.iter().map(|f| f.in_force).sum(),
            expired: files.iter().map(|f| f.expired).sum(),
            unusable: files.iter().map(|f| f.unusable).sum(),
            last_seq,
            files,
        }
    }
}

/// Reads what `status` shows from the state directory of `config`, at `now`.
pub fn gather(config: &AgentConfig, now: Timestamp) -> anyhow::Result<Status> {
    let paths = StatePaths::new(&config.state_dir);
    let enrollment = Enrollment::load(&paths).ok();
    let running = StateLock::is_held(&paths);
    let uplink: Option<UplinkStatus> = std::fs::read(UplinkStatus::file(&paths.dir))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let spool = if paths.spool.exists() {
        Some(Spool::open(&paths.spool, config.spool.max_signals)?.stats()?)
    } else {
        None
    };
    let report = SourcesReport::read(&paths.dir);
    let sources = sources_status(
        &crate::sources::configured(config),
        running,
        report.as_ref(),
    );
    let advisories = AdvisoriesStatus::of(
        AdvisoryFiles::of_config(config).count(now),
        advisories::last_seq(&paths.dir),
    );
    Ok(Status {
        running,
        enrollment,
        uplink,
        spool,
        spool_capacity: config.spool.max_signals,
        sources,
        sources_reported_at: report.as_ref().map(|r| r.updated_at),
        other_errors: report.map(|r| r.other_errors).unwrap_or_default(),
        advisories,
    })
}

/// A time for people, to the second, in UTC.
fn clock(at: Timestamp) -> String {
    const SECOND: i64 = 1_000_000_000;
    Timestamp(at.0 - at.0.rem_euclid(SECOND))
        .to_rfc3339()
        .replacen('T', " ", 1)
        .replace('Z', " UTC")
}

/// How long ago `at` was (or how far ahead, for a clock that disagrees).
fn ago(at: Timestamp, now: Timestamp) -> String {
    let seconds = (now.0 - at.0) / 1_000_000_000;
    let (amount, future) = (seconds.unsigned_abs(), seconds < 0);
    let text = match amount {
        0 => return "just now".into(),
        1..60 => format!("{amount}s"),
        60..3_600 => format!("{}m", amount / 60),
        3_600..86_400 => format!("{}h", amount / 3_600),
        _ => format!("{}d", amount / 86_400),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// A time with how long ago it was: `2025-06-01 10:00:00 UTC (12s ago)`.
fn when(at: Timestamp, now: Timestamp) -> String {
    format!("{} ({})", clock(at), ago(at, now))
}

/// `1 signal`, `2 signals`.
fn signals(count: u64) -> String {
    if count == 1 {
        "1 signal".to_owned()
    } else {
        format!("{count} signals")
    }
}

/// Width of the labels of a section.
const LABEL: usize = 12;

fn field(out: &mut String, label: &str, value: &str) {
    let _ = writeln!(out, "  {label:<LABEL$} {value}");
}

/// Columns padded to the widest cell, two spaces apart (the last one unpadded).
fn table(out: &mut String, rows: &[(Vec<String>, Vec<String>)]) {
    let columns = rows.iter().map(|(cells, _)| cells.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|(cells, _)| cells.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (cells, details) in rows {
        let mut line = String::from(" ");
        for (column, cell) in cells.iter().enumerate() {
            if column + 1 == cells.len() {
                let _ = write!(line, " {cell}");
            } else {
                let _ = write!(line, " {cell:<width$} ", width = widths[column]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
        for detail in details {
            let _ = writeln!(out, "      {detail}");
        }
    }
}

/// The text for people: one section per topic, aligned.
pub fn render(status: &Status, now: Timestamp) -> String {
    let mut out = String::new();
    out.push_str("Agent\n");
    field(
        &mut out,
        "state",
        if status.running {
            "running"
        } else {
            "not running"
        },
    );
    match &status.enrollment {
        Some(e) => field(
            &mut out,
            "enrolled",
            &format!("agent {} of org {}", e.agent_id, e.org),
        ),
        None => field(&mut out, "enrolled", "no (run `vedetta-agent enroll`)"),
    }
    if !status.other_errors.is_empty() {
        let errors: Vec<String> = status
            .other_errors
            .iter()
            .map(|(name, count)| format!("{name} {count}"))
            .collect();
        field(&mut out, "errors", &errors.join(", "));
    }

    out.push_str("\nUplink\n");
    match &status.uplink {
        Some(u) => {
            let since = u.since.map(|t| format!(" since {}", when(t, now)));
            field(
                &mut out,
                "state",
                &format!("{}{}", u.state, since.unwrap_or_default()),
            );
            field(&mut out, "collector", &u.collector);
            if let Some(error) = &u.last_error {
                field(&mut out, "last error", error);
            }
        }
        None => {
            field(&mut out, "state", "never connected");
            if let Some(e) = &status.enrollment {
                field(&mut out, "collector", &e.collector);
            }
        }
    }

    out.push_str("\nSpool\n");
    match &status.spool {
        Some(s) => {
            field(
                &mut out,
                "waiting",
                &format!(
                    "{} ({} in unacknowledged batches), capacity {}",
                    signals(s.depth),
                    s.in_batches,
                    status.spool_capacity
                ),
            );
            field(&mut out, "delivered", &signals(s.acked_total));
            field(
                &mut out,
                "last ack",
                &s.last_ack_at
                    .map_or_else(|| "never".to_owned(), |t| when(t, now)),
            );
            let by: Vec<String> = s
                .drops_by_severity
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(severity, n)| format!("{severity} {n}"))
                .collect();
            let by = if by.is_empty() {
                String::new()
            } else {
                format!(" ({})", by.join(", "))
            };
            field(&mut out, "drops", &format!("{}{by}", s.drops_total));
        }
        None => field(&mut out, "waiting", "no spool yet"),
    }

    out.push_str("\nSources");
    match status.sources_reported_at {
        Some(at) => {
            let _ = writeln!(out, " (reported {}, {})", clock(at), ago(at, now));
        }
        None => out.push_str(" (never reported)\n"),
    }
    if status.sources.is_empty() {
        out.push_str("  none configured\n");
    } else {
        render_sources(&mut out, &status.sources, now);
    }

    out.push_str("\nAdvisories\n");
    let advisories = &status.advisories;
    let mut held = format!("{} in force", advisories.in_force);
    if advisories.expired > 0 {
        let _ = write!(held, ", {} expired", advisories.expired);
    }
    if advisories.unusable > 0 {
        let _ = write!(held, ", {} unusable lines", advisories.unusable);
    }
    field(&mut out, "held", &held);
    field(
        &mut out,
        "last seq",
        &if advisories.last_seq == 0 {
            "none received from the collector yet".to_owned()
        } else {
            advisories.last_seq.to_string()
        },
    );
    for (index, file) in advisories.files.iter().enumerate() {
        let origin = match file.origin {
            Origin::Collector => "from the collector",
            Origin::Local => "local",
        };
        let what = match (&file.error, file.found) {
            (Some(error), _) => format!("cannot read: {error}"),
            (None, false) => "not found".to_owned(),
            (None, true) => {
                let mut text = format!("{} in force", file.in_force);
                if file.expired > 0 {
                    let _ = write!(text, ", {} expired", file.expired);
                }
                if file.unusable > 0 {
                    let _ = write!(text, ", {} unusable", file.unusable);
                }
                text
            }
        };
        field(
            &mut out,
            if index == 0 { "files" } else { "" },
            &format!("{} ({origin}): {what}", file.path.display()),
        );
    }
    out
}

fn render_sources(out: &mut String, sources: &[SourceStatus], now: Timestamp) {
    let mut rows = vec![(
        ["NAME", "STATE", "SINCE", "EVENTS", "LAST EVENT", "ERRORS"]
            .map(String::from)
            .to_vec(),
        Vec::new(),
    )];
    for source in sources {
        let current = !matches!(source.state, ShownState::NotRunning | ShownState::Unknown);
        let since = match source.since {
            Some(at) if current => ago(at, now),
            _ => "-".to_owned(),
        };
        let mut details = Vec::new();
        if source.kind != SourceKind::Logs {
            details.push(format!("watches: {}", source.watches));
        }
        if !current && let (Some(state), Some(at)) = (source.reported_state, source.since) {
            details.push(format!(
                "last known: {} since {}",
                state.name(),
                when(at, now)
            ));
        }
        if let Some(reason) = &source.reason {
            details.push(format!("reason: {reason}"));
        }
        if let Some(error) = &source.last_error {
            let at = source
                .last_error_at
                .map(|t| format!(" ({})", ago(t, now)))
                .unwrap_or_default();
            details.push(format!("last error: {error}{at}"));
        }
        rows.push((
            vec![
                source.name.clone(),
                source.state.name().to_owned(),
                since,
                format!("{} {}", source.events, source.kind.events_name()),
                source
                    .last_event_at
                    .map_or_else(|| "never".to_owned(), |t| ago(t, now)),
                source.errors.to_string(),
            ],
            details,
        ));
    }
    table(out, &rows);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const SECOND: i64 = 1_000_000_000;

    fn at(seconds: i64) -> Timestamp {
        // 2027-01-15 08:00:00 UTC.
        Timestamp(1_800_000_000 * SECOND + seconds * SECOND)
    }

    fn id(name: &str, kind: SourceKind, watches: &str) -> SourceId {
        SourceId {
            name: name.into(),
            kind,
            watches: watches.into(),
        }
    }

    fn health(id: SourceId, state: SourceState, reason: Option<&str>) -> SourceHealth {
        SourceHealth {
            id,
            state,
            reason: reason.map(String::from),
            since: at(0),
            events: 12,
            last_event_at: Some(at(50)),
            errors: 0,
            last_error: None,
            last_error_at: None,
        }
    }

    fn configured() -> Vec<SourceId> {
        vec![
            id(
                "logs:/var/log/auth.log",
                SourceKind::Logs,
                "/var/log/auth.log",
            ),
            id("journald:0", SourceKind::Journald, "the system journal"),
        ]
    }

    fn report() -> SourcesReport {
        let mut journal = health(
            id("journald:0", SourceKind::Journald, "the system journal"),
            SourceState::Failed,
            Some("cannot start journalctl: not found"),
        );
        journal.errors = 3;
        journal.last_error = Some("cannot start journalctl: not found".into());
        journal.last_error_at = Some(at(55));
        SourcesReport {
            version: crate::health::SOURCES_VERSION,
            updated_at: at(58),
            sources: vec![
                health(
                    id(
                        "logs:/var/log/auth.log",
                        SourceKind::Logs,
                        "/var/log/auth.log",
                    ),
                    SourceState::Running,
                    None,
                ),
                journal,
            ],
            other_errors: BTreeMap::new(),
        }
    }

    #[test]
    fn a_running_agent_shows_what_it_reported() {
        let shown = sources_status(&configured()[..1], true, Some(&report()));
        // The report is the truth of what runs, even if the configuration changed since.
        assert_eq!(shown.len(), 2);
        assert_eq!(shown[0].state, ShownState::Running);
        assert_eq!((shown[0].events, shown[0].reported_at), (12, Some(at(58))));
        assert_eq!(shown[1].state, ShownState::Failed);
        assert_eq!(
            shown[1].reason.as_deref(),
            Some("cannot start journalctl: not found")
        );
    }

    #[test]
    fn without_an_agent_the_configured_sources_show_their_last_known_state() {
        let mut configured = configured();
        configured.push(id("host", SourceKind::Host, "processes, every 30s"));
        let shown = sources_status(&configured, false, Some(&report()));
        assert!(shown.iter().all(|s| s.state == ShownState::NotRunning));
        assert_eq!(shown[0].reported_state, Some(SourceState::Running));
        assert_eq!(shown[0].reported_at, Some(at(58)));
        assert_eq!(shown[2].reported_state, None, "never reported");
        assert_eq!(shown[2].reported_at, None);
        // No report at all, agent running: not known yet.
        let shown = sources_status(&configured, true, None);
        assert!(shown.iter().all(|s| s.state == ShownState::Unknown));
        assert_eq!(shown.len(), 3);
    }

    #[test]
    fn times_for_people_are_short() {
        assert_eq!(
            clock(Timestamp(at(0).0 + 999_999_999)),
            "2027-01-15 08:00:00 UTC"
        );
        assert_eq!(ago(at(0), at(0)), "just now");
        assert_eq!(ago(at(0), at(59)), "59s ago");
        assert_eq!(ago(at(0), at(3_599)), "59m ago");
        assert_eq!(ago(at(0), at(7_200)), "2h ago");
        assert_eq!(ago(at(0), at(3 * 86_400)), "3d ago");
        assert_eq!(ago(at(90), at(0)), "in 1m");
    }

    fn status(running: bool) -> Status {
        Status {
            running,
            enrollment: None,
            uplink: Some(UplinkStatus {
                state: "connected".into(),
                since: Some(at(1)),
                collector: "collector.example:4433".into(),
                last_error: None,
            }),
            spool: Some(SpoolStats {
                acked_total: 5,
                last_ack_at: Some(at(57)),
                ..SpoolStats::default()
            }),
            spool_capacity: 100_000,
            sources: sources_status(&configured(), running, Some(&report())),
            sources_reported_at: Some(at(58)),
            other_errors: BTreeMap::new(),
            advisories: AdvisoriesStatus::of(
                vec![FileCount {
                    path: PathBuf::from("/var/lib/vedetta-agent/advisories.ndjson"),
                    origin: Origin::Collector,
                    found: true,
                    in_force: 2,
                    expired: 1,
                    unusable: 0,
                    error: None,
                }],
                7,
            ),
        }
    }

    #[test]
    fn the_text_has_a_section_per_topic_and_aligned_sources() {
        let text = render(&status(true), at(60));
        for section in [
            "Agent\n",
            "\nUplink\n",
            "\nSpool\n",
            "\nSources (",
            "\nAdvisories\n",
        ] {
            assert!(text.contains(section), "{section:?} in:\n{text}");
        }
        assert!(
            text.contains("  last ack     2027-01-15 08:00:57 UTC (3s ago)\n"),
            "{text}"
        );
        assert!(
            text.contains("  held         2 in force, 1 expired\n"),
            "{text}"
        );
        assert!(text.contains("  last seq     7\n"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        let header = lines
            .iter()
            .position(|line| line.trim_start().starts_with("NAME"))
            .expect("header");
        let column = |line: &str, word: &str| line.find(word).expect(word);
        let state = column(lines[header], "STATE");
        assert_eq!(column(lines[header + 1], "running"), state, "{text}");
        assert_eq!(column(lines[header + 2], "failed"), state, "{text}");
        assert!(lines[header + 1].contains("12 lines"), "{text}");
        assert!(
            text.contains("      reason: cannot start journalctl: not found\n"),
            "{text}"
        );
        assert!(
            text.contains("      watches: the system journal\n"),
            "{text}"
        );
    }

    #[test]
    fn the_text_of_a_stopped_agent_says_what_was_last_known() {
        let text = render(&status(false), at(60));
        assert!(text.contains("  state        not running\n"), "{text}");
        assert!(
            text.contains("last known: running since 2027-01-15 08:00:00 UTC (1m ago)"),
            "{text}"
        );
        assert!(text.contains("not running  -"), "{text}");
    }

    /// The keys of a JSON object, sorted (whatever order serde_json keeps).
    fn keys(value: &serde_json::Value) -> Vec<&str> {
        let mut keys: Vec<&str> = value
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn the_json_field_names_are_stable() {
        let json = serde_json::to_value(status(true)).expect("json");
        assert_eq!(
            keys(&json),
            [
                "advisories",
                "enrollment",
                "other_errors",
                "running",
                "sources",
                "sources_reported_at",
                "spool",
                "spool_capacity",
                "uplink"
            ]
        );
        assert_eq!(
            keys(&json["sources"][1]),
            [
                "errors",
                "events",
                "kind",
                "last_error",
                "last_error_at",
                "last_event_at",
                "name",
                "reason",
                "reported_at",
                "reported_state",
                "since",
                "state",
                "watches"
            ]
        );
        assert_eq!(json["sources"][1]["kind"], "journald");
        assert_eq!(json["sources"][1]["state"], "failed");
        assert_eq!(
            serde_json::to_value(ShownState::NotRunning).expect("json"),
            "not_running"
        );
        assert_eq!(
            keys(&json["advisories"]),
            ["expired", "files", "in_force", "last_seq", "unusable"]
        );
        assert_eq!(
            keys(&json["advisories"]["files"][0]),
            [
                "error", "expired", "found", "in_force", "origin", "path", "unusable"
            ]
        );
        assert_eq!(json["advisories"]["files"][0]["origin"], "collector");
    }
}
