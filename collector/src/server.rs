//! `serve`: wires the store, the group-commit writer, the QUIC endpoint and the
//! revocation watcher together, and takes them down in order on shutdown.

use crate::config::CollectorConfig;
use crate::ingest::{self, IngestContext};
use crate::pki::{self, CertificateAuthority, PkiPaths};
use crate::store::SqliteStore;
use crate::writer;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;
use vedetta_common::protocol::ErrorCode;
use vedetta_common::shutdown::{self, ShutdownTrigger};

pub const DATABASE_FILE: &str = "vedetta.db";

pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DATABASE_FILE)
}

/// A collector running inside this process.
#[derive(Debug)]
pub struct RunningCollector {
    pub quic_addr: SocketAddr,
    pub ca_fingerprint: String,
    pub context: Arc<IngestContext>,
    trigger: ShutdownTrigger,
    endpoint: quinn::Endpoint,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    writer: std::thread::JoinHandle<()>,
}

/// Starts serving from `data_dir`; `listen` overrides the configured address.
pub async fn start(
    data_dir: &Path,
    listen: Option<SocketAddr>,
) -> anyhow::Result<RunningCollector> {
    let config = CollectorConfig::load(data_dir)?;
    let paths = PkiPaths::in_dir(data_dir);
    let authority = CertificateAuthority::load(&paths).context("loading the CA")?;
    let (chain, key) =
        pki::load_server_identity(&paths).context("loading the server certificate")?;
    let database = database_path(data_dir);
    let ingest_store =
        SqliteStore::open(&database).with_context(|| format!("opening {}", database.display()))?;
    let shared_store = SqliteStore::open(&database)?;
    let (writer, writer_thread) = writer::start(ingest_store)?;

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
    ));

    let (trigger, shutdown) = shutdown::channel();
    let tasks = vec![
        tokio::spawn(ingest::accept_loop(
            endpoint.clone(),
            Arc::clone(&context),
            shutdown.clone(),
        )),
        tokio::spawn(ingest::revocation_watcher(Arc::clone(&context), shutdown)),
    ];
    info!(quic = %quic_addr, "collector serving");
    Ok(RunningCollector {
        quic_addr,
        ca_fingerprint,
        context,
        trigger,
        endpoint,
        tasks,
        writer: writer_thread,
    })
}

impl RunningCollector {
    /// Stops accepting, closes agent connections, lets the endpoint drain, and waits for
    /// the writer to commit what it already holds.
    pub async fn stop(self) {
        self.trigger.trigger();
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
        drop(self.context);
        // Connection tasks still holding a writer handle end with their connections.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.writer.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        info!("collector stopped");
    }
}
