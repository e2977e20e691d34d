//! `vedetta-collector demo`: the quick start. A collector with its embedded database in a
//! local folder, one agent for each of three organisations enrolled over real QUIC on
//! loopback, and signals flowing through each agent's real spool and uplink.
//!
//! This first version scripts the agents' signals (a brute force from one address seen
//! by all three organisations, plus local noise): the log, file and network detectors
//! that will produce them for real arrive with the sensing issues, and the demo grows
//! with them.

use crate::config::CollectorConfig;
use crate::enroll::new_token;
use crate::pki::{self, PkiPaths};
use crate::server::{self, database_path};
use crate::store::{SignalFilter, SqliteStore, Store};
use anyhow::Context as _;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vedetta_agent::config::AgentConfig;
use vedetta_agent::spool::Spool;
use vedetta_agent::state::StatePaths;
use vedetta_common::files::create_private_dir;
use vedetta_common::{IndicatorType, Severity, Signal, Timestamp};

const MARKER: &str = ".vedetta-demo";
const ORGS: [(&str, &str); 3] = [
    ("comune-esempio", "Comune di Esempio"),
    ("banca-esempio", "Banca Esempio S.p.A."),
    ("ospedale-esempio", "Ospedale Esempio"),
];
/// The shared attacker (TEST-NET-3, never routed).
const ATTACKER: &str = "203.0.113.7";

/// Prepares a fresh demo folder, refusing to wipe anything that is not a demo.
fn fresh_folder(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        anyhow::ensure!(
            dir.join(MARKER).exists(),
            "{} exists and is not a demo folder; choose another --data-dir",
            dir.display()
        );
        std::fs::remove_dir_all(dir)?;
    }
    create_private_dir(dir)?;
    std::fs::write(dir.join(MARKER), "created by vedetta-collector demo\n")?;
    Ok(())
}

fn scripted_signals(org_index: usize) -> Vec<Signal> {
    let now = Timestamp::now();
    let minutes_ago = |m: i64| Timestamp(now.0 - m * 60_000_000_000);
    let mut brute = Signal::new(
        "ssh_bruteforce",
        Severity::High,
        minutes_ago(12 - org_index as i64 * 3),
    )
    .with_indicator(IndicatorType::Ip, ATTACKER)
    .with_attribute("attempts", 140 + 37 * org_index as i64)
    .with_attribute("distinct_users", 20 + 5 * org_index as i64)
    .with_attribute("window_s", 600_i64);
    brute.last_seen = now;
    brute.count = 140 + 37 * org_index as u64;
    brute.mitre = Some("T1110.001".into());
    let mut local = Signal::new("web_scan", Severity::Medium, minutes_ago(5))
        .with_indicator(IndicatorType::Ip, format!("198.51.100.{}", 10 + org_index))
        .with_attribute("distinct_paths", 310_i64);
    local.count = 412;
    local.mitre = Some("T1595.003".into());
    vec![brute, local]
}

/// Runs the demo; with `exit_when_done`, returns once the picture is printed.
pub fn run(data_dir: Option<PathBuf>, exit_when_done: bool) -> anyhow::Result<()> {
    let dir = data_dir.unwrap_or_else(|| PathBuf::from("vedetta-demo"));
    fresh_folder(&dir)?;
    let collector_dir = dir.join("collector");
    create_private_dir(&collector_dir)?;
    pki::create(&PkiPaths::in_dir(&collector_dir), "Vedetta demo CA")?;
    let mut store = SqliteStore::open(&database_path(&collector_dir))?;
    let listen = "127.0.0.1:0".parse()?;
    std::fs::write(
        collector_dir.join(crate::config::FILE_NAME),
        CollectorConfig::new(listen, "127.0.0.1:0".parse()?).to_toml(),
    )?;
    for (id, name) in ORGS {
        store.add_org(id, name, Timestamp::now())?;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let collector = server::start(&collector_dir, None).await?;
        println!(
            "Vedetta demo — collector on udp://{} (data in {})",
            collector.quic_addr,
            dir.display()
        );
        let (stop_agents, _) = tokio::sync::watch::channel(false);
        let mut agents = Vec::new();
        for (index, (org, name)) in ORGS.iter().enumerate() {
            let (token, hash) = new_token().map_err(|_| anyhow::anyhow!("no system randomness"))?;
            let now = Timestamp::now();
            store.create_enrollment_token(&hash, org, now, Timestamp(now.0 + 600_000_000_000))?;
            let agent_dir = dir.join(format!("agent-{org}"));
            let config_path = agent_dir.join("agent.toml");
            create_private_dir(&agent_dir)?;
            std::fs::write(
                &config_path,
                "state_dir = \"state\"\n[uplink]\nheartbeat_interval = \"2s\"\n",
            )?;
            let config = AgentConfig::load(&config_path)?;
            let paths = StatePaths::new(&config.state_dir);
            let enrollment = vedetta_agent::enroll::enroll(
                &paths,
                &collector.quic_addr.to_string(),
                &token,
                &collector.ca_fingerprint,
                &format!("demo host of {name}"),
            )
            .await
            .with_context(|| format!("enrolling the agent of {org}"))?;
            println!("  enrolled agent {} for {name}", enrollment.agent_id);
            // The scripted detections go through the agent's real spool and uplink.
            Spool::open(&paths.spool, config.spool.max_signals)?.push(&scripted_signals(index))?;
            let mut stop = stop_agents.subscribe();
            agents.push(tokio::spawn(vedetta_agent::run::run(
                config,
                false,
                async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                },
            )));
        }

        let expected = ORGS.len() * 2;
        let deadline = Instant::now() + Duration::from_secs(30);
        let database = database_path(&collector_dir);
        let scripted = |store: &mut SqliteStore| -> anyhow::Result<usize> {
            let all = store.signals(&SignalFilter {
                limit: 10_000,
                ..SignalFilter::default()
            })?;
            Ok(all
                .iter()
                .filter(|s| s.signal.kind != "agent_health")
                .count())
        };
        let mut reader = SqliteStore::open(&database)?;
        while scripted(&mut reader)? < expected {
            anyhow::ensure!(
                Instant::now() < deadline,
                "signals did not arrive within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        print_picture(&mut reader)?;

        if exit_when_done {
            println!("demo complete; stopping");
        } else {
            println!("\nThe collector keeps running with its agents. Press Ctrl-C to stop.");
            vedetta_common::shutdown::terminated().await?;
        }
        stop_agents.send_replace(true);
        for agent in agents {
            agent.await??;
        }
        collector.stop().await;
        anyhow::Ok(())
    })
}

fn print_picture(store: &mut SqliteStore) -> anyhow::Result<()> {
    let signals = store.signals(&SignalFilter {
        limit: 10_000,
        ..SignalFilter::default()
    })?;
    println!(
        "\nSignals stored by the collector (org and agent taken from each agent's certificate):"
    );
    println!(
        "  {:<18} {:<22} {:<10} {:>6}  indicator",
        "org", "kind", "severity", "count"
    );
    for stored in signals.iter().filter(|s| s.signal.kind != "agent_health") {
        let indicator = stored
            .signal
            .indicators
            .first()
            .map(|i| i.value.as_str())
            .unwrap_or("-");
        println!(
            "  {:<18} {:<22} {:<10} {:>6}  {indicator}",
            stored.org, stored.signal.kind, stored.signal.severity, stored.signal.count
        );
    }
    let mut orgs_by_address: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for stored in &signals {
        for indicator in stored
            .signal
            .indicators
            .iter()
            .filter(|i| i.kind == IndicatorType::Ip)
        {
            orgs_by_address
                .entry(&indicator.value)
                .or_default()
                .insert(&stored.org);
        }
    }
    println!("\nAddresses seen by more than one organisation:");
    for (address, orgs) in orgs_by_address.iter().filter(|(_, orgs)| orgs.len() > 1) {
        let orgs: Vec<&str> = orgs.iter().copied().collect();
        println!(
            "  {address} — {} organisations: {}",
            orgs.len(),
            orgs.join(", ")
        );
    }
    Ok(())
}
