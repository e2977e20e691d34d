//! The collector's intelligence, end to end: real agents of several organisations read
//! real log files and deliver over QUIC; the real collector correlates, pushes
//! advisories and answers on its HTTPS API, whose roles are checked here.

use serde_json::{Value, json};
use std::path::PathBuf;
use vedetta_e2e::{Agent, Collector, append_log, sshd_failures, sshd_log_agent, wait_until};

fn items(answer: &Value) -> Vec<Value> {
    answer["items"].as_array().cloned().unwrap_or_default()
}

/// The organisations of a campaign, sorted (the campaign lists them in the order they
/// joined, which depends on which agent's batch committed first).
fn orgs_of(campaign: &Value) -> Vec<String> {
    let mut orgs: Vec<String> = campaign["orgs"]
        .as_array()
        .expect("orgs")
        .iter()
        .map(|o| o["org"].as_str().expect("org").to_owned())
        .collect();
    orgs.sort();
    orgs
}

#[test]
fn one_attacker_at_three_organisations_is_one_campaign_and_survives_a_restart() {
    let mut collector = Collector::init();
    for org in ["bank", "city", "hospital"] {
        collector.add_org(org);
    }
    collector.start();
    let analyst = collector.user("ana", "analyst", None);
    let api = collector.api();
    let mut agents: Vec<(Agent, PathBuf)> = ["bank", "city", "hospital"]
        .iter()
        .map(|org| sshd_log_agent(&collector, org))
        .collect();
    // The shared attacker, and one attacker of each organisation's own.
    for (n, (_, log)) in agents.iter().enumerate() {
        append_log(log, &sshd_failures("203.0.113.7", 12));
        append_log(log, &sshd_failures(&format!("198.51.100.{}", 10 + n), 12));
    }
    for (agent, _) in agents.iter_mut().take(2) {
        agent.start();
    }
    // Two organisations: a campaign, with both.
    let campaign = {
        let mut found = Value::Null;
        wait_until("a campaign of bank and city", || {
            let answer = api.get("/api/v1/campaigns?status=open", Some(&analyst));
            assert_eq!(answer.status, 200, "{:?}", answer.body);
            found = items(&answer.body)
                .into_iter()
                .find(|c| orgs_of(c).len() == 2)
                .unwrap_or(Value::Null);
            !found.is_null()
        });
        found
    };
    assert_eq!(
        campaign["indicator"],
        json!({"type": "ip", "value": "203.0.113.7"})
    );
    let id = campaign["id"].as_str().expect("id").to_owned();

    // Restart the collector while the third organisation's agent starts sending.
    collector.stop();
    agents[2].0.start();
    collector.start();
    let api = collector.api();
    wait_until("the campaign to reach the third organisation", || {
        let answer = api.get(&format!("/api/v1/campaigns/{id}"), Some(&analyst));
        answer.status == 200 && orgs_of(&answer.body["campaign"]).len() == 3
    });
    // Every single-organisation attacker has been stored (and correlated) by now.
    for n in 0..3 {
        let source = format!("198.51.100.{}", 10 + n);
        wait_until("the single-organisation attacker's signal", || {
            let answer = api.get(&format!("/api/v1/indicators/{source}"), Some(&analyst));
            answer.status == 200 && answer.body["signals"].as_u64() > Some(0)
        });
    }
    let all = api.get("/api/v1/campaigns", Some(&analyst));
    let campaigns = items(&all.body);
    assert_eq!(campaigns.len(), 1, "exactly one campaign: {campaigns:#?}");
    let campaign = &campaigns[0];
    assert_eq!(campaign["id"], id.as_str(), "the same campaign grew");
    assert_eq!(orgs_of(campaign), ["bank", "city", "hospital"]);
    assert_eq!(
        campaign["severity"], "critical",
        "three organisations raise it"
    );
    // Who else saw this address: all three, doing brute force.
    let report = api.get("/api/v1/indicators/203.0.113.7", Some(&analyst));
    let orgs: Vec<&str> = report.body["organisations"]
        .as_array()
        .expect("organisations")
        .iter()
        .map(|o| o["org"].as_str().expect("org"))
        .collect();
    assert_eq!(orgs, ["bank", "city", "hospital"]);
    // The analysts' CLI over the same API: JSON for scripts, a table for people.
    let query = |args: &[&str]| {
        let output = std::process::Command::new(vedetta_e2e::binary("vedetta-collector"))
            .arg("query")
            .args(args)
            .arg("--url")
            .arg(api.url(""))
            .arg("--ca")
            .arg(collector.data_dir.join("ca.crt"))
            .env("VEDETTA_TOKEN", &analyst)
            .output()
            .expect("query");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let listed: Value =
        serde_json::from_str(&query(&["campaigns", "--format", "json"])).expect("json");
    assert_eq!(items(&listed).len(), 1);
    let text = query(&["indicator", "203.0.113.7"]);
    assert!(
        text.contains("hospital") && text.contains("ssh_bruteforce") && text.contains(&id),
        "{text}"
    );
    for (agent, _) in &mut agents {
        assert!(agent.stop(), "agent exits cleanly; log: {}", agent.log());
    }
    collector.stop();
}

fn held_advisories(agent: &Agent) -> String {
    std::fs::read_to_string(agent.state_dir().join("advisories.ndjson")).unwrap_or_default()
}

#[test]
fn an_advisory_reaches_connected_and_reconnecting_agents_and_a_matching_line_is_reported() {
    let mut collector = Collector::init();
    collector.add_org("bank");
    collector.add_org("city");
    collector.start();
    let analyst = collector.user("ana", "analyst", None);
    let api = collector.api();
    let (mut online, log) = sshd_log_agent(&collector, "bank");
    let (mut offline, _) = sshd_log_agent(&collector, "city");
    online.start();
    wait_until("the bank's agent to connect", || {
        online.status()["uplink"]["state"] == "connected"
    });

    let published = api.post(
        "/api/v1/advisories",
        Some(&analyst),
        &json!({
            "indicator": {"type": "ip", "value": "203.0.113.99"},
            "severity": "critical",
            "description": "C2 of the campaign against the partnership",
            "expires_in": "2d",
        }),
    );
    assert_eq!(published.status, 201, "{:?}", published.body);
    let advisory = published.body["id"].as_str().expect("id").to_owned();
    wait_until("the connected agent to hold the advisory", || {
        held_advisories(&online).contains("203.0.113.99")
    });
    // An agent that was offline catches up when it connects.
    offline.start();
    wait_until("the reconnecting agent to catch up", || {
        held_advisories(&offline).contains(&advisory)
    });

    // One line from the advised address at the bank: an ioc_match at the collector.
    append_log(
        &log,
        "Accepted password for deploy from 203.0.113.99 port 50000 ssh2\n",
    );
    wait_until("ioc_match stored", || {
        let answer = api.get(
            "/api/v1/signals?kind=ioc_match&indicator=203.0.113.99",
            Some(&analyst),
        );
        items(&answer.body)
            .iter()
            .any(|s| s["org"] == "bank" && s["attributes"]["advisory"] == advisory.as_str())
    });

    // The bank's agent goes away, another advisory is published, it comes back: it asks
    // for what came after the last one it holds, and gets it.
    assert!(online.stop(), "{}", online.log());
    let second = api.post(
        "/api/v1/advisories",
        Some(&analyst),
        &json!({"indicator": {"type": "domain", "value": "c2.evil.example"}, "severity": "high"}),
    );
    assert_eq!(second.status, 201, "{:?}", second.body);
    online.start();
    wait_until("the restarted agent to catch up", || {
        let held = held_advisories(&online);
        held.contains("c2.evil.example") && held.contains(&advisory)
    });

    // Withdrawn: agents forget it.
    let withdrawn = api.delete(&format!("/api/v1/advisories/{advisory}"), Some(&analyst));
    assert_eq!(withdrawn.status, 204, "{:?}", withdrawn.body);
    wait_until("agents to forget the withdrawn advisory", || {
        !held_advisories(&online).contains(&advisory)
            && !held_advisories(&offline).contains(&advisory)
    });
    assert!(online.stop(), "{}", online.log());
    assert!(offline.stop(), "{}", offline.log());
    collector.stop();
}

#[test]
fn each_role_sees_exactly_what_it_may() {
    let mut collector = Collector::init();
    collector.add_org("bank");
    collector.add_org("city");
    collector.start();
    let admin = collector.user("root", "admin", None);
    let analyst = collector.user("ana", "analyst", None);
    let auditor = collector.user("aud", "auditor", None);
    let bank = collector.user("bank-it", "member", Some("bank"));
    let api = collector.api();
    let mut agents = Vec::new();
    for org in ["bank", "city"] {
        let mut agent = Agent::enrolled(&collector, org, "");
        agent
            .emit(&vedetta_e2e::test_signals(3, &format!("{org}_probe")))
            .expect("emit");
        agent.start();
        agents.push(agent);
    }
    wait_until("both organisations' signals", || {
        let answer = api.get("/api/v1/signals?limit=1000", Some(&analyst));
        let kinds: Vec<Value> = items(&answer.body)
            .iter()
            .map(|s| s["kind"].clone())
            .collect();
        kinds.contains(&json!("bank_probe")) && kinds.contains(&json!("city_probe"))
    });

    // No token, a wrong one, a revoked one: 401.
    assert_eq!(api.get("/api/v1/signals", None).status, 401);
    assert_eq!(api.get("/api/v1/signals", Some("vdt_wrong")).status, 401);
    let gone = collector.user("gone", "analyst", None);
    collector.cli(&["user", "revoke", "gone"]).expect("revoke");
    assert_eq!(api.get("/api/v1/signals", Some(&gone)).status, 401);

    // A member sees its own organisation's signals only, and the advisories.
    let own = api.get("/api/v1/signals?limit=1000", Some(&bank));
    assert_eq!(own.status, 200);
    let orgs: std::collections::BTreeSet<String> = items(&own.body)
        .iter()
        .map(|s| s["org"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(orgs, ["bank".to_owned()].into_iter().collect());
    assert_eq!(api.get("/api/v1/signals?org=city", Some(&bank)).status, 403);
    assert_eq!(api.get("/api/v1/signals?org=bank", Some(&bank)).status, 200);
    assert_eq!(api.get("/api/v1/advisories", Some(&bank)).status, 200);
    for path in [
        "/api/v1/campaigns",
        "/api/v1/incidents",
        "/api/v1/agents",
        "/api/v1/indicators/203.0.113.1",
        "/api/v1/stream",
    ] {
        assert_eq!(api.get(path, Some(&bank)).status, 403, "member on {path}");
    }
    let advisory =
        json!({"indicator": {"type": "domain", "value": "evil.example"}, "severity": "high"});
    assert_eq!(
        api.post("/api/v1/advisories", Some(&bank), &advisory)
            .status,
        403
    );

    // An auditor reads what was retained (signals, to export them) and the audit log,
    // and publishes nothing.
    assert_eq!(api.get("/api/v1/signals", Some(&auditor)).status, 200);
    assert_eq!(api.get("/api/v1/audit", Some(&auditor)).status, 200);
    assert_eq!(api.get("/api/v1/audit", Some(&bank)).status, 403);
    assert_eq!(
        api.post("/api/v1/advisories", Some(&auditor), &advisory)
            .status,
        403
    );

    // Analysts and admins read everything and publish.
    for token in [&admin, &analyst] {
        let all = api.get("/api/v1/signals?limit=1000", Some(token));
        let orgs: std::collections::BTreeSet<String> = items(&all.body)
            .iter()
            .map(|s| s["org"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(orgs.len(), 2);
        assert_eq!(api.get("/api/v1/agents", Some(token)).status, 200);
    }
    assert_eq!(
        api.post("/api/v1/advisories", Some(&analyst), &advisory)
            .status,
        201
    );
    // Bad input is a 400 with a reason, not a crash.
    let bad = api.post(
        "/api/v1/advisories",
        Some(&analyst),
        &json!({"indicator": {"type": "ip", "value": "999.1.1.1"}, "severity": "high"}),
    );
    assert_eq!(bad.status, 400);
    assert!(
        bad.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("999.1.1.1"))
    );
    assert_eq!(
        api.get("/api/v1/signals?cursor=%%%", Some(&analyst)).status,
        400
    );
    assert_eq!(
        api.get("/api/v1/signals?color=red", Some(&analyst)).status,
        400
    );
    // Health and metrics need no token.
    assert_eq!(api.get("/healthz", None).status, 200);
    let metrics = api.get("/metrics", None);
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().unwrap_or_default().to_owned();
    let accepted: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("vedetta_signals_accepted_total "))
        .and_then(|value| value.parse().ok())
        .expect("accepted signals counted");
    assert!(accepted >= 6, "{text}");
    assert!(text.contains("vedetta_api_unauthorized_total"), "{text}");
    for mut agent in agents {
        assert!(agent.stop(), "{}", agent.log());
    }
    collector.stop();
}
