//! `advisory-fanout`: how long an advisory published through the API takes to reach every
//! connected agent.
//!
//! `agents` agents of `orgs` organisations are enrolled through the real protocol and
//! stay connected, each with its own QUIC connection and a real control stream: `Hello`
//! naming the highest advisory sequence number it holds (the feed holds `existing`
//! advisories published beforehand, which the agents already have), a heartbeat at once
//! and then every 30 s at a random phase, and a reader of the frames the collector
//! pushes. Then, `rounds` times, `pause_ms` apart, an analyst publishes an advisory
//! (`POST /api/v1/advisories`, a new address each round) and each agent notes when the
//! `Advisories` frame carrying that sequence number arrives. Fan-out time of an agent =
//! arrival − the moment the POST was sent (so the commit of the advisory is included).
//! Reports, per round and over all rounds: deliveries, p50, p99 and max (the time until
//! *all* agents have it), and the POST's own duration.

use crate::agents::{self, Rng};
use crate::{collector_with_orgs, process_figures, summary};
use anyhow::Context as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use vedetta_collector::store::{SqliteStore, Store};
use vedetta_common::Timestamp;
use vedetta_common::codec::{self, MAX_CONTROL_FRAME};
use vedetta_common::protocol::Message;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Serve this existing data directory (e.g. one made by bench/scripts/signals-db.py)
    /// instead of a new one; its first `orgs` organisations are used. Agents, signals and
    /// API users are added to it.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Agents kept connected.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Organisations (agent n belongs to org n % orgs).
    #[arg(long, default_value_t = 10)]
    pub orgs: usize,
    /// Advisories published one after the other, each measured.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Milliseconds between two publications.
    #[arg(long, default_value_t = 3000)]
    pub pause_ms: u64,
    /// Advisories in the feed before the agents connect (they already hold them).
    #[arg(long, default_value_t = 100)]
    pub existing: usize,
    /// Seconds a round may take before the agents still waiting count as missed.
    #[arg(long, default_value_t = 10)]
    pub timeout_seconds: u64,
    /// Agents connecting at once while the load is set up.
    #[arg(long, default_value_t = 32)]
    pub connect_concurrency: usize,
}

/// What an agent's reader saw.
enum Seen {
    Advisory { seq: u64, at: Instant },
    Lost,
}

fn publish(
    client: &crate::https::ApiClient,
    value: &str,
    description: &str,
) -> anyhow::Result<u64> {
    let body = serde_json::json!({
        "indicator": {"type": "ip", "value": value},
        "severity": "high",
        "expires_in": "1d",
        "description": description,
    })
    .to_string();
    let answer = client.request("POST", "/api/v1/advisories", Some(&body))?;
    anyhow::ensure!(
        answer.status == 201,
        "POST /api/v1/advisories: {} {}",
        answer.status,
        answer.body
    );
    let record: serde_json::Value = serde_json::from_str(&answer.body)?;
    record["seq"].as_u64().context("advisory seq")
}

pub async fn run(
    collector_dir: &Path,
    work: &Path,
    options: Options,
) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(options.orgs >= 1 && options.agents >= 1, "bad options");
    let (collector, orgs) =
        collector_with_orgs(options.data_dir.as_deref(), collector_dir, options.orgs)?;
    let client = Arc::new(collector.api_client("bench-analyst")?);

    // A feed of some size, already held by every agent.
    let mut held = 0;
    for n in 0..options.existing {
        let client = Arc::clone(&client);
        held = tokio::task::spawn_blocking(move || {
            publish(
                &client,
                &format!("198.51.{}.{}", 100 + n / 250, n % 250 + 1),
                "bench: an older advisory",
            )
        })
        .await??;
    }

    let rss_before = process_figures(collector.pid()).rss_kib;
    let started = Timestamp::now();
    let configs = agents::enroll_agents(&collector, work, &orgs, options.agents).await?;
    let (seen, mut arrivals) = mpsc::unbounded_channel::<(usize, Seen)>();
    let limit = Arc::new(Semaphore::new(options.connect_concurrency.max(1)));
    let mut connecting = Vec::new();
    for config in configs {
        let limit = Arc::clone(&limit);
        let address = collector.address;
        connecting.push(tokio::spawn(async move {
            let _permit = limit.acquire().await?;
            agents::connect(address, config, held).await
        }));
    }
    let mut sessions = Vec::new();
    for task in connecting {
        sessions.push(task.await??);
    }
    // Each agent: a reader of its control stream and a heartbeat every 30 s.
    let mut held_connections = Vec::new();
    for (n, session) in sessions.into_iter().enumerate() {
        let mut recv = session.control_recv;
        let seen = seen.clone();
        tokio::spawn(async move {
            loop {
                match codec::read_frame(&mut recv, MAX_CONTROL_FRAME).await {
                    Ok(Some(Message::Advisories(frame))) => {
                        let at = Instant::now();
                        for advisory in frame.advisories {
                            let _ = seen.send((
                                n,
                                Seen::Advisory {
                                    seq: advisory.seq,
                                    at,
                                },
                            ));
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        let _ = seen.send((n, Seen::Lost));
                        return;
                    }
                }
            }
        });
        let mut control = session.control;
        let mut rng = Rng::new(n as u64 + 1);
        let phase = Duration::from_millis(rng.below(30_000));
        tokio::spawn(async move {
            let started = Instant::now();
            let uptime = || started.elapsed().as_secs();
            if codec::write_frame(
                &mut control,
                &agents::heartbeat(uptime()),
                MAX_CONTROL_FRAME,
            )
            .await
            .is_err()
            {
                return;
            }
            tokio::time::sleep(phase).await;
            let mut every = tokio::time::interval(Duration::from_secs(30));
            loop {
                every.tick().await;
                let beat = agents::heartbeat(uptime());
                if codec::write_frame(&mut control, &beat, MAX_CONTROL_FRAME)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        held_connections.push((session.endpoint, session.connection));
    }
    drop(seen);
    // Let the connections settle: every agent's first heartbeat stored (the collector
    // writes them one at a time through the connection it also reads advisories with),
    // then a second more.
    let database = collector.data_dir.join("vedetta.db");
    let settle = Instant::now();
    loop {
        let path = database.clone();
        let stored = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
            let agents = SqliteStore::open(&path)?.agents()?;
            Ok(agents
                .iter()
                .filter(|a| a.enrolled_at >= started && a.last_seen.is_some())
                .filter(|a| a.agent_version.as_deref() == Some("bench"))
                .count())
        })
        .await??;
        if stored >= options.agents || settle.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settle_ms = settle.elapsed().as_secs_f64() * 1000.0;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected = process_figures(collector.pid()).rss_kib;

    let mut lost = 0u64;
    let mut rounds = Vec::new();
    let mut all_ms = Vec::new();
    let mut worst_ms: f64 = 0.0;
    let mut missed_total = 0usize;
    let cpu_before = process_figures(collector.pid()).cpu_s;
    for round in 0..options.rounds {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(options.pause_ms)).await;
        }
        let value = format!("203.0.113.{}", round % 254 + 1);
        let posting = Arc::clone(&client);
        let posted = Instant::now();
        let seq = tokio::task::spawn_blocking(move || {
            publish(&posting, &value, "bench: fan-out measurement")
        })
        .await??;
        let post_ms = posted.elapsed().as_secs_f64() * 1000.0;
        let mut got = vec![None::<f64>; options.agents];
        let mut received = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(options.timeout_seconds);
        while received < options.agents {
            let next = tokio::time::timeout_at(deadline, arrivals.recv()).await;
            let Ok(Some((n, what))) = next else {
                break;
            };
            match what {
                Seen::Advisory { seq: got_seq, at } if got_seq == seq && got[n].is_none() => {
                    got[n] = Some(at.saturating_duration_since(posted).as_secs_f64() * 1000.0);
                    received += 1;
                }
                Seen::Advisory { .. } => {}
                Seen::Lost => lost += 1,
            }
        }
        let delays: Vec<f64> = got.iter().flatten().copied().collect();
        let missed = options.agents - delays.len();
        missed_total += missed;
        all_ms.extend(&delays);
        let stats = summary(delays);
        worst_ms = worst_ms.max(stats["max"].as_f64().unwrap_or(0.0));
        rounds.push(serde_json::json!({
            "seq": seq, "post_ms": post_ms, "delivered": stats["count"],
            "missed": missed, "p50_ms": stats["p50"], "p99_ms": stats["p99"],
            "all_ms": stats["max"],
        }));
    }
    let cpu_after = process_figures(collector.pid()).cpu_s;
    let alive = held_connections
        .iter()
        .filter(|(_, connection)| connection.close_reason().is_none())
        .count();
    let figures = process_figures(collector.pid());
    for (_, connection) in &held_connections {
        connection.close(0u32.into(), b"done");
    }
    Ok(serde_json::json!({
        "mode": "advisory-fanout",
        "agents": options.agents, "alive": alive, "connections_lost": lost,
        "existing_advisories": options.existing,
        "rounds": rounds,
        "fanout_ms": summary(all_ms),
        "worst_round_all_agents_ms": worst_ms,
        "missed_deliveries": missed_total,
        "first_heartbeats_stored_ms": settle_ms,
        "collector_rss_kib_before_agents": rss_before,
        "collector_rss_kib_connected": rss_connected,
        "collector_peak_rss_kib": figures.peak_rss_kib,
        "collector_cpu_s_during_rounds": cpu_after - cpu_before,
    }))
}
