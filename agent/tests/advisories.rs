//! Advisories, end to end: a real `vedetta-agent run --dry-run` with a member's own list
//! of indicators matches them in a log file being written and in files arriving on
//! disk, picks up an edit of the list while it runs, and leaves alone what is not
//! advised (or no longer is).

mod common;

use common::{DryRun, sha256_of};
use serde_json::Value;
use std::io::Write as _;
use std::path::Path;
use vedetta_common::Timestamp;

/// Appends `lines` to `path` as a program writing its log would.
fn append(path: &Path, lines: &[String]) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open log");
    for line in lines {
        writeln!(file, "{line}").expect("append");
    }
    file.sync_all().expect("sync");
}

/// An sshd line of now about `source`.
fn failed_login(source: &str, port: u16) -> String {
    format!(
        "{} web1 sshd[5000]: Failed password for root from {source} port {port} ssh2",
        Timestamp::now().to_rfc3339()
    )
}

fn indicator(signal: &Value) -> &str {
    signal["indicators"][0]["value"].as_str().unwrap_or("")
}

fn advisory_line(kind: &str, value: &str, advisory: &str, extra: &str) -> String {
    format!(
        "{{\"type\":\"{kind}\",\"value\":\"{value}\",\"advisory\":\"{advisory}\",\"severity\":\"critical\"{extra}}}\n"
    )
}

#[test]
fn advised_addresses_and_names_in_a_log_being_written_raise_ioc_match_and_others_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("auth.log");
    std::fs::write(&log, "").expect("log");
    // A relative path: next to the configuration file.
    let local = dir.path().join("local.ndjson");
    std::fs::write(
        &local,
        [
            advisory_line("ip", "203.0.113.7", "ADV-LOG-1", ""),
            advisory_line("domain", "evil.example", "ADV-LOG-2", ""),
            // Expired: no longer matched.
            advisory_line(
                "ip",
                "198.51.100.20",
                "ADV-OLD",
                ",\"expires_at\":\"2020-01-01T00:00:00Z\"",
            ),
            "this line is garbage\n".to_owned(),
        ]
        .concat(),
    )
    .expect("advisories");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[health]\ninterval = \"1h\"\n\
             [advisories]\nfiles = [\"local.ndjson\"]\n\
             [[sources.logs]]\npaths = [\"{}\"]\nstart_at = \"beginning\"\n",
            log.display()
        ),
    )
    .expect("config");
    let mut agent = DryRun::start(&config);
    agent.wait_for_log("log source started");

    // Ordinary and formerly advised sources first, then the advised one: once its match
    // is out, the lines before it have been read too.
    append(
        &log,
        &[
            failed_login("192.0.2.44", 40000),
            failed_login("198.51.100.20", 40001),
            failed_login("203.0.113.7", 40002),
            failed_login("203.0.113.7", 40003),
        ],
    );
    let matched = agent.wait_for("ioc_match of the advised address", |s| {
        s["kind"] == "ioc_match" && indicator(s) == "203.0.113.7"
    });
    assert_eq!(matched["indicators"][0]["type"], "ip");
    assert_eq!(matched["severity"], "critical");
    assert_eq!(matched["attributes"]["advisory"], "ADV-LOG-1");
    assert_eq!(matched["attributes"]["source"], "logs");
    assert_eq!(matched["attributes"]["event"], "ssh_failed");
    assert_eq!(matched["attributes"]["direction"], "from");
    assert!(matched["attributes"]["series"].is_string(), "{matched:#?}");

    // A host name under an advised domain (sshd with UseDNS).
    append(&log, &[failed_login("Bastion.EVIL.example", 40004)]);
    let named = agent.wait_for("ioc_match of the advised domain", |s| {
        s["kind"] == "ioc_match" && indicator(s) == "evil.example"
    });
    assert_eq!(named["indicators"][0]["type"], "domain");
    assert_eq!(named["attributes"]["advisory"], "ADV-LOG-2");

    // The list is edited while the agent runs: the new address is matched from then on.
    let mut edited = std::fs::read_to_string(&local).expect("read");
    edited.push_str(&advisory_line("cidr", "192.0.2.0/24", "ADV-LOG-3", ""));
    std::fs::write(&local, edited).expect("edit");
    agent.wait_for_log("advisories reloaded");
    append(&log, &[failed_login("192.0.2.45", 40005)]);
    let network = agent.wait_for("ioc_match of the advised network", |s| {
        s["kind"] == "ioc_match" && indicator(s) == "192.0.2.0/24"
    });
    assert_eq!(network["indicators"][0]["type"], "cidr");
    assert_eq!(network["attributes"]["advisory"], "ADV-LOG-3");

    let seen = agent.stop();
    let matches: Vec<&Value> = seen.iter().filter(|s| s["kind"] == "ioc_match").collect();
    // 192.0.2.44 was read before its network was advised; the expired one never matches.
    for signal in &matches {
        assert!(
            ["203.0.113.7", "evil.example", "192.0.2.0/24"].contains(&indicator(signal)),
            "unexpected match {signal:#?}"
        );
    }
    assert_eq!(
        matches
            .iter()
            .filter(|s| indicator(s) == "192.0.2.0/24")
            .count(),
        1,
        "{matches:#?}"
    );
    // Two attempts from the advised address: one series, its count complete at the end.
    let last = matches
        .iter()
        .rfind(|s| indicator(s) == "203.0.113.7")
        .expect("address series");
    assert_eq!(last["count"], 2, "{matches:#?}");
}

#[test]
fn a_file_whose_hash_is_advised_raises_ioc_match_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let watched = dir.path().join("srv");
    std::fs::create_dir(&watched).expect("watched");
    // The tool to be dropped, made outside the watched tree, and hashed by sha256sum.
    let tool = dir.path().join("tool.bin");
    std::fs::write(&tool, b"\x7fELF pretend this is a known implant\n").expect("tool");
    let hash = sha256_of(&tool);
    let local = dir.path().join("hashes.ndjson");
    std::fs::write(
        &local,
        advisory_line("sha256", &hash.to_uppercase(), "ADV-FILE-1", ""),
    )
    .expect("advisories");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[health]\ninterval = \"1h\"\n\
             [advisories]\nfiles = [\"{}\"]\n\
             [sources.files]\npaths = [\"{}\"]\n",
            local.display(),
            watched.display()
        ),
    )
    .expect("config");
    let mut agent = DryRun::start(&config);
    agent.wait_for_log("the watched files");

    // Harmless content first, then the advised one under two names.
    std::fs::write(watched.join("notes.txt"), "nothing to see\n").expect("notes");
    let dropped = watched.join("update");
    std::fs::copy(&tool, &dropped).expect("drop");
    let matched = agent.wait_for("ioc_match of the advised hash", |s| {
        s["kind"] == "ioc_match" && s["attributes"]["source"] == "files"
    });
    assert_eq!(matched["indicators"][0]["type"], "sha256");
    assert_eq!(matched["indicators"][0]["value"], hash.as_str());
    assert_eq!(matched["severity"], "critical");
    assert_eq!(matched["attributes"]["advisory"], "ADV-FILE-1");
    // Paths leave as pseudonyms unless the member shares them.
    let path = matched["attributes"]["path"].as_str().unwrap_or("");
    assert!(path.starts_with("pn:"), "{matched:#?}");

    // Touched again with the same content: no second match for this file.
    std::fs::copy(&tool, &dropped).expect("again");
    let second = watched.join("second-copy");
    std::fs::copy(&tool, &second).expect("copy");
    let other = agent.wait_for("the second copy", |s| {
        s["kind"] == "ioc_match" && s["attributes"]["path"].as_str() != Some(path)
    });
    assert_eq!(other["attributes"]["advisory"], "ADV-FILE-1");

    let seen = agent.stop();
    let matches: Vec<&Value> = seen.iter().filter(|s| s["kind"] == "ioc_match").collect();
    assert_eq!(matches.len(), 2, "one per file: {matches:#?}");
}

#[test]
fn replay_matches_the_advisories_of_its_configuration_deterministically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sshd_iso.log");
    std::fs::write(
        dir.path().join("local.ndjson"),
        advisory_line("ip", "203.0.113.7", "ADV-REPLAY", ""),
    )
    .expect("advisories");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "state_dir = \"state\"\n[advisories]\nfiles = [\"local.ndjson\"]\n",
    )
    .expect("config");
    let replay = || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_vedetta-agent"))
            .args(["replay", "--log", fixture, "--config"])
            .arg(&config)
            .output()
            .expect("replay");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let first = replay();
    let signals: Vec<Value> = first
        .lines()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect();
    let matches: Vec<&Value> = signals
        .iter()
        .filter(|s| s["kind"] == "ioc_match")
        .collect();
    assert!(!matches.is_empty(), "{first}");
    assert!(
        matches
            .iter()
            .all(|s| indicator(s) == "203.0.113.7" && s["attributes"]["advisory"] == "ADV-REPLAY"),
        "{matches:#?}"
    );
    // The rules still see the same attack.
    assert!(signals.iter().any(|s| s["kind"] == "ssh_bruteforce"));
    assert_eq!(replay(), first, "same file, same output, ids included");
}
