//! Load generator for the collector's ingest path and for idle footprints.
//!
//! * `ingest`: N agents, each enrolled through the real protocol and on its own QUIC
//!   connection, send batches to a real collector process on loopback; reports durably
//!   committed signals per second, ack latency p50/p99 and bytes on the wire per signal,
//!   then checks the database holds every signal exactly once.
//! * `idle-connections`: N enrolled agents connect, say hello and heartbeat; reports the
//!   collector's RSS.
//! * `idle-agent`: the real agent binary, connected and heartbeating, for a while;
//!   reports its RSS and CPU.
//! * `campaign-latency`: agents of several organisations send a fixed total rate of
//!   signals, some addresses seen by several organisations in turn; reports the time from
//!   the signal that completes a campaign to its event on the live stream (p50/p99/max).
//!   See `vedetta_bench::campaigns`.
//! * `advisory-fanout`: N agents stay connected with a real control stream; advisories are
//!   published through the API and the time until each agent receives them is reported
//!   (p50/p99/max). See `vedetta_bench::fanout`.
#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use vedetta_bench::agents::{self, Session};
use vedetta_bench::{
    CollectorProcess, campaigns, fanout, process_figures, quantile, sibling_binary,
};
use vedetta_collector::enroll::new_token;
use vedetta_collector::store::{SqliteStore, Store};
use vedetta_common::codec::{self, MAX_BATCH_FRAME, MAX_CONTROL_FRAME};
use vedetta_common::protocol::{Batch, Message};
use vedetta_common::{IndicatorType, Severity, Signal, Timestamp};

#[derive(Debug, Parser)]
#[command(about = "Vedetta load generator")]
struct Cli {
    /// Scratch folder (a fresh temporary one by default).
    #[arg(long, global = true)]
    work_dir: Option<PathBuf>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    Ingest {
        #[arg(long, default_value_t = 100)]
        agents: usize,
        #[arg(long, default_value_t = 500)]
        batch: usize,
        #[arg(long, default_value_t = 40)]
        batches_per_agent: usize,
        #[arg(long, default_value_t = 4)]
        in_flight: usize,
    },
    IdleConnections {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    IdleAgent {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Signal-to-campaign latency under a steady ingest load (issue 6).
    CampaignLatency(campaigns::Options),
    /// Advisory fan-out to connected agents (issue 6).
    AdvisoryFanout(fanout::Options),
}

fn signals(agent: usize, batch: usize, size: usize) -> Vec<Signal> {
    (0..size)
        .map(|n| {
            Signal::new("ssh_bruteforce", Severity::High, Timestamp::now())
                .with_indicator(
                    IndicatorType::Ip,
                    format!("198.51.{}.{}", agent % 250, (batch * size + n) % 250),
                )
                .with_attribute("attempts", (n % 100) as i64 + 5)
                .with_attribute("distinct_users", (n % 17) as i64 + 1)
        })
        .map(|mut signal| {
            signal.mitre = Some("T1110.001".into());
            signal
        })
        .collect()
}

async fn ingest(
    collector: &CollectorProcess,
    work: &Path,
    agents: usize,
    batch: usize,
    batches: usize,
    in_flight: usize,
) -> anyhow::Result<serde_json::Value> {
    let orgs = ["bench".to_owned()];
    let configs = agents::enroll_agents(collector, work, &orgs, agents).await?;
    // Build every batch first so that the measurement is the collector, not generation.
    let plans: Vec<Vec<Vec<Signal>>> = (0..agents)
        .map(|a| (0..batches).map(|b| signals(a, b, batch)).collect())
        .collect();
    let mut sessions = Vec::new();
    for config in configs {
        sessions.push(agents::connect(collector.address, config, 0).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (session, plan) in sessions.into_iter().zip(plans) {
        let Session {
            endpoint,
            connection,
            control,
            control_recv,
            ..
        } = session;
        tasks.push(tokio::spawn(async move {
            let window = Arc::new(Semaphore::new(in_flight));
            let mut acks = Vec::new();
            for (seq, signals) in plan.into_iter().enumerate() {
                let permit = Arc::clone(&window).acquire_owned().await?;
                let connection = connection.clone();
                acks.push(tokio::spawn(async move {
                    let sent = Instant::now();
                    let (mut send, mut recv) = connection.open_bi().await?;
                    let message = Message::Batch(Batch {
                        seq: seq as u64 + 1,
                        signals,
                    });
                    codec::write_frame(&mut send, &message, MAX_BATCH_FRAME).await?;
                    send.finish()?;
                    let answer = codec::read_frame(&mut recv, MAX_CONTROL_FRAME).await?;
                    drop(permit);
                    match answer {
                        Some(Message::Ack(ack))
                            if ack.accepted as usize + ack.duplicates as usize > 0 =>
                        {
                            anyhow::Ok(sent.elapsed().as_secs_f64() * 1000.0)
                        }
                        other => anyhow::bail!("bad answer {other:?}"),
                    }
                }));
            }
            let mut latencies = Vec::new();
            for ack in acks {
                latencies.push(ack.await??);
            }
            let bytes = connection.stats().udp_tx.bytes;
            drop((control, control_recv));
            connection.close(0u32.into(), b"done");
            endpoint.wait_idle().await;
            anyhow::Ok((latencies, bytes))
        }));
    }
    let mut latencies = Vec::new();
    let mut bytes = 0;
    for task in tasks {
        let (mut l, b) = task.await??;
        latencies.append(&mut l);
        bytes += b;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let total = agents * batches * batch;
    let stored = SqliteStore::open(&collector.data_dir.join("vedetta.db"))?.count_signals()?;
    anyhow::ensure!(
        stored as usize == total,
        "stored {stored} of {total} signals"
    );
    Ok(serde_json::json!({
        "mode": "ingest", "agents": agents, "batch": batch, "in_flight": in_flight,
        "signals": total, "seconds": elapsed,
        "signals_per_second": total as f64 / elapsed,
        "ack_latency_ms_p50": quantile(&latencies, 0.5),
        "ack_latency_ms_p99": quantile(&latencies, 0.99),
        "wire_bytes_per_signal": bytes as f64 / total as f64,
        "collector_peak_rss_kib": process_figures(collector.pid()).peak_rss_kib,
        "stored_exactly_once": true,
    }))
}

async fn idle_connections(
    collector: &CollectorProcess,
    work: &Path,
    agents: usize,
    seconds: u64,
) -> anyhow::Result<serde_json::Value> {
    let before = process_figures(collector.pid());
    let orgs = ["bench".to_owned()];
    let configs = agents::enroll_agents(collector, work, &orgs, agents).await?;
    let mut held = Vec::new();
    for config in configs {
        let mut session = agents::connect(collector.address, config, 0).await?;
        codec::write_frame(
            &mut session.control,
            &agents::heartbeat(1),
            MAX_CONTROL_FRAME,
        )
        .await?;
        held.push((session.endpoint, session.connection, session.control));
    }
    let cpu_start = process_figures(collector.pid()).cpu_s;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = process_figures(collector.pid());
    let alive = held
        .iter()
        .filter(|(_, c, _)| c.close_reason().is_none())
        .count();
    Ok(serde_json::json!({
        "mode": "idle-connections", "agents": agents, "alive": alive,
        "collector_rss_kib_before": before.rss_kib,
        "collector_rss_kib": after.rss_kib,
        "collector_cpu_percent_idle": (after.cpu_s - cpu_start) / seconds as f64 * 100.0,
    }))
}

async fn idle_agent(
    collector: &CollectorProcess,
    work: &Path,
    seconds: u64,
) -> anyhow::Result<serde_json::Value> {
    let mut store = SqliteStore::open(&collector.data_dir.join("vedetta.db"))?;
    let (token, hash) = new_token().map_err(|_| anyhow::anyhow!("randomness"))?;
    let now = Timestamp::now();
    store.create_enrollment_token(&hash, "bench", now, Timestamp(now.0 + 3_600_000_000_000))?;
    let config = work.join("agent.toml");
    std::fs::write(
        &config,
        "state_dir = \"idle-agent\"\n[uplink]\nheartbeat_interval = \"30s\"\n",
    )?;
    let agent = sibling_binary("vedetta-agent")?;
    let status = std::process::Command::new(&agent)
        .args([
            "enroll",
            "--collector",
            &collector.address.to_string(),
            "--token",
            &token,
        ])
        .args(["--ca-fingerprint", &collector.fingerprint, "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "enroll failed");
    let mut child = std::process::Command::new(&agent)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .spawn()?;
    // Let start-up settle before measuring the steady state.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let start = process_figures(child.id());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let end = process_figures(child.id());
    let _ = child.kill();
    let _ = child.wait();
    Ok(serde_json::json!({
        "mode": "idle-agent", "seconds": seconds,
        "agent_rss_kib": end.rss_kib, "agent_peak_rss_kib": end.peak_rss_kib,
        "agent_cpu_percent": (end.cpu_s - start.cpu_s) / seconds as f64 * 100.0,
    }))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let scratch = tempfile_dir(cli.work_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let collector_dir = scratch.join("collector");
    let report = runtime.block_on(async {
        let start = || CollectorProcess::start(&collector_dir);
        match cli.mode {
            Mode::Ingest {
                agents,
                batch,
                batches_per_agent,
                in_flight,
            } => {
                ingest(
                    &start()?,
                    &scratch,
                    agents,
                    batch,
                    batches_per_agent,
                    in_flight,
                )
                .await
            }
            Mode::IdleConnections { agents, seconds } => {
                idle_connections(&start()?, &scratch, agents, seconds).await
            }
            Mode::IdleAgent { seconds } => idle_agent(&start()?, &scratch, seconds).await,
            Mode::CampaignLatency(options) => {
                campaigns::run(&collector_dir, &scratch, options).await
            }
            Mode::AdvisoryFanout(options) => fanout::run(&collector_dir, &scratch, options).await,
        }
    })?;
    println!("{report}");
    Ok(())
}

fn tempfile_dir(chosen: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = chosen.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("vedetta-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
