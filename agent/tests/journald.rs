//! The journald source against a real journal: systemd-journal-remote writes journal files
//! from export-format entries, and the agent follows them through the real journalctl.
//! Needs systemd-journal-remote (`.ci/run` installs it); under `CI=true` its absence is a
//! failure, elsewhere the test says it skipped.

mod common;

use common::DryRun;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

/// Writes a journal file of `attempts` failed passwords from `source`.
fn write_journal(path: &Path, source: &str, attempts: u32, first_seq: u32) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    let mut export = String::new();
    for n in 0..attempts {
        let seq = first_seq + n;
        export.push_str(&format!(
            "__CURSOR=s=0;i={seq}\n__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={seq}\n\
             _BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=app1\nSYSLOG_IDENTIFIER=sshd\n_PID=42\n\
             MESSAGE=Failed password for root from {source} port {} ssh2\n\n",
            now + u128::from(seq) * 1000,
            40000 + seq
        ));
    }
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", path.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-journal-remote");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(export.as_bytes())
        .expect("export");
    assert!(child.wait().expect("wait").success());
}

/// Whether `signal` is a brute force from `source`.
fn brute_force_from(source: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |signal| signal["kind"] == "ssh_bruteforce" && signal["indicators"][0]["value"] == source
}

/// Whether systemd-journal-remote is there; under `CI=true` its absence is a failure.
fn journal_remote_installed() -> bool {
    if Path::new(JOURNAL_REMOTE).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI must have systemd-journal-remote"
    );
    eprintln!("skipped: {JOURNAL_REMOTE} not installed");
    false
}

/// A directory holding a journal of twelve failed passwords from `source`.
fn journal_with_attacker(source: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let journals = dir.path().join("journal");
    std::fs::create_dir(&journals).expect("journal dir");
    write_journal(&journals.join("first.journal"), source, 12, 1);
    (dir, journals)
}

/// An agent configuration following the journal directory `journals` (sshd entries,
/// from the beginning), plus `extra` lines for the journald section.
fn write_config(dir: &Path, journals: &Path, extra: &str) -> std::path::PathBuf {
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[health]\ninterval = \"1h\"\n[privacy]\nshare_internal_addresses = true\n\
             [[sources.journald]]\ndirectory = \"{}\"\nidentifiers = [\"sshd\"]\nstart_at = \"beginning\"\n{extra}",
            journals.display()
        ),
    )
    .expect("config");
    config
}

#[test]
fn journal_entries_are_read_once_across_restarts() {
    if !journal_remote_installed() {
        return;
    }
    let (dir, journals) = journal_with_attacker("203.0.113.66");
    let config = write_config(dir.path(), &journals, "");

    let mut agent = DryRun::start(&config);
    let found = agent.wait_for("brute force", brute_force_from("203.0.113.66"));
    assert_eq!(found["count"], 10, "{found:?}");
    agent.stop();
    let cursor = dir.path().join("state/journald-0.cursor");
    assert!(
        std::fs::read_to_string(&cursor).is_ok_and(|c| c.contains("i=")),
        "cursor saved"
    );

    // After a restart, only what is new is read: the first attacker is not seen again.
    let mut agent = DryRun::start(&config);
    write_journal(&journals.join("second.journal"), "203.0.113.77", 12, 100);
    agent.wait_for("second brute force", brute_force_from("203.0.113.77"));
    let seen = agent.stop();
    assert!(
        seen.iter()
            .all(|s| s["indicators"][0]["value"] != "203.0.113.66"),
        "{seen:?}"
    );
}

#[test]
fn journalctl_is_restarted_from_the_cursor_when_it_exits() {
    if !journal_remote_installed() {
        return;
    }
    let (dir, journals) = journal_with_attacker("203.0.113.88");
    // The real journalctl, cut off after two seconds every time it runs (as when it
    // crashes or the journal is rotated under it); each start is recorded with its
    // arguments.
    let starts = dir.path().join("starts.log");
    let wrapper = dir.path().join("journalctl");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec timeout 2 journalctl \"$@\"\n",
            starts.display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let config = write_config(
        dir.path(),
        &journals,
        &format!("journalctl = \"{}\"\n", wrapper.display()),
    );

    let mut agent = DryRun::start(&config);
    agent.wait_for("brute force", brute_force_from("203.0.113.88"));
    let restarted = || {
        std::fs::read_to_string(&starts)
            .unwrap_or_default()
            .lines()
            .filter(|args| args.contains("--after-cursor="))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while restarted() == 0 {
        assert!(Instant::now() < deadline, "journalctl was not restarted");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Entries written after the cut are read by the restarted journalctl, and the first
    // attacker's entries are not read a second time.
    write_journal(&journals.join("second.journal"), "203.0.113.99", 12, 100);
    agent.wait_for("second brute force", brute_force_from("203.0.113.99"));
    let seen = agent.stop();
    // One series for the first attacker, twelve attempts: nothing read twice.
    let first: Vec<_> = seen
        .iter()
        .filter(|s| s["indicators"][0]["value"] == "203.0.113.88")
        .collect();
    assert!(
        first.iter().all(
            |s| s["attributes"]["series"] == first[0]["attributes"]["series"]
                && s["count"].as_u64() <= Some(12)
        ),
        "{first:#?}"
    );
}
