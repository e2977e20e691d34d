//! The agent's state directory: its key (0600, never leaves the host), certificates, the
//! record of its enrollment, the spool, and the lock that keeps two agents off one spool.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};
use vedetta_common::Timestamp;

#[derive(Debug, Clone)]
pub struct StatePaths {
    pub dir: PathBuf,
    pub key: PathBuf,
    pub certificate: PathBuf,
    pub ca_certificate: PathBuf,
    pub enrollment: PathBuf,
    pub spool: PathBuf,
    pub lock: PathBuf,
}

impl StatePaths {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            key: dir.join("agent.key"),
            certificate: dir.join("agent.crt"),
            ca_certificate: dir.join("ca.crt"),
            enrollment: dir.join("enrollment.json"),
            spool: dir.join("spool.db"),
            lock: dir.join("agent.lock"),
        }
    }
}

/// What enrollment established, kept for `run` and `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    pub collector: String,
    pub org: String,
    pub agent_id: String,
    pub ca_fingerprint: String,
    pub enrolled_at: Timestamp,
}

impl Enrollment {
    pub fn load(paths: &StatePaths) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(&paths.enrollment).map_err(|error| {
            anyhow::anyhow!(
                "this agent is not enrolled ({}: {error}); run `vedetta-agent enroll` first",
                paths.enrollment.display()
            )
        })?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// An exclusive lock on the state directory, held while the agent runs.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    pub fn acquire(paths: &StatePaths) -> anyhow::Result<Self> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&paths.lock)?;
        // `status` takes the lock for an instant to see whether an agent runs: retry for
        // a moment before concluding that another agent holds it.
        for _ in 0..20 {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::Error(error)) => return Err(error.into()),
            }
        }
        anyhow::bail!(
            "another vedetta-agent is already running with state directory {}",
            paths.dir.display()
        )
    }

    /// True when a running agent holds the lock (for `status`).
    pub fn is_held(paths: &StatePaths) -> bool {
        let Ok(file) = File::options().write(true).open(&paths.lock) else {
            return false;
        };
        matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
    }
}
