//! Host sensing with real processes: programs started by the test under a miner's name,
//! from /dev/shm, and deleted from disk while running; the agent watching them raises
//! `suspicious_process` with the executable's hash.

mod common;

use common::{DryRun, sha256_of};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command};

/// Runs a copy of `sleep` at `path`, for as long as the test needs it.
fn run_copy_of_sleep(path: &Path) -> Child {
    std::fs::copy("/bin/sleep", path).expect("copy sleep");
    Command::new(path).arg("300").spawn().expect("start")
}

fn with_pid(pid: u32) -> impl Fn(&Value) -> bool {
    move |signal| signal["kind"] == "suspicious_process" && signal["attributes"]["pid"] == pid
}

#[test]
fn miners_programs_in_drop_directories_and_deleted_programs_are_suspicious() {
    let dir = tempfile::tempdir_in(std::env::current_dir().expect("cwd")).expect("tempdir");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "state_dir = \"state\"\n[health]\ninterval = \"1h\"\n[privacy]\nshare_file_paths = true\n\
         [sources.host]\ninterval = \"200ms\"\nexec_dirs = [\"/dev/shm\"]\n\
         cpu_percent = 50.0\ncpu_for = \"1s\"\n",
    )
    .expect("config");
    let mut agent = DryRun::start(&config);
    agent.wait_for_log("host source started");
    let sleep_hash = sha256_of(Path::new("/bin/sleep"));

    // A process named like a known miner (not in a drop directory).
    let mut miner = run_copy_of_sleep(&dir.path().join("xmrig"));
    let signal = agent.wait_for("miner", with_pid(miner.id()));
    assert_eq!(signal["attributes"]["process"], "xmrig");
    assert_eq!(signal["attributes"]["reasons"], "miner_name");
    assert_eq!(signal["severity"], "high");
    assert_eq!(signal["mitre"], "T1496");
    assert_eq!(signal["indicators"][0]["type"], "sha256");
    assert_eq!(signal["indicators"][0]["value"], sleep_hash);

    // A program run from /dev/shm.
    let shm = Path::new("/dev/shm").join(format!("vedetta-test-{}", std::process::id()));
    let mut dropped = run_copy_of_sleep(&shm);
    let signal = agent.wait_for("run from /dev/shm", with_pid(dropped.id()));
    assert_eq!(signal["attributes"]["reasons"], "run_from_drop_dir");
    assert_eq!(signal["attributes"]["path"], shm.display().to_string());

    // A program that deletes itself after starting: still hashed through /proc.
    let ghost = dir.path().join("update-helper");
    let mut deleted = run_copy_of_sleep(&ghost);
    std::fs::remove_file(&ghost).expect("delete");
    let signal = agent.wait_for("deleted executable", with_pid(deleted.id()));
    assert!(
        signal["attributes"]["reasons"]
            .as_str()
            .is_some_and(|r| r.contains("deleted_executable")),
        "{signal:#?}"
    );
    assert_eq!(signal["indicators"][0]["value"], sleep_hash);

    // A process pinning a CPU for longer than `cpu_for`.
    let mut busy = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("busy loop");
    let signal = agent.wait_for("cpu pinned", with_pid(busy.id()));
    assert_eq!(signal["attributes"]["reasons"], "pins_cpu");
    assert_eq!(signal["severity"], "medium");
    assert!(
        signal["attributes"]["cpu_percent"].as_f64() >= Some(50.0),
        "{signal:#?}"
    );

    for child in [&mut miner, &mut dropped, &mut deleted, &mut busy] {
        let _ = child.kill();
        let _ = child.wait();
    }
    // Each process was reported once, not at every look.
    let seen = agent.stop();
    let _ = std::fs::remove_file(&shm);
    for pid in [miner.id(), dropped.id(), deleted.id()] {
        let about: Vec<&Value> = seen.iter().filter(|s| with_pid(pid)(s)).collect();
        assert_eq!(about.len(), 1, "{about:#?}");
    }
}
