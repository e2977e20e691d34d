//! Writers of one database take turns in the order they arrive.
//!
//! SQLite lets one writer in at a time and makes the others retry (`busy_timeout`). Under
//! sustained ingest the group-commit writer takes the lock again microseconds after each
//! commit, so a connection that retries on a timer (closing quiet campaigns, appending to
//! the audit log, purging) can miss every gap and fail with "database is locked". Inside
//! the collector every write therefore first takes a ticket here: a fair (FIFO) turn per
//! database file, held for the one transaction. Other processes (the admin command line)
//! still rely on `busy_timeout`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

#[derive(Debug, Default)]
struct Tickets {
    next: u64,
    serving: u64,
}

/// The turns of one database.
#[derive(Debug, Default)]
pub struct WriteGate {
    tickets: Mutex<Tickets>,
    turn: Condvar,
}

/// One writer's turn; the next in line goes when it is dropped.
#[derive(Debug)]
pub struct Turn(Arc<WriteGate>);

fn lock(gate: &WriteGate) -> MutexGuard<'_, Tickets> {
    gate.tickets
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
}

impl WriteGate {
    /// The gate of the database at `path`, shared by every connection of this process.
    pub fn of(path: &Path) -> Arc<Self> {
        static GATES: Mutex<BTreeMap<PathBuf, Weak<WriteGate>>> = Mutex::new(BTreeMap::new());
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let mut gates = GATES.lock().unwrap_or_else(|poison| poison.into_inner());
        gates.retain(|_, gate| gate.strong_count() > 0);
        if let Some(gate) = gates.get(&key).and_then(Weak::upgrade) {
            return gate;
        }
        let gate = Arc::new(Self::default());
        gates.insert(key, Arc::downgrade(&gate));
        gate
    }

    /// Waits for this writer's turn.
    pub fn enter(self: &Arc<Self>) -> Turn {
        let mut tickets = lock(self);
        let ticket = tickets.next;
        tickets.next += 1;
        while tickets.serving != ticket {
            tickets = self
                .turn
                .wait(tickets)
                .unwrap_or_else(|poison| poison.into_inner());
        }
        Turn(Arc::clone(self))
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        lock(&self.0).serving += 1;
        self.0.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_taken_in_arrival_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        std::fs::write(&path, b"").expect("file");
        let gate = WriteGate::of(&path);
        assert!(
            Arc::ptr_eq(&gate, &WriteGate::of(&path)),
            "one gate per file"
        );
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = gate.enter();
        let mut waiting = Vec::new();
        for n in 0..4 {
            let (mine, order) = (Arc::clone(&gate), Arc::clone(&order));
            waiting.push(std::thread::spawn(move || {
                let _turn = mine.enter();
                order.lock().expect("order").push(n);
            }));
            // Each thread takes its ticket before the next starts.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while lock(&gate).next != n + 2 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "thread {n} took no ticket"
                );
                std::thread::yield_now();
            }
        }
        drop(first);
        for thread in waiting {
            thread.join().expect("thread");
        }
        assert_eq!(*order.lock().expect("order"), [0, 1, 2, 3]);
    }
}
