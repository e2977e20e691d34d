//! The agent binary's own command line: configuration checks and dry runs.

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vedetta-agent"))
}

/// The shipped configuration with every commented example made live: `# key = value`
/// and `# [section]` lines lose their `# ` (and their trailing comments), as a member
/// would write them.
fn with_examples_enabled(text: &str, rules_dir: &std::path::Path) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let body = line.strip_prefix("# ").unwrap_or("");
        let setting = body.starts_with('[')
            || body.split_once(" = ").is_some_and(|(key, _)| {
                !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
            || (line.starts_with("#      ")
                && line.trim_start_matches('#').trim_start().starts_with('"'));
        let live = if setting {
            let value = if body.is_empty() {
                line.trim_start_matches('#').trim_start()
            } else {
                body
            };
            value
                .split("  #")
                .next()
                .unwrap_or(value)
                .trim_end()
                .to_owned()
        } else {
            line.to_owned()
        };
        let live = if live.starts_with("rules_dir = ") {
            format!("rules_dir = \"{}\"", rules_dir.display())
        } else {
            live
        };
        out.push_str(&live);
        out.push('\n');
    }
    out
}

#[test]
fn every_example_of_the_shipped_file_is_valid() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/agent.toml");
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.d");
    std::fs::create_dir(&rules).expect("rules dir");
    let full = dir.path().join("agent.toml");
    let text = with_examples_enabled(&std::fs::read_to_string(shipped).expect("shipped"), &rules);
    for section in [
        "[sources.files]",
        "[sources.network]",
        "[sources.host]",
        "[[sources.logs]]",
    ] {
        assert!(
            text.contains(&format!("\n{section}\n")),
            "{section} not enabled:\n{text}"
        );
    }
    std::fs::write(&full, &text).expect("write");
    let output = agent()
        .args(["check-config", "--config"])
        .arg(&full)
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn check_config_accepts_the_shipped_file_and_names_the_line_of_an_error() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/agent.toml");
    let output = agent()
        .args(["check-config", "--config", shipped])
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("configuration OK"));

    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("agent.toml");
    std::fs::write(&broken, "state_dir = \"s\"\n\n[spool]\nmax_sigals = 5\n").expect("write");
    let output = agent()
        .args(["check-config", "--config"])
        .arg(&broken)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("line 4") && error.contains("max_sigals"),
        "{error}"
    );

    let output = agent()
        .args(["check-config", "--config", "/nonexistent/agent.toml"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/agent.toml"));
}

#[test]
fn dry_run_prints_signals_as_ndjson_without_enrollment_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "state_dir = \"state\"\n[health]\ninterval = \"100ms\"\n",
    )
    .expect("write");
    let mut child = agent()
        .args(["run", "--dry-run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let first = lines.next().expect("a line").expect("utf-8");
    let signal: vedetta_common::Signal = serde_json::from_str(&first).expect("a signal");
    assert_eq!(signal.kind, "agent_health");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("sigterm");
    assert!(child.wait().expect("wait").success());
    assert!(
        !dir.path().join("state/spool.db").exists(),
        "a dry run spools nothing"
    );
}

#[test]
fn preview_shows_exactly_what_would_leave_after_the_privacy_filter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n\
             [[sources.logs]]\npaths = [\"{fixtures}/sshd_iso.log\"]\n\
             [[sources.logs]]\npaths = [\"{fixtures}/journald.json\"]\nformat = \"journald-json\"\n\
             [privacy]\ndeny_kinds = [\"sudo_auth_failure\"]\ninternal_networks = [\"192.0.2.0/24\"]\n"
        ),
    )
    .expect("config");
    let output = agent()
        .args(["preview", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let signals: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect();
    assert!(
        signals
            .iter()
            .any(|s| s["kind"] == "ssh_bruteforce" && s["indicators"][0]["value"] == "203.0.113.7")
    );
    // The broken-into account and the member's own network leave as pseudonyms.
    let broken = signals
        .iter()
        .find(|s| s["kind"] == "ssh_login_after_failures")
        .expect("login after failures");
    assert!(
        broken["indicators"][0]["value"]
            .as_str()
            .is_some_and(|v| v.starts_with("pn:"))
    );
    assert!(
        broken["indicators"][1]["value"]
            .as_str()
            .is_some_and(|v| v.starts_with("pn:"))
    );
    assert!(
        signals
            .iter()
            .all(|s| s["host"].as_str().is_some_and(|h| h.starts_with("pn:")))
    );
    // Denied kinds stay home, and the preview says so.
    assert!(signals.iter().all(|s| s["kind"] != "sudo_auth_failure"));
    assert!(
        stderr.contains("sudo_auth_failure signals stay on this host"),
        "{stderr}"
    );
    // Nothing about the sources' read positions changed.
    assert!(!dir.path().join("state/positions-0.json").exists());
}
