//! Follows log files like `tail -F`, durably: a restart neither skips nor re-reads a line.
//!
//! # How files are recognised
//!
//! A path says nothing about which file it holds: rotation renames files and truncates
//! them, and a new file may reuse a path or, once the old one is deleted, even its inode.
//! So a file is identified by its device and inode **plus a fingerprint**, the SHA-256 of
//! its first `fingerprint_bytes` bytes. The inode survives a rename; the fingerprint tells
//! a truncated-and-rewritten file (copytruncate) or a reused inode from the file we read.
//!
//! A file shorter than `fingerprint_bytes` is fingerprinted over what it has, and the
//! length is kept with the hash. It is then identified by dev+inode and by that shorter
//! prefix; the fingerprint is extended as the file grows, after checking that the old
//! prefix is still there. An empty file is identified by dev+inode alone, which is safe:
//! its read position is 0, so a mistaken match cannot skip anything. In general a read
//! position is only ever resumed in a file whose first bytes are the ones we read.
//!
//! # Rotation
//!
//! * **Rename and create** (logrotate's default): the renamed file keeps its inode and we
//!   keep its open handle, so we read it to its end, even if the writer keeps appending to
//!   it until it reopens. A file that no longer matches any path is closed once it has not
//!   grown for `rotated_grace`. The new file at the old path is a new identity, read from
//!   its start.
//! * **copytruncate**: the file's size falls below our read position, or its first bytes
//!   change; we read it again from offset 0. Lines written between the copy and the
//!   truncation are in neither file as far as we can know: they are lost by the very nature
//!   of copytruncate. Lines written before the copy but not read yet are recovered from the
//!   copy *if the copy matches one of the paths* (`app.log*`): a new file whose content is a
//!   prefix of a followed file is held back as its copy (an empty new file too, until its
//!   first bytes show whose copy it is, if anyone's), and when the original is truncated
//!   the copy is read from where the original was; a copy that appears after the
//!   truncation is recognised by the original's old fingerprint. Without that, the copy
//!   would be a new file read from its start: every line twice.
//!
//! The price of recognising copies by content: two different files whose first
//! `fingerprint_bytes` bytes are identical, one appearing after the other was truncated
//! or closed, are taken for copies of each other. Raise `fingerprint_bytes` for logs that
//! begin with a long fixed header. (A shorter fingerprint, of a file truncated before we
//! had read `fingerprint_bytes` of it, is trusted for that only for a minute.)
//!
//! Known blind spots: a file truncated and rewritten, between two polls, past our position
//! with the same first `fingerprint_bytes` bytes is taken for the same file; a file
//! rotated out of the paths before any poll saw it is never read (rotation periods dwarf
//! the poll interval); a rotated file still written to after `rotated_grace` loses those
//! lines (the last line without newline is returned when it is closed).
//!
//! # Exactly once across restarts
//!
//! [`Tailer::poll`] returns lines and advances in-memory positions only;
//! [`Tailer::commit`] persists them (atomically: temp file, fsync, rename). The caller
//! commits after it has handled the lines (spooled them), so a crash in between returns
//! the same lines again instead of losing them, and nothing committed is read twice. On
//! start, files found at their checkpointed identity resume there; a rotated file that no
//! longer matches the paths is looked for by inode in the folder it was in, so a restart in
//! the middle of a rotation does not lose the old file's last lines. Only at the very first
//! start (no checkpoint file) do existing files begin at their end (`start_at_end`); every
//! file found later was created after we started watching, so it is read from its start
//! (also an old file that a widened pattern now matches: it has no checkpoint either).
//!
//! The checkpoint file keeps the files currently open and, for `forget_after` (7 days by
//! default) after they were last seen, files that have gone (deleted or rotated away): a
//! file that comes back within that time (an unmounted folder, a glob widened) resumes
//! where it was instead of being read again.
//!
//! # Bounded and never blocking
//!
//! Each file buffers at most `max_line_bytes` plus one read of [`READ_CHUNK`] bytes: a
//! longer line is returned cut and flagged, and its remainder skipped, so a binary file
//! without newlines costs no more than a log. Only regular files are opened (with
//! `O_NONBLOCK`, so that a FIFO swapped in behind a path cannot block us); directories and
//! other special files matching a pattern are skipped. Files are read with positional
//! reads (`pread`), so the position is always ours, never the kernel's.
//!
//! This is plain polling of the file system (the caller polls every ~250 ms); change
//! notifications may be added beside it later, but a rescan stays the source of truth.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vedetta_common::duration::serde_human;

/// Bytes read from a file at a time; with `max_line_bytes`, the bound of a file's buffer.
pub const READ_CHUNK: usize = 64 * 1024;

/// Version of the checkpoint file's format.
const CHECKPOINT_VERSION: u64 = 1;

/// Bytes compared at the start and at the end of a suspected copy.
const COMPARE_BLOCK: usize = 4096;

/// Most positions of gone files remembered; the oldest are forgotten first. Bounds the
/// checkpoint file when files come and go faster than `forget_after`.
const MAX_REMEMBERED: usize = 10_000;

/// What to follow, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailConfig {
    /// Files to follow: paths or glob patterns such as `/var/log/nginx/*.log`. Patterns are
    /// expanded again at every poll, so files created later are found. Include the names
    /// of rotated copies (`app.log*`) if you rotate with copytruncate, so that lines not
    /// yet read when the file is truncated are read from the copy.
    pub paths: Vec<String>,
    /// At the very first start (no checkpoint file yet), begin existing files at their end
    /// instead of reading their history. Files that appear later are always read from
    /// their start.
    #[serde(default = "default_start_at_end")]
    pub start_at_end: bool,
    /// Longest line returned; a longer one is cut to this many bytes, flagged and counted,
    /// and the rest of it is skipped.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// How many leading bytes identify a file, with its device and inode.
    #[serde(default = "default_fingerprint_bytes")]
    pub fingerprint_bytes: usize,
    /// How long a file that no longer matches any path (rotated away or deleted) is kept
    /// open after it last grew, for writers that have not reopened their log yet.
    #[serde(default = "default_rotated_grace", with = "serde_human")]
    pub rotated_grace: Duration,
    /// How long the read position of a file that has gone is remembered.
    #[serde(default = "default_forget_after", with = "serde_human")]
    pub forget_after: Duration,
}

fn default_start_at_end() -> bool {
    true
}

fn default_max_line_bytes() -> usize {
    64 * 1024
}

fn default_fingerprint_bytes() -> usize {
    256
}

fn default_rotated_grace() -> Duration {
    Duration::from_secs(60)
}

fn default_forget_after() -> Duration {
    Duration::from_secs(7 * 86_400)
}

impl Default for TailConfig {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            start_at_end: default_start_at_end(),
            max_line_bytes: default_max_line_bytes(),
            fingerprint_bytes: default_fingerprint_bytes(),
            rotated_grace: default_rotated_grace(),
            forget_after: default_forget_after(),
        }
    }
}

/// One line, without its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The path under which the file was first found: for a file rotated by renaming, or
    /// the copy a copytruncate rotation made, the path of the log it belongs to.
    pub path: Arc<str>,
    /// The line, converted lossily if it was not UTF-8 (so a cut line of invalid bytes
    /// may take more than `max_line_bytes` here).
    pub text: String,
    /// The line was longer than `max_line_bytes` and was cut.
    pub truncated: bool,
}

/// Counters since the tailer was created, for health reports.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct TailStats {
    pub lines: u64,
    pub truncated_lines: u64,
    pub invalid_utf8_lines: u64,
    /// Paths found holding a different file than at the previous poll (rename rotation).
    pub rotations: u64,
    /// Files found shorter than their read position or rewritten (copytruncate).
    pub truncations: u64,
    /// Paths that could not be followed (dangling symlink, loop, permission denied) and
    /// files that could not be read: each counted once per episode, not at every poll.
    pub errors: u64,
    /// Files open now, including rotated files still being drained.
    pub open_files: u64,
}

/// What the tailer follows now and what it cannot, for the source's state in `status`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TailCondition {
    /// Files open and readable (rotated files still being drained among them).
    pub following: usize,
    /// Patterns that match no regular file now (and no path that fails).
    pub unmatched: Vec<String>,
    /// Paths that cannot be followed or read now, with why, by path.
    pub failing: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("invalid log tail configuration: {0}")]
    Config(String),
    #[error("invalid path pattern {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        source: glob::PatternError,
    },
    #[error("cannot read the log checkpoint file {}: {source}", path.display())]
    ReadCheckpoint { path: PathBuf, source: io::Error },
    #[error(
        "the log checkpoint file {} is corrupt ({reason}); move it away to start over, \
         knowing that files will then be read from their end or start again",
        path.display()
    )]
    CorruptCheckpoint { path: PathBuf, reason: String },
    #[error(
        "the log checkpoint file {} has version {version}, newer than this agent knows \
         ({CHECKPOINT_VERSION}); upgrade the agent",
        path.display()
    )]
    CheckpointTooNew { path: PathBuf, version: u64 },
    #[error("cannot write the log checkpoint file {}: {source}", path.display())]
    WriteCheckpoint { path: PathBuf, source: io::Error },
}

/// A file's identity on this host, as long as it exists (or we hold it open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
struct FileId {
    dev: u64,
    inode: u64,
}

impl FileId {
    fn of(metadata: &Metadata) -> Self {
        Self {
            dev: metadata.dev(),
            inode: metadata.ino(),
        }
    }
}

/// SHA-256 of a file's first `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: usize,
    hash: [u8; 32],
}

impl Fingerprint {
    fn of(head: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, head);
        let mut hash = [0; 32];
        hash.copy_from_slice(digest.as_ref());
        Self {
            len: head.len(),
            hash,
        }
    }

    /// Whether a file starting with `head` starts with the bytes this fingerprint hashed.
    fn matches(&self, head: &[u8]) -> bool {
        head.len() >= self.len && Self::of(&head[..self.len]) == *self
    }

    fn to_hex(self) -> String {
        self.hash.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    fn from_hex(len: usize, text: &str) -> Option<Self> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut hash = [0; 32];
        for (index, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
        }
        Some(Self { len, hash })
    }
}

/// The checkpoint file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointFile {
    version: u64,
    files: Vec<Entry>,
}

/// Read first, so that a newer format is reported as such rather than as corrupt.
#[derive(Debug, Deserialize)]
struct VersionOnly {
    version: u64,
}

/// One file's read position in the checkpoint file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    dev: u64,
    inode: u64,
    /// Hex SHA-256 of the file's first `fingerprint_len` bytes.
    fingerprint: String,
    fingerprint_len: usize,
    /// Where the file was first found (used to look for it after a rename, and in lines).
    path: String,
    /// Bytes handled: the next line starts here.
    offset: u64,
    /// `offset` is inside an over-long line already returned cut: skip to its newline.
    #[serde(default)]
    skip_to_newline: bool,
    /// The file was truncated after `offset`: its content up to here lives on only in a
    /// copy, which may be recognised by its fingerprint; the inode now holds other data.
    #[serde(default)]
    truncated: bool,
    /// The file is a copy of this other file, not read while the original is followed.
    #[serde(default)]
    copy_of: Option<FileId>,
    /// When the file was last seen (seconds since the Unix epoch).
    seen: u64,
}

/// A read position kept for a file that is not open.
#[derive(Debug, Clone)]
struct Remembered {
    id: FileId,
    fingerprint: Fingerprint,
    path: String,
    offset: u64,
    skipping: bool,
    truncated: bool,
    copy_of: Option<FileId>,
    seen: u64,
}

impl Remembered {
    fn from_entry(entry: Entry) -> Option<Self> {
        Some(Self {
            id: FileId {
                dev: entry.dev,
                inode: entry.inode,
            },
            fingerprint: Fingerprint::from_hex(entry.fingerprint_len, &entry.fingerprint)?,
            path: entry.path,
            offset: entry.offset,
            skipping: entry.skip_to_newline,
            truncated: entry.truncated,
            copy_of: entry.copy_of,
            seen: entry.seen,
        })
    }

    fn to_entry(&self) -> Entry {
        Entry {
            dev: self.id.dev,
            inode: self.id.inode,
            fingerprint: self.fingerprint.to_hex(),
            fingerprint_len: self.fingerprint.len,
            path: self.path.clone(),
            offset: self.offset,
            skip_to_newline: self.skipping,
            truncated: self.truncated,
            copy_of: self.copy_of,
            seen: self.seen,
        }
    }
}

/// An open file being followed.
#[derive(Debug)]
struct Watched {
    file: File,
    path: Arc<str>,
    fingerprint: Fingerprint,
    /// Offset after the last line returned (or bytes skipped): what a commit saves.
    consumed: u64,
    /// Inside an over-long line already returned cut.
    skipping: bool,
    /// Bytes read from `consumed` on; `buffer[..head]` has been returned already.
    buffer: Vec<u8>,
    head: usize,
    /// `buffer[head..scanned]` holds no newline (saves rescanning a long partial line).
    scanned: usize,
    /// Size and modification time at the last look, to notice changes cheaply.
    seen_size: u64,
    seen_mtime: (i64, i64),
    /// Matched by a path at the last scan.
    present: bool,
    /// Read to its end during the last poll.
    at_eof: bool,
    last_change: Instant,
    /// Held back as a copy of this other followed file (copytruncate): not read until the
    /// original is truncated or closed.
    copy_of: Option<FileId>,
    /// A read error (its text) was counted and not yet followed by a good read.
    failing: Option<String>,
    /// Order of discovery: older files are drained first.
    order: u64,
}

impl Watched {
    fn read_position(&self) -> u64 {
        self.consumed + (self.buffer.len() - self.head) as u64
    }

    fn restart_at(&mut self, offset: u64, skipping: bool) {
        self.consumed = offset;
        self.skipping = skipping;
        self.buffer = Vec::new();
        self.head = 0;
        self.scanned = 0;
    }

    /// The next complete line (or cut over-long line), reading more as needed. The buffer never exceeds `max_line + READ_CHUNK` bytes:
    /// more is read only when it holds no newline and at most `max_line` bytes.
    fn next_line(
        &mut self,
        scratch: &mut [u8],
        max_line: usize,
        fingerprint_bytes: usize,
    ) -> io::Result<Next> {
        loop {
            if let Some(found) = self.buffer[self.scanned..]
                .iter()
                .position(|&byte| byte == b'\n')
            {
                let newline = self.scanned + found;
                let start = self.head;
                let length = newline - start;
                self.head = newline + 1;
                self.scanned = self.head;
                self.consumed += length as u64 + 1;
                if self.skipping {
                    self.skipping = false;
                    continue;
                }
                let end = start + length.min(max_line);
                return Ok(Next::Line(
                    self.buffer[start..end].to_vec(),
                    length > max_line,
                ));
            }
            self.scanned = self.buffer.len();
            let pending = self.buffer.len() - self.head;
            if self.skipping {
                // All of it belongs to the over-long line being skipped.
                self.consumed += pending as u64;
                self.clear_buffer();
            } else if pending > max_line {
                let line = self.buffer[self.head..self.head + max_line].to_vec();
                self.consumed += pending as u64;
                self.clear_buffer();
                self.skipping = true;
                return Ok(Next::Line(line, true));
            } else if self.head > 0 {
                self.buffer.drain(..self.head);
                self.scanned -= self.head;
                self.head = 0;
            }
            let read = loop {
                match self.file.read_at(scratch, self.read_position()) {
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            if read == 0 {
                return Ok(Next::End);
            }
            // Truncated (and rewritten past our position) between our look and this read?
            // Then these bytes are not the continuation of what we read: leave them to the
            // next poll, which will see the truncation. Otherwise extend a short
            // fingerprint over what the file now has, so that the identity we would
            // remember if it were truncated covers what we have read.
            let head = read_head(&self.file, fingerprint_bytes.max(self.fingerprint.len))?;
            if !self.fingerprint.matches(&head) {
                self.seen_size = u64::MAX;
                return Ok(Next::Changed);
            }
            if head.len() > self.fingerprint.len {
                self.fingerprint = Fingerprint::of(&head);
            }
            self.buffer.reserve_exact(read);
            self.buffer.extend_from_slice(&scratch[..read]);
        }
    }

    fn clear_buffer(&mut self) {
        self.buffer.clear();
        self.head = 0;
        self.scanned = 0;
    }

    /// Takes the bytes after the last newline, for a file about to be closed.
    fn take_partial(&mut self) -> Option<Vec<u8>> {
        if self.skipping || self.head == self.buffer.len() {
            return None;
        }
        let bytes = self.buffer[self.head..].to_vec();
        self.consumed += bytes.len() as u64;
        self.clear_buffer();
        Some(bytes)
    }

    fn remembered(&self, id: FileId, seen: u64) -> Remembered {
        Remembered {
            id,
            fingerprint: self.fingerprint,
            path: self.path.to_string(),
            offset: self.consumed,
            skipping: self.skipping,
            truncated: false,
            copy_of: None,
            seen,
        }
    }
}

/// What reading a file gave.
#[derive(Debug)]
enum Next {
    /// A line's bytes, and whether it was cut.
    Line(Vec<u8>, bool),
    /// Nothing more for now.
    End,
    /// The file was truncated under our feet.
    Changed,
}

/// A file found by a scan and opened, not yet followed.
#[derive(Debug)]
struct Candidate {
    path: PathBuf,
    id: FileId,
    file: File,
    size: u64,
    mtime: (i64, i64),
    head: Vec<u8>,
}

/// Whether a file is a copy of a followed file.
#[derive(Debug, PartialEq, Eq)]
enum CopyCheck {
    Copy,
    NotCopy,
    /// The original changed under our feet (truncated between two reads): ask again at the
    /// next poll, when its truncation will have been seen.
    Unsure,
}

/// Follows the files matching a set of paths and patterns. See the module documentation.
#[derive(Debug)]
pub struct Tailer {
    config: TailConfig,
    checkpoints: PathBuf,
    watched: HashMap<FileId, Watched>,
    remembered: Vec<Remembered>,
    /// No checkpoint file existed and the first scan has not happened yet.
    fresh: bool,
    first_poll: bool,
    /// Which file each path held at the last scan (to count rotations).
    paths_seen: HashMap<PathBuf, FileId>,
    /// Paths in error at the last scan, and paths found that could not be opened, with
    /// why: each error is counted once per episode, not at every poll.
    failing: HashMap<PathBuf, String>,
    open_failing: HashMap<PathBuf, String>,
    /// Patterns that matched nothing at the last scan.
    unmatched: Vec<String>,
    stats: TailStats,
    scratch: Vec<u8>,
    next_order: u64,
    cursor: usize,
    /// Something a commit would save has changed since the last commit.
    dirty: bool,
}

impl Tailer {
    /// Opens the tailer; `checkpoints` is the file where read positions are kept. A
    /// missing file means a first start; a corrupt one is an error (resetting silently
    /// would re-read or skip whole files). A temp file left by an interrupted commit is
    /// ignored: the previous checkpoint file is still whole.
    pub fn new(config: TailConfig, checkpoints: PathBuf) -> Result<Self, TailError> {
        if config.max_line_bytes == 0 {
            return Err(TailError::Config(
                "max_line_bytes must be at least 1".into(),
            ));
        }
        if config.fingerprint_bytes == 0 || config.fingerprint_bytes > READ_CHUNK {
            return Err(TailError::Config(format!(
                "fingerprint_bytes must be between 1 and {READ_CHUNK}"
            )));
        }
        for pattern in &config.paths {
            glob::Pattern::new(pattern).map_err(|source| TailError::Pattern {
                pattern: pattern.clone(),
                source,
            })?;
        }
        let remembered = load_checkpoints(&checkpoints)?;
        Ok(Self {
            config,
            checkpoints,
            watched: HashMap::new(),
            fresh: remembered.is_none(),
            remembered: remembered.unwrap_or_default(),
            first_poll: true,
            paths_seen: HashMap::new(),
            failing: HashMap::new(),
            open_failing: HashMap::new(),
            unmatched: Vec::new(),
            stats: TailStats::default(),
            scratch: vec![0; READ_CHUNK],
            next_order: 0,
            cursor: 0,
            dirty: false,
        })
    }

    /// Reads whatever is new in every matching file (expanding the patterns again, so new
    /// files are found), up to `max_lines` lines in total, and returns them. Never blocks
    /// on I/O beyond reading regular files. When `max_lines` stops it, the next poll
    /// starts with another file, so that one busy file cannot starve the others.
    pub fn poll(&mut self, max_lines: usize) -> Vec<Line> {
        let now = Instant::now();
        let found = self.scan();
        for (path, id) in &found {
            if let Some(previous) = self.paths_seen.insert(path.clone(), *id)
                && previous != *id
            {
                self.stats.rotations += 1;
                tracing::info!(path = %path.display(), "log file rotated");
            }
        }
        let found_ids: HashSet<FileId> = found.iter().map(|(_, id)| *id).collect();
        self.refresh(&found_ids, now);
        self.open_new(&found, now);
        if self.fresh {
            // Positions chosen at the first start must be saved even if no line follows.
            self.dirty = true;
        }
        self.fresh = false;
        self.first_poll = false;
        let mut lines = Vec::new();
        self.read_lines(max_lines, &mut lines);
        self.close_finished(max_lines, &mut lines, now);
        let watched = &self.watched;
        self.paths_seen.retain(|_, id| watched.contains_key(id));
        lines
    }

    /// Persists the positions of everything returned so far, atomically (temp file,
    /// fsync, rename, mode 0600). Call it after the lines have been handled, so that a
    /// restart neither skips nor re-reads a line. Writes nothing if nothing changed, so
    /// calling it after every poll is cheap.
    pub fn commit(&mut self) -> Result<(), TailError> {
        if !self.dirty {
            return Ok(());
        }
        let now = unix_now();
        let forget_after = self.config.forget_after;
        self.remembered
            .retain(|r| Duration::from_secs(now.saturating_sub(r.seen)) < forget_after);
        let mut files: Vec<Entry> = Vec::with_capacity(self.watched.len() + self.remembered.len());
        for (id, watched) in &self.watched {
            let mut position = watched.remembered(*id, now);
            if let Some(original) = watched
                .copy_of
                .and_then(|o| self.watched.get(&o).map(|w| (o, w)))
            {
                // Saved as what it would be if the original were truncated now.
                position.copy_of = Some(original.0);
                position.offset = original.1.consumed.min(watched.seen_size);
                position.skipping = original.1.skipping && original.1.consumed <= watched.seen_size;
            }
            files.push(position.to_entry());
        }
        files.extend(self.remembered.iter().map(Remembered::to_entry));
        files.sort_by(|a, b| (&a.path, a.dev, a.inode).cmp(&(&b.path, b.dev, b.inode)));
        let checkpoint = CheckpointFile {
            version: CHECKPOINT_VERSION,
            files,
        };
        let json =
            serde_json::to_vec_pretty(&checkpoint).map_err(|error| TailError::WriteCheckpoint {
                path: self.checkpoints.clone(),
                source: io::Error::other(error),
            })?;
        vedetta_common::files::write_atomic(&self.checkpoints, &json, 0o600).map_err(|source| {
            TailError::WriteCheckpoint {
                path: self.checkpoints.clone(),
                source,
            }
        })?;
        self.dirty = false;
        Ok(())
    }

    pub fn stats(&self) -> TailStats {
        TailStats {
            open_files: self.watched.len() as u64,
            ..self.stats.clone()
        }
    }

    /// What is followed and what is not, as of the last poll.
    pub fn condition(&self) -> TailCondition {
        let mut failing: Vec<(String, String)> = self
            .failing
            .iter()
            .chain(&self.open_failing)
            .map(|(path, error)| (path.display().to_string(), error.clone()))
            .chain(self.watched.values().filter_map(|watched| {
                let error = watched.failing.as_ref()?;
                Some((watched.path.to_string(), error.clone()))
            }))
            .collect();
        failing.sort();
        failing.dedup_by(|a, b| a.0 == b.0);
        TailCondition {
            following: self
                .watched
                .values()
                .filter(|watched| watched.failing.is_none())
                .count(),
            unmatched: self.unmatched.clone(),
            failing,
        }
    }

    /// Bytes held in line buffers (allocated capacity), for health reports and to check
    /// the bound: at most `max_line_bytes + READ_CHUNK` per open file.
    pub fn buffered_bytes(&self) -> usize {
        self.watched.values().map(|w| w.buffer.capacity()).sum()
    }

    /// Expands the patterns: the regular files they match, each once, with the first path
    /// that matched it. Counts paths that cannot be followed, once per episode.
    fn scan(&mut self) -> Vec<(PathBuf, FileId)> {
        let mut found = Vec::new();
        let mut ids = HashSet::new();
        let mut failing: HashMap<PathBuf, String> = HashMap::new();
        let mut unmatched = Vec::new();
        for pattern in &self.config.paths {
            let Ok(entries) = glob::glob(pattern) else {
                continue; // Checked in `new`.
            };
            let mut matched = false;
            for entry in entries {
                let path = match entry {
                    Ok(path) => path,
                    Err(error) => {
                        matched = true;
                        failing.insert(error.path().to_owned(), error.error().to_string());
                        continue;
                    }
                };
                match std::fs::metadata(&path) {
                    Ok(metadata) if metadata.is_file() => {
                        matched = true;
                        let id = FileId::of(&metadata);
                        if ids.insert(id) {
                            found.push((path, id));
                        }
                    }
                    Ok(_) => {
                        tracing::trace!(path = %path.display(), "not a regular file; skipped");
                    }
                    // Deleted between listing and looking: nothing to report.
                    Err(error)
                        if error.kind() == io::ErrorKind::NotFound
                            && std::fs::symlink_metadata(&path).is_err() => {}
                    Err(error) => {
                        matched = true;
                        failing.insert(path, error.to_string());
                    }
                }
            }
            if !matched {
                unmatched.push(pattern.clone());
            }
        }
        for (path, error) in &failing {
            if !self.failing.contains_key(path) {
                self.stats.errors += 1;
                tracing::warn!(path = %path.display(), %error, "cannot follow log file");
            }
        }
        self.failing = failing;
        self.unmatched = unmatched;
        found
    }

    /// Looks at every open file: presence, growth, truncation; settles suspected copies.
    fn refresh(&mut self, found_ids: &HashSet<FileId>, now: Instant) {
        let fingerprint_bytes = self.config.fingerprint_bytes;
        let mut truncated: Vec<(FileId, Remembered)> = Vec::new();
        for (id, watched) in &mut self.watched {
            watched.present = found_ids.contains(id);
            let looked = watched.file.metadata().and_then(|metadata| {
                let changed = (metadata.len(), (metadata.mtime(), metadata.mtime_nsec()));
                if changed == (watched.seen_size, watched.seen_mtime) {
                    Ok(None)
                } else {
                    read_head(&watched.file, fingerprint_bytes).map(|head| Some((changed, head)))
                }
            });
            let ((size, mtime), head) = match looked {
                Ok(Some(change)) => change,
                Ok(None) => continue,
                Err(error) => {
                    note_read_error(&mut watched.failing, &mut self.stats, &watched.path, &error);
                    continue;
                }
            };
            watched.seen_size = size;
            watched.seen_mtime = mtime;
            watched.last_change = now;
            if watched.copy_of.is_some() {
                watched.fingerprint = Fingerprint::of(&head);
            } else if size < watched.read_position() || !watched.fingerprint.matches(&head) {
                tracing::info!(path = %watched.path, offset = watched.consumed, "log file truncated; reading it again from its start");
                let mut old = watched.remembered(*id, unix_now());
                old.truncated = true;
                truncated.push((*id, old));
                watched.fingerprint = Fingerprint::of(&head);
                watched.restart_at(0, false);
                self.stats.truncations += 1;
                self.dirty = true;
            } else if head.len() > watched.fingerprint.len {
                watched.fingerprint = Fingerprint::of(&head);
                self.dirty = true;
            }
        }
        for (original, old) in truncated {
            // Without a copy in sight, remember the old identity in case one appears.
            if self.release_copies(original, &old) == 0 {
                self.remember(old);
            }
        }
        let copies: Vec<(FileId, FileId)> = self
            .watched
            .iter()
            .filter_map(|(id, w)| w.copy_of.map(|original| (*id, original)))
            .collect();
        for (copy, original) in copies {
            let check = match (self.watched.get(&copy), self.watched.get(&original)) {
                (Some(c), Some(o)) => copy_check(&c.file, o),
                _ => CopyCheck::NotCopy,
            };
            if check != CopyCheck::NotCopy {
                continue;
            }
            // Not a copy of a file read before either? An empty file is a prefix of
            // every file: it may have been taken for a copy of the wrong one. Choose
            // again now that it has content.
            let Some(c) = self.watched.get(&copy) else {
                continue;
            };
            let remembered = read_head(&c.file, self.config.fingerprint_bytes)
                .ok()
                .and_then(|head| self.find_remembered_copy(copy, &head));
            let other = match remembered {
                Some(_) => None,
                None => self.find_original(&c.file),
            };
            match other {
                Some(original) => {
                    if let Some(watched) = self.watched.get_mut(&copy) {
                        watched.copy_of = Some(original);
                    }
                }
                None => self.not_a_copy(copy),
            }
        }
    }

    /// The original was truncated or closed at `from.offset`: its copies now hold the
    /// lines after that. The oldest copy resumes there, and its lines carry the original's
    /// path; other copies of the same content are taken as read. A held-back file that does
    /// not start like the original did (an empty new file that has since been written to)
    /// was no copy of it: see [`Self::not_a_copy`]. Returns how many copies there were.
    fn release_copies(&mut self, original: FileId, from: &Remembered) -> usize {
        let mut copies: Vec<(u64, FileId)> = self
            .watched
            .iter()
            .filter(|(_, w)| w.copy_of == Some(original))
            .map(|(id, w)| (w.order, *id))
            .collect();
        copies.sort();
        let fingerprint_bytes = self.config.fingerprint_bytes;
        let mut resumed = false;
        let mut not_copies = Vec::new();
        for (_, id) in &copies {
            let Some(watched) = self.watched.get_mut(id) else {
                continue;
            };
            watched.copy_of = None;
            // Look again: the copy was complete before the truncation, but our last look
            // at it may have been earlier.
            let looked = watched.file.metadata().and_then(|metadata| {
                read_head(&watched.file, fingerprint_bytes).map(|head| (metadata.len(), head))
            });
            match looked {
                Ok((size, head)) if from.fingerprint.matches(&head) => {
                    if resumed {
                        watched.restart_at(size, false);
                    } else {
                        resumed = true;
                        watched.restart_at(
                            from.offset.min(size),
                            from.skipping && from.offset <= size,
                        );
                        watched.path = from.path.as_str().into();
                    }
                    tracing::debug!(path = %watched.path, offset = watched.consumed, "copy of a truncated log file; reading what was not read yet");
                }
                _ => not_copies.push(*id),
            }
        }
        for id in not_copies {
            self.not_a_copy(id);
        }
        self.dirty |= !copies.is_empty();
        copies.len()
    }

    fn remember(&mut self, position: Remembered) {
        self.remembered.push(position);
        if self.remembered.len() > MAX_REMEMBERED {
            self.remembered.sort_by_key(|r| std::cmp::Reverse(r.seen));
            self.remembered.truncate(MAX_REMEMBERED);
        }
        self.dirty = true;
    }

    /// Opens files found for the first time and decides where each starts.
    fn open_new(&mut self, found: &[(PathBuf, FileId)], now: Instant) {
        let mut candidates = Vec::new();
        let mut open_failing = HashMap::new();
        for (path, id) in found {
            if self.watched.contains_key(id) {
                continue;
            }
            let opened = open_regular(path).and_then(|(file, metadata)| {
                let head = read_head(&file, self.config.fingerprint_bytes)?;
                Ok((file, metadata, head))
            });
            match opened {
                Ok((file, metadata, head)) if FileId::of(&metadata) == *id => {
                    candidates.push(Candidate {
                        path: path.clone(),
                        id: *id,
                        file,
                        size: metadata.len(),
                        mtime: (metadata.mtime(), metadata.mtime_nsec()),
                        head,
                    });
                }
                // Replaced between the scan and the opening: next poll.
                Ok(_) => {}
                Err(error) => {
                    if !self.open_failing.contains_key(path) {
                        self.stats.errors += 1;
                        tracing::warn!(path = %path.display(), %error, "cannot open log file");
                    }
                    open_failing.insert(path.clone(), error.to_string());
                }
            }
        }
        self.open_failing = open_failing;

        // Files whose very identity has a checkpoint resume there.
        let mut links = Vec::new();
        let mut unknown = Vec::new();
        for candidate in candidates {
            let position = self.remembered.iter().position(|r| {
                !r.truncated && r.id == candidate.id && r.fingerprint.matches(&candidate.head)
            });
            match position {
                Some(index) => {
                    let r = self.remembered.swap_remove(index);
                    if let Some(original) = r.copy_of {
                        links.push((candidate.id, original));
                    }
                    self.resume(candidate, r, true, now);
                }
                None => unknown.push(candidate),
            }
        }
        if self.first_poll && !self.fresh {
            self.find_renamed(now);
        }
        // A copy held back before the restart stays held back if its original is
        // followed again. If the original did not resume (truncated while we were down),
        // the copy holds its unread lines, from the original's checkpointed position.
        let mut originals = HashSet::new();
        for (copy, original) in links {
            if let Some(watched) = self.watched.get_mut(&copy) {
                watched.copy_of = Some(original);
                originals.insert(original);
            }
        }
        for original in originals {
            if self
                .watched
                .get(&original)
                .is_some_and(|o| o.copy_of.is_none())
            {
                continue;
            }
            let position = self
                .remembered
                .iter()
                .position(|r| r.id == original && !r.truncated);
            if let Some(index) = position {
                let from = self.remembered.swap_remove(index);
                self.release_copies(original, &from);
            } else {
                for watched in self.watched.values_mut() {
                    if watched.copy_of == Some(original) {
                        watched.copy_of = None;
                    }
                }
            }
        }

        for candidate in unknown {
            if self.fresh {
                let offset = if self.config.start_at_end {
                    candidate.size
                } else {
                    0
                };
                self.follow(candidate, None, offset, false, None, true, now);
                continue;
            }
            // A copy of a file whose content is gone (truncated) first: that file may
            // have been rewritten since, and look like the original of anything.
            if let Some(r) = self.take_remembered_copy(candidate.id, &candidate.head) {
                tracing::debug!(path = %candidate.path.display(), offset = r.offset, "new file is a copy of a file read before; resuming where that one was");
                let offset = r.offset.min(candidate.size);
                let skipping = r.skipping && r.offset <= candidate.size;
                let path = Some(r.path.into());
                self.follow(candidate, path, offset, skipping, None, true, now);
                continue;
            }
            if let Some(original) = self.find_original(&candidate.file) {
                tracing::debug!(path = %candidate.path.display(), "new file is a copy of a followed file; held back");
                self.follow(candidate, None, 0, false, Some(original), true, now);
                continue;
            }
            self.follow(candidate, None, 0, false, None, true, now);
        }
    }

    /// The position of a file read before that a new file starts like, which is then
    /// taken for its copy (and the position consumed). A whole fingerprint is distinctive
    /// enough for that at any time; a shorter one (of a file truncated when we had read
    /// less than `fingerprint_bytes` of it) only within a minute or `rotated_grace`, when
    /// a copy made by the same rotation would appear.
    fn take_remembered_copy(&mut self, id: FileId, head: &[u8]) -> Option<Remembered> {
        let index = self.find_remembered_copy(id, head)?;
        self.dirty = true;
        Some(self.remembered.swap_remove(index))
    }

    fn find_remembered_copy(&self, id: FileId, head: &[u8]) -> Option<usize> {
        let window = self.config.rotated_grace.max(Duration::from_secs(60));
        let now = unix_now();
        self.remembered.iter().position(|r| {
            r.id != id
                && r.fingerprint.matches(head)
                && (r.fingerprint.len == self.config.fingerprint_bytes
                    || now.saturating_sub(r.seen) <= window.as_secs())
        })
    }

    /// A held-back file turned out not to be a copy of the file it was held for: it is
    /// either a copy of a file read before, or a file of its own, read from its start.
    fn not_a_copy(&mut self, id: FileId) {
        let head = match self.watched.get(&id) {
            Some(watched) => read_head(&watched.file, self.config.fingerprint_bytes),
            None => return,
        };
        let from = head
            .ok()
            .and_then(|head| self.take_remembered_copy(id, &head));
        let Some(watched) = self.watched.get_mut(&id) else {
            return;
        };
        watched.copy_of = None;
        match from {
            Some(r) => {
                let size = watched.file.metadata().map(|m| m.len()).unwrap_or(0);
                watched.restart_at(r.offset.min(size), r.skipping && r.offset <= size);
                watched.path = r.path.as_str().into();
            }
            None => {
                tracing::debug!(path = %watched.path, "not a copy after all; reading it from its start");
                watched.restart_at(0, false);
            }
        }
        self.dirty = true;
    }

    /// Follows a file at a checkpointed position (from its start if it has shrunk since).
    fn resume(&mut self, candidate: Candidate, r: Remembered, present: bool, now: Instant) {
        let (offset, skipping) = if r.offset > candidate.size {
            self.stats.truncations += 1;
            (0, false)
        } else {
            (r.offset, r.skipping)
        };
        let path: Arc<str> = r.path.into();
        self.follow(candidate, Some(path), offset, skipping, None, present, now);
    }

    #[allow(clippy::too_many_arguments)]
    fn follow(
        &mut self,
        candidate: Candidate,
        path: Option<Arc<str>>,
        offset: u64,
        skipping: bool,
        copy_of: Option<FileId>,
        present: bool,
        now: Instant,
    ) {
        let path = path.unwrap_or_else(|| candidate.path.to_string_lossy().into());
        tracing::debug!(%path, offset, "following log file");
        let watched = Watched {
            file: candidate.file,
            path,
            fingerprint: Fingerprint::of(&candidate.head),
            consumed: offset,
            skipping,
            buffer: Vec::new(),
            head: 0,
            scanned: 0,
            seen_size: candidate.size,
            seen_mtime: candidate.mtime,
            present,
            at_eof: false,
            last_change: now,
            copy_of,
            failing: None,
            order: self.next_order,
        };
        self.next_order += 1;
        self.watched.insert(candidate.id, watched);
        self.dirty = true;
    }

    /// A followed file of which `file` holds a prefix (a copy being made or made), if any.
    fn find_original(&self, file: &File) -> Option<FileId> {
        // The file written to last first: copies are made of active logs.
        let mut originals: Vec<(std::cmp::Reverse<Instant>, u64, FileId)> = self
            .watched
            .iter()
            .filter(|(_, w)| w.copy_of.is_none())
            .map(|(id, w)| (std::cmp::Reverse(w.last_change), w.order, *id))
            .collect();
        originals.sort();
        originals.into_iter().find_map(|(_, _, id)| {
            let original = self.watched.get(&id)?;
            (copy_check(file, original) != CopyCheck::NotCopy).then_some(id)
        })
    }

    /// After a restart: checkpointed files that no longer match any path may have been
    /// rotated away while we were down. Looks for them by inode in the folder they were
    /// in, to read their last lines.
    fn find_renamed(&mut self, now: Instant) {
        let mut wanted: HashMap<PathBuf, Vec<FileId>> = HashMap::new();
        for r in &self.remembered {
            if r.truncated || self.watched.contains_key(&r.id) {
                continue;
            }
            if let Some(folder) = Path::new(&r.path).parent() {
                wanted.entry(folder.to_owned()).or_default().push(r.id);
            }
        }
        for (folder, ids) in wanted {
            let Ok(entries) = std::fs::read_dir(&folder) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(metadata) = entry.metadata() else {
                    continue;
                };
                let id = FileId::of(&metadata);
                if !metadata.is_file() || !ids.contains(&id) || self.watched.contains_key(&id) {
                    continue;
                }
                let path = entry.path();
                let Ok((file, metadata)) = open_regular(&path) else {
                    continue;
                };
                if FileId::of(&metadata) != id {
                    continue;
                }
                let Ok(head) = read_head(&file, self.config.fingerprint_bytes) else {
                    continue;
                };
                let index = self
                    .remembered
                    .iter()
                    .position(|r| !r.truncated && r.id == id && r.fingerprint.matches(&head));
                if let Some(index) = index {
                    let r = self.remembered.swap_remove(index);
                    tracing::info!(path = %path.display(), was = %r.path, "found a rotated log file by its inode");
                    let candidate = Candidate {
                        path,
                        id,
                        file,
                        size: metadata.len(),
                        mtime: (metadata.mtime(), metadata.mtime_nsec()),
                        head,
                    };
                    self.resume(candidate, r, false, now);
                }
            }
        }
    }

    /// Reads lines, file after file, starting each poll with the next file in turn.
    fn read_lines(&mut self, max_lines: usize, lines: &mut Vec<Line>) {
        let mut order: Vec<(u64, FileId)> = self
            .watched
            .iter_mut()
            .map(|(id, w)| {
                w.at_eof = false;
                (w.order, *id)
            })
            .collect();
        order.sort();
        if order.is_empty() {
            return;
        }
        let start = self.cursor % order.len();
        self.cursor = self.cursor.wrapping_add(1);
        let max_line = self.config.max_line_bytes;
        let fingerprint_bytes = self.config.fingerprint_bytes;
        for index in 0..order.len() {
            let (_, id) = order[(start + index) % order.len()];
            let Some(watched) = self.watched.get_mut(&id) else {
                continue;
            };
            if watched.copy_of.is_some() {
                continue;
            }
            let before = watched.consumed;
            while lines.len() < max_lines {
                match watched.next_line(&mut self.scratch, max_line, fingerprint_bytes) {
                    Ok(Next::Line(bytes, truncated)) => {
                        lines.push(to_line(&watched.path, bytes, truncated, &mut self.stats));
                    }
                    Ok(Next::End) => {
                        watched.at_eof = true;
                        watched.failing = None;
                        break;
                    }
                    Ok(Next::Changed) => break,
                    Err(error) => {
                        note_read_error(
                            &mut watched.failing,
                            &mut self.stats,
                            &watched.path,
                            &error,
                        );
                        break;
                    }
                }
            }
            self.dirty |= watched.consumed != before;
            // Let go of the memory of a long partial line once it is handled.
            if watched.buffer.len() == watched.head && watched.buffer.capacity() > 0 {
                watched.buffer = Vec::new();
                watched.head = 0;
                watched.scanned = 0;
            }
        }
    }

    /// Closes files that no longer match any path, once read to their end and idle for
    /// `rotated_grace`; their positions are remembered. A last line without its newline is
    /// returned then: nobody will finish it.
    fn close_finished(&mut self, max_lines: usize, lines: &mut Vec<Line>, now: Instant) {
        let grace = self.config.rotated_grace;
        let mut finished: Vec<(u64, FileId)> = self
            .watched
            .iter()
            .filter(|(_, w)| {
                !w.present
                    && (w.copy_of.is_some()
                        || (w.at_eof && now.saturating_duration_since(w.last_change) >= grace))
            })
            .map(|(id, w)| (w.order, *id))
            .collect();
        finished.sort();
        for (_, id) in finished {
            let Some(watched) = self.watched.get_mut(&id) else {
                continue;
            };
            if watched.copy_of.is_none() && watched.head < watched.buffer.len() && !watched.skipping
            {
                if lines.len() >= max_lines {
                    continue;
                }
                if let Some(bytes) = watched.take_partial() {
                    lines.push(to_line(&watched.path, bytes, false, &mut self.stats));
                }
            }
            let Some(watched) = self.watched.remove(&id) else {
                continue;
            };
            tracing::debug!(path = %watched.path, "log file gone and read to its end; closed");
            self.dirty = true;
            if watched.copy_of.is_none() {
                let position = watched.remembered(id, unix_now());
                self.release_copies(id, &position);
                self.remember(position);
            }
        }
    }
}

/// Reads the checkpoint file: `None` if there is none (first start).
fn load_checkpoints(path: &Path) -> Result<Option<Vec<Remembered>>, TailError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TailError::ReadCheckpoint {
                path: path.to_owned(),
                source,
            });
        }
    };
    let corrupt = |reason: String| TailError::CorruptCheckpoint {
        path: path.to_owned(),
        reason,
    };
    let version: VersionOnly =
        serde_json::from_slice(&bytes).map_err(|error| corrupt(error.to_string()))?;
    if version.version > CHECKPOINT_VERSION {
        return Err(TailError::CheckpointTooNew {
            path: path.to_owned(),
            version: version.version,
        });
    }
    if version.version != CHECKPOINT_VERSION {
        return Err(corrupt(format!("unknown version {}", version.version)));
    }
    let checkpoint: CheckpointFile =
        serde_json::from_slice(&bytes).map_err(|error| corrupt(error.to_string()))?;
    checkpoint
        .files
        .into_iter()
        .map(|entry| {
            let path = entry.path.clone();
            Remembered::from_entry(entry)
                .ok_or_else(|| corrupt(format!("invalid fingerprint for {path}")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Opens a regular file for reading without ever blocking (a FIFO would block `open`).
fn open_regular(path: &Path) -> io::Result<(File, Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((file, metadata))
}

/// Up to `length` bytes from the start of the file.
fn read_head(file: &File, length: usize) -> io::Result<Vec<u8>> {
    let mut head = vec![0; length];
    let mut filled = 0;
    while filled < length {
        match file.read_at(&mut head[filled..], filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    head.truncate(filled);
    Ok(head)
}

/// Whether two files hold the same bytes in `offset..offset + length`.
fn same_bytes(a: &File, b: &File, offset: u64, length: usize) -> io::Result<bool> {
    let mut left = vec![0; length];
    let mut right = vec![0; length];
    for (file, buffer) in [(a, &mut left), (b, &mut right)] {
        match file.read_exact_at(buffer, offset) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(error) => return Err(error),
        }
    }
    Ok(left == right)
}

/// Whether `copy` holds a prefix of `original`'s content: same first and last blocks.
fn copy_check(copy: &File, original: &Watched) -> CopyCheck {
    let compared = (|| -> io::Result<bool> {
        let copy_size = copy.metadata()?.len();
        let original_size = original.file.metadata()?.len();
        if copy_size > original_size {
            return Ok(false);
        }
        let head = copy_size.min(COMPARE_BLOCK as u64);
        if !same_bytes(copy, &original.file, 0, head as usize)? {
            return Ok(false);
        }
        let tail = (copy_size - head).min(COMPARE_BLOCK as u64);
        same_bytes(copy, &original.file, copy_size - tail, tail as usize)
    })();
    match compared {
        Ok(true) => CopyCheck::Copy,
        Ok(false) if !original_truncated(original) => CopyCheck::NotCopy,
        _ => CopyCheck::Unsure,
    }
}

/// Whether a followed file has been truncated or rewritten since we last looked.
fn original_truncated(original: &Watched) -> bool {
    let Ok(metadata) = original.file.metadata() else {
        return true;
    };
    if metadata.len() < original.read_position() {
        return true;
    }
    match read_head(&original.file, original.fingerprint.len) {
        Ok(head) => !original.fingerprint.matches(&head),
        Err(_) => true,
    }
}

fn note_read_error(
    failing: &mut Option<String>,
    stats: &mut TailStats,
    path: &str,
    error: &io::Error,
) {
    if failing.is_none() {
        *failing = Some(error.to_string());
        stats.errors += 1;
        tracing::warn!(%path, %error, "cannot read log file");
    }
}

/// Turns a line's bytes into a [`Line`], counting it.
fn to_line(path: &Arc<str>, bytes: Vec<u8>, truncated: bool, stats: &mut TailStats) -> Line {
    stats.lines += 1;
    if truncated {
        stats.truncated_lines += 1;
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let utf8 = error.utf8_error();
            if truncated && utf8.error_len().is_none() {
                // Only the cut split a character: drop its first bytes.
                let valid = utf8.valid_up_to();
                let mut bytes = error.into_bytes();
                bytes.truncate(valid);
                String::from_utf8(bytes).unwrap_or_default()
            } else {
                stats.invalid_utf8_lines += 1;
                String::from_utf8_lossy(error.as_bytes()).into_owned()
            }
        }
    };
    Line {
        path: Arc::clone(path),
        text,
        truncated,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}
