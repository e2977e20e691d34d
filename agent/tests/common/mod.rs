//! Helpers shared by the agent's integration tests: a real `vedetta-agent run --dry-run`
//! whose printed signals are read as they come.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The SHA-256 of a file, as the real `sha256sum` computes it.
pub fn sha256_of(path: &Path) -> String {
    let output = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .expect("hash")
        .to_owned()
}

/// A running `vedetta-agent run --dry-run`.
pub struct DryRun {
    child: Child,
    signals: mpsc::Receiver<serde_json::Value>,
    logs: mpsc::Receiver<String>,
    /// Every signal received so far, in order.
    pub seen: Vec<serde_json::Value>,
}

impl DryRun {
    pub fn start(config: &Path) -> Self {
        Self::start_with(Command::new(env!("CARGO_BIN_EXE_vedetta-agent")), config)
    }

    /// Starts the agent through `command` (e.g. `setpriv` with the agent's path appended).
    pub fn start_with(mut command: Command, config: &Path) -> Self {
        let mut child = command
            .args(["run", "--dry-run", "--config"])
            .arg(config)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("agent");
        let stderr = child.stderr.take().expect("stderr");
        let (log_sender, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = log_sender.send(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (sender, signals) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(signal) = serde_json::from_str(&line) {
                    let _ = sender.send(signal);
                }
            }
        });
        Self {
            child,
            signals,
            logs,
            seen: Vec::new(),
        }
    }

    /// Waits (at most a minute) for a log line containing `text`.
    pub fn wait_for_log(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {text:?}"),
            }
        }
    }

    /// Waits (at most a minute) for a signal satisfying `wanted`, and returns it.
    pub fn wait_for(
        &mut self,
        what: &str,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        if let Some(found) = self.seen.iter().find(|s| wanted(s)) {
            return found.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(signal) = self.signals.recv_timeout(left) else {
                panic!("no {what}; saw {:#?}", self.seen);
            };
            self.seen.push(signal.clone());
            if wanted(&signal) {
                return signal;
            }
        }
    }

    /// Takes whatever arrived without waiting.
    pub fn drain(&mut self) -> &[serde_json::Value] {
        while let Ok(signal) = self.signals.try_recv() {
            self.seen.push(signal);
        }
        &self.seen
    }

    /// Sends `signal` to the agent (SIGSTOP and SIGCONT to freeze it for a while).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal");
    }

    /// SIGTERM, and a clean exit.
    pub fn stop(mut self) -> Vec<serde_json::Value> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("sigterm");
        assert!(self.child.wait().expect("wait").success());
        self.drain();
        std::mem::take(&mut self.seen)
    }
}

impl Drop for DryRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
