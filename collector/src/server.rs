//! `serve`: wires the store, the correlator, the group-commit writer, the QUIC endpoint,
//! the advisory feed, the HTTPS API and the periodic tasks (revocations, closing quiet
//! campaigns) together, and takes them down in order on shutdown; [`alive`] is the
//! liveness check that the systemd watchdog of `serve` relies on.

use crate::api::audit::AuditWriter;
use crate::api::{self, ApiState, ReadPool};
use crate::config::CollectorConfig;
use crate::correlate::Correlator;
use crate::feed::{self, AdvisoryFeed};
use crate::ingest::{self, IngestContext};
use crate::pki::{self, CertificateAuthority, PkiPaths};
use crate::store::{SqliteStore, Store};
use crate::writer;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tracing::{info, warn};
use vedetta_common::Timestamp;
use vedetta_common::identity::SERVER_NAME;
use vedetta_common::protocol::ErrorCode;
use vedetta_common::shutdown::{self, Shutdown, ShutdownTrigger};

pub const DATABASE_FILE: &str = "vedetta.db";

/// A group commit taking longer than this means the ingest writer is stuck.
const WRITER_STUCK: Duration = Duration::from_secs(60);

pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DATABASE_FILE)
}

/// A collector running inside this process.
#[derive(Debug)]
pub struct RunningCollector {
    pub quic_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub ca_fingerprint: String,
    pub context: Arc<IngestContext>,
    pub api: Arc<ApiState>,
    http: axum_server::Handle,
    trigger: ShutdownTrigger,
    endpoint: quinn::Endpoint,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    writer: std::thread::JoinHandle<()>,
    audit_writer: std::thread::JoinHandle<()>,
}

/// The correlator of this configuration, with the members' declared addresses allowed.
pub fn correlator(config: &CollectorConfig, store: &mut SqliteStore) -> anyhow::Result<Correlator> {
    let mut correlator = Correlator::new(config.correlation.clone())
        .map_err(|error| anyhow::anyhow!("[correlation]: {error}"))?;
    for org in store.orgs()? {
        for address in &org.addresses {
            correlator
                .allow(address)
                .map_err(|error| anyhow::anyhow!("org {}: {error}", org.id))?;
        }
    }
    Ok(correlator)
}

/// The names the API certificate covers: loopback, the collector's name, the address it
/// listens on (unless it is a wildcard) and the configured ones.
fn https_names(config: &CollectorConfig, http: SocketAddr) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1", SERVER_NAME]
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
    if !http.ip().is_unspecified() {
        names.push(http.ip().to_string());
    }
    for name in &config.api.tls_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// Starts serving from `data_dir`; `listen` and `http` override the configured addresses.
pub async fn start(
    data_dir: &Path,
    listen: Option<SocketAddr>,
    http: Option<SocketAddr>,
) -> anyhow::Result<RunningCollector> {
    let config = CollectorConfig::load(data_dir)?;
    let paths = PkiPaths::in_dir(data_dir);
    let authority = CertificateAuthority::load(&paths).context("loading the CA")?;
    let (chain, key) =
        pki::load_server_identity(&paths).context("loading the server certificate")?;
    let http_address = http.unwrap_or(config.http);
    let (https_chain, https_key) = match (&config.api.tls_certificate, &config.api.tls_key) {
        (Some(certificate), Some(key)) => pki::provided_identity(certificate, key)
            .context("loading the API certificate of [api] tls_certificate")?,
        (None, None) => authority
            .https_identity(&paths, &https_names(&config, http_address))
            .context("issuing the API certificate")?,
        _ => anyhow::bail!("[api] tls_certificate and tls_key go together: give both or neither"),
    };
    let database = database_path(data_dir);
    let mut ingest_store =
        SqliteStore::open(&database).with_context(|| format!("opening {}", database.display()))?;
    ingest_store.set_cache_mib(config.ingest.writer_cache_mib)?;
    let correlator = Arc::new(correlator(&config, &mut ingest_store)?);
    ingest_store.set_correlator(Arc::clone(&correlator));
    let mut shared_store = SqliteStore::open(&database)?;
    shared_store.set_correlator(correlator);
    let feed = AdvisoryFeed::new(shared_store.max_advisory_seq()?);

    // Campaigns and incidents, as they commit, for the live stream and the log.
    let (events, _) = broadcast::channel(4096);
    let to_stream = events.clone();
    let (writer, writer_thread) = writer::start(ingest_store, move |event| {
        info!(event = event.name(), "correlation");
        let _ = to_stream.send(Arc::new(event));
    })?;

    let server_config =
        ingest::server_config(authority.certificate_der(), chain, key, &config.ingest)?;
    let address = listen.unwrap_or(config.listen);
    let endpoint = quinn::Endpoint::server(server_config, address)
        .with_context(|| format!("cannot listen on UDP {address}"))?;
    let quic_addr = endpoint.local_addr()?;
    let ca_fingerprint = authority.fingerprint();
    let context = Arc::new(IngestContext::new(
        config.ingest.clone(),
        authority,
        shared_store,
        writer,
        feed.clone(),
    ));

    let pool = ReadPool::open(&database, config.api.read_connections)?;
    let (audit, audit_thread) = AuditWriter::start(SqliteStore::open(&database)?)?;
    let api = Arc::new(ApiState::new(
        pool,
        events,
        feed.clone(),
        Arc::clone(&context),
        audit,
        config.retention.clone(),
    ));
    let listener = std::net::TcpListener::bind(http_address)
        .with_context(|| format!("cannot listen on TCP {http_address}"))?;
    listener.set_nonblocking(true)?;
    let http_addr = listener.local_addr()?;
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(api::tls_config(
        https_chain,
        https_key,
    )?));
    let http_handle = axum_server::Handle::new();
    let router = api::router(Arc::clone(&api));
    let server = axum_server::from_tcp_rustls(listener, tls)
        .handle(http_handle.clone())
        .serve(router.into_make_service());

    let (trigger, shutdown) = shutdown::channel();
    let tasks = vec![
        tokio::spawn(ingest::accept_loop(
            endpoint.clone(),
            Arc::clone(&context),
            shutdown.clone(),
        )),
        tokio::spawn(ingest::revocation_watcher(
            Arc::clone(&context),
            shutdown.clone(),
        )),
        tokio::spawn(feed::poll(
            feed,
            Arc::clone(&context),
            config.api.feed_poll,
            shutdown.clone(),
        )),
        tokio::spawn(close_quiet(
            Arc::clone(&api),
            config.api.close_every,
            shutdown.clone(),
        )),
        tokio::spawn(purge(Arc::clone(&api), shutdown)),
        tokio::spawn(async move {
            if let Err(error) = server.await {
                warn!(%error, "the HTTPS API stopped");
            }
        }),
    ];
    info!(quic = %quic_addr, https = %http_addr, "collector serving");
    Ok(RunningCollector {
        quic_addr,
        http_addr,
        ca_fingerprint,
        context,
        api,
        http: http_handle,
        trigger,
        endpoint,
        tasks,
        writer: writer_thread,
        audit_writer: audit_thread,
    })
}

/// Proof of life for the systemd watchdog, cheap enough to run every few seconds: the
/// ingest writer thread runs and is not stuck in one commit, and the shared store (whose
/// lock enrollment, identity checks and heartbeats take) answers a one-row read. The
/// watchdog also bounds how long this may take.
pub async fn alive(context: Arc<IngestContext>) -> Result<(), String> {
    if !context.writer.is_running() {
        return Err("the ingest writer thread has stopped".into());
    }
    if let Some(busy) = context.writer.busy_for()
        && busy > WRITER_STUCK
    {
        return Err(format!(
            "the ingest writer has been on one commit for {} s",
            busy.as_secs()
        ));
    }
    context
        .with_store(|store| store.max_advisory_seq())
        .await
        .map(drop)
        .map_err(|error| format!("the store does not answer: {error}"))
}

/// Closes quiet campaigns and incidents now and then, telling the live stream.
async fn close_quiet(api: Arc<ApiState>, every: Duration, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.wait() => return,
        }
        match api
            .ingest
            .with_store(|store| store.close_quiet(Timestamp::now()))
            .await
        {
            Ok(events) => {
                for event in events {
                    info!(event = event.name(), "correlation");
                    let _ = api.events.send(Arc::new(event));
                }
            }
            Err(error) => warn!(%error, "cannot close quiet campaigns"),
        }
    }
}

/// Runs the retention purge at start and then every `[retention] purge_every`, on a
/// connection of its own (it works in chunks, so ingest goes on between them).
async fn purge(api: Arc<ApiState>, mut shutdown: Shutdown) {
    let every = api.retention.purge_every.max(Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.wait() => return,
        }
        let days = api.retention.retention_days;
        match api
            .read(move |store| store.purge(Timestamp::now(), days, "collector"))
            .await
        {
            Ok(report) if report.signals_removed > 0 => info!(
                removed = report.signals_removed,
                kept_for_holds = report.signals_kept_for_campaigns,
                "retention purge"
            ),
            Ok(_) => {}
            Err(error) => warn!(error = %error.message, "retention purge failed"),
        }
    }
}

impl RunningCollector {
    /// Stops accepting, closes agent connections, lets the endpoint drain, and waits for
    /// the writer to commit what it already holds.
    pub async fn stop(self) {
        self.trigger.trigger();
        self.http.graceful_shutdown(Some(Duration::from_secs(2)));
        for task in self.tasks {
            let _ = task.await;
        }
        self.context
            .disconnect_all(ErrorCode::ShuttingDown, "collector shutting down");
        self.endpoint.close(
            quinn::VarInt::from_u32(ErrorCode::ShuttingDown.close_code()),
            b"collector shutting down",
        );
        let _ = tokio::time::timeout(Duration::from_secs(3), self.endpoint.wait_idle()).await;
        drop(self.api);
        drop(self.context);
        // Connection tasks still holding a writer handle end with their connections.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(self.writer.is_finished() && self.audit_writer.is_finished())
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        info!("collector stopped");
    }
}
