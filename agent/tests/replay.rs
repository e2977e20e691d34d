//! `vedetta-agent replay` on fixture logs in every supported format and OpenSSH variant,
//! run through the real binary; expected signals are asserted field by field.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Replays `path` and returns the signals and the summary line.
fn replay(path: &Path, format: &str) -> (Vec<Value>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_vedetta-agent"))
        .args(["replay", "--format", format, "--log"])
        .arg(path)
        .output()
        .expect("run replay");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let signals = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is a JSON signal"))
        .collect();
    (signals, stderr)
}

/// The last signal (the final state of its series) of `kind` about `indicator`.
fn last<'a>(signals: &'a [Value], kind: &str, indicator: &str) -> &'a Value {
    signals
        .iter()
        .rev()
        .find(|s| s["kind"] == kind && s["indicators"][0]["value"] == indicator)
        .unwrap_or_else(|| panic!("no {kind} about {indicator} in {signals:#?}"))
}

fn about<'a>(signals: &'a [Value], indicator: &str) -> Vec<&'a Value> {
    signals
        .iter()
        .filter(|s| s["indicators"][0]["value"] == indicator)
        .collect()
}

#[test]
fn rsyslog_iso_brute_force_ipv6_typos_and_a_login_after_failures() {
    let (signals, summary) = replay(&fixture("sshd_iso.log"), "syslog");
    assert!(summary.contains("0 lines not understood"), "{summary}");

    // Twelve attempts (counted once each, though some wrote five lines).
    let brute = last(&signals, "ssh_bruteforce", "203.0.113.7");
    assert_eq!(brute["severity"], "high");
    assert_eq!(brute["count"], 12);
    assert_eq!(brute["first_seen"], "2026-11-20T09:00:01Z");
    assert_eq!(brute["last_seen"], "2026-11-20T09:00:56Z");
    assert_eq!(brute["mitre"], "T1110.001");
    assert_eq!(brute["indicators"][0]["type"], "ip");
    assert_eq!(brute["attributes"]["pattern"], "burst");
    assert_eq!(brute["attributes"]["window_s"], 600);
    // One attack, one series: the update carries the first signal's id as its series.
    let series: Vec<&Value> = about(&signals, "203.0.113.7");
    assert_eq!(series.len(), 2);
    assert_eq!(series[1]["attributes"]["series"], series[0]["id"]);
    assert_eq!(series[1]["attributes"]["update"], 2);

    // IPv6, with rsyslog's "message repeated 5 times": 12 attempts from 4 lines.
    let six = last(&signals, "ssh_bruteforce", "2001:db8::66");
    assert_eq!(six["count"], 12);
    assert_eq!(six["indicators"][0]["type"], "ip");

    // A successful login from a source that failed six times: critical, naming the account.
    let broken = last(&signals, "ssh_login_after_failures", "192.0.2.50");
    assert_eq!(broken["severity"], "critical");
    assert_eq!(broken["attributes"]["failures_before"], 6);
    assert_eq!(
        broken["indicators"][1],
        serde_json::json!({"type": "user", "value": "deploy"})
    );
    assert_eq!(broken["first_seen"], "2026-11-20T09:07:20Z");

    // Two typos, then the right password: not an attack.
    assert!(about(&signals, "198.51.100.20").is_empty());
    assert_eq!(signals.len(), 4, "{signals:#?}");
}

#[test]
fn classic_syslog_low_and_slow_across_new_year() {
    let (signals, _) = replay(&fixture("sshd_classic_slow.log"), "syslog");
    let slow = last(&signals, "ssh_bruteforce", "203.0.113.9");
    assert_eq!(slow["attributes"]["pattern"], "low_and_slow");
    assert_eq!(slow["count"], 10);
    // Year inferred: December of the year before the file was written, then January.
    assert_eq!(slow["first_seen"], "2025-12-31T21:00:00Z");
    assert_eq!(slow["last_seen"], "2026-01-01T00:45:00Z");
    // A slow attack is reported, then updated, not once per attempt.
    assert_eq!(about(&signals, "203.0.113.9").len(), 2);
    // One attempt from elsewhere is nothing.
    assert!(about(&signals, "198.51.100.99").is_empty());
}

#[test]
fn rfc5424_password_spraying_is_one_signal_not_also_a_brute_force() {
    let (signals, _) = replay(&fixture("sshd_rfc5424.log"), "syslog");
    let spray = last(&signals, "ssh_password_spraying", "198.51.100.77");
    assert_eq!(spray["count"], 10);
    assert_eq!(spray["attributes"]["distinct_users"], 10);
    assert_eq!(spray["mitre"], "T1110.003");
    assert!(
        signals.iter().all(|s| s["kind"] == "ssh_password_spraying"),
        "{signals:#?}"
    );
}

#[test]
fn openssh_9_user_enumeration_without_passwords() {
    let (signals, _) = replay(&fixture("sshd_enumeration.log"), "syslog");
    let enumeration = last(&signals, "ssh_user_enumeration", "203.0.113.44");
    assert_eq!(enumeration["severity"], "medium");
    assert_eq!(enumeration["attributes"]["distinct_users"], 10);
}

#[test]
fn journald_sudo_abuse_and_account_changes() {
    let (signals, summary) = replay(&fixture("journald.json"), "journald-json");
    assert!(summary.contains("0 lines not understood"), "{summary}");
    let sudo = last(&signals, "sudo_auth_failure", "mallory");
    assert_eq!(
        (sudo["count"].as_u64(), sudo["severity"].as_str()),
        (Some(3), Some("medium"))
    );
    assert_eq!(sudo["indicators"][0]["type"], "user");
    let sudoers = last(&signals, "sudo_auth_failure", "trudy");
    assert_eq!(sudoers["severity"], "high");
    assert_eq!(sudoers["attributes"]["reason"], "not_in_sudoers");
    // Created, then made an administrator: the series escalates to high.
    let account = last(&signals, "account_changed", "backdoor");
    assert_eq!(account["severity"], "high");
    assert_eq!(account["attributes"]["rule"], "account_admin_group");
    assert_eq!(account["first_seen"], "2026-11-20T13:02:00Z");
    // sudo used as allowed is nothing.
    assert!(about(&signals, "alice").is_empty());
}

#[test]
fn nginx_scans_and_exploits_from_attackers_only() {
    let (signals, _) = replay(&fixture("access.log"), "nginx");
    let scan = last(&signals, "web_scan", "203.0.113.80");
    assert_eq!(scan["count"], 35);
    assert_eq!(scan["mitre"], "T1595.003");
    let exploit = last(&signals, "web_exploit_attempt", "203.0.113.81");
    assert_eq!(exploit["severity"], "high");
    assert_eq!(exploit["attributes"]["exploit"], "path_traversal,log4shell");
    assert_eq!(exploit["count"], 2);
    let nikto = last(&signals, "web_scan", "203.0.113.82");
    assert_eq!(nikto["attributes"]["scanner"], "nikto");
    // Ordinary visitors, including one 404, raise nothing.
    for visitor in 10..15 {
        assert!(about(&signals, &format!("192.0.2.{visitor}")).is_empty());
    }
}

#[test]
fn normal_activity_and_people_who_mistype_raise_nothing() {
    let (signals, summary) = replay(&fixture("normal.log"), "syslog");
    assert!(signals.is_empty(), "{signals:#?}");
    assert!(summary.contains("0 lines not understood"), "{summary}");
}

#[test]
fn replay_is_deterministic() {
    let first = replay(&fixture("sshd_iso.log"), "syslog").0;
    let second = replay(&fixture("sshd_iso.log"), "syslog").0;
    assert_eq!(first, second);
}

#[test]
fn garbage_binary_and_huge_lines_are_counted_and_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hostile.log");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"\x00\x01\x02\xff\xfe binary garbage\n");
    bytes.extend_from_slice(b"2026-11-20T10:00:00Z web1 sshd[1]: Failed password for r\xc3\x28oot from 203.0.113.5 port 1 ssh2\n");
    bytes.extend(std::iter::repeat_n(b'A', 10 * 1024 * 1024));
    bytes.push(b'\n');
    for n in 0..10 {
        bytes.extend_from_slice(
            format!("2026-11-20T10:00:{n:02}Z web1 sshd[2]: Failed password for root from 203.0.113.5 port 2 ssh2\n").as_bytes(),
        );
    }
    bytes.extend_from_slice(b"Nov 99 99:99:99 nonsense\n<999>2 broken rfc5424\n{\"json\": true}\n");
    std::fs::write(&path, &bytes).expect("write");
    let (signals, summary) = replay(&path, "syslog");
    assert!(summary.contains("replayed 16 lines"), "{summary}");
    assert!(summary.contains("5 lines not understood"), "{summary}");
    assert!(summary.contains("1 cut at"), "{summary}");
    assert!(summary.contains("2 not UTF-8"), "{summary}");
    // The attack around the garbage is still seen: 1 damaged + 10 clean attempts.
    assert_eq!(last(&signals, "ssh_bruteforce", "203.0.113.5")["count"], 11);
}

#[test]
fn the_real_openssh_sample_from_loghub() {
    // ../shared/data/loghub is beside the repository on developer machines and in CI.
    let sample =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/loghub/OpenSSH_2k.log");
    if !sample.exists() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have {}",
            sample.display()
        );
        eprintln!("skipped: {} not present", sample.display());
        return;
    }
    let output = Command::new(env!("CARGO_BIN_EXE_vedetta-agent"))
        .args(["replay", "--year", "2025", "--log"])
        .arg(&sample)
        .output()
        .expect("run");
    let summary = String::from_utf8_lossy(&output.stderr);
    assert!(summary.contains("replayed 2000 lines"), "{summary}");
    assert!(summary.contains("0 lines not understood"), "{summary}");
    let signals: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    // The sample's busiest attacker (hundreds of root passwords) is a brute force.
    let brute = last(&signals, "ssh_bruteforce", "183.62.140.253");
    assert!(brute["count"].as_u64() > Some(100), "{brute}");
    assert!(signals.iter().any(|s| s["kind"] == "ssh_user_enumeration"));
}
