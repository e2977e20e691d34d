//! The file-integrity baseline: what every watched file looked like when last seen, kept
//! in an SQLite database in the state directory so that changes made while the agent was
//! stopped are found at the next start.
//!
//! Rows are keyed by the path's bytes with each `/` replaced by a zero byte. Zero sorts
//! before every byte a file name can hold, so the keys of a directory's entries follow
//! the directory and precede its next sibling: the baseline read in key order is the
//! order of a depth-first walk that visits each directory's entries sorted by name. A
//! rescan is then a merge of two sorted streams, whatever the number of files, without
//! holding either in memory.

use rusqlite::{Connection, OptionalExtension, params};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Version of the baseline's schema, in SQLite's `user_version`.
const SCHEMA_VERSION: i64 = 1;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    /// Sockets, pipes, devices: tracked for their metadata only.
    Other,
}

impl EntryKind {
    fn code(self) -> i64 {
        match self {
            Self::File => 0,
            Self::Directory => 1,
            Self::Symlink => 2,
            Self::Other => 3,
        }
    }

    fn from_code(code: i64) -> Self {
        match code {
            0 => Self::File,
            1 => Self::Directory,
            2 => Self::Symlink,
            _ => Self::Other,
        }
    }
}

/// What is known of one entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FileState {
    pub kind: EntryKind,
    pub size: u64,
    /// Modification and status-change times, nanoseconds since the epoch.
    pub mtime: i64,
    pub ctime: i64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub inode: u64,
    /// SHA-256 of the content (regular files up to the hashing cap, when readable).
    pub sha256: Option<[u8; 32]>,
    /// Shannon entropy of the first bytes, in bits per byte (regular files of at least
    /// `entropy::MIN_BYTES`, when readable).
    pub entropy: Option<f32>,
    /// Where a symbolic link points.
    pub target: Option<Vec<u8>>,
}

impl FileState {
    /// Whether the metadata says the content may have changed (so it must be hashed
    /// again). A content change always moves `ctime`, which no user can set back.
    pub fn may_differ_from(&self, other: &FileState) -> bool {
        self.kind != other.kind
            || self.size != other.size
            || self.mtime != other.mtime
            || self.ctime != other.ctime
            || self.inode != other.inode
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("file baseline database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("file scan failed: {0}")]
    Walk(String),
    #[error(
        "file baseline schema version {0} is newer than this agent knows ({SCHEMA_VERSION}); upgrade the agent"
    )]
    TooNew(i64),
}

/// The key of `path` (see the module documentation).
pub fn key(path: &Path) -> Vec<u8> {
    path.as_os_str()
        .as_bytes()
        .iter()
        .map(|&byte| if byte == b'/' { 0 } else { byte })
        .collect()
}

/// The path of `key`.
pub fn path_of(key: &[u8]) -> PathBuf {
    let bytes: Vec<u8> = key
        .iter()
        .map(|&byte| if byte == 0 { b'/' } else { byte })
        .collect();
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

/// The baseline database.
#[derive(Debug)]
pub struct Baseline {
    connection: Connection,
}

const COLUMNS: &str =
    "key, kind, size, mtime, ctime, mode, uid, gid, inode, sha256, entropy, target";

fn row_state(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Vec<u8>, FileState)> {
    let sha256: Option<Vec<u8>> = row.get(9)?;
    Ok((
        row.get(0)?,
        FileState {
            kind: EntryKind::from_code(row.get(1)?),
            size: row.get::<_, i64>(2)?.max(0) as u64,
            mtime: row.get(3)?,
            ctime: row.get(4)?,
            mode: row.get(5)?,
            uid: row.get(6)?,
            gid: row.get(7)?,
            inode: row.get::<_, i64>(8)? as u64,
            sha256: sha256.and_then(|bytes| bytes.try_into().ok()),
            entropy: row.get::<_, Option<f64>>(10)?.map(|e| e as f32),
            target: row.get(11)?,
        },
    ))
}

impl Baseline {
    /// Opens (creating) the baseline at `path`, 0600.
    pub fn open(path: &Path) -> Result<Self, BaselineError> {
        let connection = Connection::open(path)?;
        // Paths and hashes of the member's files: for the agent only.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).ok();
        connection.busy_timeout(std::time::Duration::from_secs(10))?;
        // The baseline can always be rebuilt: durability on power loss is not worth an
        // fsync per change.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        // A full scan keeps a read open for its length, so the log grows meanwhile: it is
        // cut back after each scan (see `checkpoint`).
        connection.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024)?;
        let version: i64 = connection.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(BaselineError::TooNew(version));
        }
        if version < 1 {
            connection.execute_batch(
                "CREATE TABLE IF NOT EXISTS files (
                    key BLOB PRIMARY KEY,
                    kind INTEGER NOT NULL,
                    size INTEGER NOT NULL,
                    mtime INTEGER NOT NULL,
                    ctime INTEGER NOT NULL,
                    mode INTEGER NOT NULL,
                    uid INTEGER NOT NULL,
                    gid INTEGER NOT NULL,
                    inode INTEGER NOT NULL,
                    sha256 BLOB,
                    entropy REAL,
                    target BLOB
                 ) WITHOUT ROWID;
                 CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
                 PRAGMA user_version = 1;",
            )?;
        }
        Ok(Self { connection })
    }

    /// Whether a complete baseline was built (else the next scan builds it silently).
    pub fn is_built(&self, roots: &str) -> Result<bool, BaselineError> {
        let value: Option<String> = self
            .connection
            .query_row("SELECT value FROM meta WHERE name = 'roots'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(value.as_deref() == Some(roots))
    }

    /// Records that the baseline covers `roots` (the watched roots and excludes, so that
    /// a changed configuration builds a new baseline instead of reporting every file).
    pub fn mark_built(&self, roots: &str) -> Result<(), BaselineError> {
        self.connection.execute(
            "INSERT INTO meta (name, value) VALUES ('roots', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [roots],
        )?;
        Ok(())
    }

    /// Forgets everything (before building a new baseline).
    pub fn clear(&self) -> Result<(), BaselineError> {
        self.connection
            .execute_batch("DELETE FROM files; DELETE FROM meta;")?;
        Ok(())
    }

    pub fn get(&self, path: &Path) -> Result<Option<FileState>, BaselineError> {
        let mut statement = self
            .connection
            .prepare_cached(&format!("SELECT {COLUMNS} FROM files WHERE key = ?1"))?;
        Ok(statement
            .query_row([key(path)], row_state)
            .optional()?
            .map(|(_, state)| state))
    }

    /// Visits `root` and every entry under it, in key order.
    pub fn for_each_under(
        &self,
        root: &Path,
        visit: &mut dyn FnMut(PathBuf, FileState) -> Result<(), BaselineError>,
    ) -> Result<(), BaselineError> {
        let exact = key(root);
        // The entries under `root` are its key, a zero byte, then more. The key of `/`
        // already ends with that zero byte.
        let mut prefix = exact.clone();
        if prefix.last() == Some(&0) {
            prefix.pop();
        }
        let mut low = prefix.clone();
        low.push(0);
        let mut high = prefix;
        high.push(1);
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM files WHERE key = ?1 OR (key > ?2 AND key < ?3) ORDER BY key"
        ))?;
        let mut rows = statement.query(params![exact, low, high])?;
        while let Some(row) = rows.next()? {
            let (key, state) = row_state(row)?;
            visit(path_of(&key), state)?;
        }
        Ok(())
    }

    /// Folds the write-ahead log into the database and truncates it (after a scan).
    pub fn checkpoint(&self) -> Result<(), BaselineError> {
        self.connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    pub fn count(&self) -> Result<u64, BaselineError> {
        Ok(self
            .connection
            .query_row("SELECT count(*) FROM files", [], |r| r.get::<_, i64>(0))?
            .max(0) as u64)
    }

    /// Applies a group of updates in one transaction (`None` deletes).
    pub fn apply(&mut self, updates: &[(PathBuf, Option<FileState>)]) -> Result<(), BaselineError> {
        let transaction = self.connection.transaction()?;
        {
            let mut put = transaction.prepare_cached(&format!(
                "INSERT OR REPLACE INTO files ({COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))?;
            let mut delete = transaction.prepare_cached("DELETE FROM files WHERE key = ?1")?;
            for (path, state) in updates {
                match state {
                    Some(s) => {
                        put.execute(params![
                            key(path),
                            s.kind.code(),
                            i64::try_from(s.size).unwrap_or(i64::MAX),
                            s.mtime,
                            s.ctime,
                            s.mode,
                            s.uid,
                            s.gid,
                            s.inode as i64,
                            s.sha256.as_ref().map(|h| h.as_slice()),
                            s.entropy.map(f64::from),
                            s.target,
                        ])?;
                    }
                    None => {
                        delete.execute([key(path)])?;
                    }
                }
            }
        }
        transaction.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(size: u64) -> FileState {
        FileState {
            kind: EntryKind::File,
            size,
            mtime: 1,
            ctime: 2,
            mode: 0o644,
            uid: 0,
            gid: 0,
            inode: 7,
            sha256: Some([9; 32]),
            entropy: Some(4.5),
            target: None,
        }
    }

    #[test]
    fn keys_sort_in_walk_order_and_subtrees_are_contiguous() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut baseline = Baseline::open(&dir.path().join("b.db")).expect("open");
        let paths = [
            "/r/a.txt", "/r/a/x", "/r/a/y/z", "/r/ab", "/r/b", "/r", "/s",
        ];
        let updates: Vec<_> = paths
            .iter()
            .enumerate()
            .map(|(n, p)| (PathBuf::from(p), Some(state(n as u64))))
            .collect();
        baseline.apply(&updates).expect("apply");
        let mut seen = Vec::new();
        baseline
            .for_each_under(Path::new("/r"), &mut |path, _| {
                seen.push(path.display().to_string());
                Ok(())
            })
            .expect("walk");
        // A depth-first walk with names sorted: "a" and everything under it come before
        // "a.txt", which comes before "ab".
        assert_eq!(
            seen,
            ["/r", "/r/a/x", "/r/a/y/z", "/r/a.txt", "/r/ab", "/r/b"]
        );
        let mut under_a = Vec::new();
        baseline
            .for_each_under(Path::new("/r/a"), &mut |path, _| {
                under_a.push(path.display().to_string());
                Ok(())
            })
            .expect("walk");
        assert_eq!(under_a, ["/r/a/x", "/r/a/y/z"]);
        assert_eq!(
            baseline.get(Path::new("/r/ab")).expect("get"),
            Some(state(3))
        );
        baseline
            .apply(&[(PathBuf::from("/r/ab"), None)])
            .expect("delete");
        assert_eq!(baseline.get(Path::new("/r/ab")).expect("get"), None);
        assert_eq!(baseline.count().expect("count"), 6);
    }

    #[test]
    fn the_root_of_the_file_system_covers_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut baseline = Baseline::open(&dir.path().join("b.db")).expect("open");
        let updates: Vec<_> = ["/", "/etc", "/etc/passwd", "/usr/bin/ls"]
            .iter()
            .map(|p| (PathBuf::from(p), Some(state(1))))
            .collect();
        baseline.apply(&updates).expect("apply");
        let mut seen = Vec::new();
        baseline
            .for_each_under(Path::new("/"), &mut |path, _| {
                seen.push(path.display().to_string());
                Ok(())
            })
            .expect("walk");
        assert_eq!(seen, ["/", "/etc", "/etc/passwd", "/usr/bin/ls"]);
    }

    #[test]
    fn non_utf8_names_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut baseline = Baseline::open(&dir.path().join("b.db")).expect("open");
        let name = PathBuf::from(std::ffi::OsString::from_vec(b"/r/caf\xe9".to_vec()));
        baseline
            .apply(&[(name.clone(), Some(state(1)))])
            .expect("apply");
        assert_eq!(baseline.get(&name).expect("get"), Some(state(1)));
    }
}
