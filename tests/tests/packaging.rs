//! Packaging: the Debian packages and systemd units of `packaging/`.
//!
//! * The collector's reference configuration (`packaging/collector.toml`) lists every key
//!   of the file that `vedetta-collector init` writes, with the same values.
//! * `systemd-analyze verify` accepts both units, which grant each program exactly the
//!   capabilities it needs and let it notify systemd (`Type=notify`, `WatchdogSec=`).
//! * `packaging/build-deb.sh` builds both packages with the right contents. Then, on this
//!   very machine: they install; the documented enrollment works as the service users;
//!   the agent runs with nothing but its two capabilities; an upgrade keeps a locally
//!   edited configuration and the enrollment; remove keeps the configuration and state;
//!   purge leaves nothing. That test changes the system (users, `/etc`, `/var/lib`), so it
//!   runs only as root with `CI=true` or `VEDETTA_TEST_SYSTEM=1`, refuses to touch an
//!   existing installation, and purges everything when it ends, failed or not.
//!
//! Under `CI=true` a missing tool fails the tests instead of skipping them. The packages
//! are made from this build's binaries: `cargo test --workspace` builds them; with
//! `-p vedetta-e2e`, run `cargo build -p vedetta-agent -p vedetta-collector` first.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;
use vedetta_collector::config::CollectorConfig;
use vedetta_e2e::{DEADLINE, binary, wait_until};

const AGENT: &str = "vedetta-agent";
const COLLECTOR: &str = "vedetta-collector";
const AGENT_STATE: &str = "/var/lib/vedetta-agent";
const COLLECTOR_DATA: &str = "/var/lib/vedetta-collector";
const AGENT_CONFIG: &str = "/etc/vedetta/agent.toml";
/// Debian's PATH for root: maintainer scripts and dpkg need the sbin folders.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants";
const DSH_STATE: &str = "/var/lib/systemd/deb-systemd-helper-enabled";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace folder")
        .to_owned()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// A program run with Debian's PATH.
fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    command.env("PATH", SYSTEM_PATH).env("LC_ALL", "C");
    command
}

/// Runs `command`, which must succeed; returns its standard output.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The path of `name`, or `None` (the caller skips) when it is missing outside CI; under
/// CI a missing tool is a failure that names the Debian package to install.
fn tool(name: &str, debian_package: &str) -> Option<PathBuf> {
    let found = std::env::split_paths(SYSTEM_PATH)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        assert!(
            !in_ci(),
            "{name} is missing: install the Debian package {debian_package} (.ci/run)"
        );
        eprintln!("skipped: {name} is missing (apt-get install {debian_package})");
    }
    found
}

/// The values of `key=` lines of a unit file, in order.
fn directive(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .map(|value| value.trim().to_owned())
        .collect()
}

/// Every key path of a TOML document (`a.b`, `a.list[].c`), to compare two key sets.
fn key_paths(value: &toml::Value, prefix: &str, paths: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                key_paths(value, &format!("{prefix}{key}."), paths);
            }
        }
        toml::Value::Array(items)
            if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
        {
            for item in items {
                key_paths(item, &format!("{}[].", prefix.trim_end_matches('.')), paths);
            }
        }
        _ => {
            paths.insert(prefix.trim_end_matches('.').to_owned());
        }
    }
}

#[test]
fn the_collector_reference_configuration_lists_every_key_init_writes_with_its_value() {
    let reference_path = workspace().join("packaging/collector.toml");
    let text = std::fs::read_to_string(&reference_path).expect("packaging/collector.toml");
    let reference: CollectorConfig = toml::from_str(&text)
        .unwrap_or_else(|error| panic!("{}: {error}", reference_path.display()));

    // What `init` writes with its default addresses is the file the reference documents.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("collector");
    run(Command::new(binary(COLLECTOR))
        .args(["init", "--format", "json", "--data-dir"])
        .arg(&data));
    let written_text =
        std::fs::read_to_string(data.join("collector.toml")).expect("collector.toml of init");
    let written: CollectorConfig = toml::from_str(&written_text).expect("init's collector.toml");

    assert_eq!(
        toml::Value::try_from(&reference).expect("serialise"),
        toml::Value::try_from(&written).expect("serialise"),
        "packaging/collector.toml shows values other than those `init` writes:\n{written_text}"
    );
    let mut reference_keys = BTreeSet::new();
    key_paths(
        &toml::from_str(&text).expect("reference as TOML"),
        "",
        &mut reference_keys,
    );
    let mut written_keys = BTreeSet::new();
    key_paths(
        &toml::from_str(&written_text).expect("init's file as TOML"),
        "",
        &mut written_keys,
    );
    assert_eq!(
        reference_keys, written_keys,
        "packaging/collector.toml must list exactly the keys `init` writes"
    );
    // Keys without a default are shown commented out: they must be valid keys too.
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(key, _)| {
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                }) =>
            {
                format!("{rest}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    assert_ne!(uncommented, text, "the commented-out examples were found");
    toml::from_str::<CollectorConfig>(&uncommented)
        .unwrap_or_else(|error| panic!("packaging/collector.toml, examples enabled: {error}"));
    // Every key is explained: the line before each key line is a comment or another key of
    // the same group (`[[correlation.chains]]` explains its keys once).
    let lines: Vec<&str> = text.lines().collect();
    for (number, line) in lines.iter().enumerate() {
        if line.contains(" = ") && !line.starts_with('#') {
            let previous = number.checked_sub(1).map_or("", |n| lines[n]);
            assert!(
                previous.starts_with('#') || previous.contains(" = ") || previous.starts_with("[["),
                "packaging/collector.toml line {}: {line:?} has no comment",
                number + 1
            );
        }
    }
}

#[test]
fn systemd_accepts_both_units_which_grant_only_the_capabilities_needed() {
    let agent_unit = std::fs::read_to_string(workspace().join("packaging/vedetta-agent.service"))
        .expect("agent unit");
    let collector_unit =
        std::fs::read_to_string(workspace().join("packaging/vedetta-collector.service"))
            .expect("collector unit");

    // Packet capture and reading protected files, nothing else; the collector, nothing.
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        assert_eq!(
            directive(&agent_unit, key),
            ["CAP_NET_RAW CAP_DAC_READ_SEARCH"],
            "{key}"
        );
        assert_eq!(directive(&collector_unit, key), [""], "{key}");
    }
    for (unit, user) in [(&agent_unit, AGENT), (&collector_unit, COLLECTOR)] {
        assert_eq!(directive(unit, "User"), [user]);
        assert_eq!(directive(unit, "StateDirectory"), [user]);
        assert_eq!(directive(unit, "StateDirectoryMode"), ["0700"]);
        for (key, value) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("PrivateDevices", "yes"),
            ("ProtectKernelTunables", "yes"),
            ("ProtectKernelModules", "yes"),
            ("ProtectControlGroups", "yes"),
            ("RestrictNamespaces", "yes"),
            ("LockPersonality", "yes"),
            ("MemoryDenyWriteExecute", "yes"),
            ("SystemCallArchitectures", "native"),
            ("UMask", "0077"),
            ("Restart", "on-failure"),
        ] {
            assert_eq!(directive(unit, key), [value], "{user}: {key}");
        }
        assert_eq!(directive(unit, "SystemCallFilter")[0], "@system-service");
        // Both programs speak sd_notify (tests/tests/watchdog.rs): readiness, stopping,
        // and watchdog pings from their main process while they are alive.
        assert_eq!(directive(unit, "Type"), ["notify"], "{user}");
        assert_eq!(directive(unit, "NotifyAccess"), ["main"], "{user}");
        assert_eq!(directive(unit, "WatchdogSec"), ["60s"], "{user}");
    }
    // The agent watches /home, /root/.ssh and /tmp: it must see the real ones, read-only.
    assert_eq!(directive(&agent_unit, "ProtectHome"), ["read-only"]);
    assert_eq!(directive(&agent_unit, "PrivateTmp"), ["no"]);
    // ...so SQLite needs a writable folder for its temporary files.
    assert_eq!(
        directive(&agent_unit, "Environment"),
        ["TMPDIR=/var/lib/vedetta-agent"]
    );
    assert_eq!(
        directive(&agent_unit, "RestrictAddressFamilies"),
        ["AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET"]
    );
    assert_eq!(directive(&collector_unit, "ProtectHome"), ["yes"]);
    assert_eq!(directive(&collector_unit, "PrivateTmp"), ["yes"]);
    assert_eq!(directive(&collector_unit, "LimitNOFILE"), ["65536"]);

    let Some(analyze) = tool("systemd-analyze", "systemd") else {
        return;
    };
    // `verify` checks that the programs exist: point the units at this build's binaries.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut units = Vec::new();
    for (text, program) in [(&agent_unit, AGENT), (&collector_unit, COLLECTOR)] {
        let built = binary(program);
        let unit = dir.path().join(format!("{program}.service"));
        let text = text.replace(
            &format!("/usr/bin/{program} "),
            &format!("{} ", built.display()),
        );
        std::fs::write(&unit, text).expect("write unit");
        units.push(unit);
    }
    let output = command(&analyze)
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Unknown keys are only warnings: the check is that there is nothing to say at all.
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        output.status
    );

    // The exposure score guards against hardening lines lost in later edits.
    for (unit, limit) in units.iter().zip([3.5, 2.5]) {
        let report = run(command(&analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(unit));
        let score: f64 = report
            .lines()
            .find_map(|line| {
                line.split_once("Overall exposure level for ")?
                    .1
                    .split_once(": ")
            })
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
        eprintln!("{}: exposure {score}", unit.display());
        assert!(
            score <= limit,
            "{}: exposure {score} above {limit}:\n{report}",
            unit.display()
        );
    }
}

/// Lines of a child's output, read by a thread, awaited with a deadline.
#[derive(Debug)]
struct Lines {
    receiver: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn of(stream: impl std::io::Read + Send + 'static) -> Self {
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            receiver,
            seen: Vec::new(),
        }
    }

    /// The first line, seen already or to come, that satisfies `wanted`.
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.iter().find(|line| wanted(line)) {
            return line.clone();
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.receiver.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {what} (output so far:\n{})",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

/// The system as this test found it, restored when the test ends, failed or not: our
/// processes stopped, both packages purged, and anything a failed purge left removed (none
/// of it existed before: the test refuses to start otherwise).
#[derive(Debug)]
struct SystemGuard {
    children: Vec<Child>,
    _lock: File,
}

impl SystemGuard {
    /// Takes the machine-wide lock of this test and checks that nothing of ours is there.
    fn acquire() -> Self {
        let lock = File::create(std::env::temp_dir().join("vedetta-packaging-test.lock"))
            .expect("lock file");
        lock.lock().expect("lock");
        let status = |package: &str| {
            command("dpkg-query")
                .args(["-W", "-f=${Status}", package])
                .output()
                .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
                .unwrap_or_default()
        };
        for package in [AGENT, COLLECTOR] {
            let status = status(package);
            assert!(
                status.is_empty() || status.contains("not-installed"),
                "{package} is already on this machine ({status}): this test installs and purges \
                 the packages and does not touch an existing installation \
                 (dpkg --purge {AGENT} {COLLECTOR} if it is a leftover)"
            );
            assert!(
                nix::unistd::User::from_name(package)
                    .ok()
                    .flatten()
                    .is_none(),
                "the user {package} exists already: not touching it"
            );
        }
        for path in [AGENT_STATE, COLLECTOR_DATA, "/etc/vedetta"] {
            assert!(
                !Path::new(path).exists(),
                "{path} exists already: not touching it"
            );
        }
        Self {
            children: Vec::new(),
            _lock: lock,
        }
    }

    fn stop_children(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SystemGuard {
    fn drop(&mut self) {
        self.stop_children();
        let _ = command("dpkg")
            .args(["--purge", AGENT, COLLECTOR])
            .stdout(Stdio::null())
            .output();
        for user in [AGENT, COLLECTOR] {
            let _ = command("deluser")
                .args(["--quiet", "--system", user])
                .output();
            let _ = command("delgroup")
                .args(["--quiet", "--system", user])
                .output();
            for link in [
                format!("{WANTS}/{user}.service"),
                format!("{DSH_STATE}/{user}.service.dsh-also"),
                format!("{DSH_STATE}/multi-user.target.wants/{user}.service"),
            ] {
                let _ = std::fs::remove_file(link);
            }
        }
        for path in [AGENT_STATE, COLLECTOR_DATA, "/etc/vedetta"] {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

fn system_test_enabled() -> bool {
    let opted_in = in_ci() || std::env::var("VEDETTA_TEST_SYSTEM").is_ok_and(|v| v == "1");
    if !opted_in {
        eprintln!(
            "skipped: installs packages on this machine; set VEDETTA_TEST_SYSTEM=1 (as root) to run"
        );
        return false;
    }
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: installing packages needs root");
        return false;
    }
    true
}

/// Paths, modes and owners of a package's files, from `dpkg-deb -c`.
fn contents(deb: &Path) -> Vec<(String, String, String)> {
    run(command("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 6, "dpkg-deb -c line {line:?}");
            let path = fields[5..].join(" ");
            let path = path.split(" -> ").next().unwrap_or_default().to_owned();
            (
                path.trim_start_matches('.').to_owned(),
                fields[0].to_owned(),
                fields[1].to_owned(),
            )
        })
        .collect()
}

/// Checks one built package: control fields, files with modes and owners, maintainer
/// scripts, conffiles.
fn inspect(deb: &Path, package: &str, version: &str, expected: &[(&str, &str)], conffiles: &str) {
    let fields = run(command("dpkg-deb").arg("-f").arg(deb).args([
        "Package",
        "Version",
        "Architecture",
        "Depends",
        "Maintainer",
    ]));
    let architecture = run(command("dpkg").arg("--print-architecture"));
    for field in [
        format!("Package: {package}"),
        format!("Version: {version}"),
        format!("Architecture: {}", architecture.trim()),
    ] {
        assert!(fields.contains(&field), "{field} not in:\n{fields}");
    }
    assert!(
        fields.contains("Depends: adduser, libc6 (>= 2.") && fields.contains("libgcc-s1"),
        "{fields}"
    );

    let files = contents(deb);
    for (path, mode) in expected {
        let entry = files.iter().find(|(p, _, _)| p == path);
        assert!(
            entry.is_some_and(|(_, m, _)| m == mode),
            "{package}: {path} should be {mode}, found {entry:?}"
        );
    }
    for (path, _, owner) in &files {
        assert_eq!(owner, "root/root", "{package}: {path}");
        assert!(
            !path.starts_with("/var/"),
            "{package}: {path} (state is made by postinst)"
        );
    }

    let info = run(command("dpkg-deb").arg("-I").arg(deb));
    let control = tempfile::tempdir().expect("tempdir");
    run(command("dpkg-deb").arg("-e").arg(deb).arg(control.path()));
    for script in ["postinst", "prerm", "postrm"] {
        assert!(info.contains(script), "{package}: no {script} in\n{info}");
        let path = control.path().join(script);
        let mode = std::fs::metadata(&path).expect(script).permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{package}: {script} mode");
        run(command("sh").arg("-n").arg(&path));
    }
    let found = std::fs::read_to_string(control.path().join("conffiles")).unwrap_or_default();
    assert_eq!(found, conffiles, "{package}: conffiles");
}

fn package_status(package: &str) -> String {
    command("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}", package])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default()
}

/// Checks a service user: a system user with no shell and no password, owner of its
/// 0700 state directory.
fn check_service_user(name: &str, home: &str) -> nix::unistd::User {
    let user = nix::unistd::User::from_name(name)
        .expect("passwd")
        .unwrap_or_else(|| panic!("no user {name}"));
    assert!(user.uid.as_raw() < 1000, "{name} is a system user");
    assert_eq!(
        user.shell,
        Path::new("/usr/sbin/nologin"),
        "{name}: no shell"
    );
    assert_eq!(user.dir, Path::new(home));
    let group = nix::unistd::Group::from_gid(user.gid)
        .expect("group")
        .expect("primary group");
    assert_eq!(group.name, name, "{name}: its own group");
    let shadow = run(command("getent").args(["shadow", name]));
    let password = shadow.split(':').nth(1).unwrap_or_default();
    assert!(
        password.starts_with('!') || password.starts_with('*'),
        "{name}: no password login ({password:?})"
    );
    let state = std::fs::metadata(home).expect("state directory");
    assert!(state.is_dir());
    assert_eq!(state.mode() & 0o7777, 0o700, "{home} mode");
    assert_eq!(state.uid(), user.uid.as_raw(), "{home} owner");
    assert_eq!(state.gid(), user.gid.as_raw(), "{home} group");
    user
}

/// Every file under `dir` belongs to `user` (nothing was left there by root).
fn check_owned_by(dir: &str, user: &nix::unistd::User) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("entry");
        let metadata = entry.metadata().expect("metadata");
        assert_eq!(
            metadata.uid(),
            user.uid.as_raw(),
            "{} is not {}'s",
            entry.path().display(),
            user.name
        );
    }
}

/// A command of the documented procedure, run as a service user with `runuser`.
fn as_user(user: &str, program: &str) -> Command {
    let mut command = command("runuser");
    command.args(["-u", user, "--", program]);
    command
}

#[test]
fn packages_build_install_enroll_upgrade_remove_and_purge_cleanly() {
    if !system_test_enabled() {
        return;
    }
    let mut tools = Vec::new();
    for (name, package) in [
        ("dpkg-deb", "dpkg"),
        ("dpkg-query", "dpkg"),
        ("adduser", "adduser"),
        ("deluser", "adduser"),
        ("runuser", "util-linux"),
        ("setpriv", "util-linux"),
        ("deb-systemd-helper", "init-system-helpers"),
        ("systemd-analyze", "systemd"),
        ("systemctl", "systemd"),
    ] {
        tools.push(tool(name, package));
    }
    if tools.iter().any(Option::is_none) {
        return;
    }
    let start = Instant::now();
    let step = |what: &str| eprintln!("[{:>5.1}s] {what}", start.elapsed().as_secs_f64());
    let mut guard = SystemGuard::acquire();
    let work = tempfile::tempdir().expect("tempdir");
    // The service users must reach files of the test (traverse, not list).
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");

    // Build: the agent twice (the second a newer version, for the upgrade), the collector.
    let bin_dir = binary(AGENT).parent().expect("bin dir").to_owned();
    let upstream = run(Command::new(binary(AGENT)).arg("--version"));
    let upstream = upstream
        .split_whitespace()
        .nth(1)
        .expect("version")
        .to_owned();
    let (first, second) = (format!("{upstream}-1"), format!("{upstream}-2"));
    let build = |package: &str, version: &str| -> PathBuf {
        let out = run(command(workspace().join("packaging/build-deb.sh"))
            .arg("--bin-dir")
            .arg(&bin_dir)
            .args(["--version", version, "--compression", "none", "--out"])
            .arg(work.path().join(version))
            .arg(package));
        PathBuf::from(out.lines().last().expect("path of the package"))
    };
    let agent_deb = build(AGENT, &first);
    let agent_deb_2 = build(AGENT, &second);
    let collector_deb = build(COLLECTOR, &first);
    step("packages built");

    inspect(
        &agent_deb,
        AGENT,
        &first,
        &[
            ("/usr/bin/vedetta-agent", "-rwxr-xr-x"),
            ("/lib/systemd/system/vedetta-agent.service", "-rw-r--r--"),
            ("/etc/vedetta/agent.toml", "-rw-r--r--"),
            ("/usr/share/doc/vedetta-agent/copyright", "-rw-r--r--"),
            (
                "/usr/share/doc/vedetta-agent/changelog.Debian.gz",
                "-rw-r--r--",
            ),
            ("/usr/share/doc/vedetta-agent/member-it.md", "-rw-r--r--"),
        ],
        "/etc/vedetta/agent.toml\n",
    );
    inspect(
        &collector_deb,
        COLLECTOR,
        &first,
        &[
            ("/usr/bin/vedetta-collector", "-rwxr-xr-x"),
            (
                "/lib/systemd/system/vedetta-collector.service",
                "-rw-r--r--",
            ),
            (
                "/usr/share/doc/vedetta-collector/examples/collector.toml",
                "-rw-r--r--",
            ),
            ("/usr/share/doc/vedetta-collector/copyright", "-rw-r--r--"),
        ],
        "",
    );
    assert!(
        !contents(&collector_deb)
            .iter()
            .any(|(path, _, _)| path.starts_with("/etc/")),
        "the collector's configuration lives in its data directory"
    );
    step("package contents checked");

    // Install.
    run(command("dpkg")
        .arg("-i")
        .arg(&agent_deb)
        .arg(&collector_deb));
    step("installed");
    for package in [AGENT, COLLECTOR] {
        assert_eq!(
            package_status(package),
            format!("install ok installed {first}")
        );
    }
    let conffiles = run(command("dpkg-query").args(["-W", "-f=${Conffiles}", AGENT]));
    assert!(
        conffiles.contains(&format!(" {AGENT_CONFIG} ")),
        "{conffiles}"
    );
    let agent_user = check_service_user(AGENT, AGENT_STATE);
    let collector_user = check_service_user(COLLECTOR, COLLECTOR_DATA);
    for group in ["adm", "systemd-journal"] {
        if let Some(group) = nix::unistd::Group::from_name(group).expect("group") {
            assert!(
                group.mem.iter().any(|member| member == AGENT),
                "{AGENT} reads the logs as a member of {}",
                group.name
            );
        }
    }
    let etc = std::fs::metadata("/etc/vedetta").expect("/etc/vedetta");
    assert_eq!((etc.mode() & 0o7777, etc.uid()), (0o755, 0));
    let config = std::fs::metadata(AGENT_CONFIG).expect("agent.toml");
    assert_eq!((config.mode() & 0o7777, config.uid()), (0o644, 0));
    assert_eq!(
        std::fs::read_to_string(AGENT_CONFIG).expect("installed config"),
        std::fs::read_to_string(workspace().join("packaging/agent.toml")).expect("shipped")
    );
    for package in [AGENT, COLLECTOR] {
        let unit = format!("/lib/systemd/system/{package}.service");
        assert_eq!(
            std::fs::read_to_string(&unit).expect("installed unit"),
            std::fs::read_to_string(workspace().join(format!("packaging/{package}.service")))
                .expect("unit")
        );
        let output = command("systemd-analyze")
            .args(["verify", &unit])
            .output()
            .expect("systemd-analyze");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stderr.trim().is_empty(),
            "{unit}: {stderr}"
        );
    }
    // Not enabled by the package: nothing leaves the host before a person enables it.
    assert!(!Path::new(&format!("{WANTS}/{AGENT}.service")).exists());

    // The installed default configuration is valid, also for the service user.
    for mut check in [
        command("/usr/bin/vedetta-agent"),
        as_user(AGENT, "/usr/bin/vedetta-agent"),
    ] {
        let out = run(check.args(["check-config", "--config", AGENT_CONFIG]));
        assert!(out.contains("configuration OK"), "{out}");
    }
    step("installation checked");

    // The documented procedure: the collector initialised and administered as its user...
    let collector_cli = |args: &[&str]| {
        run(as_user(COLLECTOR, "/usr/bin/vedetta-collector")
            .args(args)
            .args(["--data-dir", COLLECTOR_DATA]))
    };
    let init: serde_json::Value = serde_json::from_str(&collector_cli(&[
        "init",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--format",
        "json",
    ]))
    .expect("init json");
    let fingerprint = init["ca_fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();
    collector_cli(&["org", "add", "packaging-test"]);
    let token: serde_json::Value = serde_json::from_str(&collector_cli(&[
        "token",
        "create",
        "--org",
        "packaging-test",
        "--format",
        "json",
    ]))
    .expect("token json");
    let token = token["token"].as_str().expect("token").to_owned();
    // ...and serving as the unit would run it (same user, no capability).
    let serve_log = File::create(work.path().join("serve.log")).expect("log");
    let mut serve = command("/usr/bin/vedetta-collector")
        .args(["serve", "--data-dir", COLLECTOR_DATA])
        .uid(collector_user.uid.as_raw())
        .gid(collector_user.gid.as_raw())
        .current_dir("/")
        .stdout(Stdio::piped())
        .stderr(serve_log)
        .spawn()
        .expect("serve");
    // Kept until the collector stops: it must never write to a closed pipe.
    let mut serve_output = Lines::of(serve.stdout.take().expect("stdout"));
    guard.children.push(serve);
    let ready = serve_output.wait_for("the ready event", |line| line.contains("\"ready\""));
    let ready: serde_json::Value = serde_json::from_str(&ready).expect("ready json");
    let quic = ready["quic"].as_str().expect("quic address").to_owned();
    step("collector serving");

    // The agent enrolls as its user: the key is its own, 0600, never root's.
    let out = run(as_user(AGENT, "/usr/bin/vedetta-agent").args([
        "enroll",
        "--collector",
        &quic,
        "--token",
        &token,
        "--ca-fingerprint",
        &fingerprint,
        "--config",
        AGENT_CONFIG,
    ]));
    assert!(out.contains("enrolled as agent"), "{out}");
    let key = std::fs::metadata(format!("{AGENT_STATE}/agent.key")).expect("agent.key");
    assert_eq!(key.mode() & 0o777, 0o600);
    check_owned_by(AGENT_STATE, &agent_user);
    check_owned_by(COLLECTOR_DATA, &collector_user);
    let enrollment = std::fs::read(format!("{AGENT_STATE}/enrollment.json")).expect("enrolled");
    step("agent enrolled");

    // The agent with nothing but the unit's privileges (the documented `setpriv` line):
    // it captures packets and reads a root-only folder.
    let probe = work.path().join("probe");
    let protected = work.path().join("protected");
    std::fs::create_dir(&probe).expect("probe dir");
    std::fs::create_dir(&protected).expect("protected dir");
    std::fs::write(protected.join("secret"), b"root only").expect("secret");
    std::fs::set_permissions(protected.join("secret"), PermissionsExt::from_mode(0o600))
        .expect("chmod");
    std::fs::set_permissions(&protected, PermissionsExt::from_mode(0o700)).expect("chmod");
    let probe_state = probe.join("state");
    std::fs::create_dir(&probe_state).expect("state");
    nix::unistd::chown(&probe_state, Some(agent_user.uid), Some(agent_user.gid)).expect("chown");
    let probe_config = probe.join("agent.toml");
    std::fs::write(
        &probe_config,
        format!(
            "state_dir = {:?}\n[sources.network]\ninterfaces = [\"lo\"]\n\
             [sources.files]\npaths = [{:?}]\n",
            probe_state, protected
        ),
    )
    .expect("probe config");
    std::fs::set_permissions(&probe, PermissionsExt::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&probe_config, PermissionsExt::from_mode(0o644)).expect("chmod");
    let as_service = |args: &[&str]| {
        let mut command = command("setpriv");
        command
            .args([
                "--reuid",
                AGENT,
                "--regid",
                AGENT,
                "--init-groups",
                "--inh-caps=+net_raw,+dac_read_search",
                "--ambient-caps=+net_raw,+dac_read_search",
                "--bounding-set=-all,+net_raw,+dac_read_search",
                "/usr/bin/vedetta-agent",
            ])
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };
    let mut dry_run = as_service(&["run", "--dry-run", "--config"])
        .arg(&probe_config)
        .spawn()
        .expect("dry run");
    let mut log = Lines::of(dry_run.stderr.take().expect("stderr"));
    let dry_run_pid = dry_run.id();
    guard.children.push(dry_run);
    log.wait_for("the network source started", |line| {
        line.contains("network source started")
    });
    let baseline = log.wait_for("the file baseline", |line| {
        line.contains("built the baseline")
    });
    assert!(
        baseline.contains("unreadable=0") && !baseline.contains("entries=0"),
        "CAP_DAC_READ_SEARCH reads the root-only folder: {baseline}"
    );
    let stop = |pid: u32| {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    };
    stop(dry_run_pid);
    log.wait_for("a clean stop", |line| line.contains("agent stopped"));

    // The real agent on the installed configuration, as the unit runs it: it connects.
    let mut agent = as_service(&["run", "--config", AGENT_CONFIG])
        .spawn()
        .expect("agent");
    let mut log = Lines::of(agent.stderr.take().expect("stderr"));
    let agent_pid = agent.id();
    guard.children.push(agent);
    log.wait_for("the connection", |line| {
        line.contains("connected to the collector")
    });
    wait_until("the collector to list the agent with its version", || {
        let agents: serde_json::Value =
            serde_json::from_str(&collector_cli(&["agent", "list", "--format", "json"]))
                .expect("agents json");
        agents[0]["agent_version"].is_string()
    });
    stop(agent_pid);
    log.wait_for("a clean stop", |line| line.contains("agent stopped"));
    check_owned_by(AGENT_STATE, &agent_user);
    step("agent ran with the unit's privileges");

    // Upgrade with a locally edited configuration: kept, as is the enrollment.
    let shipped = std::fs::read_to_string(AGENT_CONFIG).expect("config");
    let edited = format!(
        "{}# edited by the packaging test\n",
        shipped.replace("max_signals = 100000", "max_signals = 5000")
    );
    assert_ne!(edited, shipped);
    std::fs::write(AGENT_CONFIG, &edited).expect("edit config");
    run(command("dpkg").arg("-i").arg(&agent_deb_2));
    step("upgraded");
    assert_eq!(
        package_status(AGENT),
        format!("install ok installed {second}")
    );
    assert_eq!(
        std::fs::read_to_string(AGENT_CONFIG).expect("config"),
        edited
    );
    for leftover in [".dpkg-dist", ".dpkg-new", ".dpkg-old"] {
        assert!(!Path::new(&format!("{AGENT_CONFIG}{leftover}")).exists());
    }
    assert_eq!(
        std::fs::read(format!("{AGENT_STATE}/enrollment.json")).expect("enrollment kept"),
        enrollment
    );
    check_service_user(AGENT, AGENT_STATE);
    check_owned_by(AGENT_STATE, &agent_user);
    let out = run(as_user(AGENT, "/usr/bin/vedetta-agent").args([
        "check-config",
        "--config",
        AGENT_CONFIG,
    ]));
    assert!(out.contains("enrolled: yes"), "{out}");

    // The administrator enables the service (where systemd is not running, this only
    // makes the link): purge must remove the link too.
    run(command("systemctl").args(["enable", AGENT]));
    assert!(Path::new(&format!("{WANTS}/{AGENT}.service")).exists());

    // Remove: programs and units go; configuration, state and users stay.
    guard.stop_children();
    run(command("dpkg").args(["--remove", AGENT, COLLECTOR]));
    step("removed");
    for package in [AGENT, COLLECTOR] {
        assert!(
            package_status(package).starts_with("deinstall ok config-files"),
            "{package}: {}",
            package_status(package)
        );
        assert!(!Path::new(&format!("/usr/bin/{package}")).exists());
        assert!(!Path::new(&format!("/lib/systemd/system/{package}.service")).exists());
    }
    assert_eq!(
        std::fs::read_to_string(AGENT_CONFIG).expect("config kept"),
        edited
    );
    assert!(Path::new(&format!("{AGENT_STATE}/agent.key")).exists());
    assert!(Path::new(&format!("{COLLECTOR_DATA}/collector.toml")).exists());
    check_service_user(AGENT, AGENT_STATE);
    check_service_user(COLLECTOR, COLLECTOR_DATA);

    // Purge: nothing of ours is left.
    run(command("dpkg").args(["--purge", AGENT, COLLECTOR]));
    step("purged");
    for package in [AGENT, COLLECTOR] {
        assert_eq!(package_status(package), "", "{package} is unknown to dpkg");
        assert!(
            nix::unistd::User::from_name(package)
                .expect("passwd")
                .is_none(),
            "user {package} deleted"
        );
        assert!(
            nix::unistd::Group::from_name(package)
                .expect("group")
                .is_none(),
            "group {package} deleted"
        );
        for path in [
            format!("{WANTS}/{package}.service"),
            format!("{DSH_STATE}/{package}.service.dsh-also"),
        ] {
            assert!(
                std::fs::symlink_metadata(&path).is_err(),
                "{path} left behind"
            );
        }
    }
    for path in [AGENT_STATE, COLLECTOR_DATA, "/etc/vedetta"] {
        assert!(!Path::new(path).exists(), "{path} left behind");
    }
    for group in ["adm", "systemd-journal"] {
        if let Some(group) = nix::unistd::Group::from_name(group).expect("group") {
            assert!(!group.mem.iter().any(|member| member == AGENT));
        }
    }
    drop(guard);
    step("done");
}
