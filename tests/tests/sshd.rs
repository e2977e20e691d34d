//! A real OpenSSH server (Debian's openssh-server) on a loopback port, logging to a file,
//! attacked by a real client with wrong passwords; the running agent tails the file and
//! the collector stores what it detects. Needs root (a test account, sshd's privilege
//! separation) and the tools; `.ci/run` installs them. Under `CI=true` their absence is
//! a failure, elsewhere the test says it skipped.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use vedetta_e2e::{collector_and_agent, wait_until};

const USER: &str = "vedetta-e2e";
const PASSWORD: &str = "Corr3ct-Horse-Battery";

fn available() -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    let tools = [
        "/usr/sbin/sshd",
        "/usr/bin/sshpass",
        "/usr/bin/ssh",
        "/usr/bin/ssh-keygen",
    ]
    .iter()
    .all(|tool| Path::new(tool).exists());
    if !(root && tools) {
        assert!(
            std::env::var("CI").is_err(),
            "CI must run as root with openssh-server, openssh-client and sshpass installed"
        );
        eprintln!("skipped: needs root, sshd, ssh and sshpass");
    }
    root && tools
}

struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sshd(dir: &Path, log: &Path) -> (Sshd, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let key = dir.join("host_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    std::fs::create_dir_all("/run/sshd").expect("privilege separation directory");
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nUsePAM no\n\
             PasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication no\n\
             LogLevel INFO\nMaxAuthTries 30\nMaxStartups 100\n",
            key.display(),
            dir.join("sshd.pid").display()
        ),
    )
    .expect("sshd config");
    let child = Command::new("/usr/sbin/sshd")
        .arg("-D")
        .arg("-f")
        .arg(&config)
        .arg("-E")
        .arg(log)
        .spawn()
        .expect("start sshd");
    let sshd = Sshd(child);
    wait_until("sshd listening", || {
        std::fs::read_to_string(log).is_ok_and(|text| text.contains("Server listening"))
    });
    (sshd, port)
}

fn ensure_user() {
    let exists = Command::new("id")
        .arg(USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("id")
        .success();
    if !exists {
        let status = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", USER])
            .status()
            .expect("useradd");
        assert!(status.success(), "useradd");
    }
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .expect("chpasswd");
    use std::io::Write;
    writeln!(chpasswd.stdin.take().expect("stdin"), "{USER}:{PASSWORD}").expect("password");
    assert!(chpasswd.wait().expect("wait").success());
}

/// One password attempt with a real ssh client; true if it logged in.
fn login(port: u16, password: &str) -> bool {
    Command::new("sshpass")
        .args(["-p", password, "ssh", "-p", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
        ])
        .args([
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{USER}@127.0.0.1"))
        .arg("true")
        .stdin(Stdio::null())
        .status()
        .expect("ssh")
        .success()
}

#[test]
fn a_real_sshd_attacked_with_wrong_passwords_reaches_the_collector_as_brute_force_then_a_broken_in_login()
 {
    if !available() {
        return;
    }
    ensure_user();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("sshd.log");
    let (_sshd, port) = start_sshd(dir.path(), &log);

    // Loopback is an internal address: this member opts in to sharing it so that the
    // test can check the address itself; user names stay pseudonymised.
    let (mut collector, mut agent) = collector_and_agent(&format!(
        "[[sources.logs]]\npaths = [\"{}\"]\nformat = \"plain\"\nprogram = \"sshd\"\nstart_at = \"beginning\"\n\n\
             [privacy]\nshare_internal_addresses = true\n",
        log.display()
    ));
    agent.start();

    for attempt in 0..12 {
        assert!(
            !login(port, &format!("wrong-{attempt}")),
            "a wrong password was accepted"
        );
    }
    wait_until("ssh_bruteforce stored by the collector", || {
        collector.signals_of_kind("ssh_bruteforce").iter().any(|s| {
            s.signal
                .indicators
                .first()
                .is_some_and(|i| i.value == "127.0.0.1")
                && s.signal.count >= 10
        })
    });
    assert!(login(port, PASSWORD), "the right password logs in");
    wait_until("ssh_login_after_failures stored by the collector", || {
        !collector
            .signals_of_kind("ssh_login_after_failures")
            .is_empty()
    });
    let broken = collector
        .signals_of_kind("ssh_login_after_failures")
        .remove(0);
    assert_eq!(broken.signal.severity, vedetta_common::Severity::Critical);
    assert_eq!(broken.signal.indicators[0].value, "127.0.0.1");
    let user = &broken.signal.indicators[1];
    assert_eq!(user.kind, vedetta_common::IndicatorType::User);
    assert!(
        user.value.starts_with("pn:"),
        "user names leave pseudonymised: {}",
        user.value
    );
    assert_eq!(broken.org, "acme");
    assert!(
        broken
            .signal
            .host
            .as_deref()
            .is_some_and(|h| h.starts_with("pn:"))
    );
    assert!(agent.stop());
    collector.stop();
}
