//! The systemd service protocol (sd_notify), for real: each daemon is started the way
//! systemd starts a `Type=notify` unit with `WatchdogSec=2s` (a `NOTIFY_SOCKET` to write
//! to, `WATCHDOG_USEC` in its environment), and the test plays the service manager: it
//! reads that socket and checks that the daemon says `READY=1` once it serves, then pings
//! `WATCHDOG=1` at half the interval (not faster) while it is alive, and says
//! `STOPPING=1` on SIGTERM, after which it pings no more and exits cleanly.
//!
//! Every wait reads the socket with a deadline; nothing sleeps.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vedetta_e2e::{Agent, Collector, DEADLINE, binary, send_signal};

/// `WatchdogSec=2s`: pings are due every second.
const WATCHDOG_USEC: &str = "2000000";
const PING_PERIOD: Duration = Duration::from_secs(1);

/// The service manager's end of the notification socket.
struct Manager {
    dir: tempfile::TempDir,
    socket: UnixDatagram,
}

impl Manager {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = UnixDatagram::bind(dir.path().join("notify")).expect("bind notify socket");
        Self { dir, socket }
    }

    /// Starts `command` as systemd would start the unit, with its log in our folder.
    fn spawn(&self, command: &mut Command, name: &str) -> Daemon {
        let log = self.dir.path().join(format!("{name}.log"));
        let child = command
            .env("NOTIFY_SOCKET", self.dir.path().join("notify"))
            .env("WATCHDOG_USEC", WATCHDOG_USEC)
            // systemd sets it to the main process; absent, the watchdog is for whoever reads it.
            .env_remove("WATCHDOG_PID")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {name}: {error}"));
        Daemon { child, log }
    }

    /// The next notification (one datagram: one or more `KEY=VALUE` lines), waiting at
    /// most until `deadline`.
    fn next(&self, deadline: Instant) -> Option<Vec<String>> {
        let left = deadline.checked_duration_since(Instant::now())?;
        self.socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("read timeout");
        let mut buffer = [0_u8; 4096];
        let length = self.socket.recv(&mut buffer).ok()?;
        let text = String::from_utf8_lossy(&buffer[..length]);
        Some(text.lines().map(str::to_owned).collect())
    }

    /// Notifications until one holds `state`; returns those that came before it.
    fn expect(&self, state: &str, daemon: &Daemon) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        let mut before = Vec::new();
        loop {
            let Some(message) = self.next(deadline) else {
                panic!(
                    "no {state} within {DEADLINE:?} (after {before:?}); log:\n{}",
                    daemon.log()
                );
            };
            if message.iter().any(|line| line == state) {
                return before;
            }
            before.extend(message);
        }
    }

    /// Whatever is still queued, without waiting.
    fn drain(&self) -> Vec<String> {
        self.socket.set_nonblocking(true).expect("nonblocking");
        let mut buffer = [0_u8; 4096];
        let mut lines = Vec::new();
        while let Ok(length) = self.socket.recv(&mut buffer) {
            lines.extend(
                String::from_utf8_lossy(&buffer[..length])
                    .lines()
                    .map(str::to_owned),
            );
        }
        lines
    }
}

/// A daemon started by [`Manager::spawn`]; killed if the test fails midway.
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whole life of a supervised daemon, as the service manager sees it.
fn check_protocol(manager: &Manager, mut daemon: Daemon) {
    // Nothing, not even a ping, before it says it is ready.
    let before_ready = manager.expect("READY=1", &daemon);
    assert!(
        before_ready.is_empty(),
        "notifications before READY=1: {before_ready:?}"
    );

    // Pings keep coming, at half the watchdog interval rather than as fast as possible.
    let mut pings = Vec::new();
    while pings.len() < 4 {
        let other = manager.expect("WATCHDOG=1", &daemon);
        assert!(
            other.is_empty(),
            "unexpected notifications while running: {other:?}"
        );
        pings.push(Instant::now());
    }
    // Three gaps of one period each; a ping waits for its liveness check (half a period
    // at most), so a gap may be shorter than a period, never three of them together.
    let spread = pings[3] - pings[0];
    assert!(
        spread >= PING_PERIOD * 3 / 2,
        "4 pings within {spread:?}: pinged faster than every {PING_PERIOD:?}"
    );

    send_signal(&daemon.child, nix::sys::signal::Signal::SIGTERM);
    let before_stopping = manager.expect("STOPPING=1", &daemon);
    assert!(
        before_stopping.iter().all(|line| line == "WATCHDOG=1"),
        "before STOPPING=1: {before_stopping:?}"
    );
    let status = daemon.child.wait().expect("wait");
    assert!(status.success(), "{status}; log:\n{}", daemon.log());
    let after = manager.drain();
    assert!(
        after.is_empty(),
        "notifications after STOPPING=1: {after:?}"
    );
    assert!(
        daemon.log().contains("feeding the systemd watchdog"),
        "{}",
        daemon.log()
    );
}

#[test]
fn the_collector_tells_systemd_it_is_ready_feeds_the_watchdog_and_says_it_is_stopping() {
    let collector = Collector::init();
    let manager = Manager::new();
    let daemon = manager.spawn(
        Command::new(binary("vedetta-collector"))
            .args(["serve", "--data-dir"])
            .arg(&collector.data_dir),
        "collector",
    );
    check_protocol(&manager, daemon);
}

#[test]
fn the_agent_tells_systemd_it_is_ready_feeds_the_watchdog_and_says_it_is_stopping() {
    let mut collector = Collector::init();
    collector.add_org("acme");
    collector.start();
    let agent = Agent::enrolled(&collector, "acme", "");
    let manager = Manager::new();
    let daemon = manager.spawn(
        Command::new(binary("vedetta-agent"))
            .args(["run", "--config"])
            .arg(&agent.config),
        "agent",
    );
    check_protocol(&manager, daemon);
    collector.stop();
}
