//! Looking at files: one entry's state ([`inspect`]: metadata, SHA-256, entropy), and a
//! subtree compared with the baseline ([`reconcile`]): a sorted walk merged with the
//! baseline's sorted rows, the hashing spread over a few low-priority threads.

use super::baseline::{Baseline, BaselineError, EntryKind, FileState, key};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// The entropy of a file is measured on its first bytes: enough to tell text from
/// ciphertext (the estimate of random bytes is off by 0.01 bit at this size), cheap for
/// huge files.
pub const ENTROPY_SAMPLE: usize = 16 * 1024;
/// Below this many bytes an entropy estimate is too noisy to mean anything.
pub const ENTROPY_MIN_BYTES: u64 = 512;
const READ_BUFFER: usize = 256 * 1024;

/// How to look at files.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Regular files larger than this are not hashed (metadata only).
    pub hash_max_bytes: u64,
    /// Threads hashing at once during a scan.
    pub hash_threads: usize,
    /// Paths (and everything under them) that are not looked at.
    pub excludes: Vec<glob::Pattern>,
    /// Stay on the file system of each root (never wander into /proc or a mount).
    pub one_file_system: bool,
    /// Hash at the lowest CPU and I/O priority (full scans; not live changes).
    pub background: bool,
    /// Set when the scan should stop early (the agent is shutting down).
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl ScanOptions {
    pub fn excluded(&self, path: &Path) -> bool {
        crate::detect::files::matches_any(&self.excludes, path)
    }
}

/// Shannon entropy in bits per byte of the byte counts in `histogram`.
pub fn entropy(histogram: &[u64; 256]) -> f32 {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let total = total as f64;
    let bits: f64 = histogram
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let p = count as f64 / total;
            -p * p.log2()
        })
        .sum();
    bits as f32
}

/// Adds the bytes of `bytes` to `histogram`. Four interleaved tables, so that runs of
/// one byte value (text is full of them) do not wait on the same counter.
fn count_bytes(bytes: &[u8], histogram: &mut [u64; 256]) {
    let mut tables = [[0u32; 256]; 4];
    let mut quads = bytes.chunks_exact(4);
    for quad in &mut quads {
        tables[0][usize::from(quad[0])] += 1;
        tables[1][usize::from(quad[1])] += 1;
        tables[2][usize::from(quad[2])] += 1;
        tables[3][usize::from(quad[3])] += 1;
    }
    for &byte in quads.remainder() {
        tables[0][usize::from(byte)] += 1;
    }
    for (value, total) in histogram.iter_mut().enumerate() {
        *total += tables
            .iter()
            .map(|table| u64::from(table[value]))
            .sum::<u64>();
    }
}

fn nanos(seconds: i64, nanos: i64) -> i64 {
    seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// The metadata part of an entry's state (no content read).
fn metadata_state(metadata: &std::fs::Metadata) -> FileState {
    let file_type = metadata.file_type();
    let kind = if file_type.is_file() {
        EntryKind::File
    } else if file_type.is_dir() {
        EntryKind::Directory
    } else if file_type.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Other
    };
    FileState {
        kind,
        size: metadata.size(),
        mtime: nanos(metadata.mtime(), metadata.mtime_nsec()),
        ctime: nanos(metadata.ctime(), metadata.ctime_nsec()),
        mode: metadata.mode() & 0o7777,
        uid: metadata.uid(),
        gid: metadata.gid(),
        inode: metadata.ino(),
        sha256: None,
        entropy: None,
        target: None,
    }
}

/// Opens a regular file for reading, safely: without following a link in its last
/// component, without blocking (a file swapped for a FIFO must not hang us), and only if
/// the file opened is the one at `path` itself. The kernel's name for the open file
/// (`/proc/self/fd/N`) must be `path`: a directory of the path swapped for a link between
/// the listing and the open (to make us read and hash `/etc/shadow` as a file in `/tmp`)
/// shows there. The watched roots are canonical and links are never followed, so every
/// path we open is its own canonical name.
pub fn open_checked(path: &Path) -> std::io::Result<std::fs::File> {
    use nix::fcntl::OFlag;
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    if opened != path {
        return Err(std::io::Error::other(format!(
            "{} led to {}: a directory was replaced by a link",
            path.display(),
            opened.display()
        )));
    }
    Ok(file)
}

/// Hashes a regular file, and measures the entropy of its first bytes. Reads at most
/// the size seen when it was listed (a file grown to a petabyte meanwhile must not keep
/// us reading), and refuses the result if the file changed while it was read.
fn read_content(
    path: &Path,
    state: &FileState,
    hash_max_bytes: u64,
    buffer: &mut Vec<u8>,
) -> std::io::Result<(Option<[u8; 32]>, Option<f32>)> {
    let file = open_checked(path)?;
    let opened = file.metadata()?;
    if opened.ino() != state.inode {
        return Err(std::io::Error::other("replaced while being read"));
    }
    let hash = state.size <= hash_max_bytes;
    let limit = if hash {
        state.size
    } else {
        ENTROPY_SAMPLE as u64
    };
    buffer.resize(READ_BUFFER, 0);
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut histogram = [0u64; 256];
    let mut sampled = 0usize;
    let mut reader = (&file).take(limit);
    loop {
        let read = match reader.read(buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        let chunk = &buffer[..read];
        if sampled < ENTROPY_SAMPLE {
            let take = (ENTROPY_SAMPLE - sampled).min(read);
            count_bytes(&chunk[..take], &mut histogram);
            sampled += take;
        }
        if hash {
            digest.update(chunk);
        }
    }
    let after = file.metadata()?;
    let moved = |m: &std::fs::Metadata| (m.size(), m.mtime(), m.mtime_nsec(), m.ctime_nsec());
    if moved(&after) != moved(&opened) || after.size() != state.size {
        return Err(std::io::Error::other("changed while being read"));
    }
    let entropy = (sampled as u64 >= ENTROPY_MIN_BYTES).then(|| entropy(&histogram));
    let sha256 = hash.then(|| {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.finish().as_ref());
        out
    });
    Ok((sha256, entropy))
}

/// What an entry looks like now. The content is read only when the metadata says it may
/// have changed since `previous`; when it cannot be read, it is left unknown.
pub fn inspect(
    path: &Path,
    metadata: &std::fs::Metadata,
    previous: Option<&FileState>,
    hash_max_bytes: u64,
    buffer: &mut Vec<u8>,
) -> (FileState, Option<std::io::Error>) {
    let mut state = metadata_state(metadata);
    match state.kind {
        EntryKind::File => {
            if let Some(previous) = previous
                && !state.may_differ_from(previous)
                && (previous.sha256.is_some() || state.size > hash_max_bytes)
            {
                state.sha256 = previous.sha256;
                state.entropy = previous.entropy;
                return (state, None);
            }
            match read_content(path, &state, hash_max_bytes, buffer) {
                Ok((sha256, entropy)) => {
                    state.sha256 = sha256;
                    state.entropy = entropy;
                }
                // Unknown content: read again at the next look (the metadata differs
                // from what was known, so keeping the old hash would hide a change).
                Err(error) => return (state, Some(error)),
            }
        }
        EntryKind::Symlink => match std::fs::read_link(path) {
            Ok(target) => {
                use std::os::unix::ffi::OsStringExt;
                state.target = Some(target.into_os_string().into_vec());
            }
            Err(error) => return (state, Some(error)),
        },
        EntryKind::Directory | EntryKind::Other => {}
    }
    (state, None)
}

/// An entry that is not what the baseline says: created (`before` is `None`), deleted
/// (`after` is `None`) or different.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub path: PathBuf,
    pub before: Option<FileState>,
    pub after: Option<FileState>,
}

/// Figures about a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScanStats {
    pub entries: u64,
    pub hashed_bytes: u64,
    /// Directories that could not be listed and files that could not be read.
    pub unreadable: u64,
}

/// A sorted walk that remembers which directories it could not list.
type Filter = Box<dyn FnMut(&walkdir::DirEntry) -> bool + Send>;

struct SortedWalk {
    inner: walkdir::FilterEntry<walkdir::IntoIter, Filter>,
    peeked: Option<(Vec<u8>, walkdir::DirEntry)>,
    /// Directories whose content is unknown: baseline rows under them are kept.
    unreadable: Vec<PathBuf>,
    /// An error without a path: deletions cannot be trusted.
    incomplete: bool,
    errors: u64,
}

impl SortedWalk {
    fn new(root: &Path, options: &ScanOptions) -> Self {
        let excludes = options.clone();
        let filter: Filter = Box::new(move |entry| !excludes.excluded(entry.path()));
        let inner = walkdir::WalkDir::new(root)
            .follow_links(false)
            .follow_root_links(false)
            .same_file_system(options.one_file_system)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(filter);
        Self {
            inner,
            peeked: None,
            unreadable: Vec::new(),
            incomplete: false,
            errors: 0,
        }
    }

    fn peek(&mut self) -> Option<&(Vec<u8>, walkdir::DirEntry)> {
        while self.peeked.is_none() {
            match self.inner.next()? {
                Ok(entry) => self.peeked = Some((key(entry.path()), entry)),
                Err(error) => {
                    let missing = error
                        .io_error()
                        .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound);
                    if !missing {
                        self.errors += 1;
                        match error.path() {
                            Some(path) => self.unreadable.push(path.to_path_buf()),
                            // A listing that failed midway names no directory: nothing
                            // missing from this walk can be taken for deleted.
                            None => self.incomplete = true,
                        }
                    }
                }
            }
        }
        self.peeked.as_ref()
    }

    fn take(&mut self) -> Option<(Vec<u8>, walkdir::DirEntry)> {
        self.peek();
        self.peeked.take()
    }

    fn is_unknown(&self, path: &Path) -> bool {
        self.incomplete || self.unreadable.iter().any(|dir| path.starts_with(dir))
    }
}

/// An entry whose content must be read.
struct Job {
    path: PathBuf,
    metadata: std::fs::Metadata,
    previous: Option<FileState>,
}

/// Entries travel between threads in groups of this many: one hand-over per file would
/// cost more than looking at a small file.
const GROUP: usize = 64;

/// What a hashing thread or the merge found about one entry.
struct Outcome {
    observation: Observation,
    unreadable: bool,
    hashed_bytes: u64,
}

/// A group of outcomes, and how many entries they stand for (unchanged entries are
/// counted, not sent).
#[derive(Default)]
struct Results {
    outcomes: Vec<Outcome>,
    entries: u64,
}

impl Results {
    fn push(&mut self, outcome: Outcome) {
        self.entries += 1;
        if outcome.observation.before != outcome.observation.after || outcome.unreadable {
            self.outcomes.push(outcome);
        }
    }

    fn is_full(&self) -> bool {
        self.entries as usize >= GROUP
    }
}

/// Compares `root` (a file, or a directory and everything under it) with the baseline
/// read through `reader`, calling `observe` for every entry that differs. The baseline
/// is not written here: the caller records what it observed.
///
/// A merge thread walks and compares; entries whose metadata changed (or new ones) go,
/// in groups, to `hash_threads` threads that read their content; this thread takes the
/// results. Every queue is bounded: a slow consumer, or a deleted tree of a million
/// files, makes the scan wait, never grow.
pub fn reconcile(
    root: &Path,
    reader: &mut Baseline,
    options: &ScanOptions,
    observe: &mut dyn FnMut(Observation),
) -> Result<ScanStats, BaselineError> {
    let threads = options.hash_threads.max(1);
    let (jobs, job_queue) = mpsc::sync_channel::<Vec<Job>>(threads * 4);
    let job_queue = std::sync::Mutex::new(job_queue);
    let (results, received) = mpsc::sync_channel::<Results>(64);
    let mut stats = ScanStats::default();
    std::thread::scope(|scope| -> Result<(), BaselineError> {
        for _ in 0..threads {
            let (job_queue, results) = (&job_queue, results.clone());
            let (hash_max_bytes, background) = (options.hash_max_bytes, options.background);
            scope.spawn(move || hash_jobs(job_queue, results, hash_max_bytes, background));
        }
        let merge = scope.spawn(move || merge(root, reader, options, jobs, results));
        for group in received {
            stats.entries += group.entries;
            for outcome in group.outcomes {
                stats.hashed_bytes += outcome.hashed_bytes;
                stats.unreadable += u64::from(outcome.unreadable);
                if outcome.observation.before != outcome.observation.after {
                    observe(outcome.observation);
                }
            }
        }
        let unlisted = merge
            .join()
            .map_err(|_| BaselineError::Walk("the scan thread failed".into()))??;
        stats.unreadable += unlisted;
        Ok(())
    })?;
    Ok(stats)
}

/// A hashing thread: reads entries' content until the queue closes.
fn hash_jobs(
    queue: &std::sync::Mutex<mpsc::Receiver<Vec<Job>>>,
    results: mpsc::SyncSender<Results>,
    hash_max_bytes: u64,
    background: bool,
) {
    if background {
        lower_priority();
    }
    let mut buffer = Vec::new();
    loop {
        let group = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(group) = group else { return };
        let mut out = Results::default();
        for job in group {
            let (after, error) = inspect(
                &job.path,
                &job.metadata,
                job.previous.as_ref(),
                hash_max_bytes,
                &mut buffer,
            );
            let hashed = after.sha256.is_some()
                && job
                    .previous
                    .as_ref()
                    .is_none_or(|previous| after.may_differ_from(previous));
            out.push(Outcome {
                hashed_bytes: if hashed { after.size } else { 0 },
                unreadable: error.is_some(),
                observation: Observation {
                    path: job.path,
                    before: job.previous,
                    after: Some(after),
                },
            });
        }
        if results.send(out).is_err() {
            return;
        }
    }
}

/// Merges the sorted walk of `root` with the baseline's sorted rows: entries whose
/// content must be read go to the hashing threads, the others are compared here, and
/// rows no longer on disk are reported gone. Returns how many directories could not be
/// listed.
fn merge(
    root: &Path,
    reader: &mut Baseline,
    options: &ScanOptions,
    jobs: mpsc::SyncSender<Vec<Job>>,
    results: mpsc::SyncSender<Results>,
) -> Result<u64, BaselineError> {
    let mut walk = SortedWalk::new(root, options);
    let mut pending: Vec<Job> = Vec::with_capacity(GROUP);
    let mut local = Results::default();
    let mut buffer = Vec::new();
    let mut submit =
        |entry: Option<walkdir::DirEntry>, previous: Option<FileState>, gone: Option<PathBuf>| {
            if let Some(path) = gone {
                local.push(Outcome {
                    observation: Observation {
                        path,
                        before: previous,
                        after: None,
                    },
                    unreadable: false,
                    hashed_bytes: 0,
                });
            } else if let Some(entry) = entry {
                let path = entry.into_path();
                // Gone between the listing and now: as if never listed.
                if let Ok(metadata) = std::fs::symlink_metadata(&path) {
                    let unchanged = previous.as_ref().is_some_and(|previous| {
                        metadata.is_file()
                            && previous.sha256.is_some()
                            && !metadata_state(&metadata).may_differ_from(previous)
                    });
                    if unchanged || !metadata.is_file() {
                        // No content to read: compared here.
                        let (after, error) = inspect(
                            &path,
                            &metadata,
                            previous.as_ref(),
                            options.hash_max_bytes,
                            &mut buffer,
                        );
                        local.push(Outcome {
                            unreadable: error.is_some(),
                            observation: Observation {
                                path,
                                before: previous,
                                after: Some(after),
                            },
                            hashed_bytes: 0,
                        });
                    } else {
                        pending.push(Job {
                            path,
                            metadata,
                            previous,
                        });
                    }
                }
            }
            if pending.len() >= GROUP {
                let _ = jobs.send(std::mem::replace(&mut pending, Vec::with_capacity(GROUP)));
            }
            if local.is_full() {
                let _ = results.send(std::mem::take(&mut local));
            }
        };
    let cancelled = || {
        options
            .cancel
            .as_ref()
            .is_some_and(|cancel| cancel.load(std::sync::atomic::Ordering::Relaxed))
    };
    reader.for_each_under(root, &mut |path, previous| {
        if cancelled() {
            return Err(BaselineError::Walk("stopped".into()));
        }
        let row_key = key(&path);
        while walk.peek().is_some_and(|(walk_key, _)| *walk_key < row_key) {
            if let Some((_, entry)) = walk.take() {
                submit(Some(entry), None, None);
            }
        }
        if walk
            .peek()
            .is_some_and(|(walk_key, _)| *walk_key == row_key)
        {
            if let Some((_, entry)) = walk.take() {
                submit(Some(entry), Some(previous), None);
            }
        } else if !walk.is_unknown(&path) {
            submit(None, Some(previous), Some(path));
        }
        Ok(())
    })?;
    while let Some((_, entry)) = walk.take() {
        if cancelled() {
            return Err(BaselineError::Walk("stopped".into()));
        }
        submit(Some(entry), None, None);
    }
    // (`submit`'s borrows of the groups end here.)
    if !pending.is_empty() {
        let _ = jobs.send(pending);
    }
    if local.entries > 0 {
        let _ = results.send(local);
    }
    Ok(walk.errors)
}

/// Hashing is background work: the lowest CPU priority for this thread, which on Linux
/// also gives it the lowest best-effort I/O priority (ioprio follows the nice value
/// unless set), so that a scan never starves the host's own work.
fn lower_priority() {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(hash_max_bytes: u64) -> ScanOptions {
        ScanOptions {
            hash_max_bytes,
            hash_threads: 2,
            excludes: vec![glob::Pattern::new("**/skip/**").expect("pattern")],
            one_file_system: true,
            background: true,
            cancel: None,
        }
    }

    /// Reconciles `root` with `baseline`, records the result, and returns what differed.
    fn scan(root: &Path, baseline: &mut Baseline, options: &ScanOptions) -> Vec<Observation> {
        let mut seen = Vec::new();
        reconcile(root, baseline, options, &mut |o| seen.push(o)).expect("reconcile");
        let updates: Vec<_> = seen
            .iter()
            .map(|o| (o.path.clone(), o.after.clone()))
            .collect();
        baseline.apply(&updates).expect("apply");
        seen
    }

    #[test]
    fn large_files_are_tracked_by_metadata_and_entropy_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("skip")).expect("dirs");
        std::fs::write(root.join("small"), "hello\n".repeat(200)).expect("small");
        std::fs::write(root.join("big"), vec![b'a'; 100_000]).expect("big");
        std::fs::write(root.join("skip/ignored"), "x").expect("skipped");
        let mut baseline = Baseline::open(&dir.path().join("b.db")).expect("open");
        let options = options(50_000);
        let first = scan(&root, &mut baseline, &options);
        let state = |name: &str| {
            first
                .iter()
                .find(|o| o.path.ends_with(name))
                .and_then(|o| o.after.clone())
                .expect(name)
        };
        assert!(state("small").sha256.is_some());
        let big = state("big");
        assert_eq!(big.sha256, None, "over the cap: not hashed");
        assert!(big.entropy.is_some_and(|e| e < 0.01), "{big:?}");
        assert!(
            first.iter().all(|o| !o.path.ends_with("ignored")),
            "excluded"
        );

        // Unchanged: nothing to report. A same-size rewrite of the big file is seen by its
        // times, and reported with its new metadata.
        assert!(scan(&root, &mut baseline, &options).is_empty());
        std::fs::write(root.join("big"), vec![b'b'; 100_000]).expect("rewrite");
        std::fs::write(root.join("small"), "changed\n").expect("rewrite");
        let second = scan(&root, &mut baseline, &options);
        let paths: Vec<_> = second.iter().map(|o| o.path.clone()).collect();
        assert!(paths.contains(&root.join("big")) && paths.contains(&root.join("small")));
        // A deleted file is reported gone once; an excluded directory's content never.
        std::fs::remove_dir_all(root.join("skip")).expect("rm");
        std::fs::remove_file(root.join("small")).expect("rm");
        let third = scan(&root, &mut baseline, &options);
        let files: Vec<_> = third
            .iter()
            .filter(|o| o.before.as_ref().is_some_and(|b| b.kind == EntryKind::File))
            .collect();
        assert_eq!(files.len(), 1, "{third:?}");
        assert_eq!(files[0].path, root.join("small"));
        assert!(files[0].after.is_none());
    }

    #[test]
    fn a_file_reached_through_a_linked_directory_is_not_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("dir");
        std::fs::write(real.join("shadow"), "secret\n").expect("file");
        std::os::unix::fs::symlink(&real, dir.path().join("swapped")).expect("link");
        assert!(open_checked(&real.join("shadow")).is_ok());
        let error = open_checked(&dir.path().join("swapped/shadow")).expect_err("refused");
        assert!(error.to_string().contains("replaced by a link"), "{error}");
        // A FIFO is not read (nor waited on).
        let fifo = dir.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
        assert!(open_checked(&fifo).is_err());
    }

    #[test]
    fn entropy_tells_text_from_random_bytes() {
        let mut histogram = [0u64; 256];
        count_bytes(
            "the quick brown fox jumps over the lazy dog "
                .repeat(100)
                .as_bytes(),
            &mut histogram,
        );
        assert!(entropy(&histogram) < 4.5);
        let mut histogram = [0u64; 256];
        let random: Vec<u8> = (0..16_384u32)
            .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        count_bytes(&random, &mut histogram);
        assert!(entropy(&histogram) > 7.5, "{}", entropy(&histogram));
    }
}
