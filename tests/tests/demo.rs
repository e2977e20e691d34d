//! The README's first command runs unattended: real detectors at three organisations, and
//! the attacker address and malware hash they share.

use std::process::Command;
use vedetta_e2e::binary;

#[test]
fn demo_runs_unattended_and_shows_what_three_organisations_share() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("demo");
    let output = Command::new(binary("vedetta-collector"))
        .args(["demo", "--exit-when-done", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Campaigns correlated across organisations")
            && stdout.contains("(campaign CMP-"),
        "the correlator's campaigns are shown: {stdout}"
    );
    assert!(
        stdout.contains("ip 203.0.113.7 — 3 organisations"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|line| line.contains("sha256 ") && line.contains("— 3 organisations")),
        "{stdout}"
    );
    // Found by the agents' own detectors, from their logs and files.
    for kind in [
        "ssh_bruteforce",
        "ssh_login_after_failures",
        "web_scan",
        "web_exploit_attempt",
        "suspicious_file",
        "webshell_suspected",
    ] {
        assert!(stdout.contains(kind), "{kind} missing: {stdout}");
    }
    for org in ["comune-esempio", "banca-esempio", "ospedale-esempio"] {
        assert!(
            stdout.contains(&format!("enrolled agent {org}-")),
            "{stdout}"
        );
    }
    // A second run starts afresh in the same folder; a folder that is not a demo is refused.
    assert!(
        Command::new(binary("vedetta-collector"))
            .args(["demo", "--exit-when-done", "--data-dir"])
            .arg(&data)
            .status()
            .expect("rerun")
            .success()
    );
    let refused = Command::new(binary("vedetta-collector"))
        .args(["demo", "--exit-when-done", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a demo folder"));
}
