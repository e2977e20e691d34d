//! Durable delivery, end to end: real collector and agent binaries, real QUIC on loopback,
//! the real database file. Every signal arrives once, whatever crashes on the way.

use vedetta_e2e::{
    Agent, Collector, assert_stored_once, collector_and_agent, test_signals, wait_until,
};

const KIND: &str = "e2e_test";

/// Waits until the agent's spool is empty and the collector holds `signals`, each once.
fn assert_all_delivered(collector: &Collector, agent: &Agent, signals: &[vedetta_common::Signal]) {
    wait_until("all signals stored", || {
        collector.signals_of_kind(KIND).len() >= signals.len()
    });
    wait_until("spool empty", || agent.status()["spool"]["depth"] == 0);
    assert_stored_once(&collector.signals_of_kind(KIND), signals);
}

/// Ids of the signals still in the agent's spool (read from its database file).
fn spooled_ids(agent: &Agent) -> std::collections::HashSet<vedetta_common::SignalId> {
    let spool = rusqlite::Connection::open(agent.state_dir().join("spool.db")).expect("spool");
    let mut select = spool.prepare("SELECT body FROM signals").expect("select");
    select
        .query_map([], |row| row.get::<_, String>(0))
        .expect("rows")
        .map(|body| {
            serde_json::from_str::<vedetta_common::Signal>(&body.expect("row"))
                .expect("signal")
                .id
        })
        .collect()
}

#[test]
fn enrolled_agent_delivers_every_signal_once_with_the_identity_of_its_certificate() {
    let (mut collector, mut agent) = collector_and_agent("");
    agent.start();
    let signals = test_signals(1_000, KIND);
    agent.emit(&signals).expect("emit");
    wait_until("all signals stored", || {
        collector.signals_of_kind(KIND).len() >= signals.len()
    });
    let stored = collector.signals_of_kind(KIND);
    assert_stored_once(&stored, &signals);
    let agent_id = agent.agent_id();
    assert!(
        stored
            .iter()
            .all(|s| s.org == "acme" && s.agent_id == agent_id)
    );
    // The payload arrives intact, field by field.
    let first = stored
        .iter()
        .find(|s| s.signal.id == signals[0].id)
        .expect("first");
    assert_eq!(first.signal, signals[0]);
    // Heartbeats reach the collector: agent list shows version, spool figures and the
    // host's inventory (what this very machine is).
    wait_until("heartbeat recorded", || {
        let list = collector
            .cli(&["agent", "list", "--format", "json"])
            .expect("agent list");
        let agents: serde_json::Value = serde_json::from_str(&list).expect("json");
        agents[0]["agent_version"].is_string() && agents[0]["spool_depth"] == 0
    });
    let list = collector
        .cli(&["agent", "list", "--format", "json"])
        .expect("agent list");
    let agents: serde_json::Value = serde_json::from_str(&list).expect("json");
    let inventory = &agents[0]["inventory"];
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel");
    assert_eq!(inventory["kernel"], kernel.trim(), "{inventory}");
    assert_eq!(inventory["arch"], std::env::consts::ARCH, "{inventory}");
    assert!(inventory["cpus"].as_u64() >= Some(1), "{inventory}");
    assert!(inventory["memory_mib"].as_u64() > Some(0), "{inventory}");
    assert!(
        inventory["os"].as_str().is_some_and(|os| !os.is_empty()),
        "{inventory}"
    );
    wait_until("agent reports the last ack", || {
        let status = agent.status();
        status["spool"]["acked_total"].as_u64() >= Some(1_000)
            && status["uplink"]["state"] == "connected"
    });
    assert!(agent.stop(), "agent exits cleanly on SIGTERM");
    collector.stop();
}

#[test]
fn signals_produced_while_the_collector_is_down_arrive_after_it_returns() {
    let (mut collector, mut agent) = collector_and_agent("");
    collector.stop();
    agent.start();
    let signals = test_signals(500, KIND);
    agent.emit(&signals[..250]).expect("emit");
    wait_until("agent notices the collector is down", || {
        agent.status()["uplink"]["state"] == "disconnected"
    });
    agent.emit(&signals[250..]).expect("emit");
    // The 500, plus the agent's start-up health signal if it was spooled already.
    let depth = agent.status()["spool"]["depth"].as_u64().expect("depth");
    assert!((500..=501).contains(&depth), "depth {depth}");
    collector.start();
    assert_all_delivered(&collector, &agent, &signals);
    assert!(agent.stop());
    collector.stop();
}

#[test]
fn collector_killed_mid_ingest_loses_no_acknowledged_signal_and_stores_none_twice() {
    let (mut collector, mut agent) =
        collector_and_agent("[uplink]\nbatch_max_signals = 50\nmax_in_flight = 4\n");
    // Spool everything first, then let the agent stream it.
    collector.stop();
    let signals = test_signals(20_000, KIND);
    agent.emit(&signals).expect("emit");
    agent.start();
    collector.start();
    wait_until("ingest under way", || {
        collector.signals_of_kind(KIND).len() >= 2_000
    });
    collector.kill();
    // The collector is dead, so no more acks: a signal no longer in the agent's spool was
    // acknowledged, and every acknowledged signal must be in the database file.
    let spooled = spooled_ids(&agent);
    let stored: std::collections::HashSet<_> = collector
        .signals_of_kind(KIND)
        .into_iter()
        .map(|s| s.signal.id)
        .collect();
    let acknowledged: Vec<_> = signals
        .iter()
        .filter(|s| !spooled.contains(&s.id))
        .collect();
    assert!(
        !acknowledged.is_empty(),
        "nothing was acknowledged before the kill"
    );
    for signal in &acknowledged {
        assert!(
            stored.contains(&signal.id),
            "acknowledged signal {} lost",
            signal.id
        );
    }
    assert!(
        stored.len() < signals.len(),
        "the kill came too late to test anything"
    );
    collector.start();
    assert_all_delivered(&collector, &agent, &signals);
    assert!(agent.stop());
    collector.stop();
}

#[test]
fn agent_killed_keeps_its_spool_and_resumes_delivery() {
    let (mut collector, mut agent) = collector_and_agent("");
    collector.stop();
    agent.start();
    let signals = test_signals(3_000, KIND);
    agent.emit(&signals).expect("emit");
    agent.kill();
    let depth = agent.status()["spool"]["depth"].as_u64().expect("depth");
    assert!(
        (3_000..=3_001).contains(&depth),
        "spool kept {depth} of 3000 signals"
    );
    assert_eq!(agent.status()["running"], false);
    collector.start();
    agent.start();
    wait_until("all signals stored", || {
        collector.signals_of_kind(KIND).len() >= signals.len()
    });
    assert_stored_once(&collector.signals_of_kind(KIND), &signals);
    assert!(agent.stop());
    collector.stop();
}

#[test]
fn sigterm_delivers_the_spool_before_exiting() {
    let (mut collector, mut agent) = collector_and_agent("");
    agent.start();
    wait_until("agent connected", || {
        agent.status()["uplink"]["state"] == "connected"
    });
    let signals = test_signals(5_000, KIND);
    agent.emit(&signals).expect("emit");
    assert!(agent.stop(), "agent exits with success");
    assert_eq!(
        agent.status()["spool"]["depth"].as_u64(),
        Some(0),
        "{}",
        agent.log()
    );
    assert_eq!(agent.status()["uplink"]["state"], "stopped");
    assert_stored_once(&collector.signals_of_kind(KIND), &signals);
    collector.stop();
}

#[test]
fn a_full_spool_drops_the_least_important_counts_it_and_keeps_running() {
    let (mut collector, mut agent) = collector_and_agent("[spool]\nmax_signals = 100\n");
    collector.stop();
    agent.start();
    let important: Vec<_> = test_signals(50, KIND)
        .into_iter()
        .map(|mut s| {
            s.severity = vedetta_common::Severity::Critical;
            s
        })
        .collect();
    let chatter: Vec<_> = test_signals(250, KIND)
        .into_iter()
        .map(|mut s| {
            s.severity = vedetta_common::Severity::Info;
            s
        })
        .collect();
    agent.emit(&important).expect("emit");
    agent.emit(&chatter).expect("emit");
    // 300 emitted into room for 100, plus the agent's own health reports, which are
    // spooled too and never dropped: the one at start-up, and at most one drop report (they
    // come at most every 30 s) if its 2-second check ran before this line.
    let drops = agent.status()["spool"]["drops_total"]
        .as_u64()
        .expect("drops");
    assert!((200..=202).contains(&drops), "drops {drops}");
    assert!(
        agent.is_running(),
        "agent keeps running when the spool is full"
    );
    collector.start();
    // Every critical signal survived, and the loss is reported in a health signal.
    wait_until("critical signals stored", || {
        let stored = collector.signals_of_kind(KIND);
        important
            .iter()
            .all(|s| stored.iter().any(|t| t.signal.id == s.id))
    });
    wait_until("health signal reports the drops", || {
        collector.signals_of_kind("agent_health").iter().any(|s| {
            matches!(s.signal.attributes.get("drops_total"), Some(vedetta_common::AttributeValue::Int(n)) if *n >= 200)
        })
    });
    wait_until("heartbeat reports the drops", || {
        let list = collector
            .cli(&["agent", "list", "--format", "json"])
            .expect("agent list");
        let agents: serde_json::Value = serde_json::from_str(&list).expect("json");
        agents[0]["drops_total"].as_u64() >= Some(200)
    });
    assert!(agent.stop());
    collector.stop();
}
