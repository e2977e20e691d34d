//! `campaign-latency`: signal-to-campaign latency while the collector ingests a steady load.
//!
//! `agents` agents of `orgs` organisations (agent n in org n % orgs), each enrolled and on
//! its own QUIC connection, together send `rate` signals a second: every `tick_ms` each
//! agent sends, in one batch, what has come due (as an agent drains its spool), with at
//! most `in_flight` batches waiting for their ack.
//!
//! Most signals are background noise: the usual kinds (brute force, scans, web probes,
//! floods, DNS tunnels, IOC matches, health), each with the addresses of its own
//! organisation only (`noise_addresses` per organisation, a few of them much more active
//! than the rest), so that noise never correlates but does exercise the correlator
//! (sightings, incident chains). Campaigns come from attacker addresses that several
//! organisations see in turn: `campaigns_per_second` new ones a second, each first seen by
//! one organisation, then by another `stagger_ms` later, and so on up to
//! `orgs_per_campaign` organisations. The collector (default `[correlation]`, min_orgs 2)
//! opens a campaign when the second organisation's signal commits, and grows it with the
//! third.
//!
//! The live stream (`GET /api/v1/stream`) is read from before the load starts. For each
//! campaign the latency is the time its `campaign_opened` (or `campaign_grew` with one more
//! organisation) event arrives minus the time the batch holding the signal that completed
//! it was handed to QUIC. Because the organisations' sightings are staggered, the
//! completing signal is known: the one of the organisation that made the count. A
//! sighting whose predecessor was not yet acknowledged when it was sent is counted as
//! `ambiguous` (then either could have completed it). Each signal's `last_seen` is its
//! creation time, so the event's `campaign.last_seen` gives a second, independent figure
//! (stream arrival minus event time, wall clock). Only campaigns completed after the
//! warm-up are measured.

use crate::agents::{self, Rng, Session};
use crate::{collector_with_orgs, process_figures, summary};
use anyhow::Context as _;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use vedetta_common::codec::{self, MAX_BATCH_FRAME, MAX_CONTROL_FRAME};
use vedetta_common::protocol::{Batch, Message};
use vedetta_common::{IndicatorType, Severity, Signal, Timestamp};

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Serve this existing data directory (e.g. one made by bench/scripts/signals-db.py)
    /// instead of a new one; its first `orgs` organisations are used. Agents, signals and
    /// API users are added to it.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Agents, each enrolled and on its own QUIC connection.
    #[arg(long, default_value_t = 100)]
    pub agents: usize,
    /// Organisations (agent n belongs to org n % orgs).
    #[arg(long, default_value_t = 10)]
    pub orgs: usize,
    /// Signals per second, all agents together.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Seconds of load before campaigns are measured.
    #[arg(long, default_value_t = 5)]
    pub warmup_seconds: u64,
    /// Each agent sends what came due every this many milliseconds.
    #[arg(long, default_value_t = 100)]
    pub tick_ms: u64,
    /// Most signals in one batch (an agent's default).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Batches an agent may have waiting for their ack.
    #[arg(long, default_value_t = 8)]
    pub in_flight: usize,
    /// New attacker addresses a second that several organisations will see.
    #[arg(long, default_value_t = 20)]
    pub campaigns_per_second: u64,
    /// Organisations that see each such address, one after the other.
    #[arg(long, default_value_t = 3)]
    pub orgs_per_campaign: usize,
    /// Milliseconds between one organisation's sighting and the next one's.
    #[arg(long, default_value_t = 2000)]
    pub stagger_ms: u64,
    /// Distinct background addresses per organisation.
    #[arg(long, default_value_t = 5000)]
    pub noise_addresses: u64,
    /// Seconds to wait for the last events after the load ends.
    #[arg(long, default_value_t = 5)]
    pub grace_seconds: u64,
}

impl Options {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (2..=254).contains(&self.orgs),
            "--orgs must be between 2 and 254"
        );
        anyhow::ensure!(
            self.agents >= self.orgs,
            "--agents must be at least --orgs (every organisation needs an agent)"
        );
        anyhow::ensure!(
            (2..=self.orgs).contains(&self.orgs_per_campaign),
            "--orgs-per-campaign must be between 2 and --orgs"
        );
        anyhow::ensure!(
            self.noise_addresses >= 1 && self.noise_addresses <= 655_360,
            "--noise-addresses must be between 1 and 655,360"
        );
        anyhow::ensure!(
            self.campaigns_per_second * (self.warmup_seconds + self.seconds) < 36 * 65_536,
            "too many campaign addresses"
        );
        anyhow::ensure!(
            self.tick_ms > 0 && self.batch > 0 && self.in_flight > 0,
            "bad batching options"
        );
        Ok(())
    }
}

/// First octets of the background addresses: public ranges (never private, never the
/// campaign range 185.220–255.x.x).
const NOISE_FIRST: [u32; 10] = [45, 62, 77, 80, 91, 103, 141, 176, 193, 212];

/// The background address `index` of organisation `org`: disjoint between organisations.
fn noise_address(org: usize, index: u64) -> String {
    let first = NOISE_FIRST[(index % 10) as usize];
    let rest = index / 10;
    format!("{first}.{}.{}.{}", org + 1, (rest >> 8) & 255, rest & 255)
}

/// The attacker address of campaign `k`.
fn campaign_address(k: u64) -> String {
    format!("185.{}.{}.{}", 220 + (k >> 16), (k >> 8) & 255, k & 255)
}

/// The campaign a stream event's address belongs to, if it is one of ours.
fn campaign_of(address: &str) -> Option<u64> {
    let mut parts = address.split('.').map(|p| p.parse::<u64>().ok());
    match (
        parts.next()??,
        parts.next()??,
        parts.next()??,
        parts.next()??,
    ) {
        (185, b, c, d) if b >= 220 => Some(((b - 220) << 16) | (c << 8) | d),
        _ => None,
    }
}

/// Background kinds: (kind, severity, MITRE technique, weight in thousandths).
const NOISE_KINDS: &[(&str, Severity, &str, u32)] = &[
    ("ssh_bruteforce", Severity::High, "T1110.001", 400),
    ("port_scan", Severity::Medium, "T1046", 250),
    ("web_scan", Severity::Medium, "T1595.002", 140),
    ("web_exploit_attempt", Severity::High, "T1190", 40),
    ("syn_flood", Severity::High, "T1498.001", 30),
    ("dns_tunnel_suspected", Severity::Medium, "T1071.004", 20),
    ("ioc_match", Severity::High, "T1071", 20),
    ("ssh_login_after_failures", Severity::Critical, "T1078", 2),
    ("agent_health", Severity::Info, "", 98),
];

fn signal_of(
    kind: &str,
    severity: Severity,
    mitre: &str,
    address: String,
    org: usize,
    rng: &mut Rng,
    now: Timestamp,
) -> Signal {
    let mut signal = Signal::new(kind, severity, now);
    // The attack began a while ago; the signal summarises it up to now.
    signal.first_seen = Timestamp(now.0 - rng.below(600) as i64 * 1_000_000_000);
    signal.count = 1 + rng.below(400);
    if !mitre.is_empty() {
        signal.mitre = Some(mitre.to_owned());
    }
    match kind {
        "agent_health" => signal
            .with_attribute("spool_depth", rng.below(50) as i64)
            .with_attribute("drops_total", 0i64),
        "ssh_bruteforce" | "ssh_login_after_failures" => signal
            .with_indicator(IndicatorType::Ip, address)
            .with_indicator(IndicatorType::Port, "22")
            .with_indicator(
                IndicatorType::User,
                format!("pn:{:016x}", rng.below(64) * 0x9e37_79b9 + org as u64),
            )
            .with_attribute("attempts", 5 + rng.below(400) as i64)
            .with_attribute("distinct_users", 1 + rng.below(40) as i64),
        "port_scan" => signal
            .with_indicator(IndicatorType::Ip, address)
            .with_attribute("distinct_ports", 20 + rng.below(2000) as i64)
            .with_attribute("window_s", 60i64),
        "web_scan" | "web_exploit_attempt" => signal
            .with_indicator(IndicatorType::Ip, address)
            .with_indicator(IndicatorType::Port, "443")
            .with_attribute("requests", 10 + rng.below(1000) as i64)
            .with_attribute("not_found_ratio", 0.5 + rng.unit() / 2.0),
        "dns_tunnel_suspected" => signal
            .with_indicator(
                IndicatorType::Domain,
                format!("t{}.org{org}.tunnel.example", rng.below(200)),
            )
            .with_indicator(IndicatorType::Ip, address)
            .with_attribute("queries", 100 + rng.below(5000) as i64)
            .with_attribute("mean_label_length", 30.0 + rng.unit() * 20.0),
        _ => signal
            .with_indicator(IndicatorType::Ip, address)
            .with_attribute("matches", 1 + rng.below(20) as i64),
    }
}

fn noise_signal(org: usize, addresses: u64, rng: &mut Rng, now: Timestamp) -> Signal {
    let weights: Vec<u32> = NOISE_KINDS.iter().map(|k| k.3).collect();
    let (kind, severity, mitre, _) = NOISE_KINDS[rng.weighted(&weights)];
    // A few addresses are much busier than the rest.
    let index = ((addresses as f64) * rng.unit().powi(3)) as u64;
    let address = noise_address(org, index.min(addresses - 1));
    signal_of(kind, severity, mitre, address, org, rng, now)
}

fn campaign_signal(k: u64, j: usize, org: usize, rng: &mut Rng, now: Timestamp) -> Signal {
    let (kind, severity, mitre) = [
        ("ssh_bruteforce", Severity::High, "T1110.001"),
        ("port_scan", Severity::Medium, "T1046"),
        ("web_scan", Severity::Medium, "T1595.002"),
    ][(k as usize + j) % 3];
    signal_of(kind, severity, mitre, campaign_address(k), org, rng, now)
}

/// One organisation's first sighting of a campaign address, as planned.
#[derive(Debug, Clone, Copy)]
struct Planned {
    due: Duration,
    k: u64,
    j: usize,
}

/// When that sighting's batch was sent and acknowledged.
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    sent: Option<Instant>,
    acked: Option<Instant>,
}

struct Shared {
    options: Options,
    start: Instant,
    total: Duration,
    /// Indexed by `k * orgs_per_campaign + j`.
    sightings: Mutex<Vec<Sent>>,
}

#[derive(Debug, Default)]
struct AgentOutcome {
    generated: u64,
    accepted: u64,
    ack_ms: Vec<f64>,
    late_ticks: u64,
}

async fn run_agent(
    shared: Arc<Shared>,
    n: usize,
    session: Session,
    plan: Vec<Planned>,
) -> anyhow::Result<AgentOutcome> {
    let options = &shared.options;
    let Session {
        endpoint,
        connection,
        control,
        control_recv,
        ..
    } = session;
    let org = n % options.orgs;
    let mut rng = Rng::new(0x5eed ^ (n as u64).wrapping_mul(0x1000_0001));
    let per_agent = options.rate as f64 / options.agents as f64;
    let tick = Duration::from_millis(options.tick_ms);
    // Agents' ticks are spread over the tick, as independent agents' would be.
    let phase = tick.mul_f64(n as f64 / options.agents as f64);
    let mut ticks = tokio::time::interval_at((shared.start + phase).into(), tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let window = Arc::new(Semaphore::new(options.in_flight));
    let mut outcome = AgentOutcome::default();
    let mut acks = Vec::new();
    let mut next = 0;
    let mut seq = 0u64;
    loop {
        ticks.tick().await;
        let elapsed = shared.start.elapsed();
        if elapsed >= shared.total {
            break;
        }
        let due = (per_agent * elapsed.as_secs_f64()) as u64;
        let mut planned = Vec::new();
        while next < plan.len() && plan[next].due <= elapsed {
            planned.push(plan[next]);
            next += 1;
        }
        let noise = due
            .saturating_sub(outcome.generated)
            .saturating_sub(planned.len() as u64);
        if noise == 0 && planned.is_empty() {
            continue;
        }
        let now = Timestamp::now();
        let mut signals: Vec<Signal> = planned
            .iter()
            .map(|p| campaign_signal(p.k, p.j, org, &mut rng, now))
            .collect();
        signals
            .extend((0..noise).map(|_| noise_signal(org, options.noise_addresses, &mut rng, now)));
        outcome.generated += signals.len() as u64;
        // The campaign signals lead, so they travel in the first batch.
        let mut marked: Vec<usize> = planned
            .iter()
            .map(|p| p.k as usize * options.orgs_per_campaign + p.j)
            .collect();
        while !signals.is_empty() {
            let rest = signals.split_off(signals.len().min(options.batch));
            let chunk = std::mem::replace(&mut signals, rest);
            let permit = match Arc::clone(&window).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    outcome.late_ticks += 1;
                    Arc::clone(&window).acquire_owned().await?
                }
            };
            seq += 1;
            let sent = Instant::now();
            let indices = std::mem::take(&mut marked);
            if !indices.is_empty() {
                let mut sightings = shared.sightings.lock().unwrap_or_else(|p| p.into_inner());
                for &index in &indices {
                    sightings[index].sent = Some(sent);
                }
            }
            let connection = connection.clone();
            let shared = Arc::clone(&shared);
            acks.push(tokio::spawn(async move {
                let (mut send, mut recv) = connection.open_bi().await?;
                let message = Message::Batch(Batch {
                    seq,
                    signals: chunk,
                });
                codec::write_frame(&mut send, &message, MAX_BATCH_FRAME).await?;
                send.finish()?;
                let answer = codec::read_frame(&mut recv, MAX_CONTROL_FRAME).await?;
                let acked = Instant::now();
                drop(permit);
                match answer {
                    Some(Message::Ack(ack)) => {
                        if !indices.is_empty() {
                            let mut sightings =
                                shared.sightings.lock().unwrap_or_else(|p| p.into_inner());
                            for &index in &indices {
                                sightings[index].acked = Some(acked);
                            }
                        }
                        anyhow::Ok((
                            u64::from(ack.accepted),
                            (acked - sent).as_secs_f64() * 1000.0,
                        ))
                    }
                    other => anyhow::bail!("bad answer to batch {seq}: {other:?}"),
                }
            }));
        }
    }
    for ack in acks {
        let (accepted, ms) = ack.await??;
        outcome.accepted += accepted;
        outcome.ack_ms.push(ms);
    }
    drop((control, control_recv));
    connection.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    Ok(outcome)
}

/// A stream event as it arrived.
struct Arrival {
    name: String,
    data: String,
    at: Instant,
    wall: Timestamp,
}

pub async fn run(
    collector_dir: &Path,
    work: &Path,
    options: Options,
) -> anyhow::Result<serde_json::Value> {
    options.check()?;
    let (collector, orgs) =
        collector_with_orgs(options.data_dir.as_deref(), collector_dir, options.orgs)?;
    let client = collector.api_client("bench-stream")?;
    let configs = agents::enroll_agents(&collector, work, &orgs, options.agents).await?;
    let mut sessions = Vec::new();
    for config in configs {
        sessions.push(agents::connect(collector.address, config, 0).await?);
    }

    // The plan of campaign sightings, per agent.
    let total = Duration::from_secs(options.warmup_seconds + options.seconds);
    let per_campaign = options.orgs_per_campaign;
    let campaigns = options.campaigns_per_second * total.as_secs();
    let stagger = Duration::from_millis(options.stagger_ms);
    let mut plans: Vec<Vec<Planned>> = vec![Vec::new(); options.agents];
    for k in 0..campaigns {
        for j in 0..per_campaign {
            let due = Duration::from_secs_f64(k as f64 / options.campaigns_per_second as f64)
                + stagger * j as u32;
            if due + Duration::from_millis(2 * options.tick_ms) >= total {
                continue;
            }
            let org = (k as usize + j) % options.orgs;
            let in_org = (options.agents - org).div_ceil(options.orgs);
            let agent = org + options.orgs * (k as usize % in_org);
            plans[agent].push(Planned { due, k, j });
        }
    }
    for plan in &mut plans {
        plan.sort_by_key(|p| p.due);
    }

    // The live stream, subscribed before the first signal.
    let stream_client = client.clone();
    let mut stream =
        tokio::task::spawn_blocking(move || stream_client.events("/api/v1/stream")).await??;
    let (arrivals, arrived) = std::sync::mpsc::channel::<Arrival>();
    std::thread::Builder::new()
        .name("sse".into())
        .spawn(move || {
            while let Ok(Some((name, data))) = stream.next_event() {
                if !name.starts_with("campaign_") && name != "lagged" {
                    continue;
                }
                let arrival = Arrival {
                    name,
                    data,
                    at: Instant::now(),
                    wall: Timestamp::now(),
                };
                if arrivals.send(arrival).is_err() {
                    return;
                }
            }
        })?;

    let start = Instant::now() + Duration::from_millis(200);
    let shared = Arc::new(Shared {
        options: options.clone(),
        start,
        total,
        sightings: Mutex::new(vec![Sent::default(); campaigns as usize * per_campaign]),
    });
    let cpu_before = process_figures(collector.pid()).cpu_s;
    let mut tasks = Vec::new();
    for (n, (session, plan)) in sessions.into_iter().zip(plans).enumerate() {
        tasks.push(tokio::spawn(run_agent(
            Arc::clone(&shared),
            n,
            session,
            plan,
        )));
    }
    let mut outcome = AgentOutcome::default();
    for task in tasks {
        let one = task.await??;
        outcome.generated += one.generated;
        outcome.accepted += one.accepted;
        outcome.late_ticks += one.late_ticks;
        outcome.ack_ms.extend(one.ack_ms);
    }
    let load_seconds = start.elapsed().as_secs_f64();
    let cpu_after = process_figures(collector.pid()).cpu_s;

    // Which sightings completed a campaign (or grew it) after the warm-up.
    let sightings = shared
        .sightings
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let measured_from = start + Duration::from_secs(options.warmup_seconds);
    let measured = |k: u64, j: usize| -> Option<Sent> {
        let sent = sightings.get(k as usize * per_campaign + j).copied()?;
        sent.sent.filter(|at| *at >= measured_from).map(|_| sent)
    };
    let expected_opened = (0..campaigns).filter(|&k| measured(k, 1).is_some()).count();
    let expected_grown = (0..campaigns)
        .flat_map(|k| (2..per_campaign).map(move |j| (k, j)))
        .filter(|&(k, j)| measured(k, j).is_some())
        .count();

    // Events until every expected campaign opened and grew, or the grace period ends.
    let mut opened: HashMap<u64, (Instant, Timestamp, serde_json::Value)> = HashMap::new();
    let mut grew: HashMap<(u64, usize), (Instant, Timestamp, serde_json::Value)> = HashMap::new();
    let (mut seen_opened, mut seen_grown) = (0, 0);
    let mut unexpected = 0u64;
    let mut lagged = 0u64;
    let deadline = Instant::now() + Duration::from_secs(options.grace_seconds);
    while seen_opened < expected_opened || seen_grown < expected_grown {
        let wait = deadline.saturating_duration_since(Instant::now());
        let Ok(arrival) = arrived.recv_timeout(wait) else {
            break;
        };
        let data: serde_json::Value = serde_json::from_str(&arrival.data).context("event")?;
        if arrival.name == "lagged" {
            lagged += data["missed"].as_u64().unwrap_or(0);
            continue;
        }
        let campaign = &data["campaign"];
        let value = campaign["indicator"]["value"].as_str().unwrap_or_default();
        let Some(k) = campaign_of(value) else {
            unexpected += 1;
            continue;
        };
        let orgs_now = campaign["orgs"].as_array().map_or(0, Vec::len);
        let entry = (arrival.at, arrival.wall, campaign.clone());
        match arrival.name.as_str() {
            "campaign_opened" => {
                if let Entry::Vacant(slot) = opened.entry(k) {
                    slot.insert(entry);
                    if measured(k, 1).is_some() {
                        seen_opened += 1;
                    }
                }
            }
            "campaign_grew" if orgs_now >= 3 => {
                if let Entry::Vacant(slot) = grew.entry((k, orgs_now)) {
                    slot.insert(entry);
                    if orgs_now <= per_campaign && measured(k, orgs_now - 1).is_some() {
                        seen_grown += 1;
                    }
                }
            }
            _ => {}
        }
    }

    let event_time = |campaign: &serde_json::Value| -> Option<Timestamp> {
        Timestamp::parse_rfc3339(campaign["last_seen"].as_str()?).ok()
    };
    let mut open_ms = Vec::new();
    let mut open_wall_ms = Vec::new();
    let mut ambiguous = 0u64;
    let mut missing = 0u64;
    for k in 0..campaigns {
        if measured(k, 1).is_none() {
            continue;
        }
        let Some((at, wall, campaign)) = opened.get(&k) else {
            missing += 1;
            continue;
        };
        let orgs_at_open = campaign["orgs"].as_array().map_or(2, Vec::len).max(2);
        let j = (orgs_at_open - 1).min(per_campaign - 1);
        let (Some(completing), Some(previous)) = (
            measured(k, j),
            sightings.get(k as usize * per_campaign + j - 1),
        ) else {
            continue;
        };
        let sent = completing.sent.unwrap_or(*at);
        if previous.acked.is_none_or(|acked| acked > sent) {
            ambiguous += 1;
        }
        open_ms.push(at.saturating_duration_since(sent).as_secs_f64() * 1000.0);
        if let Some(time) = event_time(campaign) {
            open_wall_ms.push((wall.0 - time.0) as f64 / 1e6);
        }
    }
    let mut grew_ms = Vec::new();
    for (&(k, orgs_now), (at, _, _)) in &grew {
        if orgs_now < 3 || orgs_now > per_campaign {
            continue;
        }
        if let Some(Sent {
            sent: Some(sent), ..
        }) = measured(k, orgs_now - 1)
        {
            grew_ms.push(at.saturating_duration_since(sent).as_secs_f64() * 1000.0);
        }
    }
    let figures = process_figures(collector.pid());
    Ok(serde_json::json!({
        "mode": "campaign-latency",
        "agents": options.agents, "orgs": options.orgs, "rate_asked": options.rate,
        "seconds": options.seconds, "warmup_seconds": options.warmup_seconds,
        "tick_ms": options.tick_ms,
        "signals_sent": outcome.generated, "signals_accepted": outcome.accepted,
        "signals_per_second": outcome.accepted as f64 / load_seconds,
        "ack_latency_ms": summary(outcome.ack_ms),
        "late_ticks": outcome.late_ticks,
        "campaigns_expected": expected_opened,
        "campaigns_opened_seen": expected_opened as u64 - missing,
        "campaigns_missing": missing,
        "completing_signal_ambiguous": ambiguous,
        "campaigns_on_other_addresses": unexpected,
        "campaign_growths_expected": expected_grown,
        "campaign_growths_seen": seen_grown,
        "stream_events_lagged": lagged,
        "open_latency_ms": summary(open_ms),
        "grow_latency_ms": summary(grew_ms),
        "open_stream_minus_event_time_ms": summary(open_wall_ms),
        "collector_cpu_percent": (cpu_after - cpu_before) / load_seconds * 100.0,
        "collector_peak_rss_kib": figures.peak_rss_kib,
    }))
}
