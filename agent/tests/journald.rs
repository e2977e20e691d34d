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

#[test]
fn journal_entries_are_read_once_across_restarts() {
    if !Path::new(JOURNAL_REMOTE).exists() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have systemd-journal-remote"
        );
        eprintln!("skipped: {JOURNAL_REMOTE} not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let journals = dir.path().join("journal");
    std::fs::create_dir(&journals).expect("journal dir");
    write_journal(&journals.join("first.journal"), "203.0.113.66", 12, 1);
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[health]\ninterval = \"1h\"\n[privacy]\nshare_internal_addresses = true\n\
             [[sources.journald]]\ndirectory = \"{}\"\nidentifiers = [\"sshd\"]\nstart_at = \"beginning\"\n",
            journals.display()
        ),
    )
    .expect("config");

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
