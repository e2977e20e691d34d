//! File-integrity detection: changes to watched files become signals. Pure logic: the
//! file source observes and hashes, this decides what a change means.
//!
//! * `file_changed` for every significant change (content, permissions, owner, created,
//!   deleted, renamed), with the severity and ATT&CK technique of the path's class
//!   (rules data: `rules/files.toml`). A burst (a package upgrade) is capped per minute;
//!   the rest is summarised, one signal a class.
//! * `webshell_suspected`: a new script in a web root (critical when it holds a known
//!   web-shell construct).
//! * `suspicious_file`: a new executable in a world-writable drop directory (`/tmp`…).
//! * `ransomware_activity`: a burst of files replaced by ciphertext, given ransomware
//!   extensions, or ransom notes; raised as soon as the burst crosses its threshold and
//!   updated while it lasts.
//! * `ioc_match`: a file created, renamed in or modified whose content has the SHA-256
//!   of an advisory; once per path and content, however often it is seen again (a
//!   rescan, a chmod), so that one dropped tool is one signal.

use crate::detect::advisories::Advisories;
use crate::detect::rules::{RuleError, line_of, rule_sources};
use crate::sources::files::baseline::{EntryKind, FileState};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;
use vedetta_common::{IndicatorType, Severity, Signal, SignalId, Timestamp};

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// How a change was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundBy {
    /// inotify, as it happened.
    Watch,
    /// A scan: at start (changes made while the agent was stopped), periodic, or after
    /// the kernel dropped events.
    Scan,
}

impl FoundBy {
    fn name(self) -> &'static str {
        match self {
            Self::Watch => "watch",
            Self::Scan => "scan",
        }
    }
}

/// One change to one watched entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FileChange {
    pub path: PathBuf,
    /// The former path of a renamed entry.
    pub from: Option<PathBuf>,
    /// What the baseline said (`None`: created).
    pub before: Option<FileState>,
    /// What is there now (`None`: deleted).
    pub after: Option<FileState>,
    /// When it happened (the status-change time when known, else when it was seen).
    pub at: Timestamp,
    pub found_by: FoundBy,
    /// For a new file: the baseline state of the sibling it may be an encrypted copy of
    /// (`report.docx` for `report.docx.enc`).
    pub replaces: Option<FileState>,
    /// For a new script in a web root: the web-shell markers found in its first bytes.
    pub markers: Vec<String>,
    /// For a new file in a drop directory: whether it starts like a program (ELF, `#!`).
    pub program_magic: bool,
}

/// What a change did, for the `change` attribute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSummary {
    pub created: bool,
    pub deleted: bool,
    pub renamed: bool,
    pub content: bool,
    pub permissions: bool,
    pub owner: bool,
}

impl ChangeSummary {
    pub fn of(change: &FileChange) -> Self {
        let mut summary = Self {
            renamed: change.from.is_some(),
            ..Self::default()
        };
        match (&change.before, &change.after) {
            (None, Some(_)) => summary.created = !summary.renamed,
            (Some(_), None) => summary.deleted = true,
            (Some(before), Some(after)) => {
                summary.content = before.kind != after.kind
                    || before.target != after.target
                    || match (before.sha256, after.sha256) {
                        (Some(a), Some(b)) => a != b,
                        // Not hashed (too large, unreadable): the size tells.
                        _ => before.size != after.size,
                    };
                summary.permissions = before.mode != after.mode;
                summary.owner = before.uid != after.uid || before.gid != after.gid;
            }
            (None, None) => {}
        }
        summary
    }

    pub fn is_significant(&self) -> bool {
        self.created
            || self.deleted
            || self.renamed
            || self.content
            || self.permissions
            || self.owner
    }

    /// `created`, `deleted`, `renamed`, or the list of what changed (`modified,permissions`).
    pub fn describe(&self) -> String {
        let parts: Vec<&str> = [
            (self.created, "created"),
            (self.deleted, "deleted"),
            (self.renamed, "renamed"),
            (self.content, "modified"),
            (self.permissions, "permissions"),
            (self.owner, "owner"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
        parts.join(",")
    }
}

/// A class of paths: what a change there means.
#[derive(Debug, Clone)]
pub struct PathClass {
    pub name: String,
    patterns: Vec<glob::Pattern>,
    pub severity: Severity,
    pub mitre: Option<String>,
    /// Whether the new content's SHA-256 is shared as an indicator (programs, scripts).
    pub hash_indicator: bool,
}

impl PathClass {
    fn matches(&self, path: &Path) -> bool {
        matches_any(&self.patterns, path)
    }
}

/// Whether one of `patterns` matches `path` (`*` within a component, `**` across).
pub fn matches_any(patterns: &[glob::Pattern], path: &Path) -> bool {
    let options = glob::MatchOptions {
        require_literal_separator: true,
        ..glob::MatchOptions::new()
    };
    // As text: a name that is not UTF-8 (`sudoers.d/\xff`) must still be classed and
    // excluded, with its odd bytes standing for any character.
    let text = path.to_string_lossy();
    patterns
        .iter()
        .any(|pattern| pattern.matches_with(&text, options))
}

/// `[webshell]`.
#[derive(Debug, Clone)]
pub struct WebshellRules {
    pub extensions: Vec<String>,
    /// Lower-case byte strings.
    pub markers: Vec<String>,
    pub severity: Severity,
    pub mitre: Option<String>,
}

/// `[ransomware]`.
#[derive(Debug, Clone)]
pub struct RansomwareRules {
    pub window: std::time::Duration,
    pub threshold: u64,
    pub update_every: std::time::Duration,
    pub entropy: f32,
    pub extensions: HashSet<String>,
    notes: Vec<glob::Pattern>,
}

/// The file rules in force.
#[derive(Debug, Clone)]
pub struct FileRules {
    pub classes: Vec<PathClass>,
    pub webshell: WebshellRules,
    pub ransomware: RansomwareRules,
    pub file_changed_per_minute: u64,
}

#[derive(Debug, Deserialize)]
struct FileRulesSpec {
    #[serde(default)]
    path_class: Vec<Spanned<PathClassSpec>>,
    webshell: Option<Spanned<WebshellSpec>>,
    ransomware: Option<Spanned<RansomwareSpec>>,
    file_limits: Option<Spanned<LimitsSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathClassSpec {
    name: String,
    patterns: Vec<Spanned<String>>,
    severity: Severity,
    mitre: Option<String>,
    #[serde(default)]
    hash_indicator: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebshellSpec {
    extensions: Option<Vec<String>>,
    markers: Option<Vec<String>>,
    severity: Option<Severity>,
    mitre: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RansomwareSpec {
    window: Option<Spanned<String>>,
    threshold: Option<u64>,
    update_every: Option<Spanned<String>>,
    entropy: Option<Spanned<f32>>,
    extensions: Option<Vec<String>>,
    notes: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSpec {
    file_changed_per_minute: Option<u64>,
}

/// The sections of every rules file merged, later files overriding earlier ones.
#[derive(Debug, Default)]
struct Merged {
    classes: Vec<PathClass>,
    extensions: Option<Vec<String>>,
    markers: Option<Vec<String>>,
    webshell_severity: Option<Severity>,
    webshell_mitre: Option<String>,
    window: Option<std::time::Duration>,
    threshold: Option<u64>,
    update_every: Option<std::time::Duration>,
    entropy: Option<f32>,
    ransom_extensions: Option<Vec<String>>,
    notes: Option<Vec<glob::Pattern>>,
    per_minute: Option<u64>,
}

fn merge_file(file: &str, text: &str, merged: &mut Merged, errors: &mut Vec<RuleError>) {
    let error = |offset: usize, message: String| RuleError {
        file: file.to_owned(),
        line: line_of(text, offset),
        message,
    };
    if toml::from_str::<toml::Table>(text).is_err() {
        // Not TOML at all: the log-rule loader reports it, once.
        return;
    }
    let spec: FileRulesSpec = match toml::from_str(text) {
        Ok(spec) => spec,
        Err(e) => {
            let offset = e.span().map_or(0, |span| span.start);
            errors.push(error(offset, e.message().to_owned()));
            return;
        }
    };
    let pattern = |spanned: &Spanned<String>, errors: &mut Vec<RuleError>| {
        glob::Pattern::new(spanned.get_ref())
            .map_err(|e| {
                errors.push(error(
                    spanned.span().start,
                    format!("invalid pattern {:?}: {e}", spanned.get_ref()),
                ))
            })
            .ok()
    };
    let duration = |spanned: &Spanned<String>, errors: &mut Vec<RuleError>| {
        vedetta_common::duration::parse_duration(spanned.get_ref())
            .map_err(|e| errors.push(error(spanned.span().start, e)))
            .ok()
    };
    for class in spec.path_class {
        let class = class.into_inner();
        let patterns = class
            .patterns
            .iter()
            .filter_map(|p| pattern(p, errors))
            .collect();
        let compiled = PathClass {
            name: class.name,
            patterns,
            severity: class.severity,
            mitre: class.mitre,
            hash_indicator: class.hash_indicator,
        };
        match merged.classes.iter_mut().find(|c| c.name == compiled.name) {
            Some(existing) => *existing = compiled,
            // New classes go before the catch-all "other", so that they can match.
            None => {
                let at = merged
                    .classes
                    .iter()
                    .position(|c| c.name == "other")
                    .unwrap_or(merged.classes.len());
                merged.classes.insert(at, compiled);
            }
        }
    }
    if let Some(webshell) = spec.webshell {
        let webshell = webshell.into_inner();
        merged.extensions = webshell.extensions.or(merged.extensions.take());
        merged.markers = webshell.markers.or(merged.markers.take());
        merged.webshell_severity = webshell.severity.or(merged.webshell_severity);
        merged.webshell_mitre = webshell.mitre.or(merged.webshell_mitre.take());
    }
    if let Some(ransomware) = spec.ransomware {
        let ransomware = ransomware.into_inner();
        if let Some(window) = &ransomware.window {
            merged.window = duration(window, errors).or(merged.window);
        }
        if let Some(every) = &ransomware.update_every {
            merged.update_every = duration(every, errors).or(merged.update_every);
        }
        if let Some(entropy) = &ransomware.entropy {
            if (0.0..=8.0).contains(entropy.get_ref()) {
                merged.entropy = Some(*entropy.get_ref());
            } else {
                errors.push(error(
                    entropy.span().start,
                    "entropy is in bits per byte: between 0 and 8".into(),
                ));
            }
        }
        merged.threshold = ransomware.threshold.or(merged.threshold);
        merged.ransom_extensions = ransomware.extensions.or(merged.ransom_extensions.take());
        if let Some(notes) = &ransomware.notes {
            merged.notes = Some(notes.iter().filter_map(|p| pattern(p, errors)).collect());
        }
    }
    if let Some(limits) = spec.file_limits {
        merged.per_minute = limits
            .into_inner()
            .file_changed_per_minute
            .or(merged.per_minute);
    }
}

/// The file rules in force: the built-ins, then every `*.toml` of `dir` in name order.
pub fn load(dir: Option<&Path>) -> Result<FileRules, Vec<RuleError>> {
    let mut merged = Merged::default();
    let mut errors = Vec::new();
    for (file, text) in rule_sources(dir)? {
        merge_file(&file, &text, &mut merged, &mut errors);
    }
    let missing = |what: &str| RuleError {
        file: "built-in/files.toml".into(),
        line: 0,
        message: format!("{what} is missing"),
    };
    let rules = FileRules {
        classes: merged.classes,
        webshell: WebshellRules {
            extensions: lower(merged.extensions.unwrap_or_default()),
            markers: lower(merged.markers.unwrap_or_default()),
            severity: merged.webshell_severity.unwrap_or(Severity::High),
            mitre: merged.webshell_mitre,
        },
        ransomware: RansomwareRules {
            window: merged
                .window
                .ok_or_else(|| vec![missing("ransomware.window")])?,
            threshold: merged.threshold.unwrap_or(10).max(1),
            update_every: merged
                .update_every
                .unwrap_or(std::time::Duration::from_secs(10)),
            entropy: merged.entropy.unwrap_or(7.2),
            extensions: lower(merged.ransom_extensions.unwrap_or_default())
                .into_iter()
                .collect(),
            notes: merged.notes.unwrap_or_default(),
        },
        file_changed_per_minute: merged.per_minute.unwrap_or(60),
    };
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

fn lower(values: Vec<String>) -> Vec<String> {
    values.into_iter().map(|v| v.to_lowercase()).collect()
}

impl FileRules {
    /// The class of `path`: the first that matches.
    pub fn class_of(&self, path: &Path) -> Option<&PathClass> {
        self.classes.iter().find(|class| class.matches(path))
    }

    /// Whether `path`, under a web root, is a script (a web-shell candidate).
    pub fn is_script(&self, path: &Path) -> bool {
        extension(path).is_some_and(|ext| self.webshell.extensions.contains(&ext))
    }

    /// The web-shell markers found in `content` (the file's first bytes).
    pub fn markers_in(&self, content: &[u8]) -> Vec<String> {
        let lowered = content.to_ascii_lowercase();
        self.webshell
            .markers
            .iter()
            .filter(|marker| {
                lowered
                    .windows(marker.len())
                    .any(|window| window == marker.as_bytes())
            })
            .cloned()
            .collect()
    }

    fn is_ransom_note(&self, path: &Path) -> bool {
        let Some(name) = path.file_name() else {
            return false;
        };
        let name = name.to_string_lossy().to_lowercase();
        let options = glob::MatchOptions {
            case_sensitive: false,
            ..glob::MatchOptions::new()
        };
        self.ransomware
            .notes
            .iter()
            .any(|pattern| pattern.matches_with(&name, options))
    }
}

/// Whether a change brings a file into being: created, renamed in, or given its first
/// content (a file is often created empty, then written).
pub fn arrived(change: &FileChange, summary: &ChangeSummary) -> bool {
    summary.created
        || summary.renamed
        || (summary.content && change.before.as_ref().is_some_and(|b| b.size == 0))
}

/// The lower-case extension of a path's file name.
fn extension(path: &Path) -> Option<String> {
    path.extension()
        .map(|ext| ext.to_string_lossy().to_lowercase())
}

/// The path with its last extension removed: the original of an encrypted copy.
pub fn original_of(path: &Path) -> Option<PathBuf> {
    path.extension()?;
    let stem = path.file_stem()?;
    Some(path.with_file_name(stem))
}

/// Where the file source looks for what: from the agent configuration.
#[derive(Debug, Clone, Default)]
pub struct Places {
    /// New scripts here are web-shell candidates.
    pub web_roots: Vec<PathBuf>,
    /// New programs here are suspicious (world-writable directories).
    pub drop_dirs: Vec<PathBuf>,
}

impl Places {
    pub fn in_web_root(&self, path: &Path) -> bool {
        self.web_roots.iter().any(|root| path.starts_with(root))
    }

    pub fn in_drop_dir(&self, path: &Path) -> bool {
        self.drop_dirs.iter().any(|dir| path.starts_with(dir))
    }
}

/// An ongoing ransomware burst.
#[derive(Debug)]
struct Burst {
    series: SignalId,
    first_seen: i64,
    last_seen: i64,
    count: u64,
    reported: u64,
    last_emit: i64,
    updates: u64,
    directories: HashSet<PathBuf>,
    reasons: BTreeMap<&'static str, u64>,
    extension: Option<String>,
    note: Option<(String, Option<[u8; 32]>)>,
    sample_path: Option<String>,
}

const BURST_DIRECTORY_LIMIT: usize = 10_000;
/// Most suspicious operations remembered for the window (the threshold is far lower).
const RECENT_LIMIT: usize = 10_000;

/// `file_changed` signals held back in the current minute, per class.
#[derive(Debug, Default)]
struct Held {
    count: u64,
    first_seen: i64,
    last_seen: i64,
    severity: Option<Severity>,
    sample_path: String,
}

/// (path, content) pairs already reported as `ioc_match`, the oldest forgotten first.
#[derive(Debug, Default)]
struct Reported {
    seen: HashSet<(PathBuf, [u8; 32])>,
    order: VecDeque<(PathBuf, [u8; 32])>,
}

/// Matches remembered: far more advised files than a host ever holds.
const REPORTED_LIMIT: usize = 10_000;

impl Reported {
    /// Whether the pair is new (and remembers it).
    fn insert(&mut self, path: &Path, hash: [u8; 32]) -> bool {
        let key = (path.to_path_buf(), hash);
        if self.seen.contains(&key) {
            return false;
        }
        if self.order.len() >= REPORTED_LIMIT
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.order.push_back(key.clone());
        self.seen.insert(key);
        true
    }
}

/// The detector.
#[derive(Debug)]
pub struct FileDetector {
    rules: FileRules,
    places: Places,
    /// Shared with the other sources (see `crate::advisories::AdvisoryFeed`).
    advisories: Arc<Advisories>,
    reported: Reported,
    /// Suspicious operations in the window: when, why, and in which directory.
    recent: VecDeque<(i64, &'static str, PathBuf)>,
    burst: Option<Burst>,
    /// The latest ransom note seen: name, hash, when.
    last_note: Option<(String, Option<[u8; 32]>, i64)>,
    minute: i64,
    sent_this_minute: u64,
    held: BTreeMap<String, Held>,
    now: i64,
}

fn sha256_hex(hash: &[u8; 32]) -> String {
    vedetta_common::identity::hex(hash)
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

impl FileDetector {
    pub fn new(rules: FileRules, places: Places) -> Self {
        Self {
            rules,
            places,
            advisories: Arc::default(),
            reported: Reported::default(),
            recent: VecDeque::new(),
            burst: None,
            last_note: None,
            minute: i64::MIN,
            sent_this_minute: 0,
            held: BTreeMap::new(),
            now: i64::MIN,
        }
    }

    pub fn rules(&self) -> &FileRules {
        &self.rules
    }

    pub fn places(&self) -> &Places {
        &self.places
    }

    /// Replaces the advisories whose file hashes are matched (none at first).
    pub fn set_advisories(&mut self, advisories: Arc<Advisories>) {
        self.advisories = advisories;
    }

    /// The signals a change causes.
    pub fn observe(&mut self, change: &FileChange) -> Vec<Signal> {
        self.now = self.now.max(change.at.0);
        let mut out = self.roll_minute(change.at.0);
        let summary = ChangeSummary::of(change);
        if !summary.is_significant() {
            return out;
        }
        out.extend(self.ransomware(change, &summary));
        out.extend(self.ioc(change, &summary));
        let after_kind = change.after.as_ref().map(|s| s.kind);
        let is_dir = after_kind == Some(EntryKind::Directory)
            || (after_kind.is_none()
                && change.before.as_ref().map(|s| s.kind) == Some(EntryKind::Directory));
        // Directories matter for who may write in them, not for being made or removed.
        if is_dir && !(summary.permissions || summary.owner) {
            return out;
        }
        if let Some(signal) = self.specific(change, &summary, arrived(change, &summary)) {
            out.push(signal);
            return out;
        }
        out.extend(self.file_changed(change, &summary));
        out
    }

    /// `ioc_match` when the new content is advised (the first time for this path).
    fn ioc(&mut self, change: &FileChange, summary: &ChangeSummary) -> Option<Signal> {
        if !self.advisories.has_hashes() {
            return None;
        }
        let after = change.after.as_ref()?;
        if after.kind != EntryKind::File || !(summary.created || summary.renamed || summary.content)
        {
            return None;
        }
        let hash = after.sha256?;
        let found = self.advisories.sha256(&hash)?;
        let (value, advised) = (found.value.to_owned(), found.advised.clone());
        if !self.reported.insert(&change.path, hash) {
            return None;
        }
        let mut signal = Signal::new("ioc_match", advised.severity, change.at)
            .with_indicator(IndicatorType::Sha256, value)
            .with_attribute("advisory", advised.advisory)
            .with_attribute("source", "files")
            .with_attribute("path", path_text(&change.path))
            .with_attribute("change", summary.describe())
            .with_attribute("found_by", change.found_by.name());
        signal.last_seen = change.at;
        if let Some(class) = self.rules.class_of(&change.path) {
            signal = signal.with_attribute("path_class", class.name.clone());
        }
        Some(signal)
    }

    /// `webshell_suspected` or `suspicious_file`, when the change is one.
    fn specific(
        &self,
        change: &FileChange,
        summary: &ChangeSummary,
        arrived: bool,
    ) -> Option<Signal> {
        let after = change.after.as_ref()?;
        if after.kind != EntryKind::File {
            return None;
        }
        // An empty file is not yet a script or a program: it is judged when its content
        // arrives.
        if after.size == 0 {
            return None;
        }
        if arrived && self.places.in_web_root(&change.path) && self.rules.is_script(&change.path) {
            let webshell = &self.rules.webshell;
            let severity = if change.markers.is_empty() {
                webshell.severity
            } else {
                Severity::Critical
            };
            let mut signal = self.base_signal("webshell_suspected", severity, change, summary);
            signal.mitre = webshell.mitre.clone();
            if !change.markers.is_empty() {
                signal = signal.with_attribute("markers", change.markers.join(","));
            }
            return Some(signal);
        }
        let executable = after.mode & 0o111 != 0 || change.program_magic;
        let made_executable = summary.permissions
            && change.before.as_ref().is_some_and(|b| b.mode & 0o111 == 0)
            && after.mode & 0o111 != 0;
        if self.places.in_drop_dir(&change.path) && executable && (arrived || made_executable) {
            let mut signal = self.base_signal("suspicious_file", Severity::High, change, summary);
            signal.mitre = Some("T1105".into());
            signal = signal.with_attribute("executable_bit", after.mode & 0o111 != 0);
            return Some(signal);
        }
        None
    }

    /// A signal about one change, with the figures every file signal carries.
    fn base_signal(
        &self,
        kind: &str,
        severity: Severity,
        change: &FileChange,
        summary: &ChangeSummary,
    ) -> Signal {
        let class = self.rules.class_of(&change.path);
        let mut signal = Signal::new(kind, severity, change.at);
        signal.last_seen = change.at;
        signal.mitre = class.and_then(|c| c.mitre.clone());
        signal = signal
            .with_attribute("change", summary.describe())
            .with_attribute("path", path_text(&change.path))
            .with_attribute("path_class", class.map_or("other", |c| c.name.as_str()))
            .with_attribute("found_by", change.found_by.name());
        if let Some(from) = &change.from {
            signal = signal.with_attribute("from_path", path_text(from));
        }
        if let Some(after) = &change.after {
            signal = signal
                .with_attribute("size", after.size)
                .with_attribute("mode", format!("{:04o}", after.mode))
                .with_attribute("uid", u64::from(after.uid));
            if let Some(hash) = &after.sha256 {
                // Shared where it identifies a program (see the classes): the same
                // malware at several members is one campaign.
                let share = kind != "file_changed" || class.is_some_and(|c| c.hash_indicator);
                if share {
                    signal = signal.with_indicator(IndicatorType::Sha256, sha256_hex(hash));
                }
            }
        }
        if let Some(before) = &change.before {
            if summary.permissions {
                signal = signal.with_attribute("mode_before", format!("{:04o}", before.mode));
            }
            if summary.owner {
                signal = signal.with_attribute("uid_before", u64::from(before.uid));
            }
        }
        signal
    }

    fn file_changed(&mut self, change: &FileChange, summary: &ChangeSummary) -> Vec<Signal> {
        let class = self.rules.class_of(&change.path);
        let severity = class.map_or(Severity::Low, |c| c.severity);
        if self.sent_this_minute >= self.rules.file_changed_per_minute {
            let name = class.map_or("other", |c| c.name.as_str()).to_owned();
            let held = self.held.entry(name).or_default();
            if held.count == 0 {
                held.first_seen = change.at.0;
                held.sample_path = path_text(&change.path);
            }
            held.count += 1;
            held.last_seen = held.last_seen.max(change.at.0);
            held.severity = held.severity.max(Some(severity));
            return Vec::new();
        }
        self.sent_this_minute += 1;
        vec![self.base_signal("file_changed", severity, change, summary)]
    }

    /// Starts a new minute of the `file_changed` budget, summarising what was held.
    fn roll_minute(&mut self, at: i64) -> Vec<Signal> {
        let minute = at.div_euclid(60 * NANOS_PER_SECOND);
        if minute <= self.minute {
            return Vec::new();
        }
        self.minute = minute;
        self.sent_this_minute = 0;
        let held = std::mem::take(&mut self.held);
        held.into_iter()
            .map(|(class, held)| {
                let mut signal = Signal::new(
                    "file_changed",
                    held.severity.unwrap_or(Severity::Low),
                    Timestamp(held.first_seen),
                );
                signal.last_seen = Timestamp(held.last_seen);
                signal.count = held.count;
                signal.mitre = self
                    .rules
                    .classes
                    .iter()
                    .find(|c| c.name == class)
                    .and_then(|c| c.mitre.clone());
                signal
                    .with_attribute("change", "many")
                    .with_attribute("summarised", true)
                    .with_attribute("path_class", class)
                    .with_attribute("sample_path", held.sample_path)
            })
            .collect()
    }

    /// Why a change looks like ransomware at work, if it does.
    fn suspicion(&self, change: &FileChange, summary: &ChangeSummary) -> Option<&'static str> {
        let rules = &self.rules.ransomware;
        let after = change.after.as_ref()?;
        if after.kind != EntryKind::File {
            return None;
        }
        let high = |state: &FileState| state.entropy.is_some_and(|e| e >= rules.entropy);
        let low = |state: &FileState| state.entropy.is_none_or(|e| e < rules.entropy - 1.0);
        let arrived = summary.created || summary.renamed;
        if arrived && self.rules.is_ransom_note(&change.path) {
            return Some("ransom_note");
        }
        if arrived && extension(&change.path).is_some_and(|ext| rules.extensions.contains(&ext)) {
            return Some("ransom_extension");
        }
        if summary.content
            && high(after)
            && change
                .before
                .as_ref()
                .is_some_and(|before| before.entropy.is_some() && low(before))
        {
            return Some("encrypted_in_place");
        }
        let new_content = summary.created
            || (summary.content && change.before.as_ref().is_some_and(|b| b.entropy.is_none()));
        if new_content
            && high(after)
            && change.replaces.as_ref().is_some_and(|original| {
                original.kind == EntryKind::File && original.entropy.is_some() && low(original)
            })
        {
            return Some("encrypted_copy");
        }
        None
    }

    fn ransomware(&mut self, change: &FileChange, summary: &ChangeSummary) -> Vec<Signal> {
        let Some(reason) = self.suspicion(change, summary) else {
            return Vec::new();
        };
        let at = change.at.0;
        let window = i64::try_from(self.rules.ransomware.window.as_nanos()).unwrap_or(i64::MAX);
        if reason == "ransom_note" {
            let name = change
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let hash = change.after.as_ref().and_then(|a| a.sha256);
            self.last_note = Some((name, hash, at));
        }
        let directory = change.path.parent().unwrap_or(Path::new("/")).to_path_buf();
        self.recent.push_back((at, reason, directory));
        while self
            .recent
            .front()
            .is_some_and(|(first, _, _)| *first < at - window || self.recent.len() > RECENT_LIMIT)
        {
            self.recent.pop_front();
        }
        if self.burst.is_none() {
            if (self.recent.len() as u64) < self.rules.ransomware.threshold {
                return Vec::new();
            }
            // The burst starts with everything suspicious still in the window.
            let mut burst = Burst {
                series: SignalId::new(),
                first_seen: self.recent.front().map_or(at, |(first, _, _)| *first),
                last_seen: at,
                count: 0,
                reported: 0,
                last_emit: i64::MIN,
                updates: 0,
                directories: HashSet::new(),
                reasons: BTreeMap::new(),
                extension: None,
                note: None,
                sample_path: None,
            };
            for (_, reason, directory) in self.recent.iter().take(self.recent.len() - 1) {
                burst.count += 1;
                *burst.reasons.entry(reason).or_default() += 1;
                if burst.directories.len() < BURST_DIRECTORY_LIMIT {
                    burst.directories.insert(directory.clone());
                }
            }
            self.burst = Some(burst);
        }
        let Some(burst) = self.burst.as_mut() else {
            return Vec::new();
        };
        burst.count += 1;
        burst.last_seen = burst.last_seen.max(at);
        *burst.reasons.entry(reason).or_default() += 1;
        if let Some((_, _, directory)) = self.recent.back()
            && burst.directories.len() < BURST_DIRECTORY_LIMIT
        {
            burst.directories.insert(directory.clone());
        }
        if reason != "ransom_note"
            && let Some(ext) = extension(&change.path)
        {
            burst.extension = Some(ext);
        }
        if let Some((name, hash, _)) = self
            .last_note
            .as_ref()
            .filter(|(_, _, seen)| *seen >= at - window)
        {
            burst.note = Some((name.clone(), *hash));
        }
        burst
            .sample_path
            .get_or_insert_with(|| path_text(&change.path));
        let every =
            i64::try_from(self.rules.ransomware.update_every.as_nanos()).unwrap_or(i64::MAX);
        if burst.updates == 0 || at.saturating_sub(burst.last_emit) >= every {
            return vec![self.emit_burst()];
        }
        Vec::new()
    }

    fn emit_burst(&mut self) -> Signal {
        let Some(burst) = self.burst.as_mut() else {
            return Signal::new(
                "ransomware_activity",
                Severity::Critical,
                Timestamp(self.now),
            );
        };
        burst.updates += 1;
        burst.reported = burst.count;
        burst.last_emit = burst.last_seen;
        let mut signal = Signal::new(
            "ransomware_activity",
            Severity::Critical,
            Timestamp(burst.first_seen),
        );
        signal.last_seen = Timestamp(burst.last_seen);
        signal.count = burst.count;
        signal.mitre = Some("T1486".into());
        signal = signal
            .with_attribute("series", burst.series.to_string())
            .with_attribute("update", burst.updates)
            .with_attribute("directories", burst.directories.len() as u64)
            .with_attribute("window_s", self.rules.ransomware.window.as_secs());
        for (reason, count) in &burst.reasons {
            let name = match *reason {
                "encrypted_copy" => "encrypted_copies",
                "ransom_extension" => "ransom_extensions",
                "ransom_note" => "ransom_notes",
                other => other,
            };
            signal = signal.with_attribute(name, *count);
        }
        if let Some(ext) = &burst.extension {
            signal = signal.with_attribute("extension", ext.clone());
        }
        if let Some(path) = &burst.sample_path {
            signal = signal.with_attribute("sample_path", path.clone());
        }
        if let Some((name, hash)) = &burst.note {
            signal = signal.with_attribute("ransom_note", name.clone());
            if let Some(hash) = hash {
                signal = signal.with_indicator(IndicatorType::Sha256, sha256_hex(hash));
            }
        }
        signal
    }

    /// Advances the clock: summaries of held changes, the last update of a burst that
    /// ended.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Signal> {
        self.now = self.now.max(now.0);
        let mut out = self.roll_minute(now.0);
        let window = i64::try_from(self.rules.ransomware.window.as_nanos()).unwrap_or(i64::MAX);
        let every =
            i64::try_from(self.rules.ransomware.update_every.as_nanos()).unwrap_or(i64::MAX);
        if let Some(burst) = &self.burst {
            let pending = burst.count > burst.reported;
            if self.now - burst.last_seen > window {
                if pending {
                    out.push(self.emit_burst());
                }
                self.burst = None;
            } else if pending && self.now - burst.last_emit >= every {
                out.push(self.emit_burst());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(entropy: Option<f32>, sha: u8) -> FileState {
        FileState {
            kind: EntryKind::File,
            size: 4096,
            mtime: 1,
            ctime: 1,
            mode: 0o644,
            uid: 0,
            gid: 0,
            inode: 1,
            sha256: Some([sha; 32]),
            entropy,
            target: None,
        }
    }

    fn change(
        path: &str,
        before: Option<FileState>,
        after: Option<FileState>,
        at: i64,
    ) -> FileChange {
        FileChange {
            path: PathBuf::from(path),
            from: None,
            before,
            after,
            at: Timestamp(at * NANOS_PER_SECOND),
            found_by: FoundBy::Watch,
            replaces: None,
            markers: Vec::new(),
            program_magic: false,
        }
    }

    fn detector() -> FileDetector {
        FileDetector::new(load(None).expect("built-in rules"), Places::default())
    }

    #[test]
    fn classes_match_the_host_and_container_roots() {
        let rules = load(None).expect("rules");
        let class = |path: &str| rules.class_of(Path::new(path)).map(|c| c.name.clone());
        assert_eq!(class("/etc/shadow").as_deref(), Some("accounts"));
        assert_eq!(
            class("/var/lib/docker/overlay2/x/merged/etc/shadow").as_deref(),
            Some("accounts")
        );
        assert_eq!(
            class("/root/.ssh/authorized_keys").as_deref(),
            Some("ssh_keys")
        );
        assert_eq!(class("/usr/bin/ssh").as_deref(), Some("system_binary"));
        assert_eq!(class("/etc/cron.d/backup").as_deref(), Some("cron"));
        assert_eq!(class("/etc/hosts").as_deref(), Some("system_config"));
        assert_eq!(class("/tmp/x.sh").as_deref(), Some("temporary"));
        assert_eq!(class("/opt/app/data.bin").as_deref(), Some("other"));
    }

    #[test]
    fn a_rules_file_with_a_wrong_class_names_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("local.toml"),
            "# local classes\n\n[[path_class]]\nname = \"app\"\npatterns = [\"/opt/app/[\"]\nseverity = \"high\"\n",
        )
        .expect("rules");
        let errors = load(Some(dir.path())).expect_err("invalid pattern");
        assert_eq!(errors[0].line, 5, "{errors:?}");
        std::fs::write(
            dir.path().join("local.toml"),
            "[[path_class]]\nname = \"app\"\npatterns = [\"/opt/app/**\"]\nseverity = \"urgent\"\n",
        )
        .expect("rules");
        let errors = load(Some(dir.path())).expect_err("invalid severity");
        assert_eq!(errors[0].line, 4, "{errors:?}");
        std::fs::write(
            dir.path().join("local.toml"),
            "[[path_class]]\nname = \"app\"\npatterns = [\"/opt/app/**\"]\nseverity = \"high\"\n\
             [ransomware]\nthreshold = 3\n",
        )
        .expect("rules");
        let rules = load(Some(dir.path())).expect("valid");
        // Added before the catch-all, so that it can match; the rest keeps its defaults.
        assert_eq!(
            rules
                .class_of(Path::new("/opt/app/run"))
                .map(|c| c.name.as_str()),
            Some("app")
        );
        assert_eq!(rules.ransomware.threshold, 3);
        assert_eq!(rules.ransomware.window, std::time::Duration::from_secs(60));
    }

    #[test]
    fn a_burst_of_changes_is_capped_and_summarised_per_class() {
        let mut detector = detector();
        let mut signals = Vec::new();
        for n in 0..200 {
            let path = format!("/usr/bin/tool{n}");
            signals.extend(detector.observe(&change(&path, None, Some(state(Some(5.0), 1)), 0)));
        }
        assert_eq!(signals.len(), 60);
        let summary = detector.tick(Timestamp(61 * NANOS_PER_SECOND));
        assert_eq!(summary.len(), 1);
        assert_eq!(summary[0].count, 140);
        assert_eq!(summary[0].severity, Severity::High);
    }

    #[test]
    fn one_encrypted_file_is_not_ransomware_and_a_burst_ends_with_a_final_update() {
        let mut detector = detector();
        let plain = Some(state(Some(4.5), 1));
        let cipher = Some(state(Some(7.9), 2));
        let alone = detector.observe(&change("/srv/a.docx", plain.clone(), cipher.clone(), 0));
        assert!(alone.iter().all(|s| s.kind != "ransomware_activity"));
        let mut bursts = Vec::new();
        for n in 0..30 {
            let path = format!("/srv/doc{n}.docx");
            let signals = detector.observe(&change(&path, plain.clone(), cipher.clone(), 1));
            bursts.extend(
                signals
                    .into_iter()
                    .filter(|s| s.kind == "ransomware_activity"),
            );
        }
        assert_eq!(bursts.len(), 1, "one signal, then updates");
        assert_eq!(bursts[0].count, 10);
        let last = detector.tick(Timestamp(120 * NANOS_PER_SECOND));
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].count, 31);
        assert_eq!(
            last[0].attributes.get("series"),
            bursts[0].attributes.get("series")
        );
        assert!(detector.tick(Timestamp(240 * NANOS_PER_SECOND)).is_empty());
    }

    #[test]
    fn compressed_files_arriving_alone_are_not_ransomware() {
        // A download of archives: high entropy, but nothing replaced.
        let mut detector = detector();
        for n in 0..100 {
            let path = format!("/home/alice/Downloads/photo{n}.jpg");
            let signals = detector.observe(&change(&path, None, Some(state(Some(7.95), 3)), 1));
            assert!(signals.iter().all(|s| s.kind != "ransomware_activity"));
        }
    }

    #[test]
    fn a_program_is_judged_by_its_content_not_its_empty_start() {
        let mut detector = FileDetector::new(
            load(None).expect("rules"),
            Places {
                drop_dirs: vec![PathBuf::from("/tmp")],
                ..Places::default()
            },
        );
        let mut empty = state(None, 0);
        empty.size = 0;
        empty.mode = 0o755;
        let created = detector.observe(&change("/tmp/.x", None, Some(empty.clone()), 0));
        assert!(
            created.iter().all(|s| s.kind != "suspicious_file"),
            "{created:?}"
        );
        let mut written = state(Some(6.0), 9);
        written.mode = 0o755;
        let signals = detector.observe(&change("/tmp/.x", Some(empty), Some(written), 0));
        let dropped: Vec<_> = signals
            .iter()
            .filter(|s| s.kind == "suspicious_file")
            .collect();
        assert_eq!(dropped.len(), 1, "{signals:?}");
        assert_eq!(dropped[0].indicators[0].value, "09".repeat(32));
    }

    #[test]
    fn advised_hashes_match_once_per_file_and_content() {
        use crate::detect::advisories::Advised;
        let mut detector = detector();
        let changed = |path: &str, sha: u8, at: i64| {
            change(
                path,
                Some(state(Some(5.0), 1)),
                Some(state(Some(5.0), sha)),
                at,
            )
        };
        // No advisories: nothing to match.
        let signals = detector.observe(&changed("/opt/app/tool", 7, 0));
        assert!(signals.iter().all(|s| s.kind != "ioc_match"));
        let mut advisories = Advisories::default();
        advisories
            .add(
                IndicatorType::Sha256,
                &"07".repeat(32),
                Advised::new("ADV-HASH", Severity::Critical),
            )
            .expect("sha256");
        detector.set_advisories(Arc::new(advisories));
        let iocs = |signals: Vec<Signal>| -> Vec<Signal> {
            signals
                .into_iter()
                .filter(|s| s.kind == "ioc_match")
                .collect()
        };
        let found = iocs(detector.observe(&changed("/opt/app/tool", 7, 1)));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].severity, Severity::Critical);
        assert_eq!(found[0].indicators[0].kind, IndicatorType::Sha256);
        assert_eq!(found[0].indicators[0].value, "07".repeat(32));
        let text = |name: &str| match found[0].attributes.get(name) {
            Some(vedetta_common::AttributeValue::Text(text)) => text.clone(),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(text("advisory"), "ADV-HASH");
        assert_eq!(text("source"), "files");
        assert_eq!(text("path"), "/opt/app/tool");
        assert_eq!(text("change"), "modified");
        // The same content at the same path again: said once.
        assert!(iocs(detector.observe(&changed("/opt/app/tool", 7, 2))).is_empty());
        // Elsewhere, or created: a match of its own; other content: none.
        assert_eq!(iocs(detector.observe(&changed("/tmp/copy", 7, 3))).len(), 1);
        let created = change("/srv/new", None, Some(state(Some(5.0), 7)), 4);
        assert_eq!(iocs(detector.observe(&created)).len(), 1);
        assert!(iocs(detector.observe(&changed("/opt/app/other", 8, 5))).is_empty());
        // A permission change of an advised file is not a new arrival.
        let mut chmod = state(Some(5.0), 9);
        chmod.mode = 0o600;
        let mut advisories = Advisories::default();
        advisories
            .add(
                IndicatorType::Sha256,
                &"09".repeat(32),
                Advised::new("ADV-9", Severity::High),
            )
            .expect("sha256");
        detector.set_advisories(Arc::new(advisories));
        let permissions = change("/etc/x", Some(state(Some(5.0), 9)), Some(chmod), 6);
        assert!(iocs(detector.observe(&permissions)).is_empty());
    }

    #[test]
    fn web_shell_markers_are_found_without_case() {
        let rules = load(None).expect("rules");
        assert_eq!(
            rules.markers_in(b"<?php @EVAL($_POST['x']); ?>"),
            ["eval($_post"]
        );
        assert!(rules.markers_in(b"<?php echo 'hello'; ?>").is_empty());
        assert!(rules.is_script(Path::new("/var/www/html/x.PHP")));
        assert!(!rules.is_script(Path::new("/var/www/html/x.css")));
    }
}
