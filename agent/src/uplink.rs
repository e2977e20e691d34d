//! The uplink: one QUIC connection to the collector, kept up with exponential backoff and
//! jitter. On each connection it says hello, heartbeats, resends the batches the
//! collector has not acknowledged yet (same numbers, same content), then sends new ones,
//! a bounded number at a time. A batch leaves the spool only when its ack arrives.
//!
//! On shutdown it keeps delivering for a grace period, then closes the connection and
//! waits for the endpoint to go idle; whatever is left stays in the spool for next time.
//!
//! Advisories arrive on the control stream. Hello names the highest sequence number
//! held, so that the collector sends only what was missed; each frame is merged into
//! the pushed advisories file on a blocking thread (frames that arrived meanwhile are
//! merged together, so a catch-up of thousands rewrites the file a few times, not once
//! a frame), and every source picks the file up from there.

use crate::config::UplinkSection;
use crate::health::{AGENT_VERSION, Health};
use crate::spool::{Spool, SpooledBatch};
use crate::tls;
use quinn::{Connection, ConnectionError};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use vedetta_common::Timestamp;
use vedetta_common::codec::{self, MAX_BATCH_FRAME, MAX_CONTROL_FRAME};
use vedetta_common::files::write_atomic;
use vedetta_common::identity::SERVER_NAME;
use vedetta_common::protocol::{Ack, Advisories, Batch, ErrorCode, Hello, Message};
use vedetta_common::shutdown::Shutdown;

/// How long to wait for the collector's answer to hello or to a batch.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the spool is looked at for signals pushed by another process (`emit`).
const SPOOL_POLL: Duration = Duration::from_secs(1);
/// Advisory frames waiting to be merged (the reader waits beyond: QUIC flow control
/// then slows the collector down).
const ADVISORY_FRAMES: usize = 64;
/// How long a connection's end waits for the advisories it received to be written.
const ADVISORY_FLUSH: Duration = Duration::from_secs(10);

/// The spool shared by the tasks of one process.
pub type SharedSpool = Arc<Mutex<Spool>>;

/// Runs `work` on the spool on a blocking thread.
pub async fn with_spool<T: Send + 'static>(
    spool: &SharedSpool,
    work: impl FnOnce(&mut Spool) -> Result<T, crate::spool::SpoolError> + Send + 'static,
) -> Result<T, String> {
    let spool = Arc::clone(spool);
    tokio::task::spawn_blocking(move || {
        let mut spool = spool.lock().unwrap_or_else(|p| p.into_inner());
        work(&mut spool).map_err(|error| error.to_string())
    })
    .await
    .map_err(|error| error.to_string())?
}

/// What `status` reads about the connection.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct UplinkStatus {
    pub state: String,
    pub since: Option<Timestamp>,
    pub collector: String,
    pub last_error: Option<String>,
}

impl UplinkStatus {
    pub fn file(state_dir: &std::path::Path) -> PathBuf {
        state_dir.join("uplink.json")
    }
}

#[derive(Debug)]
pub struct Uplink {
    pub config: UplinkSection,
    pub address: String,
    pub client: quinn::ClientConfig,
    pub spool: SharedSpool,
    pub health: Arc<Health>,
    /// Notified when signals were pushed, so they go out without waiting for a poll.
    pub wake: Arc<Notify>,
    pub status_file: PathBuf,
    /// Where the advisories the collector pushes are kept (see `crate::advisories`).
    pub state_dir: PathBuf,
}

/// How a connection ended.
enum Ended {
    Shutdown,
    /// `progressed`: the collector acknowledged at least one batch on this connection.
    /// Only then does the reconnection delay start again from its minimum, so that a
    /// connection that keeps failing the same way backs off instead of spinning.
    Lost {
        progressed: bool,
        reason: String,
    },
}

/// Explains a closed connection in words an operator can act on.
pub fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason);
            match ErrorCode::from_close_code(close.error_code.into_inner()) {
                Some(ErrorCode::Revoked) => format!("the collector refused this agent: {reason}"),
                Some(ErrorCode::Unauthenticated) => {
                    format!("the collector refused this agent: {reason}")
                }
                Some(code) => format!("the collector closed the connection ({code:?}): {reason}"),
                None => format!("the collector closed the connection: {reason}"),
            }
        }
        other => other.to_string(),
    }
}

fn jitter(delay: Duration) -> Duration {
    use ring::rand::SecureRandom;
    let mut byte = [0u8; 2];
    let _ = ring::rand::SystemRandom::new().fill(&mut byte);
    // "Equal jitter": half the delay, plus a random part of the other half.
    let fraction = f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX);
    delay / 2 + delay.mul_f64(fraction / 2.0)
}

impl Uplink {
    fn set_status(&self, state: &str, last_error: Option<String>) {
        let status = UplinkStatus {
            state: state.to_owned(),
            since: Some(Timestamp::now()),
            collector: self.address.clone(),
            last_error,
        };
        if let Ok(json) = serde_json::to_vec_pretty(&status)
            && let Err(error) = write_atomic(&self.status_file, &json, 0o644)
        {
            warn!(%error, "cannot write uplink status");
        }
    }

    pub async fn run(self, mut shutdown: Shutdown) {
        let mut delay = self.config.reconnect_min;
        loop {
            if shutdown.is_triggered() {
                break;
            }
            match self.connect_once(&mut shutdown).await {
                Ended::Shutdown => break,
                Ended::Lost { progressed, reason } => {
                    if progressed {
                        delay = self.config.reconnect_min;
                        warn!(%reason, "connection to the collector lost");
                    } else {
                        error!(%reason, "no delivery to the collector");
                    }
                    self.set_status("disconnected", Some(reason));
                }
            }
            let wait = jitter(delay);
            debug!(?wait, "reconnecting later");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.wait() => break,
            }
            delay = (delay * 2).min(self.config.reconnect_max);
        }
        self.set_status("stopped", None);
    }

    async fn connect_once(&self, shutdown: &mut Shutdown) -> Ended {
        let lost = |reason: String| Ended::Lost {
            progressed: false,
            reason,
        };
        let remote = match crate::enroll::resolve(&self.address).await {
            Ok(remote) => remote,
            Err(error) => return lost(format!("{error:#}")),
        };
        let mut endpoint = match tls::client_endpoint(remote) {
            Ok(endpoint) => endpoint,
            Err(error) => return lost(format!("cannot open a UDP socket: {error}")),
        };
        endpoint.set_default_client_config(self.client.clone());
        let connecting = match endpoint.connect(remote, SERVER_NAME) {
            Ok(connecting) => connecting,
            Err(error) => return lost(error.to_string()),
        };
        let connection = tokio::select! {
            connection = tokio::time::timeout(self.config.connect_timeout, connecting) => match connection {
                Ok(Ok(connection)) => connection,
                Ok(Err(error)) => return lost(format!("{remote}: {}", describe(&error))),
                Err(_) => return lost(format!("{remote}: no answer within {:?}", self.config.connect_timeout)),
            },
            () = shutdown.wait() => return Ended::Shutdown,
        };
        let ended = self.session(&connection, shutdown).await;
        connection.close(0u32.into(), b"agent closing");
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        ended
    }

    async fn session(&self, connection: &Connection, shutdown: &mut Shutdown) -> Ended {
        let lost = |reason: String| Ended::Lost {
            progressed: false,
            reason,
        };
        let state_dir = self.state_dir.clone();
        let last_advisory_seq = match tokio::task::spawn_blocking(move || {
            crate::advisories::last_seq(&state_dir)
        })
        .await
        {
            Ok(seq) => seq,
            Err(error) => return lost(format!("cannot read the advisories held: {error}")),
        };
        let opened = tokio::time::timeout(ANSWER_TIMEOUT, async {
            let (mut send, mut recv) = connection.open_bi().await?;
            let hello = Message::Hello(Hello {
                agent_version: AGENT_VERSION.to_owned(),
                last_advisory_seq,
            });
            codec::write_frame(&mut send, &hello, MAX_CONTROL_FRAME).await?;
            let welcome = codec::read_frame(&mut recv, MAX_CONTROL_FRAME).await?;
            anyhow::Ok((send, recv, welcome))
        })
        .await;
        let (control_send, mut control_recv, welcome) = match opened {
            Ok(Ok((send, recv, Some(Message::Welcome(welcome))))) => {
                info!(org = %welcome.org, agent = %welcome.agent_id, "connected to the collector");
                (send, recv, welcome)
            }
            Ok(Ok((_, _, other))) => {
                return lost(format!(
                    "unexpected answer to hello: {:?}",
                    other.map(|m| m.name())
                ));
            }
            Ok(Err(error)) => {
                let reason = connection
                    .close_reason()
                    .map(|close| describe(&close))
                    .unwrap_or_else(|| format!("{error:#}"));
                return lost(reason);
            }
            Err(_) => return lost("the collector did not answer hello".into()),
        };
        self.set_status("connected", None);

        let heartbeat = tokio::spawn(heartbeats(
            control_send,
            Arc::clone(&self.spool),
            Arc::clone(&self.health),
            self.config.heartbeat_interval,
        ));
        let (frames, received) = tokio::sync::mpsc::channel::<Advisories>(ADVISORY_FRAMES);
        let control = tokio::spawn(async move {
            loop {
                match codec::read_frame(&mut control_recv, MAX_CONTROL_FRAME).await {
                    Ok(Some(Message::Advisories(advisories))) => {
                        if frames.send(advisories).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(message)) => debug!(message = message.name(), "control message"),
                    Ok(None) => return,
                    // Read whole but not understood (an indicator type from a newer
                    // collector, say): skipped, the next frame is read as usual.
                    Err(codec::ReadError::Decode(
                        error @ (codec::DecodeError::Malformed(_)
                        | codec::DecodeError::UnsupportedVersion { .. }),
                    )) => warn!(%error, "control message skipped"),
                    Err(error) => {
                        // Cut or oversized: the stream is no longer in step.
                        warn!(%error, "control stream unreadable");
                        return;
                    }
                }
            }
        });
        let mut applier = tokio::spawn(apply_advisories(
            received,
            self.state_dir.clone(),
            connection.clone(),
        ));
        let max_signals = self
            .config
            .batch_max_signals
            .min(welcome.max_batch_signals.max(1) as usize);
        let ended = self.pump(connection, shutdown, max_signals).await;
        heartbeat.abort();
        control.abort();
        // What arrived is written before the next hello reads the sequence number.
        if tokio::time::timeout(ADVISORY_FLUSH, &mut applier)
            .await
            .is_err()
        {
            applier.abort();
        }
        ended
    }

    /// Sends batches until the connection is lost or, after shutdown, the spool is empty
    /// or the grace period is over.
    async fn pump(
        &self,
        connection: &Connection,
        shutdown: &mut Shutdown,
        mut max_signals: usize,
    ) -> Ended {
        let mut progressed = false;
        let lost = |progressed: bool, reason: String| Ended::Lost { progressed, reason };
        let mut queue: VecDeque<SpooledBatch> =
            match with_spool(&self.spool, Spool::unacknowledged).await {
                Ok(pending) => pending.into(),
                Err(error) => return lost(false, error),
            };
        if !queue.is_empty() {
            info!(batches = queue.len(), "resending unacknowledged batches");
        }
        let mut in_flight: JoinSet<Result<Sent, String>> = JoinSet::new();
        let mut drain_until: Option<Instant> = None;
        loop {
            while in_flight.len() < self.config.max_in_flight {
                let next = match queue.pop_front() {
                    Some(batch) => Some(batch),
                    None => match with_spool(&self.spool, move |spool| {
                        spool.next_batch(max_signals, MAX_BATCH_FRAME / 4)
                    })
                    .await
                    {
                        Ok(batch) => batch,
                        Err(error) => return lost(progressed, error),
                    },
                };
                let Some(batch) = next else { break };
                in_flight.spawn(send_batch(connection.clone(), batch));
            }
            if let Some(deadline) = drain_until {
                if in_flight.is_empty() {
                    info!("spool delivered; closing");
                    return Ended::Shutdown;
                }
                if Instant::now() >= deadline {
                    info!(
                        in_flight = in_flight.len(),
                        "grace period over; the rest stays spooled"
                    );
                    return Ended::Shutdown;
                }
            }
            let draining = drain_until.is_some();
            let deadline = drain_until.unwrap_or_else(Instant::now);
            tokio::select! {
                Some(joined) = in_flight.join_next() => match joined {
                    Ok(Ok(Sent::Acknowledged(ack))) => {
                        let seq = ack.seq;
                        if let Err(error) = with_spool(&self.spool, move |spool| spool.acknowledge(seq)).await {
                            return lost(progressed, error);
                        }
                        progressed = true;
                        debug!(seq, accepted = ack.accepted, duplicates = ack.duplicates, "batch acknowledged");
                        if ack.rejected > 0 {
                            warn!(seq, rejected = ack.rejected, "the collector refused some signals of the batch");
                        }
                    }
                    Ok(Ok(Sent::Refused { seq, reason })) => {
                        // The batch cannot go as it is: give its signals back to the queue
                        // and form smaller batches from now on.
                        warn!(seq, %reason, "batch refused; re-forming smaller batches");
                        max_signals = (max_signals / 2).max(1);
                        if let Err(error) = with_spool(&self.spool, move |spool| spool.release(seq)).await {
                            return lost(progressed, error);
                        }
                    }
                    Ok(Err(reason)) => return lost(progressed, reason),
                    Err(join) => return lost(progressed, join.to_string()),
                },
                () = self.wake.notified(), if !draining => {}
                () = tokio::time::sleep(SPOOL_POLL), if !draining => {}
                () = tokio::time::sleep_until(deadline), if draining => {}
                error = connection.closed() => return lost(progressed, describe(&error)),
                () = shutdown.wait(), if !draining => {
                    drain_until = Some(Instant::now() + self.config.shutdown_grace);
                }
            }
        }
    }
}

/// What became of a batch.
enum Sent {
    Acknowledged(Ack),
    /// Not to be sent again as it is (too large for the frame or for this collector).
    Refused {
        seq: u64,
        reason: String,
    },
}

/// Resets the stream if the send is abandoned midway (shutdown, lost connection), so that
/// the collector sees a cancelled stream rather than a truncated frame.
struct ResetOnDrop(Option<quinn::SendStream>);

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if let Some(mut stream) = self.0.take() {
            let _ = stream.reset(0u32.into());
        }
    }
}

async fn send_batch(connection: Connection, batch: SpooledBatch) -> Result<Sent, String> {
    let seq = batch.seq;
    let message = Message::Batch(Batch {
        seq,
        signals: batch.signals,
    });
    let frame = match codec::encode_frame(&message, MAX_BATCH_FRAME) {
        Ok(frame) => frame,
        Err(error @ codec::EncodeError::TooLarge { .. }) => {
            return Ok(Sent::Refused {
                seq,
                reason: error.to_string(),
            });
        }
        Err(error) => return Err(format!("batch {seq}: {error}")),
    };
    let exchange = async {
        let (send, mut recv) = connection.open_bi().await.map_err(|e| describe(&e))?;
        let mut guard = ResetOnDrop(Some(send));
        let stream = guard.0.as_mut().ok_or("stream gone")?;
        stream
            .write_all(&frame)
            .await
            .map_err(|error| error.to_string())?;
        stream.finish().map_err(|error| error.to_string())?;
        guard.0 = None;
        codec::read_frame(&mut recv, MAX_CONTROL_FRAME)
            .await
            .map_err(|error| error.to_string())
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
        Ok(Ok(Some(Message::Ack(ack)))) if ack.seq == seq => Ok(Sent::Acknowledged(ack)),
        Ok(Ok(Some(Message::Error(refusal)))) if refusal.code == ErrorCode::BatchRefused => {
            Ok(Sent::Refused {
                seq,
                reason: refusal.message,
            })
        }
        Ok(Ok(other)) => Err(format!(
            "batch {seq}: unexpected answer {:?}",
            other.map(|m| m.name())
        )),
        Ok(Err(reason)) => Err(format!("batch {seq}: {reason}")),
        Err(_) => Err(format!("batch {seq}: no ack within {ANSWER_TIMEOUT:?}")),
    }
}

/// Merges advisory frames into the pushed file until the control stream ends. Frames
/// that arrived while a merge ran are merged together next.
///
/// When a merge fails (a full disk), later frames must not be applied past it (the
/// sequence number would skip what was lost): the connection is closed instead, and
/// the next one's hello asks again from the last number kept.
async fn apply_advisories(
    mut received: tokio::sync::mpsc::Receiver<Advisories>,
    state_dir: PathBuf,
    connection: Connection,
) {
    while let Some(first) = received.recv().await {
        let mut incoming = first.advisories;
        while incoming.len() < crate::advisories::MAX_PUSHED {
            match received.try_recv() {
                Ok(more) => incoming.extend(more.advisories),
                Err(_) => break,
            }
        }
        let dir = state_dir.clone();
        let merged = tokio::task::spawn_blocking(move || {
            crate::advisories::merge(
                &dir,
                &incoming,
                Timestamp::now(),
                crate::advisories::MAX_PUSHED,
            )
        })
        .await;
        match merged {
            Ok(Ok(outcome)) => info!(
                received = outcome.received,
                added = outcome.added,
                replaced = outcome.replaced,
                removed = outcome.removed,
                skipped = outcome.skipped,
                held = outcome.held,
                last_seq = outcome.last_seq,
                "advisories received"
            ),
            Ok(Err(error)) => {
                error!(%error, "cannot keep the advisories received; reconnecting to get them again");
                connection.close(0u32.into(), b"agent cannot keep advisories");
                return;
            }
            Err(error) => {
                error!(%error, "advisory merge failed; reconnecting to get them again");
                connection.close(0u32.into(), b"agent cannot keep advisories");
                return;
            }
        }
    }
}

async fn heartbeats(
    mut send: quinn::SendStream,
    spool: SharedSpool,
    health: Arc<Health>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let stats = match with_spool(&spool, Spool::stats).await {
            Ok(stats) => stats,
            Err(error) => {
                warn!(%error, "cannot read spool figures");
                Default::default()
            }
        };
        let beat = Message::Heartbeat(health.heartbeat(&stats));
        if codec::write_frame(&mut send, &beat, MAX_CONTROL_FRAME)
            .await
            .is_err()
        {
            return;
        }
    }
}
