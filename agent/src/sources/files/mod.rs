//! File integrity: watched trees compared with a baseline on disk ([`baseline`]), looked
//! at by [`scan`], the meaning of each change decided by `detect::files`.
//!
//! inotify (through notify) reports changes as they happen; a full scan runs at start
//! (finding what changed while the agent was stopped), periodically, and whenever the
//! kernel says it dropped events. The first run builds the baseline without a signal.

pub mod baseline;
pub mod scan;

use crate::advisories::AdvisoryView;
use crate::detect::files::{
    ChangeSummary, FileChange, FileDetector, FoundBy, Places, arrived, original_of,
};
use crate::health::{Health, SourceState};
use baseline::{Baseline, BaselineError, EntryKind, FileState};
use scan::{Observation, ScanOptions, ScanStats};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn};
use vedetta_common::duration::serde_human;
use vedetta_common::{Signal, Timestamp};

/// `[sources.files]` of the agent configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Files and directories to watch (directories with everything under them).
    pub paths: Vec<PathBuf>,
    /// Glob patterns of paths not to watch (`/var/www/*/cache/**`, `**/*.swp`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// New scripts under these are suspected web shells.
    #[serde(default = "default_web_roots")]
    pub web_roots: Vec<PathBuf>,
    /// New programs under these are suspicious (world-writable drop directories).
    #[serde(default = "default_drop_dirs")]
    pub drop_dirs: Vec<PathBuf>,
    /// Regular files larger than this many MiB are tracked by metadata only.
    #[serde(default = "default_hash_max_mib")]
    pub hash_max_mib: u64,
    /// Threads hashing at once during a full scan (at the lowest CPU and I/O priority).
    #[serde(default = "default_hash_threads")]
    pub hash_threads: usize,
    /// How often everything is scanned again (inotify can drop events).
    #[serde(default = "default_rescan_every", with = "serde_human")]
    pub rescan_every: Duration,
    /// Stay on the file system of each watched path (never wander into mounts).
    #[serde(default = "yes")]
    pub one_file_system: bool,
}

fn default_web_roots() -> Vec<PathBuf> {
    ["/var/www", "/srv/www", "/usr/share/nginx/html"]
        .map(PathBuf::from)
        .to_vec()
}
fn default_drop_dirs() -> Vec<PathBuf> {
    ["/tmp", "/var/tmp", "/dev/shm"].map(PathBuf::from).to_vec()
}
fn default_hash_max_mib() -> u64 {
    64
}
fn default_hash_threads() -> usize {
    1
}
fn default_rescan_every() -> Duration {
    Duration::from_secs(3600)
}
fn yes() -> bool {
    true
}

/// Changes are gathered this long after the first of a group (a file being written
/// sends many events), and at most `BATCH_MAX` after it.
const BATCH_QUIET: Duration = Duration::from_millis(50);
const BATCH_MAX: Duration = Duration::from_millis(300);
/// Observations of a full scan are recorded in groups of this many.
const SCAN_CHUNK: usize = 10_000;
/// Paths remembered from the watcher before a full scan is cheaper.
const BATCH_PATHS: usize = 10_000;
/// Watcher events waiting to be looked at.
const EVENT_QUEUE: usize = 65_536;

/// The name the file-integrity source is reported under.
pub const SOURCE_NAME: &str = "files";

/// The source's state: running while it watches at least one path, failed when it can
/// watch none; the reason names what is not watched, and a watch that failed (changes
/// are then seen by the periodic scans only).
pub fn state_of(
    roots: usize,
    skipped: &[(PathBuf, String)],
    watch_problem: Option<&str>,
) -> (SourceState, Option<String>) {
    let skipped_text = skipped.first().map(|(path, error)| {
        let more = skipped.len() - 1;
        let more = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        format!("{}: {error}{more}", path.display())
    });
    if roots == 0 {
        let reason = skipped_text.map_or_else(
            || "no path to watch".to_owned(),
            |text| format!("no path can be watched: {text}"),
        );
        return (SourceState::Failed, Some(reason));
    }
    let mut parts = Vec::new();
    if let Some(text) = skipped_text {
        parts.push(format!("not watched: {text}"));
    }
    if let Some(problem) = watch_problem {
        parts.push(format!(
            "changes seen by the periodic scans only: {problem}"
        ));
    }
    (
        SourceState::Running,
        (!parts.is_empty()).then(|| parts.join("; ")),
    )
}

/// The file-integrity source and its state.
#[derive(Debug)]
pub struct FileSource {
    roots: Vec<PathBuf>,
    options: ScanOptions,
    rescan_every: Duration,
    reader: Baseline,
    writer: Baseline,
    detector: FileDetector,
    /// What the baseline covers (roots and excludes): another configuration rebuilds it.
    coverage: String,
    name: String,
    /// Configured paths that could not be watched (missing at start), with why.
    skipped: Vec<(PathBuf, String)>,
    /// The agent's advisories (file hashes), looked at before each check.
    advisories: Option<AdvisoryView>,
}

impl FileSource {
    pub fn open(
        config: &FilesConfig,
        state_dir: &Path,
        rules: crate::detect::files::FileRules,
    ) -> anyhow::Result<Self> {
        let mut roots: Vec<PathBuf> = Vec::new();
        let mut skipped = Vec::new();
        for path in &config.paths {
            match path.canonicalize() {
                Ok(root) => roots.push(root),
                Err(error) => {
                    warn!(path = %path.display(), %error, "cannot watch: skipped");
                    skipped.push((path.clone(), error.to_string()));
                }
            }
        }
        roots.sort();
        // A root inside another is covered by it (and would be reported twice).
        let mut outer: Vec<PathBuf> = Vec::new();
        for root in roots {
            if !outer.last().is_some_and(|last| root.starts_with(last)) {
                outer.push(root);
            }
        }
        let roots = outer;
        let mut excludes = config
            .exclude
            .iter()
            .map(|pattern| {
                glob::Pattern::new(pattern)
                    .map_err(|e| anyhow::anyhow!("invalid exclude pattern {pattern:?}: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // The agent's own state (the baseline database among it) changes with every
        // change it records: watching it would feed on itself.
        let state = glob::Pattern::escape(&canonical(state_dir).to_string_lossy());
        for pattern in [state.clone(), format!("{state}/**")] {
            excludes.push(glob::Pattern::new(&pattern)?);
        }
        let database = state_dir.join("files.db");
        // From the configuration, not from the roots found: a root missing at one start
        // (not mounted yet) must not make the agent rebuild the baseline silently.
        let coverage = format!("{:?} excluding {:?}", config.paths, config.exclude);
        Ok(Self {
            options: ScanOptions {
                hash_max_bytes: config.hash_max_mib.saturating_mul(1024 * 1024),
                hash_threads: config.hash_threads.max(1),
                excludes,
                one_file_system: config.one_file_system,
                background: true,
                cancel: None,
            },
            roots,
            rescan_every: config.rescan_every,
            reader: Baseline::open(&database)?,
            writer: Baseline::open(&database)?,
            detector: FileDetector::new(
                rules,
                Places {
                    web_roots: config.web_roots.iter().map(|p| canonical(p)).collect(),
                    drop_dirs: config.drop_dirs.iter().map(|p| canonical(p)).collect(),
                },
            ),
            coverage,
            name: SOURCE_NAME.into(),
            skipped,
            advisories: None,
        })
    }

    /// Matches the hashes of new and changed files against the agent's advisories.
    pub fn with_advisories(mut self, mut advisories: AdvisoryView) -> Self {
        let _ = advisories.changed();
        self.detector.set_advisories(advisories.current());
        self.advisories = Some(advisories);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Builds the baseline without reporting anything (first run, or new coverage).
    pub fn build(&mut self) -> Result<ScanStats, BaselineError> {
        self.writer.clear()?;
        let mut total = ScanStats::default();
        for root in self.roots.clone() {
            let mut pending = Vec::new();
            let mut failed = None;
            let writer = &mut self.writer;
            let stats = scan::reconcile(&root, &mut self.reader, &self.options, &mut |obs| {
                pending.push((obs.path, obs.after));
                if pending.len() >= SCAN_CHUNK && failed.is_none() {
                    failed = writer.apply(&pending).err();
                    pending.clear();
                }
            })?;
            if let Some(error) = failed {
                return Err(error);
            }
            self.writer.apply(&pending)?;
            add(&mut total, &stats);
        }
        self.writer.mark_built(&self.coverage)?;
        Ok(total)
    }

    /// Whether a baseline for this configuration exists.
    pub fn has_baseline(&self) -> Result<bool, BaselineError> {
        self.reader.is_built(&self.coverage)
    }

    /// Compares `paths` (each with everything under it) with the baseline, records what
    /// changed and returns the signals.
    pub fn check(
        &mut self,
        paths: &[PathBuf],
        found_by: FoundBy,
        emit: &mut dyn FnMut(Signal),
    ) -> Result<ScanStats, BaselineError> {
        if let Some(advisories) = self.advisories.as_mut().and_then(AdvisoryView::changed) {
            self.detector.set_advisories(advisories);
        }
        let mut total = ScanStats::default();
        let options = if found_by == FoundBy::Watch {
            // A handful of files: no thread pool worth its start.
            // Live changes at normal priority: ransomware keeping the CPU busy must not
            // delay its own detection.
            ScanOptions {
                hash_threads: 1,
                background: false,
                ..self.options.clone()
            }
        } else {
            self.options.clone()
        };
        // Observations of every path are recorded together, so that the two sides of a
        // rename (two paths of one batch) are paired.
        let mut observations = Vec::new();
        let mut failed = None;
        for path in paths {
            let (reader, writer, detector) =
                (&mut self.reader, &mut self.writer, &mut self.detector);
            let stats = scan::reconcile(path, reader, &options, &mut |observation| {
                observations.push(observation);
                if observations.len() >= SCAN_CHUNK && failed.is_none() {
                    let group = std::mem::take(&mut observations);
                    failed = record(writer, detector, group, found_by, emit).err();
                }
            })?;
            add(&mut total, &stats);
        }
        if let Some(error) = failed {
            return Err(error);
        }
        record(
            &mut self.writer,
            &mut self.detector,
            observations,
            found_by,
            emit,
        )?;
        Ok(total)
    }

    /// A full scan of every root.
    pub fn scan_all(&mut self, emit: &mut dyn FnMut(Signal)) -> Result<ScanStats, BaselineError> {
        let roots = self.roots.clone();
        self.check(&roots, FoundBy::Scan, emit)
    }

    pub fn tick(&mut self, now: Timestamp) -> Vec<Signal> {
        self.detector.tick(now)
    }

    /// Whether an event's path is ours: under a root, not excluded, and not reached
    /// through a link (the roots are canonical, so a real path's parent is too).
    fn watched(&self, path: &Path) -> bool {
        let Some(root) = self.roots.iter().find(|root| path.starts_with(root)) else {
            return false;
        };
        // Excluded itself or through a directory (`**/node_modules` excludes its content).
        !path
            .ancestors()
            .take_while(|ancestor| ancestor.starts_with(root))
            .any(|ancestor| self.options.excluded(ancestor))
            && path
                .parent()
                .is_none_or(|parent| parent.canonicalize().is_ok_and(|real| real == parent))
    }
}

/// Watched paths are compared in their canonical form (`/var/www` may be a link).
fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

fn add(total: &mut ScanStats, stats: &ScanStats) {
    total.entries += stats.entries;
    total.hashed_bytes += stats.hashed_bytes;
    total.unreadable += stats.unreadable;
}

/// The first bytes of a regular file (see `scan::open_checked`).
fn head(path: &Path, limit: usize) -> Vec<u8> {
    use std::io::Read;
    let Ok(file) = scan::open_checked(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let _ = file.take(limit as u64).read_to_end(&mut out);
    out
}

/// When a change happened: its status-change time when the scan found it (a change
/// made while the agent was stopped keeps its own time), else now.
fn change_time(after: Option<&FileState>, found_by: FoundBy, now: Timestamp) -> Timestamp {
    match (found_by, after) {
        (FoundBy::Scan, Some(state)) if state.ctime > 0 => Timestamp(state.ctime.min(now.0)),
        _ => now,
    }
}

/// Turns a group of observations into changes (pairing renames), asks the detector what
/// they mean, then records them in the baseline.
fn record(
    writer: &mut Baseline,
    detector: &mut FileDetector,
    observations: Vec<Observation>,
    found_by: FoundBy,
    emit: &mut dyn FnMut(Signal),
) -> Result<(), BaselineError> {
    if observations.is_empty() {
        return Ok(());
    }
    let now = Timestamp::now();
    let updates: Vec<(PathBuf, Option<FileState>)> = observations
        .iter()
        .map(|o| (o.path.clone(), o.after.clone()))
        .collect();
    // A deletion and a creation of the same inode are one rename.
    let mut deleted: HashMap<u64, usize> = HashMap::new();
    for (index, observation) in observations.iter().enumerate() {
        if let (Some(before), None) = (&observation.before, &observation.after)
            && before.kind != EntryKind::Directory
        {
            deleted.insert(before.inode, index);
        }
    }
    let mut renamed_away = vec![false; observations.len()];
    let mut changes = Vec::with_capacity(observations.len());
    for observation in &observations {
        let Some(after) = &observation.after else {
            continue;
        };
        let mut change = FileChange {
            path: observation.path.clone(),
            from: None,
            before: observation.before.clone(),
            after: Some(after.clone()),
            at: change_time(Some(after), found_by, now),
            found_by,
            replaces: None,
            markers: Vec::new(),
            program_magic: false,
        };
        // Paired by inode and kind; the size may differ (encrypted, then renamed).
        if observation.before.is_none()
            && after.kind != EntryKind::Directory
            && let Some(&index) = deleted.get(&after.inode)
            && let Some(before) = &observations[index].before
            && before.kind == after.kind
        {
            renamed_away[index] = true;
            change.from = Some(observations[index].path.clone());
            change.before = Some(before.clone());
        }
        // What a file brings when it arrives (created, renamed in, or first written).
        let summary = ChangeSummary::of(&change);
        if after.kind == EntryKind::File && arrived(&change, &summary) {
            let places = detector.places();
            if places.in_web_root(&observation.path)
                && detector.rules().is_script(&observation.path)
            {
                change.markers = detector
                    .rules()
                    .markers_in(&head(&observation.path, scan::ENTROPY_SAMPLE));
            }
            if places.in_drop_dir(&observation.path) {
                let start = head(&observation.path, 4);
                change.program_magic = start.starts_with(b"\x7fELF") || start.starts_with(b"#!");
            }
        }
        // A new file, or one written only now (created empty a moment before): it may
        // be the encrypted copy of an original next to it.
        if change.from.is_none()
            && after.kind == EntryKind::File
            && observation
                .before
                .as_ref()
                .is_none_or(|b| b.entropy.is_none())
            && let Some(original) = original_of(&observation.path)
        {
            change.replaces = writer.get(&original)?;
        }
        changes.push(change);
    }
    for (index, observation) in observations.iter().enumerate() {
        if observation.after.is_none() && !renamed_away[index] {
            changes.push(FileChange {
                path: observation.path.clone(),
                from: None,
                before: observation.before.clone(),
                after: None,
                at: now,
                found_by,
                replaces: None,
                markers: Vec::new(),
                program_magic: false,
            });
        }
    }
    // Recorded first: a change whose record failed is found again by the next look,
    // rather than reported at every look.
    writer.apply(&updates)?;
    for change in &changes {
        for signal in detector.observe(change) {
            emit(signal);
        }
    }
    Ok(())
}

/// Runs the source on the calling thread until `stop` is set.
pub fn run(
    mut source: FileSource,
    signals: mpsc::Sender<Signal>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
) {
    // Bounded: while a long scan runs, events beyond the bound are dropped and make up
    // one more scan instead (as when the kernel drops them).
    let (events, received) = std_mpsc::sync_channel::<notify::Result<notify::Event>>(EVENT_QUEUE);
    let overflowed = Arc::new(AtomicBool::new(false));
    let watcher = {
        let overflowed = Arc::clone(&overflowed);
        let handler = move |event: notify::Result<notify::Event>| {
            if events.try_send(event).is_err() {
                overflowed.store(true, Ordering::Relaxed);
            }
        };
        // The watcher first, so that nothing changed during the first scan goes unseen.
        watch(&source, handler, &health)
    };
    let (_watcher, watch_problem) = watcher;
    source.options.cancel = Some(Arc::clone(&stop));
    let mut send = |signal: Signal| {
        let _ = signals.blocking_send(signal);
    };
    let name = source.name().to_owned();
    let (watching, why) = state_of(
        source.roots.len(),
        &source.skipped,
        watch_problem.as_deref(),
    );
    let report = |scan: Result<(), String>| match scan {
        Ok(()) => health.source_state(&name, watching, why.as_deref()),
        Err(error) => health.source_state(
            &name,
            SourceState::Failed,
            Some(&format!("file scan failed: {error}")),
        ),
    };
    health.source_state(
        &name,
        SourceState::Starting,
        Some("scanning the watched files"),
    );
    report(full_scan(&mut source, &mut send, &health));
    let mut next_scan = Instant::now() + source.rescan_every;
    while !stop.load(Ordering::Relaxed) {
        let mut batch = BTreeSet::new();
        let mut rescan = false;
        if let Ok(event) = received.recv_timeout(Duration::from_millis(250)) {
            let first = Instant::now();
            let mut next = Some(event);
            while let Some(event) = next.take() {
                match event {
                    Ok(event) if event.need_rescan() => rescan = true,
                    // Opening a file changes nothing (and our own opens would come back
                    // as events): notify always asks the kernel for them. A close after
                    // writing is kept: writes through mmap send nothing else.
                    Ok(event)
                        if matches!(
                            event.kind,
                            notify::EventKind::Access(kind)
                                if kind != notify::event::AccessKind::Close(notify::event::AccessMode::Write)
                        ) => {}
                    Ok(event) => {
                        for path in event.paths {
                            if source.watched(&path) && batch.len() < BATCH_PATHS {
                                batch.insert(path);
                            } else if batch.len() >= BATCH_PATHS {
                                rescan = true;
                            }
                        }
                    }
                    Err(error) => {
                        health.source_error(&name, &format!("file watch error: {error}"));
                        warn!(source = %source.name(), %error, "file watch error; scanning again");
                        rescan = true;
                    }
                }
                let left = BATCH_MAX.saturating_sub(first.elapsed());
                if !left.is_zero() {
                    next = received.recv_timeout(BATCH_QUIET.min(left)).ok();
                }
            }
        }
        rescan |= overflowed.swap(false, Ordering::Relaxed);
        let result = if rescan || Instant::now() >= next_scan {
            next_scan = Instant::now() + source.rescan_every;
            report(full_scan(&mut source, &mut send, &health));
            Ok(ScanStats::default())
        } else if !batch.is_empty() {
            // A path under another of the batch is covered by it.
            let mut paths: Vec<PathBuf> = Vec::new();
            for path in batch {
                if !paths.last().is_some_and(|last| path.starts_with(last)) {
                    paths.push(path);
                }
            }
            source.check(&paths, FoundBy::Watch, &mut send)
        } else {
            Ok(ScanStats::default())
        };
        match result {
            Ok(stats) => health.source_events(&name, stats.entries),
            Err(error) => {
                health.source_error(&name, &format!("file check failed: {error}"));
                warn!(source = %source.name(), %error, "file check failed");
            }
        }
        for signal in source.tick(Timestamp::now()) {
            send(signal);
        }
    }
    info!(source = %source.name(), "file source stopped");
}

/// A full scan: builds the baseline while there is none (first start, new coverage, or
/// an earlier build that failed), else reports what changed. The write-ahead log is cut
/// back afterwards. Counts the paths looked at; an error is counted and returned.
fn full_scan(
    source: &mut FileSource,
    send: &mut dyn FnMut(Signal),
    health: &Health,
) -> Result<(), String> {
    let started = Instant::now();
    let result = match source.has_baseline() {
        Ok(true) => source.scan_all(send).map(|stats| ("scanned", stats)),
        Ok(false) => source.build().map(|stats| ("built the baseline of", stats)),
        Err(error) => Err(error),
    };
    let outcome = match result {
        Ok((what, stats)) => {
            info!(
                source = %source.name(),
                entries = stats.entries,
                hashed_mib = stats.hashed_bytes / (1024 * 1024),
                unreadable = stats.unreadable,
                seconds = started.elapsed().as_secs_f64(),
                "{what} the watched files"
            );
            health.source_events(source.name(), stats.entries);
            Ok(())
        }
        Err(error) => {
            health.source_error(source.name(), &format!("file scan failed: {error}"));
            warn!(source = %source.name(), %error, "file scan failed");
            Err(error.to_string())
        }
    };
    if let Err(error) = source.writer.checkpoint() {
        warn!(source = %source.name(), %error, "cannot checkpoint the file baseline");
    }
    outcome
}

/// Watches every root (recursively). A failure is reported (and returned, for the
/// source's state) and left to the periodic scans: the kernel's watch limit
/// (`fs.inotify.max_user_watches`) may be too low for a large tree.
fn watch(
    source: &FileSource,
    events: impl notify::EventHandler,
    health: &Health,
) -> (Option<notify::RecommendedWatcher>, Option<String>) {
    use notify::Watcher as _;
    // Links are not followed: what they point to outside the roots is not ours to watch.
    let settings = notify::Config::default().with_follow_symlinks(false);
    let mut watcher = match notify::RecommendedWatcher::new(events, settings) {
        Ok(watcher) => watcher,
        Err(error) => {
            let text = format!("cannot watch files: {error}");
            health.source_error(source.name(), &text);
            warn!(source = %source.name(), %error, "cannot watch files; relying on periodic scans");
            return (None, Some(text));
        }
    };
    let mut problem = None;
    for root in &source.roots {
        if let Err(error) = watcher.watch(root, notify::RecursiveMode::Recursive) {
            let text = format!("cannot watch {}: {error}", root.display());
            health.source_error(source.name(), &text);
            warn!(source = %source.name(), root = %root.display(), %error, "cannot watch; relying on periodic scans");
            problem.get_or_insert(text);
        }
    }
    (Some(watcher), problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_names_what_is_not_watched() {
        let missing = vec![(
            PathBuf::from("/srv/www"),
            "No such file or directory (os error 2)".to_owned(),
        )];
        assert_eq!(state_of(2, &[], None), (SourceState::Running, None));
        assert_eq!(
            state_of(1, &missing, Some("cannot watch /etc: no space left")),
            (
                SourceState::Running,
                Some(
                    "not watched: /srv/www: No such file or directory (os error 2); \
                     changes seen by the periodic scans only: cannot watch /etc: no space left"
                        .into()
                )
            )
        );
        assert_eq!(
            state_of(0, &missing, None),
            (
                SourceState::Failed,
                Some(
                    "no path can be watched: /srv/www: No such file or directory (os error 2)"
                        .into()
                )
            )
        );
        assert_eq!(
            state_of(0, &[], None),
            (SourceState::Failed, Some("no path to watch".into()))
        );
    }
}
