//! Advisories on disk, and the feed that hands them to every source.
//!
//! * The collector's advisories are kept in `state_dir/advisories.ndjson` (see
//!   [`merge`]), so that an agent restarted while the collector is away still matches
//!   them. The highest sequence number the agent has applied is kept beside it in
//!   `state_dir/advisories.seq` (see [`last_seq`]): it survives entries that were
//!   withdrawn or expired, and the uplink names it in its next `Hello` so that only what
//!   was missed is sent again.
//! * Members may list indicators of their own (`[advisories] files`). Both kinds of file
//!   have one format, one JSON object a line ([`AdvisoryLine`]):
//!   `{"type": "ip" | "cidr" | "domain" | "sha256", "value": "…", "advisory": "ADV-…",
//!   "severity": "high"}`, optionally with `"seq"`, `"expires_at"` (RFC 3339) and
//!   `"description"`; older lines without them stay valid. A line that cannot be used is
//!   reported and skipped, never fatal.
//! * [`AdvisoryFeed`] loads the files once for the whole agent, looks at their
//!   modification every [`REFRESH`] and at the clock for expiries, and publishes the
//!   table; each source holds an [`AdvisoryView`] whose check is one atomic load, so
//!   that a new advisory is matched by every source within a second without each of
//!   them reading the files.

use crate::detect::advisories::{Advised, Advisories, normalise};
use crate::pipeline::read_bounded_line;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tracing::{info, warn};
use vedetta_common::files::write_atomic;
use vedetta_common::protocol::{Advisory, MAX_ADVISORY_TEXT};
use vedetta_common::{IndicatorType, Severity, Timestamp};

/// Most advisories kept from the collector: beyond, the soonest-expiring go first. At
/// about 300 bytes a line, the file stays near 30 MB and its table near 50 MB.
pub const MAX_PUSHED: usize = 100_000;
/// Most lines read from any one file (a local list, or a damaged pushed file).
const MAX_LINES_PER_FILE: usize = 1_000_000;
/// Longest line read whole; longer ones are garbage by definition.
const MAX_LINE_BYTES: usize = 16 * 1024;
/// Longest advisory identifier kept.
const MAX_ID_BYTES: usize = 128;
/// How many unusable lines of one file are named in the log (then only counted).
const LINES_LOGGED: usize = 10;
/// How often the feed looks at the files and the clock.
pub const REFRESH: Duration = Duration::from_millis(250);
/// Version of the `advisories.seq` file.
const SEQ_VERSION: u32 = 1;

/// The file of the advisories the collector pushed.
pub fn pushed_file(state_dir: &Path) -> PathBuf {
    state_dir.join("advisories.ndjson")
}

/// The file holding the highest advisory sequence number applied.
pub fn seq_file(state_dir: &Path) -> PathBuf {
    state_dir.join("advisories.seq")
}

/// One line of an advisories file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdvisoryLine {
    #[serde(rename = "type")]
    pub kind: IndicatorType,
    pub value: String,
    /// The advisory's identifier, quoted by the `ioc_match` signals it causes.
    #[serde(default)]
    pub advisory: String,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// Position in the collector's feed (pushed advisories only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Not matched from this time on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn default_severity() -> Severity {
    Severity::High
}

impl AdvisoryLine {
    fn advised(&self) -> Advised {
        Advised {
            advisory: self.advisory.clone(),
            severity: self.severity,
            expires_at: self.expires_at,
        }
    }

    fn expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdvisoryError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads the lines of `path`, handing each (with its number) to `line`. `Ok(false)`:
/// there is no such file.
fn read_file(
    path: &Path,
    line: &mut dyn FnMut(usize, Result<AdvisoryLine, String>),
) -> Result<bool, AdvisoryError> {
    let read_error = |source| AdvisoryError::Read {
        path: path.to_owned(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(read_error(error)),
    };
    let mut reader = BufReader::new(file);
    let mut buffer = Vec::new();
    let mut number = 0;
    while let Some(truncated) =
        read_bounded_line(&mut reader, &mut buffer, MAX_LINE_BYTES).map_err(read_error)?
    {
        number += 1;
        if number > MAX_LINES_PER_FILE {
            warn!(file = %path.display(), max = MAX_LINES_PER_FILE, "advisories file too long: the rest is ignored");
            break;
        }
        if buffer.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = if truncated {
            Err(format!("longer than {MAX_LINE_BYTES} bytes"))
        } else {
            serde_json::from_slice::<AdvisoryLine>(&buffer).map_err(|error| error.to_string())
        };
        line(number, parsed);
    }
    Ok(true)
}

/// Lines of one file in force and expired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    in_force: u64,
    expired: u64,
}

/// Counts the lines of `path` in force and expired at `now`, handing each unusable one
/// (with its number) to `problem`. `Ok(None)`: there is no such file.
fn tally(
    path: &Path,
    now: Timestamp,
    problem: &mut dyn FnMut(usize, String),
) -> Result<Option<Tally>, AdvisoryError> {
    let mut tally = Tally::default();
    let found = read_file(path, &mut |number, line| {
        let checked = line.and_then(|line| {
            normalise(line.kind, &line.value)
                .map(|_| line.expired(now))
                .map_err(|error| error.to_string())
        });
        match checked {
            Ok(true) => tally.expired += 1,
            Ok(false) => tally.in_force += 1,
            Err(error) => problem(number, error),
        }
    })?;
    Ok(found.then_some(tally))
}

/// Where an advisories file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Pushed by the collector (`advisories.ndjson` in the state directory).
    Collector,
    /// The member's own list (`[advisories] files`).
    Local,
}

/// What one advisories file holds at a given time (for `status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileCount {
    pub path: PathBuf,
    pub origin: Origin,
    /// Whether the file exists (a missing one matches nothing until it does).
    pub found: bool,
    /// Entries (one indicator each) matched now.
    pub in_force: u64,
    /// Entries past their expiry: no longer matched (the collector's are removed from
    /// the file at its next update).
    pub expired: u64,
    /// Lines that cannot be used (damaged, or not a valid indicator): skipped.
    pub unusable: u64,
    /// Why the file could not be read, when it exists but could not be.
    pub error: Option<String>,
}

/// Counts unusable lines of one file, naming the first few in the log.
#[derive(Debug)]
struct Skipped<'a> {
    path: &'a Path,
    count: usize,
}

impl<'a> Skipped<'a> {
    fn new(path: &'a Path) -> Self {
        Self { path, count: 0 }
    }

    fn note(&mut self, line: usize, error: &dyn std::fmt::Display) {
        self.count += 1;
        if self.count <= LINES_LOGGED {
            warn!(file = %self.path.display(), line, %error, "advisory line skipped");
        }
    }

    fn finish(self) {
        if self.count > LINES_LOGGED {
            warn!(file = %self.path.display(), skipped = self.count, "advisory lines skipped in all");
        }
    }
}

/// The highest advisory sequence number this agent applied (0: none). A missing or
/// damaged `advisories.seq` falls back to the numbers in the pushed file: at worst the
/// collector sends again what is already held, which [`merge`] applies idempotently.
/// When the pushed file itself is gone (removed by hand), everything is asked for again.
pub fn last_seq(state_dir: &Path) -> u64 {
    let pushed = pushed_file(state_dir);
    if !pushed.exists() {
        return 0;
    }
    if let Some(seq) = stored_seq(state_dir) {
        return seq;
    }
    let mut highest = 0;
    let read = read_file(&pushed, &mut |_, line| {
        if let Ok(line) = line {
            highest = highest.max(line.seq.unwrap_or(0));
        }
    });
    if let Err(error) = read {
        warn!(%error, "cannot read the advisories held: asking for all of them");
    }
    highest
}

#[derive(Debug, Serialize, Deserialize)]
struct SeqFile {
    version: u32,
    last_seq: u64,
}

/// What `advisories.seq` says, if it can be read.
fn stored_seq(state_dir: &Path) -> Option<u64> {
    let path = seq_file(state_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            warn!(file = %path.display(), %error, "cannot read the advisory sequence number");
            return None;
        }
    };
    match serde_json::from_str::<SeqFile>(&text) {
        Ok(file) if file.version == SEQ_VERSION => Some(file.last_seq),
        Ok(file) => {
            warn!(file = %path.display(), version = file.version, "unknown version of the advisory sequence file");
            None
        }
        Err(error) => {
            warn!(file = %path.display(), %error, "damaged advisory sequence file");
            None
        }
    }
}

/// What [`merge`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MergeOutcome {
    pub received: usize,
    pub added: usize,
    /// Advisories sent again under their id (a change): the new version replaced the old.
    pub replaced: usize,
    /// Held advisories withdrawn, or expired.
    pub removed: usize,
    /// Older versions of advisories held in a newer one: ignored.
    pub stale: usize,
    /// Entries that cannot be matched (garbage indicator or identifier): skipped.
    pub skipped: usize,
    /// Dropped to stay within the cap (the soonest-expiring).
    pub dropped: usize,
    /// Advisories held afterwards.
    pub held: usize,
    pub last_seq: u64,
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The line to keep for an advisory, or why it cannot be used.
fn line_of(advisory: &Advisory) -> Result<AdvisoryLine, String> {
    let id = advisory.id.trim();
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
        return Err(format!("unusable advisory identifier {:?}", cut(id, 64)));
    }
    let value = normalise(advisory.indicator.kind, &advisory.indicator.value)
        .map_err(|error| error.to_string())?;
    Ok(AdvisoryLine {
        kind: advisory.indicator.kind,
        value,
        advisory: id.to_owned(),
        severity: advisory.severity,
        seq: Some(advisory.seq),
        expires_at: Some(advisory.expires_at),
        description: Some(cut(&advisory.description, MAX_ADVISORY_TEXT))
            .filter(|text| !text.is_empty()),
    })
}

/// Applies advisories received from the collector to the pushed file in `state_dir`:
/// a withdrawn or expired advisory is removed, one sent again under its id replaces the
/// one held (unless the held one is newer), an entry that cannot be matched is skipped
/// alone. At most `max_entries` are kept (the soonest-expiring go first, with a warning).
/// The file is replaced atomically, then the highest sequence number is recorded (in
/// that order: a crash between the two makes the collector send some again, harmless).
pub fn merge(
    state_dir: &Path,
    incoming: &[Advisory],
    now: Timestamp,
    max_entries: usize,
) -> Result<MergeOutcome, AdvisoryError> {
    let path = pushed_file(state_dir);
    let mut outcome = MergeOutcome {
        received: incoming.len(),
        ..MergeOutcome::default()
    };
    let mut held: HashMap<String, AdvisoryLine> = HashMap::new();
    // Lines without an identifier cannot be replaced or withdrawn: kept as they are.
    let mut anonymous: Vec<AdvisoryLine> = Vec::new();
    let mut skipped = Skipped::new(&path);
    let mut changed = false;
    let mut expired = 0;
    let exists = read_file(&path, &mut |number, line| match line {
        Ok(line) if line.expired(now) => {
            expired += 1;
            changed = true;
        }
        Ok(line) if line.advisory.is_empty() => anonymous.push(line),
        Ok(line) => {
            held.insert(line.advisory.clone(), line);
        }
        Err(error) => {
            changed = true;
            skipped.note(number, &error);
        }
    })?;
    skipped.finish();
    outcome.removed = expired;
    let stored = stored_seq(state_dir);
    let mut last = stored.unwrap_or(0);
    for advisory in incoming {
        last = last.max(advisory.seq);
        let id = advisory.id.trim();
        if held
            .get(id)
            .and_then(|line| line.seq)
            .is_some_and(|seq| seq > advisory.seq)
        {
            outcome.stale += 1;
            continue;
        }
        if advisory.withdrawn || advisory.expires_at <= now {
            if held.remove(id).is_some() {
                outcome.removed += 1;
                changed = true;
            }
            continue;
        }
        match line_of(advisory) {
            Ok(line) => {
                changed = true;
                match held.insert(line.advisory.clone(), line) {
                    Some(_) => outcome.replaced += 1,
                    None => outcome.added += 1,
                }
            }
            Err(error) => {
                outcome.skipped += 1;
                warn!(seq = advisory.seq, advisory = %cut(id, 64), %error, "advisory skipped");
            }
        }
    }
    let mut lines: Vec<AdvisoryLine> = anonymous.into_iter().chain(held.into_values()).collect();
    if lines.len() > max_entries {
        // The soonest-expiring first (never-expiring last), older before newer.
        lines.sort_by_key(|line| {
            (
                line.expires_at.map_or(i64::MAX, |at| at.0),
                line.seq.unwrap_or(0),
            )
        });
        outcome.dropped = lines.len() - max_entries;
        lines.drain(..outcome.dropped);
        warn!(
            dropped = outcome.dropped,
            max = max_entries,
            "too many advisories held: dropped the soonest-expiring"
        );
        changed = true;
    }
    lines.sort_by(|a, b| {
        (a.seq.unwrap_or(0), a.advisory.as_str(), a.value.as_str()).cmp(&(
            b.seq.unwrap_or(0),
            b.advisory.as_str(),
            b.value.as_str(),
        ))
    });
    outcome.held = lines.len();
    outcome.last_seq = last;
    if changed || !exists {
        let mut text = Vec::with_capacity(lines.len() * 256);
        for line in &lines {
            // Serialising plain strings, numbers and times cannot fail.
            if serde_json::to_writer(&mut text, line).is_ok() {
                text.push(b'\n');
            }
        }
        write_atomic(&path, &text, 0o600).map_err(|source| AdvisoryError::Write {
            path: path.clone(),
            source,
        })?;
    }
    if stored != Some(last) {
        let seq = serde_json::to_vec(&SeqFile {
            version: SEQ_VERSION,
            last_seq: last,
        })
        .unwrap_or_default();
        let seq_path = seq_file(state_dir);
        write_atomic(&seq_path, &seq, 0o600).map_err(|source| AdvisoryError::Write {
            path: seq_path,
            source,
        })?;
    }
    Ok(outcome)
}

/// Where the advisories in force come from: the pushed file and the member's lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdvisoryFiles {
    pub pushed: Option<PathBuf>,
    pub local: Vec<PathBuf>,
}

/// What a file looked like (modification time, length, inode), to notice a change.
type Fingerprint = Vec<Option<(SystemTime, u64, u64)>>;

impl AdvisoryFiles {
    /// The pushed file of `state_dir` (if any) and `local` lists.
    pub fn new(state_dir: Option<&Path>, local: impl IntoIterator<Item = PathBuf>) -> Self {
        Self {
            pushed: state_dir.map(pushed_file),
            local: local.into_iter().collect(),
        }
    }

    /// Those of an agent configuration: the pushed file, `[advisories] files`, and the
    /// older `[sources.network] advisories_file`.
    pub fn of_config(config: &crate::config::AgentConfig) -> Self {
        let network = config
            .sources
            .network
            .as_ref()
            .and_then(|network| network.advisories_file.clone());
        Self::new(
            Some(&config.state_dir),
            config.advisories.files.iter().cloned().chain(network),
        )
    }

    fn paths(&self) -> impl Iterator<Item = &Path> {
        self.pushed
            .iter()
            .chain(self.local.iter())
            .map(PathBuf::as_path)
    }

    /// The advisories in force at `now` (expired entries left out). A missing file
    /// counts as empty (a list not written yet, no advisory pushed yet); an unusable
    /// line is reported and skipped; a file that exists but cannot be read is an error.
    pub fn load(&self, now: Timestamp) -> Result<Advisories, AdvisoryError> {
        let mut table = Advisories::default();
        for path in self.paths() {
            let mut skipped = Skipped::new(path);
            read_file(path, &mut |number, line| {
                let added = line.and_then(|line| {
                    table
                        .add(line.kind, &line.value, line.advised())
                        .map_err(|error| error.to_string())
                });
                if let Err(error) = added {
                    skipped.note(number, &error);
                }
            })?;
            skipped.finish();
        }
        table.expire(now);
        Ok(table)
    }

    /// What each file holds at `now`, the pushed file first (for `status`). Nothing is
    /// logged: unusable lines are only counted.
    pub fn count(&self, now: Timestamp) -> Vec<FileCount> {
        let pushed = self.pushed.iter().map(|path| (path, Origin::Collector));
        let local = self.local.iter().map(|path| (path, Origin::Local));
        pushed
            .chain(local)
            .map(|(path, origin)| {
                let mut unusable = 0;
                let counted = tally(path, now, &mut |_, _| unusable += 1);
                let (found, tally, error) = match counted {
                    Ok(Some(tally)) => (true, tally, None),
                    Ok(None) => (false, Tally::default(), None),
                    Err(error) => (true, Tally::default(), Some(error.to_string())),
                };
                FileCount {
                    path: path.clone(),
                    origin,
                    found,
                    in_force: tally.in_force,
                    expired: tally.expired,
                    unusable,
                    error,
                }
            })
            .collect()
    }

    /// `check-config`: every local list, strictly. Returns a line about each file, or
    /// every problem found (with line numbers).
    pub fn check(&self, now: Timestamp) -> Result<Vec<String>, Vec<String>> {
        let (mut report, mut problems) = (Vec::new(), Vec::new());
        for path in &self.local {
            let mut errors = Vec::new();
            let found = tally(path, now, &mut |number, error| {
                errors.push(format!("{}:{number}: {error}", path.display()));
            });
            match found {
                Ok(Some(Tally { in_force, expired })) if errors.is_empty() => report.push(format!(
                    "{}: {in_force} indicators{}",
                    path.display(),
                    if expired > 0 {
                        format!(" ({expired} expired)")
                    } else {
                        String::new()
                    }
                )),
                Ok(Some(_)) => problems.extend(errors),
                Ok(None) => report.push(format!(
                    "{}: not found (nothing is matched from it until it exists)",
                    path.display()
                )),
                Err(error) => problems.push(error.to_string()),
            }
        }
        if problems.is_empty() {
            Ok(report)
        } else {
            Err(problems)
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        use std::os::unix::fs::MetadataExt as _;
        self.paths()
            .map(|path| {
                let meta = std::fs::metadata(path).ok()?;
                Some((meta.modified().ok()?, meta.len(), meta.ino()))
            })
            .collect()
    }
}

#[derive(Debug)]
struct Shared {
    files: AdvisoryFiles,
    current: Mutex<Arc<Advisories>>,
    /// Bumped after each change of `current`.
    generation: AtomicU64,
    seen: Mutex<Fingerprint>,
}

/// The advisories in force for the whole agent, reloaded when their files change and
/// pruned when an entry expires (wall clock).
#[derive(Debug, Clone)]
pub struct AdvisoryFeed {
    shared: Arc<Shared>,
}

impl AdvisoryFeed {
    /// Loads `files` now.
    pub fn open(files: AdvisoryFiles) -> Result<Self, AdvisoryError> {
        let seen = files.fingerprint();
        let table = files.load(Timestamp::now())?;
        Ok(Self::with(files, table, seen))
    }

    /// A feed that never changes (a replay, tests).
    pub fn fixed(table: Advisories) -> Self {
        Self::with(AdvisoryFiles::default(), table, Vec::new())
    }

    fn with(files: AdvisoryFiles, table: Advisories, seen: Fingerprint) -> Self {
        Self {
            shared: Arc::new(Shared {
                files,
                current: Mutex::new(Arc::new(table)),
                generation: AtomicU64::new(0),
                seen: Mutex::new(seen),
            }),
        }
    }

    pub fn current(&self) -> Arc<Advisories> {
        Arc::clone(
            &self
                .shared
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// A handle for one source.
    pub fn view(&self) -> AdvisoryView {
        let seen = self.shared.generation.load(Ordering::Acquire);
        AdvisoryView {
            feed: self.clone(),
            seen,
        }
    }

    fn publish(&self, table: Advisories) {
        *self
            .shared
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Reloads the files if they changed, else forgets what expired by `now`. Returns
    /// whether the advisories in force changed.
    pub fn refresh(&self, now: Timestamp) -> bool {
        let fingerprint = self.shared.files.fingerprint();
        let changed = {
            let mut seen = self.shared.seen.lock().unwrap_or_else(|p| p.into_inner());
            let changed = *seen != fingerprint;
            *seen = fingerprint;
            changed
        };
        if changed {
            return match self.shared.files.load(now) {
                Ok(table) => {
                    let indicators = table.len();
                    self.publish(table);
                    info!(indicators, "advisories reloaded");
                    true
                }
                Err(error) => {
                    warn!(%error, "cannot reload the advisories; the previous ones stay in force");
                    false
                }
            };
        }
        let current = self.current();
        if current.next_expiry().is_some_and(|at| at <= now) {
            let mut table = Advisories::clone(&current);
            let expired = table.expire(now);
            let indicators = table.len();
            self.publish(table);
            info!(expired, indicators, "advisories expired");
            return true;
        }
        false
    }

    /// Refreshes every [`REFRESH`] until `stop` is set (the body of the agent's
    /// advisories thread).
    pub fn watch(self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            crate::sources::sleep_unless_stopped(stop, REFRESH);
            self.refresh(Timestamp::now());
        }
    }
}

/// One source's handle on the feed.
#[derive(Debug, Clone)]
pub struct AdvisoryView {
    feed: AdvisoryFeed,
    seen: u64,
}

impl AdvisoryView {
    /// The advisories in force.
    pub fn current(&self) -> Arc<Advisories> {
        self.feed.current()
    }

    /// The advisories in force if they changed since the last call (one atomic load
    /// when they did not: cheap enough for every batch of packets or lines).
    pub fn changed(&mut self) -> Option<Arc<Advisories>> {
        let generation = self.feed.shared.generation.load(Ordering::Acquire);
        if generation == self.seen {
            return None;
        }
        self.seen = generation;
        Some(self.feed.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vedetta_common::Indicator;

    const SECOND: i64 = 1_000_000_000;
    const NOW: Timestamp = Timestamp(1_800_000_000 * SECOND);

    fn advisory(seq: u64, id: &str, kind: IndicatorType, value: &str) -> Advisory {
        Advisory {
            seq,
            id: id.into(),
            indicator: Indicator::new(kind, value),
            severity: Severity::High,
            description: format!("advisory {id}"),
            published_at: NOW,
            expires_at: Timestamp(NOW.0 + 86_400 * SECOND),
            withdrawn: false,
        }
    }

    fn ip(seq: u64, id: &str, value: &str) -> Advisory {
        advisory(seq, id, IndicatorType::Ip, value)
    }

    fn held(dir: &Path) -> Vec<AdvisoryLine> {
        let mut lines = Vec::new();
        read_file(&pushed_file(dir), &mut |_, line| {
            lines.push(line.expect("valid line"))
        })
        .expect("read");
        lines
    }

    fn table(dir: &Path, now: Timestamp) -> Advisories {
        AdvisoryFiles::new(Some(dir), []).load(now).expect("load")
    }

    #[test]
    fn merging_adds_replaces_withdraws_and_keeps_the_highest_seq_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(last_seq(dir.path()), 0, "nothing held yet");
        let outcome = merge(
            dir.path(),
            &[
                ip(1, "ADV-1", "203.0.113.7"),
                ip(2, "ADV-2", "198.51.100.9"),
                advisory(3, "ADV-3", IndicatorType::Sha256, &"AB".repeat(32)),
            ],
            NOW,
            MAX_PUSHED,
        )
        .expect("merge");
        assert_eq!((outcome.added, outcome.held, outcome.last_seq), (3, 3, 3));
        let lines = held(dir.path());
        assert_eq!(lines[2].value, "ab".repeat(32), "stored canonical");
        assert_eq!(lines[0].seq, Some(1));
        assert_eq!(lines[0].description.as_deref(), Some("advisory ADV-1"));
        assert!(lines[0].expires_at.is_some());
        assert!(table(dir.path(), NOW).sha256(&[0xab; 32]).is_some());

        // ADV-1 changed (a new address), ADV-2 withdrawn, a stale copy of ADV-3 ignored.
        let mut withdrawn = ip(5, "ADV-2", "198.51.100.9");
        withdrawn.withdrawn = true;
        let outcome = merge(
            dir.path(),
            &[
                ip(4, "ADV-1", "203.0.113.8"),
                withdrawn,
                advisory(2, "ADV-3", IndicatorType::Sha256, &"cd".repeat(32)),
            ],
            NOW,
            MAX_PUSHED,
        )
        .expect("merge");
        assert_eq!(
            (
                outcome.replaced,
                outcome.removed,
                outcome.stale,
                outcome.held
            ),
            (1, 1, 1, 2),
            "{outcome:?}"
        );
        let advisories = table(dir.path(), NOW);
        assert!(
            advisories
                .address("203.0.113.7".parse().expect("ip"))
                .is_none()
        );
        assert!(
            advisories
                .address("203.0.113.8".parse().expect("ip"))
                .is_some()
        );
        assert!(
            advisories
                .address("198.51.100.9".parse().expect("ip"))
                .is_none()
        );
        assert!(advisories.sha256(&[0xab; 32]).is_some());

        // Everything withdrawn: nothing held, and the highest number survives a restart
        // (a new call reads it from disk).
        let mut gone = [ip(9, "ADV-1", "203.0.113.8"), ip(10, "ADV-3", "x")];
        for advisory in &mut gone {
            advisory.withdrawn = true;
        }
        let outcome = merge(dir.path(), &gone, NOW, MAX_PUSHED).expect("merge");
        assert_eq!((outcome.held, outcome.last_seq), (0, 10));
        assert!(held(dir.path()).is_empty());
        assert_eq!(last_seq(dir.path()), 10);
        // A number lower than the one held never lowers it.
        merge(dir.path(), &[ip(7, "ADV-7", "192.0.2.7")], NOW, MAX_PUSHED).expect("merge");
        assert_eq!(last_seq(dir.path()), 10);
    }

    #[test]
    fn garbage_entries_and_lines_are_skipped_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A hand-damaged file: a garbage line, an old-format line, a truncated one.
        std::fs::write(
            pushed_file(dir.path()),
            "not json at all\n\
             {\"type\":\"domain\",\"value\":\"evil.example\",\"advisory\":\"ADV-OLD\"}\n\
             \n\
             {\"type\":\"ip\",\"value\":\"192.0.2.1\",\"advis",
        )
        .expect("write");
        let outcome = merge(
            dir.path(),
            &[
                ip(11, "ADV-1", "not an address"),
                ip(12, "", "203.0.113.1"),
                advisory(13, "ADV-3", IndicatorType::Url, "http://evil.example/"),
                advisory(14, "ADV-4", IndicatorType::Cidr, "203.0.113.0/24"),
            ],
            NOW,
            MAX_PUSHED,
        )
        .expect("merge");
        assert_eq!((outcome.skipped, outcome.added), (3, 1), "{outcome:?}");
        assert_eq!(
            outcome.last_seq, 14,
            "skipped entries are applied all the same"
        );
        let lines = held(dir.path());
        assert_eq!(lines.len(), 2, "the garbage lines are gone: {lines:?}");
        let advisories = table(dir.path(), NOW);
        assert!(advisories.domain("www.evil.example").is_some());
        assert!(
            advisories
                .address("203.0.113.99".parse().expect("ip"))
                .is_some()
        );
        // A damaged sequence file falls back to the numbers in the pushed file.
        std::fs::write(seq_file(dir.path()), "{garbage").expect("damage");
        assert_eq!(last_seq(dir.path()), 14);
        // The pushed file removed by hand: ask for everything again.
        std::fs::remove_file(pushed_file(dir.path())).expect("remove");
        assert_eq!(last_seq(dir.path()), 0);
    }

    #[test]
    fn expired_advisories_are_neither_kept_nor_matched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut soon = ip(1, "ADV-SOON", "203.0.113.1");
        soon.expires_at = Timestamp(NOW.0 + 60 * SECOND);
        let mut past = ip(2, "ADV-PAST", "203.0.113.2");
        past.expires_at = Timestamp(NOW.0 - SECOND);
        let outcome = merge(dir.path(), &[soon, past], NOW, MAX_PUSHED).expect("merge");
        assert_eq!((outcome.added, outcome.held), (1, 1));
        let address = "203.0.113.1".parse().expect("ip");
        assert!(table(dir.path(), NOW).address(address).is_some());
        let later = Timestamp(NOW.0 + 61 * SECOND);
        assert!(table(dir.path(), later).address(address).is_none());
        // The next merge after its expiry drops it from the file.
        let outcome = merge(dir.path(), &[], later, MAX_PUSHED).expect("merge");
        assert_eq!((outcome.removed, outcome.held), (1, 0), "{outcome:?}");
    }

    #[test]
    fn the_cap_drops_the_soonest_expiring() {
        let dir = tempfile::tempdir().expect("tempdir");
        let incoming: Vec<Advisory> = (0..10u64)
            .map(|n| {
                let mut advisory = ip(n + 1, &format!("ADV-{n}"), &format!("192.0.2.{n}"));
                // ADV-0 expires last, ADV-9 first.
                advisory.expires_at = Timestamp(NOW.0 + (100 - n as i64) * SECOND);
                advisory
            })
            .collect();
        let outcome = merge(dir.path(), &incoming, NOW, 4).expect("merge");
        assert_eq!((outcome.dropped, outcome.held), (6, 4));
        let ids: Vec<String> = held(dir.path()).into_iter().map(|l| l.advisory).collect();
        assert_eq!(ids, ["ADV-0", "ADV-1", "ADV-2", "ADV-3"]);
    }

    #[test]
    fn the_feed_reloads_changed_files_and_prunes_what_expires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = dir.path().join("local.ndjson");
        // The feed loads with the wall clock: times relative to it.
        let now = Timestamp::now();
        let expires = Timestamp(now.0 + 3600 * SECOND);
        std::fs::write(
            &local,
            format!(
                "{{\"type\":\"ip\",\"value\":\"203.0.113.5\",\"advisory\":\"L-1\",\"severity\":\"low\",\"expires_at\":\"{}\"}}\n",
                expires.to_rfc3339()
            ),
        )
        .expect("local");
        let feed = AdvisoryFeed::open(AdvisoryFiles::new(Some(dir.path()), [local.clone()]))
            .expect("open");
        let mut view = feed.view();
        let address = "203.0.113.5".parse().expect("ip");
        let first = view.current();
        let found = first.address(address).expect("local advisory");
        assert_eq!(found.advised.severity, Severity::Low);
        assert!(view.changed().is_none());
        assert!(!feed.refresh(now), "nothing changed");
        // The collector pushes one: the next refresh sees it.
        let mut pushed = ip(1, "ADV-1", "198.51.100.1");
        pushed.expires_at = Timestamp(now.0 + 86_400 * SECOND);
        merge(dir.path(), &[pushed], now, MAX_PUSHED).expect("merge");
        assert!(feed.refresh(now));
        let second = view.changed().expect("changed");
        assert!(
            second
                .address("198.51.100.1".parse().expect("ip"))
                .is_some()
        );
        assert!(view.changed().is_none());
        // The local entry expires.
        assert!(feed.refresh(Timestamp(expires.0 + 1)));
        let third = view.changed().expect("expired");
        assert!(third.address(address).is_none());
        assert_eq!(third.len(), 1);
    }

    #[test]
    fn count_tells_in_force_from_expired_and_unusable_in_each_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut expiring = ip(2, "ADV-2", "198.51.100.2");
        expiring.expires_at = Timestamp(NOW.0 + 60 * SECOND);
        merge(
            dir.path(),
            &[ip(1, "ADV-1", "198.51.100.1"), expiring],
            NOW,
            MAX_PUSHED,
        )
        .expect("merge");
        let local = dir.path().join("local.ndjson");
        std::fs::write(
            &local,
            "{\"type\":\"domain\",\"value\":\"evil.example\"}\nnot json\n\
             {\"type\":\"ip\",\"value\":\"192.0.2.300\"}\n",
        )
        .expect("local");
        let missing = dir.path().join("missing.ndjson");
        let files = AdvisoryFiles::new(Some(dir.path()), [local.clone(), missing.clone()]);
        let later = Timestamp(NOW.0 + 61 * SECOND);
        let counts = files.count(later);
        let summary: Vec<(Origin, bool, u64, u64, u64)> = counts
            .iter()
            .map(|c| (c.origin, c.found, c.in_force, c.expired, c.unusable))
            .collect();
        assert_eq!(
            summary,
            [
                (Origin::Collector, true, 1, 1, 0),
                (Origin::Local, true, 1, 0, 2),
                (Origin::Local, false, 0, 0, 0),
            ]
        );
        assert_eq!(
            (counts[1].path.as_path(), counts[2].path.as_path()),
            (local.as_path(), missing.as_path())
        );
        assert!(counts.iter().all(|c| c.error.is_none()));
    }

    #[test]
    fn check_names_the_lines_of_a_bad_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.ndjson");
        std::fs::write(
            &good,
            format!(
                "{{\"type\":\"sha256\",\"value\":\"{}\"}}\n",
                "0f".repeat(32)
            ),
        )
        .expect("good");
        let missing = dir.path().join("missing.ndjson");
        let files = AdvisoryFiles::new(None, [good.clone(), missing]);
        let report = files.check(NOW).expect("valid");
        assert!(report[0].contains("1 indicators"), "{report:?}");
        assert!(report[1].contains("not found"), "{report:?}");
        let bad = dir.path().join("bad.ndjson");
        std::fs::write(
            &bad,
            "{\"type\":\"ip\",\"value\":\"192.0.2.1\"}\n{\"type\":\"ip\",\"value\":\"192.0.2.300\"}\n",
        )
        .expect("bad");
        let problems = AdvisoryFiles::new(None, [good, bad])
            .check(NOW)
            .expect_err("invalid");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("bad.ndjson:2"), "{problems:?}");
    }
}
