//! Group commit: one thread owns the ingest connection to the store and commits every
//! batch that is waiting in one transaction, then answers each batch's ack. Under load
//! this turns thousands of small commits (each an fsync) into a few large ones, without
//! weakening durability: no batch is acknowledged before its transaction is on disk.

use crate::correlate::Event;
use crate::store::{IngestBatch, SqliteStore, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::error;
use vedetta_common::protocol::Ack;

/// Batches waiting for the writer; beyond this, connections wait (backpressure).
const QUEUE: usize = 1024;
/// Signals per transaction, at most (bounds the time a commit holds the write lock).
const MAX_GROUP_SIGNALS: usize = 50_000;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("collector is shutting down")]
    Closed,
    #[error("store failed: {0}")]
    Store(String),
}

struct Job {
    batch: IngestBatch,
    reply: oneshot::Sender<Result<Ack, CommitError>>,
}

/// Cheap to clone; one per connection task.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    queue: mpsc::Sender<Job>,
    busy: Arc<Busy>,
}

/// Since when the writer works on its current group, for the watchdog's liveness check.
#[derive(Debug)]
struct Busy {
    origin: Instant,
    /// Milliseconds after `origin`, plus one, when the group was taken; 0 while idle.
    since_ms: AtomicU64,
}

impl Busy {
    fn start(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.since_ms.store(ms + 1, Ordering::Relaxed);
    }

    fn end(&self) {
        self.since_ms.store(0, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("seq", &self.batch.batch.seq)
            .finish()
    }
}

impl WriterHandle {
    /// Queues `batch` and waits until it is committed.
    pub async fn commit(&self, batch: IngestBatch) -> Result<Ack, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { batch, reply })
            .await
            .map_err(|_| CommitError::Closed)?;
        answer.await.map_err(|_| CommitError::Closed)?
    }

    /// Whether the writer thread still runs: it ends only once every handle is gone, so
    /// while one is held, a stopped writer is one that panicked.
    pub fn is_running(&self) -> bool {
        !self.queue.is_closed()
    }

    /// How long the writer has been committing its current group; `None` while it waits
    /// for work. A commit takes milliseconds to seconds: minutes mean the writer is stuck.
    pub fn busy_for(&self) -> Option<Duration> {
        match self.busy.since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => {
                let taken = self.busy.origin + Duration::from_millis(since - 1);
                Some(taken.elapsed())
            }
        }
    }
}

/// Starts the writer thread. It ends when every handle is dropped, after committing what
/// was already queued. `on_event` hears of every campaign and incident opened or grown,
/// after the commit that made it.
pub fn start(
    mut store: SqliteStore,
    on_event: impl Fn(Event) + Send + 'static,
) -> std::io::Result<(WriterHandle, JoinHandle<()>)> {
    let (queue, mut jobs) = mpsc::channel::<Job>(QUEUE);
    let busy = Arc::new(Busy {
        origin: Instant::now(),
        since_ms: AtomicU64::new(0),
    });
    let marker = Arc::clone(&busy);
    let thread = std::thread::Builder::new()
        .name("ingest-writer".into())
        .spawn(move || {
            while let Some(first) = jobs.blocking_recv() {
                marker.start();
                let mut signals = first.batch.batch.signals.len();
                let mut group = vec![first];
                while signals < MAX_GROUP_SIGNALS {
                    match jobs.try_recv() {
                        Ok(job) => {
                            signals += job.batch.batch.signals.len();
                            group.push(job);
                        }
                        Err(_) => break,
                    }
                }
                let (batches, replies): (Vec<_>, Vec<_>) =
                    group.into_iter().map(|job| (job.batch, job.reply)).unzip();
                match store.ingest(&batches) {
                    Ok(outcome) => {
                        for (reply, ack) in replies.into_iter().zip(outcome.acks) {
                            let _ = reply.send(Ok(ack));
                        }
                        for event in outcome.events {
                            on_event(event);
                        }
                    }
                    Err(failure) => {
                        error!(error = %failure, batches = batches.len(), "commit failed; agents will resend");
                        for reply in replies {
                            let _ = reply.send(Err(CommitError::Store(failure.to_string())));
                        }
                    }
                }
                marker.end();
            }
        })?;
    Ok((WriterHandle { queue, busy }, thread))
}
