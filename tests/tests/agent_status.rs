//! `vedetta-agent status` end to end: a real collector and a real enrolled agent that
//! follows a log file and waits for another that does not exist yet; an advisory
//! published through the API. Everything is awaited by polling `status` itself.

use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use vedetta_e2e::{
    Agent, Collector, append_log, binary, sshd_failures, sshd_log_agent, wait_until,
};

/// The source of `status` that watches `path`.
fn source(status: &Value, path: &Path) -> Value {
    let path = path.to_string_lossy();
    status["sources"]
        .as_array()
        .and_then(|sources| sources.iter().find(|s| s["watches"] == path.as_ref()))
        .cloned()
        .unwrap_or_else(|| panic!("no source watching {path} in {status:#}"))
}

/// `vedetta-agent status` as people see it.
fn status_text(agent: &Agent) -> String {
    let output = Command::new(binary("vedetta-agent"))
        .args(["status", "--config"])
        .arg(&agent.config)
        .output()
        .expect("run status");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

#[test]
fn status_shows_the_sources_the_last_ack_and_the_advisories_in_force() {
    let mut collector = Collector::init();
    collector.add_org("acme");
    collector.start();
    let analyst = collector.user("a", "analyst", None);
    let (mut agent, log) = sshd_log_agent(&collector, "acme");
    // A second source whose file does not exist yet.
    let missing = agent.dir.path().join("later").join("app.log");
    let config = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(
        &agent.config,
        format!(
            "{config}\n[[sources.logs]]\npaths = [\"{}\"]\nformat = \"plain\"\n",
            missing.display()
        ),
    )
    .expect("config");

    // Never started: the configured sources, not running, never reported.
    let status = agent.status();
    assert_eq!(status["running"], false);
    let never = source(&status, &log);
    assert_eq!(never["state"], "not_running");
    assert!(never["reported_state"].is_null(), "{never:#}");
    assert_eq!(status["advisories"]["in_force"], 0);

    agent.start();
    append_log(&log, &sshd_failures("198.51.100.7", 3));
    wait_until(
        "the log source to run, its lines read and a batch acknowledged",
        || {
            let status = agent.status();
            let following = source(&status, &log);
            status["running"] == true
                && following["state"] == "running"
                && following["events"].as_u64() >= Some(3)
                && following["last_event_at"].is_string()
                && status["spool"]["last_ack_at"].is_string()
        },
    );
    wait_until("the source without a file to wait for it", || {
        source(&agent.status(), &missing)["state"] == "waiting"
    });
    let waiting = source(&agent.status(), &missing);
    let reason = waiting["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("no file matches") && reason.contains(&*missing.to_string_lossy()),
        "{waiting:#}"
    );

    let published = collector.api().post(
        "/api/v1/advisories",
        Some(&analyst),
        &json!({
            "indicator": {"type": "ip", "value": "203.0.113.9"},
            "severity": "high",
            "description": "x",
            "expires_in": "7d",
        }),
    );
    assert_eq!(published.status, 201, "{:?}", published.body);
    wait_until("one advisory in force", || {
        let advisories = agent.status()["advisories"].clone();
        advisories["in_force"] == 1 && advisories["last_seq"].as_u64() >= Some(1)
    });
    let advisories = agent.status()["advisories"].clone();
    assert_eq!(advisories["expired"], 0);
    assert_eq!(advisories["files"][0]["origin"], "collector");
    assert_eq!(advisories["files"][0]["in_force"], 1);

    let text = status_text(&agent);
    for expected in [
        "Agent\n",
        "\nUplink\n",
        "\nSpool\n",
        "\nSources (reported ",
        "\nAdvisories\n",
        "  held         1 in force\n",
        "reason: no file matches",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    let row = text
        .lines()
        .find(|line| {
            line.trim_start()
                .starts_with(&format!("logs:{}", log.display()))
        })
        .unwrap_or_else(|| panic!("a row for the log in:\n{text}"));
    assert!(row.contains("running") && row.contains("3 lines"), "{text}");

    // The file appears: its source runs.
    std::fs::create_dir_all(missing.parent().expect("folder")).expect("folder");
    std::fs::write(&missing, "").expect("file");
    wait_until("the source to find its file", || {
        let status = source(&agent.status(), &missing);
        status["state"] == "running" && status["reason"].is_null()
    });

    // Stopped: the configured sources, not running, with what was last known.
    assert!(agent.stop(), "{}", agent.log());
    let status = agent.status();
    assert_eq!(status["running"], false);
    let stopped = source(&status, &log);
    assert_eq!(stopped["state"], "not_running", "{stopped:#}");
    assert_eq!(stopped["reported_state"], "stopped");
    assert!(stopped["reported_at"].is_string());
    assert!(stopped["events"].as_u64() >= Some(3));
    assert_eq!(status["advisories"]["in_force"], 1, "still held");
    let text = status_text(&agent);
    assert!(text.contains("  state        not running\n"), "{text}");
    assert!(text.contains("last known: stopped since "), "{text}");
    collector.stop();
}
