//! `vedetta-agent run`: sources feed signals into one channel; a sink takes them into the
//! spool (or, with `--dry-run`, prints them as NDJSON and sends nothing); the uplink
//! delivers the spool. One shutdown signal reaches every task: sources stop, the sink
//! writes what it holds, the uplink delivers for a grace period, then the process exits.
//! What each source is doing is kept by [`Health`] and written to `sources.json` for
//! `vedetta-agent status`.

use crate::advisories::{AdvisoryFeed, AdvisoryFiles};
use crate::config::AgentConfig;
use crate::detect::engine::EngineConfig;
use crate::health::{Health, SourceState, SourceTable, SourcesReport};
use crate::privacy::PrivacyFilter;
use crate::sources::files::{self, FileSource};
use crate::sources::journald::{self, JournaldSource};
use crate::sources::logs::live::{self, LogSource};
use crate::sources::network::{self, NetworkSource};
use crate::spool::{Spool, SpoolStats};
use crate::state::{Enrollment, StateLock, StatePaths};
use crate::tls;
use crate::uplink::{SharedSpool, Uplink, UplinkStatus, with_spool};
use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tracing::{info, warn};
use vedetta_common::Signal;
use vedetta_common::service::{self, Progress, Watchdog};
use vedetta_common::shutdown::{self, Shutdown};

/// Signals waiting between the sources and the sink.
const CHANNEL: usize = 4096;
/// How often the health reporter checks the spool for new drops.
const DROP_CHECK: Duration = Duration::from_secs(2);
/// The health reporter goes round every [`DROP_CHECK`]: this long without a round, the
/// pipeline is wedged (the spool's lock held, the sink not taking signals, the runtime
/// stuck) and the systemd watchdog is no longer fed.
const STALLED: Duration = Duration::from_secs(30);
/// `sources.json` is written at most this often (and only when something changed).
pub const SOURCES_PUBLISH: Duration = Duration::from_secs(2);
/// At most one drop report this often: with a full spool, each report may itself push
/// out another signal, and the report must not become a flood of its own.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(30);

/// This host's name, for the `host` field (pseudonymised unless the member opts in).
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// The body of a source thread: it runs until `stop` is set, sending what it finds.
type SourceBody<S> = fn(S, mpsc::Sender<Signal>, Arc<Health>, Arc<AtomicBool>);

/// Starts a source on a thread of its own, so that a slow or flooded source never delays
/// another. When the body returns, the source is stopped; if it panicked, failed.
fn spawn_source<S: Send + 'static>(
    thread: String,
    name: &str,
    source: S,
    body: SourceBody<S>,
    sender: &mpsc::Sender<Signal>,
    health: &Arc<Health>,
    stop: &Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (sender, health, stop) = (sender.clone(), Arc::clone(health), Arc::clone(stop));
    let name = name.to_owned();
    std::thread::Builder::new().name(thread).spawn(move || {
        let source_health = Arc::clone(&health);
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            body(source, sender, source_health, stop);
        }));
        match ended {
            Ok(()) => health.source_state(&name, SourceState::Stopped, None),
            Err(_) => {
                let text = "stopped after an internal error (see the agent's log)";
                health.source_error(&name, &text);
                health.source_state(&name, SourceState::Failed, Some(text));
            }
        }
    })
}

/// Passes `opened` on; a source that cannot be opened is marked failed with the error
/// (and `sources.json` written at once, since the agent is about to stop).
fn opening<T>(
    health: &Health,
    sources_file: Option<&Path>,
    name: &str,
    opened: anyhow::Result<T>,
) -> anyhow::Result<T> {
    if let Err(error) = &opened {
        health.source_state(name, SourceState::Failed, Some(&format!("{error:#}")));
        if let Some(file) = sources_file
            && let Err(error) = health.publish_sources(file, &mut None)
        {
            warn!(%error, "cannot write the sources' state");
        }
    }
    opened
}

/// Writes `sources.json` when the sources' state changed since `last` was written, at
/// most every [`SOURCES_PUBLISH`], and a last time at shutdown (after the sources
/// stopped).
async fn publish_sources(
    health: Arc<Health>,
    file: PathBuf,
    mut last: Option<SourceTable>,
    mut shutdown: Shutdown,
) {
    let mut every = tokio::time::interval(SOURCES_PUBLISH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = every.tick() => false,
            () = shutdown.wait() => true,
        };
        let (health, file, previous) = (Arc::clone(&health), file.clone(), last.take());
        let written = tokio::task::spawn_blocking(move || {
            let mut last = previous;
            let result = health.publish_sources(&file, &mut last);
            (result, last)
        })
        .await;
        match written {
            Ok((result, written)) => {
                last = written;
                if let Err(error) = result {
                    warn!(%error, "cannot write the sources' state");
                }
            }
            Err(error) => warn!(%error, "cannot write the sources' state"),
        }
        if stopping {
            return;
        }
    }
}

/// Where signals go.
enum Sink {
    Spool {
        spool: SharedSpool,
        wake: Arc<Notify>,
    },
    Stdout,
}

async fn write_out(sink: &Sink, signals: Vec<Signal>, health: &Health) {
    match sink {
        Sink::Spool { spool, wake } => {
            match with_spool(spool, move |spool| spool.push(&signals)).await {
                Ok(outcome) => {
                    if outcome.dropped > 0 {
                        warn!(
                            dropped = outcome.dropped,
                            "spool full: dropped the least important signals"
                        );
                    }
                    wake.notify_one();
                }
                Err(error) => {
                    health.source_error("spool", &error);
                    warn!(%error, "cannot write to the spool");
                }
            }
        }
        Sink::Stdout => {
            let mut out = std::io::stdout().lock();
            for signal in signals {
                if let Ok(line) = serde_json::to_string(&signal) {
                    let _ = writeln!(out, "{line}");
                }
            }
            let _ = out.flush();
        }
    }
}

async fn sink_task(
    sink: Sink,
    mut signals: mpsc::Receiver<Signal>,
    health: Arc<Health>,
    privacy: Arc<PrivacyFilter>,
) {
    // Ends when every sender is gone, i.e. after every source stopped.
    while let Some(first) = signals.recv().await {
        let mut group = vec![first];
        while group.len() < 1000 {
            match signals.try_recv() {
                Ok(signal) => group.push(signal),
                Err(_) => break,
            }
        }
        // The privacy filter is the last step before anything is kept for sending.
        let group: Vec<Signal> = group
            .into_iter()
            .filter_map(|signal| privacy.apply(signal))
            .collect();
        if !group.is_empty() {
            write_out(&sink, group, &health).await;
        }
    }
}

/// Sends `agent_health` periodically, and soon after the spool dropped signals.
async fn health_reporter(
    health: Arc<Health>,
    spool: Option<SharedSpool>,
    interval: Duration,
    signals: mpsc::Sender<Signal>,
    progress: Progress,
    mut shutdown: Shutdown,
) {
    let stats = |spool: Option<SharedSpool>| async move {
        match spool {
            Some(spool) => with_spool(&spool, Spool::stats).await.unwrap_or_default(),
            None => SpoolStats::default(),
        }
    };
    let mut reported_drops = stats(spool.clone()).await.drops_total;
    let mut periodic = tokio::time::interval(interval);
    let mut drop_check = tokio::time::interval(DROP_CHECK);
    let mut last_drop_report: Option<tokio::time::Instant> = None;
    loop {
        let due = tokio::select! {
            _ = periodic.tick() => true,
            _ = drop_check.tick() => false,
            () = shutdown.wait() => return,
        };
        let current = stats(spool.clone()).await;
        let new_drops = current.drops_total.saturating_sub(reported_drops);
        let drop_report_allowed =
            last_drop_report.is_none_or(|at| at.elapsed() >= DROP_REPORT_INTERVAL);
        if due || (new_drops > 0 && drop_report_allowed) {
            if new_drops > 0 {
                last_drop_report = Some(tokio::time::Instant::now());
            }
            reported_drops = current.drops_total;
            if signals
                .send(health.signal(&current, new_drops))
                .await
                .is_err()
            {
                return;
            }
        }
        progress.mark();
    }
}

/// The watchdog's liveness check: the health reporter went round lately.
fn pipeline_alive(progress: &Progress) -> Result<(), String> {
    let idle = progress.idle();
    if idle > STALLED {
        return Err(format!(
            "the health reporter has not gone round for {} s",
            idle.as_secs()
        ));
    }
    Ok(())
}

/// Reads the agent's identity for mutual TLS.
pub fn session_client(paths: &StatePaths) -> anyhow::Result<quinn::ClientConfig> {
    let read = |path: &Path| {
        std::fs::read(path)
            .with_context(|| format!("reading {} (is this agent enrolled?)", path.display()))
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(&paths.certificate)?)
            .collect::<Result<_, _>>()
            .context("agent certificate")?;
    let ca =
        CertificateDer::from_pem_slice(&read(&paths.ca_certificate)?).context("CA certificate")?;
    let key = PrivateKeyDer::from_pem_slice(&read(&paths.key)?).context("agent key")?;
    tls::session_client(ca, chain, key)
}

/// Runs the agent until `stop` completes (SIGTERM/SIGINT for the binary).
pub async fn run(
    config: AgentConfig,
    dry_run: bool,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let paths = StatePaths::new(&config.state_dir);
    vedetta_common::files::create_private_dir(&paths.dir)
        .with_context(|| format!("creating {}", paths.dir.display()))?;
    let health = Arc::new(Health::new());
    health.register(&crate::sources::configured(&config));
    let privacy = Arc::new(PrivacyFilter::open(
        &paths.dir.join("privacy.key"),
        config.privacy.clone(),
        host_name(),
    )?);
    let rules = crate::detect::rules::load(config.rules_dir.as_deref()).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid rules:\n{}", lines.join("\n"))
    })?;
    let engine = EngineConfig {
        update_every: config.detection.update_every,
        max_keys: config.detection.max_keys,
        id_key: privacy.derived_secret("signal-ids"),
    };
    // Two phases: sources and sink stop first (everything seen reaches the spool), then
    // the uplink delivers what the spool holds for its grace period.
    let (trigger, shutdown) = shutdown::channel();
    let (uplink_trigger, uplink_shutdown) = shutdown::channel();
    let (sender, receiver) = mpsc::channel::<Signal>(CHANNEL);
    let mut uplink_task = None;
    let _lock;

    // Only the agent holding the state directory's lock reports its sources there.
    let mut sources_file = None;
    let mut published = None;
    let (sink, spool) = if dry_run {
        info!("dry run: signals are printed, nothing is sent");
        (Sink::Stdout, None)
    } else {
        let enrollment = Enrollment::load(&paths)?;
        _lock = StateLock::acquire(&paths)?;
        // At once: what an earlier run reported is not this run's state.
        let file = SourcesReport::file(&paths.dir);
        if let Err(error) = health.publish_sources(&file, &mut published) {
            warn!(%error, "cannot write the sources' state");
        }
        sources_file = Some(file);
        let client = session_client(&paths)?;
        let open = || Spool::open(&paths.spool, config.spool.max_signals);
        let sink_spool: SharedSpool = Arc::new(Mutex::new(open()?));
        let uplink_spool: SharedSpool = Arc::new(Mutex::new(open()?));
        let wake = Arc::new(Notify::new());
        let uplink = Uplink {
            config: config.uplink.clone(),
            address: config
                .collector
                .address
                .clone()
                .unwrap_or(enrollment.collector.clone()),
            client,
            spool: uplink_spool,
            health: Arc::clone(&health),
            wake: Arc::clone(&wake),
            status_file: UplinkStatus::file(&paths.dir),
            state_dir: paths.dir.clone(),
        };
        info!(org = %enrollment.org, agent = %enrollment.agent_id, collector = %uplink.address, "agent starting");
        uplink_task = Some(tokio::spawn(uplink.run(uplink_shutdown)));
        (
            Sink::Spool {
                spool: Arc::clone(&sink_spool),
                wake,
            },
            Some(sink_spool),
        )
    };

    let stop_sources = Arc::new(AtomicBool::new(false));
    let mut source_threads = Vec::new();
    // One table of advisories for every source, refreshed by a thread of its own when
    // the uplink writes new ones, a local list is edited, or an entry expires.
    let advisories =
        AdvisoryFeed::open(AdvisoryFiles::of_config(&config)).context("loading the advisories")?;
    info!(indicators = advisories.current().len(), "advisories loaded");
    {
        let (feed, stop) = (advisories.clone(), Arc::clone(&stop_sources));
        source_threads.push(
            std::thread::Builder::new()
                .name("advisories".into())
                .spawn(move || feed.watch(&stop))?,
        );
    }
    let sources_file = sources_file.as_deref();
    for (index, source_config) in config.sources.logs.iter().enumerate() {
        let name = live::source_name(source_config);
        let source = opening(
            &health,
            sources_file,
            &name,
            LogSource::open(
                index,
                source_config,
                &paths.dir,
                rules.clone(),
                engine.clone(),
            )
            .with_context(|| format!("opening log source {}", source_config.paths.join(", "))),
        )?
        .with_advisories(advisories.view());
        source_threads.push(spawn_source(
            format!("log-source-{index}"),
            &name,
            source,
            live::run,
            &sender,
            &health,
            &stop_sources,
        )?);
    }

    for (index, journal_config) in config.sources.journald.iter().enumerate() {
        let name = journald::source_name(index);
        let source = opening(
            &health,
            sources_file,
            &name,
            JournaldSource::open(
                index,
                journal_config,
                &paths.dir,
                rules.clone(),
                engine.clone(),
            ),
        )?
        .with_advisories(advisories.view());
        source_threads.push(spawn_source(
            format!("journald-{index}"),
            &name,
            source,
            journald::run,
            &sender,
            &health,
            &stop_sources,
        )?);
    }

    if let Some(files_config) = &config.sources.files {
        let opened = crate::detect::files::load(config.rules_dir.as_deref())
            .map_err(|errors| {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                anyhow::anyhow!("invalid file rules:\n{}", lines.join("\n"))
            })
            .and_then(|file_rules| FileSource::open(files_config, &paths.dir, file_rules));
        let source = opening(&health, sources_file, files::SOURCE_NAME, opened)?
            .with_advisories(advisories.view());
        source_threads.push(spawn_source(
            "files".into(),
            files::SOURCE_NAME,
            source,
            files::run,
            &sender,
            &health,
            &stop_sources,
        )?);
    }

    // What this host is, for the heartbeats (whether or not its processes are watched).
    health.set_inventory(crate::sources::host::inventory());
    if let Some(host_config) = &config.sources.host {
        source_threads.push(spawn_source(
            "host".into(),
            crate::sources::host::SOURCE_NAME,
            crate::sources::host::HostSource::new(host_config),
            crate::sources::host::run,
            &sender,
            &health,
            &stop_sources,
        )?);
    }
    if let Some(network_config) = &config.sources.network {
        let source = opening(
            &health,
            sources_file,
            network::SOURCE_NAME,
            NetworkSource::open(network_config, advisories.view()),
        )?;
        source_threads.push(spawn_source(
            "network".into(),
            network::SOURCE_NAME,
            source,
            network::run,
            &sender,
            &health,
            &stop_sources,
        )?);
    }

    let publisher = sources_file.map(|file| {
        tokio::spawn(publish_sources(
            Arc::clone(&health),
            file.to_owned(),
            published,
            shutdown.clone(),
        ))
    });
    let progress = Progress::new();
    let reporter = tokio::spawn(health_reporter(
        Arc::clone(&health),
        spool,
        config.health.interval,
        sender,
        progress.clone(),
        shutdown.clone(),
    ));
    let sink = tokio::spawn(sink_task(sink, receiver, Arc::clone(&health), privacy));
    // Under systemd (Type=notify): ready now that the spool and the sources are open, and
    // the watchdog fed while the pipeline goes round.
    service::ready();
    let watchdog = Watchdog::start(move || std::future::ready(pipeline_alive(&progress)));

    stop.await;
    info!("shutting down");
    watchdog.stop().await;
    service::stopping();
    stop_sources.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || {
        for thread in source_threads {
            let _ = thread.join();
        }
    })
    .await;
    trigger.trigger();
    let _ = reporter.await;
    let _ = sink.await;
    if let Some(publisher) = publisher {
        let _ = publisher.await;
    }
    uplink_trigger.trigger();
    if let Some(uplink) = uplink_task {
        let _ = uplink.await;
    }
    info!("agent stopped");
    Ok(())
}
