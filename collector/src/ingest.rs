//! The QUIC endpoint agents talk to: enrollment (ALPN `vedetta-enroll/1`, no client
//! certificate yet) and agent sessions (ALPN `vedetta/1`, client certificate required).
//!
//! Why one endpoint accepts connections without a client certificate at the TLS layer:
//! enrollment must happen on the same address before the agent has a certificate. The
//! certificate requirement of `vedetta/1` is enforced right after the handshake, before
//! any stream is read: no certificate, a certificate of another CA (refused by TLS
//! itself), or a revoked agent each end the connection with a distinct close code and a
//! reason the agent prints.
//!
//! Memory is bounded: a fixed number of concurrent streams per connection, one connection
//! per agent (a new one replaces the old), frames of at most [`MAX_BATCH_FRAME`] bytes
//! whose bytes are reserved from a budget shared by all agents before they are read, every
//! collection inside a frame capped while it is decoded, and a deadline for each stream's
//! first frame. A malformed frame closes only that connection.

use crate::config::IngestConfig;
use crate::enroll;
use crate::feed::AdvisoryFeed;
use crate::pki::CertificateAuthority;
use crate::store::{AgentRecord, IngestBatch, SqliteStore, Store, StoreError};
use crate::writer::WriterHandle;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, info, info_span, warn};
use vedetta_common::Timestamp;
use vedetta_common::codec::{self, HEADER_LEN, MAX_BATCH_FRAME, MAX_CONTROL_FRAME, ReadError};
use vedetta_common::identity::{ALPN, ALPN_ENROLL, AgentIdentity, fingerprint};
use vedetta_common::protocol::{
    ErrorCode, ErrorMessage, Heartbeat, MAX_BATCH_SIGNALS, Message, Welcome,
};
use vedetta_common::shutdown::Shutdown;

/// Counters of the ingest path, for logs and metrics.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connections_active: AtomicU64,
    pub enrollments: AtomicU64,
    pub batches: AtomicU64,
    pub signals_accepted: AtomicU64,
    pub signals_duplicate: AtomicU64,
    pub signals_rejected: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// Advisories written to agents' control streams.
    pub advisories_sent: AtomicU64,
}

/// What every connection task shares.
#[derive(Debug)]
pub struct IngestContext {
    pub config: IngestConfig,
    pub authority: CertificateAuthority,
    /// A connection of its own for enrollment, identity checks and heartbeats.
    pub store: Mutex<SqliteStore>,
    pub writer: WriterHandle,
    pub feed: AdvisoryFeed,
    pub metrics: IngestMetrics,
    live: Mutex<HashMap<String, Connection>>,
    /// Bytes of batch frames in flight, over all agents (see `memory_budget_bytes`).
    budget: Arc<Semaphore>,
}

impl IngestContext {
    pub fn new(
        config: IngestConfig,
        authority: CertificateAuthority,
        store: SqliteStore,
        writer: WriterHandle,
        feed: AdvisoryFeed,
    ) -> Self {
        let budget = Arc::new(Semaphore::new(
            config.memory_budget_bytes.max(MAX_BATCH_FRAME),
        ));
        Self {
            config,
            authority,
            store: Mutex::new(store),
            writer,
            feed,
            metrics: IngestMetrics::default(),
            live: Mutex::new(HashMap::new()),
            budget,
        }
    }

    /// Runs `work` with the shared store on a blocking thread.
    pub async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&mut SqliteStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let context = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut store = context
                .store
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            work(&mut store)
        })
        .await
        .unwrap_or_else(|join| Err(StoreError::Corrupt(format!("store task failed: {join}"))))
    }

    /// Records the agent's live connection, closing an older one: an agent has one.
    fn register(&self, agent_id: &str, connection: &Connection) {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(older) = live.insert(agent_id.to_owned(), connection.clone()) {
            close(
                &older,
                ErrorCode::ProtocolViolation,
                "replaced by a newer connection of this agent",
            );
        }
    }

    fn unregister(&self, agent_id: &str, connection: &Connection) {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if live
            .get(agent_id)
            .is_some_and(|current| current.stable_id() == connection.stable_id())
        {
            live.remove(agent_id);
        }
    }

    /// Closes the live connections of the given agents.
    pub fn disconnect(&self, agent_ids: &[String], code: ErrorCode, reason: &str) -> usize {
        let live = self
            .live
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut closed = 0;
        for connection in agent_ids.iter().filter_map(|id| live.get(id)) {
            close(connection, code, reason);
            closed += 1;
        }
        closed
    }

    /// Closes every live agent connection (shutdown).
    pub fn disconnect_all(&self, code: ErrorCode, reason: &str) {
        let live = self
            .live
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        for connection in live.values() {
            close(connection, code, reason);
        }
    }

    /// The batch size agents are told to respect.
    fn max_batch_signals(&self) -> usize {
        self.config.max_batch_signals.clamp(1, MAX_BATCH_SIGNALS)
    }
}

/// Text from an agent, made safe to store, log and print: no control characters (no
/// terminal escapes), bounded length.
pub fn sanitize(text: &str, max_chars: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}

pub fn close(connection: &Connection, code: ErrorCode, reason: &str) {
    connection.close(VarInt::from_u32(code.close_code()), reason.as_bytes());
}

/// Builds the endpoint's QUIC server configuration: TLS 1.3 only, our two ALPNs, no 0-RTT,
/// client certificates verified against our CA when presented.
pub fn server_config(
    ca: &CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ingest: &IngestConfig,
) -> anyhow::Result<quinn::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .allow_unauthenticated()
    .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec(), ALPN_ENROLL.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(ingest.max_streams_per_connection))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32((MAX_BATCH_FRAME + 64 * 1024) as u32))
        .receive_window(VarInt::from_u32(16 * 1024 * 1024))
        .max_idle_timeout(Some(ingest.idle_timeout.try_into()?));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Accepts connections until shutdown.
pub async fn accept_loop(
    endpoint: quinn::Endpoint,
    context: Arc<IngestContext>,
    mut shutdown: Shutdown,
) {
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            () = shutdown.wait() => break,
        };
        let Some(incoming) = incoming else { break };
        let context = Arc::clone(&context);
        let remote = incoming.remote_address();
        tokio::spawn(
            async move {
                match incoming.await {
                    Ok(connection) => handle_connection(context, connection).await,
                    Err(error) => {
                        context
                            .metrics
                            .connections_refused
                            .fetch_add(1, Ordering::Relaxed);
                        info!(%error, "handshake failed");
                    }
                }
            }
            .instrument(info_span!("connection", %remote)),
        );
    }
}

async fn handle_connection(context: Arc<IngestContext>, connection: Connection) {
    let protocol = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    match protocol.as_deref() {
        Some(p) if p == ALPN_ENROLL => enroll::handle(context, connection).await,
        Some(p) if p == ALPN => agent_session(context, connection).await,
        _ => close(
            &connection,
            ErrorCode::ProtocolViolation,
            "unknown application protocol",
        ),
    }
}

/// Checks the client certificate against the store: known agent, same certificate, not
/// revoked. Returns the agent or the reason to refuse it.
async fn authenticate(
    context: &Arc<IngestContext>,
    connection: &Connection,
) -> Result<AgentRecord, (ErrorCode, String)> {
    let certificate = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.into_iter().next())
        .ok_or((
            ErrorCode::Unauthenticated,
            "client certificate required: enroll this agent first".to_owned(),
        ))?;
    let identity = AgentIdentity::from_certificate(&certificate)
        .map_err(|error| (ErrorCode::Unauthenticated, error.to_string()))?;
    let presented = fingerprint(&certificate);
    let agent_id = identity.agent_id.clone();
    let record = context
        .with_store(move |store| store.agent(&agent_id))
        .await
        .map_err(|error| {
            (
                ErrorCode::Overloaded,
                format!("collector store unavailable: {error}"),
            )
        })?
        .ok_or_else(|| {
            (
                ErrorCode::Unauthenticated,
                format!("unknown agent {}", identity.agent_id),
            )
        })?;
    if record.org != identity.org || record.cert_fingerprint != presented {
        return Err((
            ErrorCode::Unauthenticated,
            format!(
                "certificate does not match enrolled agent {}",
                identity.agent_id
            ),
        ));
    }
    if record.revoked_at.is_some() {
        return Err((
            ErrorCode::Revoked,
            format!("agent {} is revoked", identity.agent_id),
        ));
    }
    Ok(record)
}

async fn agent_session(context: Arc<IngestContext>, connection: Connection) {
    let agent = match authenticate(&context, &connection).await {
        Ok(agent) => agent,
        Err((code, reason)) => {
            context
                .metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            warn!(?code, %reason, "agent refused");
            close(&connection, code, &reason);
            return;
        }
    };
    let span = info_span!("agent", org = %agent.org, agent = %agent.id);
    async {
        context
            .metrics
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        context
            .metrics
            .connections_active
            .fetch_add(1, Ordering::Relaxed);
        context.register(&agent.id, &connection);
        // A revocation may have landed between the check and the registration.
        let recheck_id = agent.id.clone();
        if let Ok(Some(record)) = context
            .with_store(move |store| store.agent(&recheck_id))
            .await
            && record.revoked_at.is_some()
        {
            close(
                &connection,
                ErrorCode::Revoked,
                &format!("agent {} is revoked", agent.id),
            );
        }
        info!("agent connected");
        let agent = Arc::new(agent);
        loop {
            let (send, recv) = match connection.accept_bi().await {
                Ok(streams) => streams,
                Err(error) => {
                    info!(%error, "agent disconnected");
                    break;
                }
            };
            let context = Arc::clone(&context);
            let connection = connection.clone();
            let agent = Arc::clone(&agent);
            tokio::spawn(
                async move {
                    if let Err((code, reason)) = handle_stream(&context, &agent, send, recv).await {
                        context
                            .metrics
                            .protocol_errors
                            .fetch_add(1, Ordering::Relaxed);
                        warn!(?code, %reason, "closing connection");
                        close(&connection, code, &reason);
                    }
                }
                .in_current_span(),
            );
        }
        context.unregister(&agent.id, &connection);
        context
            .metrics
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
    }
    .instrument(span)
    .await;
}

type StreamResult = Result<(), (ErrorCode, String)>;

fn protocol_error(error: impl std::fmt::Display) -> (ErrorCode, String) {
    (ErrorCode::ProtocolViolation, error.to_string())
}

/// Reads a stream's first frame within the deadline, reserving its bytes from the shared
/// budget before reading them. The permit is held until the frame's work is done.
async fn first_frame(
    context: &Arc<IngestContext>,
    recv: &mut RecvStream,
) -> Result<Option<(Message, tokio::sync::OwnedSemaphorePermit)>, (ErrorCode, String)> {
    let read = async {
        let mut header = [0u8; HEADER_LEN];
        match recv.read_exact(&mut header).await {
            Ok(_) => {}
            // An empty stream, or one reset by the agent (e.g. it gave up on a send).
            Err(error) => {
                debug!(%error, "stream ended before a frame");
                return Ok(None);
            }
        }
        let length = codec::decode_header(header, MAX_BATCH_FRAME).map_err(protocol_error)?;
        let permit = Arc::clone(&context.budget)
            .acquire_many_owned(u32::try_from(length).unwrap_or(u32::MAX))
            .await
            .map_err(|_| {
                (
                    ErrorCode::ShuttingDown,
                    "collector shutting down".to_owned(),
                )
            })?;
        let mut payload = Vec::with_capacity(length);
        let got = (&mut *recv)
            .take(length as u64)
            .read_to_end(&mut payload)
            .await
            .map_err(protocol_error)?;
        if got < length {
            return Err(protocol_error("stream ended inside a frame"));
        }
        let message = codec::decode_payload(&payload).map_err(protocol_error)?;
        Ok(Some((message, permit)))
    };
    tokio::time::timeout(context.config.frame_timeout, read)
        .await
        .unwrap_or_else(|_| Err(protocol_error("no complete frame within the deadline")))
}

async fn handle_stream(
    context: &Arc<IngestContext>,
    agent: &Arc<AgentRecord>,
    mut send: SendStream,
    mut recv: RecvStream,
) -> StreamResult {
    let Some((first, permit)) = first_frame(context, &mut recv).await? else {
        return Ok(());
    };
    match first {
        Message::Batch(batch) => {
            let seq = batch.seq;
            if batch.signals.len() > context.max_batch_signals() {
                // Refused on this stream only: the agent re-forms smaller batches.
                let refusal = Message::Error(ErrorMessage {
                    code: ErrorCode::BatchRefused,
                    message: format!(
                        "batch {seq} has {} signals, more than this collector's limit of {}",
                        batch.signals.len(),
                        context.max_batch_signals()
                    ),
                });
                let _ = codec::write_frame(&mut send, &refusal, MAX_CONTROL_FRAME).await;
                let _ = send.finish();
                return Ok(());
            }
            let ack = context
                .writer
                .commit(IngestBatch {
                    org: agent.org.clone(),
                    agent_id: agent.id.clone(),
                    received_at: Timestamp::now(),
                    batch,
                })
                .await
                .map_err(|error| (ErrorCode::Overloaded, error.to_string()))?;
            drop(permit);
            let metrics = &context.metrics;
            metrics.batches.fetch_add(1, Ordering::Relaxed);
            metrics
                .signals_accepted
                .fetch_add(u64::from(ack.accepted), Ordering::Relaxed);
            metrics
                .signals_duplicate
                .fetch_add(u64::from(ack.duplicates), Ordering::Relaxed);
            metrics
                .signals_rejected
                .fetch_add(u64::from(ack.rejected), Ordering::Relaxed);
            if ack.rejected > 0 {
                warn!(
                    seq,
                    rejected = ack.rejected,
                    "signals refused (invalid, or an id of another agent)"
                );
            }
            debug!(
                seq,
                accepted = ack.accepted,
                duplicates = ack.duplicates,
                "batch committed"
            );
            // The agent may be gone by now; it will resend and the duplicate is dropped.
            let _ = codec::write_frame(&mut send, &Message::Ack(ack), MAX_CONTROL_FRAME).await;
            let _ = send.finish();
            Ok(())
        }
        Message::Hello(hello) => {
            drop(permit);
            debug!(agent_version = %sanitize(&hello.agent_version, 64), "hello");
            let welcome = Message::Welcome(Welcome {
                org: agent.org.clone(),
                agent_id: agent.id.clone(),
                collector_version: env!("CARGO_PKG_VERSION").to_owned(),
                server_time: Timestamp::now(),
                max_batch_signals: context.max_batch_signals() as u32,
            });
            codec::write_frame(&mut send, &welcome, MAX_CONTROL_FRAME)
                .await
                .map_err(protocol_error)?;
            let pusher = tokio::spawn(
                push_advisories(Arc::clone(context), send, hello.last_advisory_seq)
                    .in_current_span(),
            );
            let result = control_stream(context, agent, recv).await;
            pusher.abort();
            result
        }
        other => Err(protocol_error(format!(
            "unexpected {} as the first frame of a stream",
            other.name()
        ))),
    }
}

/// Heartbeats are stored at most this often per connection: an agent cannot turn them
/// into a stream of writes competing with ingest.
const HEARTBEAT_MIN_INTERVAL: Duration = Duration::from_secs(5);

fn sanitize_heartbeat(mut heartbeat: Heartbeat) -> Heartbeat {
    heartbeat.agent_version = sanitize(&heartbeat.agent_version, 64);
    for (source, _) in &mut heartbeat.source_errors {
        *source = sanitize(source, 128);
    }
    if let Some(inventory) = &mut heartbeat.inventory {
        for text in [
            &mut inventory.os,
            &mut inventory.kernel,
            &mut inventory.arch,
        ] {
            *text = sanitize(text, 128);
        }
    }
    heartbeat
}

/// Advisories read from the store per frame sent.
const ADVISORIES_PER_FRAME: usize = vedetta_common::protocol::MAX_ADVISORIES_PER_FRAME;

/// Sends the agent every advisory after `held` (what it missed), then each new one as
/// the feed moves, until the stream or the connection ends.
async fn push_advisories(context: Arc<IngestContext>, mut send: SendStream, held: u64) {
    let mut moved = context.feed.subscribe();
    let mut sent = held;
    // An agent that holds more than this database ever had met another collector (or a
    // restored database): it is sent everything again, and keeps what it already has.
    if held > context.feed.latest() {
        sent = 0;
    }
    loop {
        while sent < *moved.borrow_and_update() {
            let after = sent;
            let page = context
                .with_store(move |store| {
                    store.advisories(after, Timestamp::now(), false, ADVISORIES_PER_FRAME)
                })
                .await;
            let page = match page {
                Ok(page) => page,
                Err(error) => {
                    warn!(%error, "cannot read advisories for an agent");
                    break;
                }
            };
            let Some(last) = page.last().map(|advisory| advisory.seq) else {
                // Only expired advisories were left: nothing to send up to the end.
                sent = context.feed.latest();
                break;
            };
            let count = page.len() as u64;
            let frame = Message::Advisories(vedetta_common::protocol::Advisories {
                advisories: page.iter().map(|record| record.to_wire()).collect(),
            });
            if let Err(error) = codec::write_frame(&mut send, &frame, MAX_CONTROL_FRAME).await {
                debug!(%error, "advisories not delivered; the agent catches up next time");
                return;
            }
            context
                .metrics
                .advisories_sent
                .fetch_add(count, Ordering::Relaxed);
            debug!(count, up_to = last, "advisories sent");
            sent = last;
        }
        if moved.changed().await.is_err() {
            return;
        }
    }
}

async fn control_stream(
    context: &Arc<IngestContext>,
    agent: &Arc<AgentRecord>,
    mut recv: RecvStream,
) -> StreamResult {
    let mut last_stored: Option<Instant> = None;
    loop {
        match codec::read_frame(&mut recv, MAX_CONTROL_FRAME).await {
            Ok(Some(Message::Heartbeat(heartbeat))) => {
                debug!(
                    spool = heartbeat.spool_depth,
                    drops = heartbeat.drops_total,
                    "heartbeat"
                );
                if last_stored.is_some_and(|at| at.elapsed() < HEARTBEAT_MIN_INTERVAL) {
                    continue;
                }
                last_stored = Some(Instant::now());
                let heartbeat = sanitize_heartbeat(heartbeat);
                let agent_id = agent.id.clone();
                if let Err(error) = context
                    .with_store(move |store| {
                        store.record_heartbeat(&agent_id, &heartbeat, Timestamp::now())
                    })
                    .await
                {
                    warn!(%error, "cannot record heartbeat");
                }
            }
            Ok(Some(Message::Error(ErrorMessage { code, message }))) => {
                info!(?code, message = %sanitize(&message, 256), "agent reported an error");
            }
            Ok(Some(other)) => {
                return Err(protocol_error(format!(
                    "unexpected {} on the control stream",
                    other.name()
                )));
            }
            Ok(None) | Err(ReadError::Io(_)) => return Ok(()),
            Err(error) => return Err(protocol_error(error)),
        }
    }
}

/// Applies revocations made by other processes (`agent revoke`) to live connections.
pub async fn revocation_watcher(context: Arc<IngestContext>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(
        context
            .config
            .revocation_poll
            .max(Duration::from_millis(100)),
    );
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.wait() => return,
        }
        match context.with_store(|store| store.revoked_agents()).await {
            Ok(revoked) => {
                let closed = context.disconnect(&revoked, ErrorCode::Revoked, "agent revoked");
                if closed > 0 {
                    info!(closed, "closed connections of revoked agents");
                }
            }
            Err(error) => warn!(%error, "cannot read revocations"),
        }
    }
}
