//! The journald source against a real journal: systemd-journal-remote writes journal files
//! from export-format entries, and the agent follows them through the real journalctl.
//! Needs systemd-journal-remote (`.ci/run` installs it); under `CI=true` its absence is a
//! failure, elsewhere the test says it skipped.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
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

/// Starts `run --dry-run`; returns the child and a channel of the signals it prints.
fn start(config: &Path) -> (std::process::Child, mpsc::Receiver<serde_json::Value>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vedetta-agent"))
        .args(["run", "--dry-run", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(signal) = serde_json::from_str(&line) {
                let _ = sender.send(signal);
            }
        }
    });
    (child, receiver)
}

/// Waits for a signal of `kind` about `source`, returning everything seen meanwhile.
fn wait_for(
    signals: &mpsc::Receiver<serde_json::Value>,
    kind: &str,
    source: &str,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let signal = signals
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {kind} about {source}; saw {seen:?}"));
        let found = signal["kind"] == kind && signal["indicators"][0]["value"] == source;
        seen.push(signal);
        if found {
            return seen;
        }
    }
}

fn stop(child: &mut std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("sigterm");
    assert!(child.wait().expect("wait").success());
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

    let (mut agent, signals) = start(&config);
    let seen = wait_for(&signals, "ssh_bruteforce", "203.0.113.66");
    assert!(seen.iter().any(|s| s["count"] == 10), "{seen:?}");
    stop(&mut agent);
    let cursor = dir.path().join("state/journald-0.cursor");
    assert!(
        std::fs::read_to_string(&cursor).is_ok_and(|c| c.contains("i=")),
        "cursor saved"
    );

    // After a restart, only what is new is read: the first attacker is not seen again.
    let (mut agent, signals) = start(&config);
    write_journal(&journals.join("second.journal"), "203.0.113.77", 12, 100);
    let seen = wait_for(&signals, "ssh_bruteforce", "203.0.113.77");
    assert!(
        seen.iter()
            .all(|s| s["indicators"][0]["value"] != "203.0.113.66"),
        "{seen:?}"
    );
    stop(&mut agent);
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

    let (mut agent, signals) = start(&config);
    wait_for(&signals, "ssh_bruteforce", "203.0.113.88");
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
    let seen = wait_for(&signals, "ssh_bruteforce", "203.0.113.99");
    assert!(
        seen.iter()
            .all(|s| s["indicators"][0]["value"] != "203.0.113.88"),
        "{seen:?}"
    );
    stop(&mut agent);
}
