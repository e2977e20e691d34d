//! Simulated agents: enrolled through the real enrollment protocol (each its own key and
//! certificate), connected with mutual TLS, with a real control stream.

use crate::CollectorProcess;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Semaphore;
use vedetta_agent::state::StatePaths;
use vedetta_collector::enroll::new_token;
use vedetta_collector::store::{SqliteStore, Store};
use vedetta_common::Timestamp;
use vedetta_common::codec::{self, MAX_CONTROL_FRAME};
use vedetta_common::identity::SERVER_NAME;
use vedetta_common::protocol::{Heartbeat, Hello, Message, Welcome};

/// Enrolls `count` agents; agent `n` belongs to `orgs[n % orgs.len()]`. Returns each
/// agent's mutual-TLS client configuration, in order.
pub async fn enroll_agents(
    collector: &CollectorProcess,
    work: &Path,
    orgs: &[String],
    count: usize,
) -> anyhow::Result<Vec<quinn::ClientConfig>> {
    anyhow::ensure!(!orgs.is_empty(), "no organisation to enroll agents in");
    let mut store = SqliteStore::open(&collector.data_dir.join("vedetta.db"))?;
    let limit = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::new();
    for n in 0..count {
        let (token, hash) = new_token().map_err(|_| anyhow::anyhow!("randomness"))?;
        let now = Timestamp::now();
        let org = &orgs[n % orgs.len()];
        store.create_enrollment_token(&hash, org, now, Timestamp(now.0 + 3_600_000_000_000))?;
        let paths = StatePaths::new(&work.join(format!("agent-{n}")));
        let address = collector.address.to_string();
        let fingerprint = collector.fingerprint.clone();
        let limit = Arc::clone(&limit);
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await?;
            vedetta_agent::enroll::enroll(
                &paths,
                &address,
                &token,
                &fingerprint,
                &format!("bench-{n}"),
            )
            .await?;
            vedetta_agent::run::session_client(&paths)
        }));
    }
    let mut configs = Vec::new();
    for task in tasks {
        configs.push(task.await??);
    }
    Ok(configs)
}

/// One agent's connection: its own UDP socket, the connection, and the control stream
/// after `Hello` → `Welcome`.
#[derive(Debug)]
pub struct Session {
    pub endpoint: quinn::Endpoint,
    pub connection: quinn::Connection,
    pub control: quinn::SendStream,
    pub control_recv: quinn::RecvStream,
    pub welcome: Welcome,
}

/// Connects, opens the control stream and says hello, naming the highest advisory
/// sequence number the agent holds.
pub async fn connect(
    collector: SocketAddr,
    config: quinn::ClientConfig,
    last_advisory_seq: u64,
) -> anyhow::Result<Session> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(config);
    let connection = endpoint.connect(collector, SERVER_NAME)?.await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    let hello = Message::Hello(Hello {
        agent_version: "bench".into(),
        last_advisory_seq,
    });
    codec::write_frame(&mut send, &hello, MAX_CONTROL_FRAME).await?;
    match codec::read_frame(&mut recv, MAX_CONTROL_FRAME).await? {
        Some(Message::Welcome(welcome)) => Ok(Session {
            endpoint,
            connection,
            control: send,
            control_recv: recv,
            welcome,
        }),
        other => anyhow::bail!("unexpected answer to hello: {other:?}"),
    }
}

/// A heartbeat as an idle agent sends it.
pub fn heartbeat(uptime_s: u64) -> Message {
    Message::Heartbeat(Heartbeat {
        agent_version: "bench".into(),
        uptime_s,
        spool_depth: 0,
        drops_total: 0,
        source_errors: Vec::new(),
        sent_at: Timestamp::now(),
        inventory: None,
    })
}

/// A small, fast pseudo-random generator (SplitMix64): the load must be cheap to make
/// and the same from run to run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// An index into `weights`, drawn in proportion to them.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mut pick = self.below(total);
        for (index, weight) in weights.iter().enumerate() {
            if pick < u64::from(*weight) {
                return index;
            }
            pick -= u64::from(*weight);
        }
        weights.len().saturating_sub(1)
    }
}
