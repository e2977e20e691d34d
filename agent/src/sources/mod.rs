//! Where the agent's observations come from. Each source turns what it watches into
//! events for the detectors: log files and their formats (`logs`), the systemd journal
//! (`journald`), watched files (`files`), packets (`network`) and processes (`host`).
//! Each runs on a thread of its own until the agent's stop flag is set.

pub mod files;
pub mod host;
pub mod journald;
pub mod logs;
pub mod network;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Waits `total` (a backoff, the time to the next look), returning early once `stop` is
/// set, so that a source thread never delays the agent's shutdown by more than 100 ms.
pub fn sleep_unless_stopped(stop: &AtomicBool, total: Duration) {
    let until = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}
