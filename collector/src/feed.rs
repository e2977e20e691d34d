//! The advisory feed: how a published advisory reaches every connected agent within a
//! second. The database is the feed (advisories ordered by `seq`); this module only tells
//! the agents' control streams that it moved. A publish through this node's API moves it
//! at once; advisories published by another node sharing the database are noticed by a
//! poll of the highest `seq`.

use crate::ingest::IngestContext;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::warn;
use vedetta_common::shutdown::Shutdown;

/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct AdvisoryFeed {
    latest: Arc<watch::Sender<u64>>,
}

impl AdvisoryFeed {
    pub fn new(latest: u64) -> Self {
        Self {
            latest: Arc::new(watch::Sender::new(latest)),
        }
    }

    /// The highest `seq` known to this node.
    pub fn latest(&self) -> u64 {
        *self.latest.borrow()
    }

    /// Says the feed reached `seq` (never moves it back).
    pub fn advance(&self, seq: u64) {
        self.latest.send_if_modified(|latest| {
            let moved = seq > *latest;
            *latest = (*latest).max(seq);
            moved
        });
    }

    /// Wakes when the feed moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }
}

/// Notices advisories published by other nodes (and by the correlator's automatic
/// advisories, which are committed by the ingest writer).
pub async fn poll(
    feed: AdvisoryFeed,
    context: Arc<IngestContext>,
    every: Duration,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.wait() => return,
        }
        match context.with_store(|store| store.max_advisory_seq()).await {
            Ok(seq) => feed.advance(seq),
            Err(error) => warn!(%error, "cannot read the advisory feed"),
        }
    }
}
