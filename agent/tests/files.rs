//! File integrity and ransomware, end to end: a real `vedetta-agent run --dry-run` watches
//! real trees in temporary directories, real files are changed on disk (and encrypted by
//! the real `openssl`), and the printed signals are checked field by field.

mod common;

use common::{DryRun, sha256_of};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A watched tree laid out like a host: `etc/`, `home/`, `usr/bin/`, a web root and a
/// drop directory, with the agent's configuration next to it.
struct Host {
    dir: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    /// Shared use of the kernel's inotify settings (one test changes them).
    _inotify: Box<dyn std::any::Any>,
}

/// Tests hold this shared; the one that shrinks the kernel's inotify queue holds it alone.
static INOTIFY: std::sync::RwLock<()> = std::sync::RwLock::new(());

impl Host {
    fn new(extra: &str) -> Self {
        let guard = INOTIFY.read().unwrap_or_else(|e| e.into_inner());
        Self::with_guard(extra, Box::new(guard))
    }

    fn exclusive(extra: &str) -> Self {
        let guard = INOTIFY.write().unwrap_or_else(|e| e.into_inner());
        Self::with_guard(extra, Box::new(guard))
    }

    fn with_guard(extra: &str, guard: Box<dyn std::any::Any>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        for sub in [
            "etc/sudoers.d",
            "home/alice/.ssh",
            "usr/bin",
            "var/www/html",
            "drop",
            "docs",
        ] {
            std::fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        std::fs::write(root.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").expect("shadow");
        std::fs::write(root.join("etc/sudoers.d/ops"), "%ops ALL=(ALL) ALL\n").expect("sudoers");
        std::fs::write(
            root.join("home/alice/.ssh/authorized_keys"),
            "ssh-ed25519 AAAAC3Nza alice@laptop\n",
        )
        .expect("keys");
        std::fs::write(root.join("usr/bin/tool"), b"\x7fELF fake program").expect("tool");
        std::fs::write(root.join("var/www/html/index.html"), "<h1>hello</h1>\n").expect("www");
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"state\"\n[health]\ninterval = \"1h\"\n[privacy]\nshare_file_paths = true\n\
                 [sources.files]\npaths = [\"{root}\"]\nweb_roots = [\"{root}/var/www\"]\n\
                 drop_dirs = [\"{root}/drop\"]\n{extra}",
                root = root.display()
            ),
        )
        .expect("config");
        Self {
            dir,
            root,
            config,
            _inotify: guard,
        }
    }

    /// Adds a rules file (in a rules directory of its own).
    fn add_rules(&self, text: &str) {
        let rules = self.dir.path().join("rules");
        std::fs::create_dir_all(&rules).expect("rules dir");
        std::fs::write(rules.join("local.toml"), text).expect("rules");
        let config = std::fs::read_to_string(&self.config).expect("config");
        std::fs::write(
            &self.config,
            format!("rules_dir = \"{}\"\n{config}", rules.display()),
        )
        .expect("config");
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Starts the agent and waits until its first scan is done.
    fn start(&self) -> DryRun {
        let mut agent = DryRun::start(&self.config);
        agent.wait_for_log("the watched files");
        agent
    }
}

/// Whether `signal` is of `kind` about `path`.
fn about(kind: &'static str, path: PathBuf) -> impl Fn(&Value) -> bool {
    let path = path.display().to_string();
    move |signal| signal["kind"] == kind && signal["attributes"]["path"] == path.as_str()
}

#[test]
fn each_kind_of_change_produces_the_right_signal() {
    let host = Host::new("");
    let mut agent = host.start();

    // Content of an accounts file.
    let shadow = host.path("etc/shadow");
    std::fs::write(
        &shadow,
        "root:*:19000:0:99999:7:::\nevil:$6$x:19000::::::\n",
    )
    .expect("write");
    let signal = agent.wait_for("shadow modified", about("file_changed", shadow.clone()));
    assert_eq!(signal["severity"], "high");
    assert_eq!(signal["attributes"]["change"], "modified");
    assert_eq!(signal["attributes"]["path_class"], "accounts");
    assert_eq!(signal["attributes"]["found_by"], "watch");
    assert_eq!(signal["mitre"], "T1098");
    // The content of a configuration file is not an indicator to share.
    assert_eq!(signal["indicators"], Value::Array(vec![]));

    // Permissions of SSH keys.
    let keys = host.path("home/alice/.ssh/authorized_keys");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let signal = agent.wait_for("keys chmod", about("file_changed", keys.clone()));
    assert_eq!(signal["attributes"]["change"], "permissions");
    assert_eq!(signal["attributes"]["mode"], "0666");
    assert_eq!(signal["attributes"]["mode_before"], "0644");
    assert_eq!(signal["attributes"]["path_class"], "ssh_keys");
    assert_eq!(signal["mitre"], "T1098.004");

    // Owner of a sudoers file.
    let sudoers = host.path("etc/sudoers.d/ops");
    std::os::unix::fs::chown(&sudoers, Some(4242), None).expect("chown");
    let signal = agent.wait_for("sudoers chown", about("file_changed", sudoers.clone()));
    assert_eq!(signal["attributes"]["change"], "owner");
    assert_eq!(signal["attributes"]["uid"], 4242);
    assert_eq!(signal["attributes"]["path_class"], "sudoers");

    // A new sudoers file, then its deletion.
    let added = host.path("etc/sudoers.d/backdoor");
    std::fs::write(&added, "mallory ALL=(ALL) NOPASSWD: ALL\n").expect("create");
    let signal = agent.wait_for("sudoers created", about("file_changed", added.clone()));
    assert_eq!(signal["attributes"]["change"], "created");
    assert_eq!(signal["severity"], "high");
    std::fs::remove_file(&added).expect("delete");
    agent.wait_for("sudoers deleted", move |s| {
        about("file_changed", added.clone())(s) && s["attributes"]["change"] == "deleted"
    });

    // A system binary renamed: one signal naming both paths, with the program's hash.
    let (tool, renamed) = (host.path("usr/bin/tool"), host.path("usr/bin/tool.orig"));
    let tool_hash = sha256_of(&tool);
    std::fs::rename(&tool, &renamed).expect("rename");
    let signal = agent.wait_for("binary renamed", about("file_changed", renamed.clone()));
    assert_eq!(signal["attributes"]["change"], "renamed");
    assert_eq!(
        signal["attributes"]["from_path"],
        tool.display().to_string()
    );
    assert_eq!(signal["attributes"]["path_class"], "system_binary");
    assert_eq!(signal["indicators"][0]["type"], "sha256");
    assert_eq!(signal["indicators"][0]["value"], tool_hash);

    // A PHP file dropped in the web root: a suspected web shell, critical with a marker.
    let shell = host.path("var/www/html/up.php");
    std::fs::write(&shell, "<?php eval(base64_decode($_POST['c'])); ?>\n").expect("php");
    let signal = agent.wait_for("web shell", about("webshell_suspected", shell.clone()));
    assert_eq!(signal["severity"], "critical");
    assert_eq!(signal["attributes"]["markers"], "eval(base64_decode");
    assert_eq!(signal["mitre"], "T1505.003");
    assert_eq!(signal["indicators"][0]["value"], sha256_of(&shell));
    let plain = host.path("var/www/html/info.php");
    std::fs::write(&plain, "<?php echo 'maintenance'; ?>\n").expect("php");
    let signal = agent.wait_for("plain script", about("webshell_suspected", plain));
    assert_eq!(signal["severity"], "high");

    // A web shell written elsewhere, then moved into the web root: judged on arrival.
    let staged = host.path("docs/notes.txt");
    std::fs::write(&staged, "<?php system($_GET['c']); ?>\n").expect("staged");
    agent.wait_for("staged", about("file_changed", staged.clone()));
    let moved = host.path("var/www/html/cache.php");
    std::fs::rename(&staged, &moved).expect("move in");
    let signal = agent.wait_for(
        "moved web shell",
        about("webshell_suspected", moved.clone()),
    );
    assert_eq!(signal["severity"], "critical");
    assert_eq!(
        signal["attributes"]["from_path"],
        staged.display().to_string()
    );

    // A program dropped in a world-writable directory, with its hash as the indicator.
    let dropped = host.path("drop/.x");
    std::fs::copy("/bin/true", &dropped).expect("copy");
    let signal = agent.wait_for("dropped program", about("suspicious_file", dropped.clone()));
    assert_eq!(signal["severity"], "high");
    assert_eq!(signal["mitre"], "T1105");
    assert_eq!(signal["indicators"][0]["type"], "sha256");
    assert_eq!(
        signal["indicators"][0]["value"],
        sha256_of(Path::new("/bin/true"))
    );

    // Metadata alone (a touch) is not a change worth a signal.
    let index = host.path("var/www/html/index.html");
    let now = std::time::SystemTime::now();
    std::fs::File::options()
        .write(true)
        .open(&index)
        .expect("open")
        .set_modified(now)
        .expect("touch");
    let marker = host.path("etc/sudoers.d/after-touch");
    std::fs::write(&marker, "x\n").expect("marker");
    agent.wait_for("marker", about("file_changed", marker));
    let seen = agent.stop();
    assert!(
        !seen
            .iter()
            .any(|s| s["attributes"]["path"] == index.display().to_string()),
        "a touch raised a signal: {seen:#?}"
    );
    drop(host.dir);
}

#[test]
fn the_first_run_is_silent_and_changes_made_while_stopped_are_found_at_start() {
    let host = Host::new("");
    let agent = host.start();
    let first = agent.stop();
    assert!(
        first.iter().all(|s| s["kind"] == "agent_health"),
        "the baseline build raised signals: {first:#?}"
    );

    // While the agent is stopped: a key added, a binary replaced, a file removed.
    let keys = host.path("home/alice/.ssh/authorized_keys");
    std::fs::write(
        &keys,
        "ssh-ed25519 AAAAC3Nza alice@laptop\nssh-rsa AAAAB3 mallory\n",
    )
    .expect("keys");
    let tool = host.path("usr/bin/tool");
    std::fs::write(&tool, b"\x7fELF trojaned program").expect("tool");
    let index = host.path("var/www/html/index.html");
    std::fs::remove_file(&index).expect("rm");

    let mut agent = host.start();
    let signal = agent.wait_for("keys changed", about("file_changed", keys));
    assert_eq!(signal["attributes"]["found_by"], "scan");
    assert_eq!(signal["attributes"]["change"], "modified");
    let signal = agent.wait_for("tool changed", about("file_changed", tool.clone()));
    assert_eq!(signal["indicators"][0]["value"], sha256_of(&tool));
    let signal = agent.wait_for("index deleted", about("file_changed", index));
    assert_eq!(signal["attributes"]["change"], "deleted");
    let seen = agent.stop();
    let changes = seen.iter().filter(|s| s["kind"] == "file_changed").count();
    assert_eq!(changes, 3, "{seen:#?}");
}

#[test]
fn ten_thousand_files_in_an_excluded_build_directory_raise_nothing() {
    let host = Host::new("exclude = [\"**/build/**\", \"**/build\"]\n");
    std::fs::create_dir(host.path("docs/build")).expect("build dir");
    let mut agent = host.start();
    let build = host.path("docs/build");
    for n in 0..10_000 {
        let dir = build.join(format!("m{}", n / 500));
        if n % 500 == 0 {
            std::fs::create_dir(&dir).expect("dir");
        }
        std::fs::write(dir.join(format!("obj{n}.o")), format!("object {n}\n")).expect("write");
    }
    // A change after the burst: once it is reported, the burst has been handled.
    let sentinel = host.path("etc/shadow");
    std::fs::write(&sentinel, "root:!:19000::::::\n").expect("sentinel");
    agent.wait_for("sentinel", about("file_changed", sentinel));
    let seen = agent.stop();
    let noisy: Vec<&Value> = seen
        .iter()
        .filter(|s| s["kind"] != "agent_health" && s["attributes"]["path_class"] != "accounts")
        .collect();
    assert!(noisy.is_empty(), "{noisy:#?}");
}

fn openssl_installed() -> bool {
    let found = Command::new("openssl").arg("version").output().is_ok();
    if !found {
        assert!(std::env::var("CI").is_err(), "CI must have openssl");
        eprintln!("skipped: openssl not installed");
    }
    found
}

#[test]
fn a_real_encryption_run_raises_ransomware_before_it_finishes() {
    if !openssl_installed() {
        return;
    }
    let host = Host::new("");
    let docs = host.path("docs");
    let text = "Verbale della riunione del comitato. Punti all'ordine del giorno: bilancio, \
                sicurezza informatica, rinnovo del protocollo d'intesa con la Polizia Postale.\n";
    for n in 0..1000 {
        std::fs::write(
            docs.join(format!("doc{n:04}.txt")),
            text.repeat(20 + n % 30),
        )
        .expect("doc");
    }
    let mut agent = host.start();
    // What ransomware does: each document encrypted next to itself, the original deleted.
    let mut run = Command::new("sh")
        .arg("-c")
        .arg(
            "for f in \"$1\"/*.txt; do openssl enc -aes-256-cbc -pbkdf2 -pass pass:k -in \"$f\" \
             -out \"$f.enc\" && rm \"$f\"; done",
        )
        .arg("sh")
        .arg(&docs)
        .spawn()
        .expect("encryption run");
    let signal = agent.wait_for("ransomware", |s| s["kind"] == "ransomware_activity");
    let originals_left = std::fs::read_dir(&docs)
        .expect("docs")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "txt"))
        .count();
    let finished = run.try_wait().expect("try_wait").is_some();
    assert!(
        originals_left > 0 && !finished,
        "raised only after the run: {originals_left} originals left"
    );
    assert_eq!(signal["severity"], "critical");
    assert_eq!(signal["mitre"], "T1486");
    assert!(signal["count"].as_u64() >= Some(10), "{signal:#?}");
    assert!(
        signal["attributes"]["encrypted_copies"].as_u64() >= Some(1),
        "{signal:#?}"
    );
    assert_eq!(signal["attributes"]["extension"], "enc");
    assert!(run.wait().expect("wait").success());
    // One burst, updated as it grows: not a signal per file.
    let seen = agent.stop();
    let bursts: Vec<&Value> = seen
        .iter()
        .filter(|s| s["kind"] == "ransomware_activity")
        .collect();
    assert!(bursts.len() < 50, "{} ransomware signals", bursts.len());
    assert!(
        bursts
            .iter()
            .all(|s| s["attributes"]["series"] == bursts[0]["attributes"]["series"])
    );
}

#[test]
fn ransom_notes_and_extensions_are_recognised() {
    let host = Host::new("");
    let mut agent = host.start();
    let docs = host.path("docs");
    std::fs::write(
        docs.join("HOW_TO_DECRYPT_FILES.txt"),
        "Your files are encrypted.\n",
    )
    .expect("note");
    for n in 0..12 {
        std::fs::write(docs.join(format!("budget{n}.xlsx.lockbit")), [n as u8; 64]).expect("f");
    }
    let signal = agent.wait_for("ransomware", |s| s["kind"] == "ransomware_activity");
    assert_eq!(
        signal["attributes"]["ransom_note"],
        "HOW_TO_DECRYPT_FILES.txt"
    );
    assert!(signal["attributes"]["ransom_extensions"].as_u64() >= Some(9));
    assert_eq!(signal["indicators"][0]["type"], "sha256");
    agent.stop();
}

#[test]
fn links_loops_odd_names_and_special_files_are_handled() {
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("secret"), "v1\n").expect("outside file");
    let host = Host::new("");
    let root = host.root.clone();
    // A link loop, a dangling link, a link to a directory outside the root, a FIFO, and a
    // name that is not UTF-8.
    std::os::unix::fs::symlink(root.join("loop-b"), root.join("loop-a")).expect("a");
    std::os::unix::fs::symlink(root.join("loop-a"), root.join("loop-b")).expect("b");
    std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).expect("dangling");
    std::os::unix::fs::symlink(outside.path(), root.join("outside")).expect("outside link");
    nix::unistd::mkfifo(
        &root.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("fifo");
    let mut agent = host.start();

    // Not followed: a change outside the root through a link is not ours to report.
    std::fs::write(outside.path().join("secret"), "v2\n").expect("outside change");
    // A link retargeted is a change of the link.
    let dangling = root.join("dangling");
    std::fs::remove_file(&dangling).expect("rm link");
    std::os::unix::fs::symlink("/etc/passwd", &dangling).expect("retarget");
    let signal = agent.wait_for("retargeted link", about("file_changed", dangling));
    assert!(
        ["modified", "created"].contains(&signal["attributes"]["change"].as_str().unwrap_or("")),
        "{signal:#?}"
    );
    let odd = {
        use std::os::unix::ffi::OsStrExt;
        root.join(std::ffi::OsStr::from_bytes(b"caf\xe9.conf"))
    };
    std::fs::write(&odd, "x\n").expect("odd name");
    agent.wait_for("odd name", |s| {
        s["kind"] == "file_changed"
            && s["attributes"]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("caf\u{fffd}.conf"))
    });
    let seen = agent.stop();
    assert!(
        !seen.iter().any(|s| s["attributes"]["path"]
            .as_str()
            .is_some_and(|p| p.contains("secret"))),
        "followed a link out of the root: {seen:#?}"
    );
}

#[test]
fn unreadable_files_keep_their_metadata_watched() {
    // Reading as an unprivileged user: root reads everything.
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to run the agent as another user");
        assert!(std::env::var("CI").is_err(), "CI runs as root");
        return;
    }
    let host = Host::new("");
    let locked = host.path("etc/locked.conf");
    std::fs::write(&locked, "secret=1\n").expect("locked");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    // The agent runs as nobody: the tree and its state must be reachable by it.
    for dir in [host.dir.path().to_path_buf(), host.root.clone()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let state = host.dir.path().join("state");
    std::fs::create_dir(&state).expect("state");
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).expect("chown");
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_vedetta-agent"))
        .current_dir(host.dir.path());
    let mut agent = DryRun::start_with(command, &host.config);
    let built = agent.wait_for_log("the watched files");
    assert!(built.contains("unreadable=1"), "{built}");
    // Its content cannot be read, its permissions still can.
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let signal = agent.wait_for("chmod of unreadable", about("file_changed", locked));
    assert!(
        signal["attributes"]["change"]
            .as_str()
            .is_some_and(|c| c.contains("permissions")),
        "{signal:#?}"
    );
    agent.stop();
}

#[test]
fn the_agents_own_state_inside_a_watched_tree_is_not_watched() {
    let host = Host::new("");
    let state = host.path("var/lib/vedetta");
    let config = std::fs::read_to_string(&host.config).expect("config");
    std::fs::write(
        &host.config,
        config.replace(
            "state_dir = \"state\"",
            &format!("state_dir = \"{}\"", state.display()),
        ),
    )
    .expect("config");
    let mut agent = host.start();
    for n in 0..3 {
        let changed = host.path(&format!("etc/sudoers.d/extra{n}"));
        std::fs::write(&changed, "x ALL=(ALL) ALL\n").expect("write");
        agent.wait_for("change", about("file_changed", changed));
    }
    let seen = agent.stop();
    let own: Vec<&Value> = seen
        .iter()
        .filter(|s| {
            s["attributes"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with(&state.display().to_string()))
        })
        .collect();
    assert!(own.is_empty(), "{own:#?}");
}

/// A kernel setting changed for the length of a test.
struct Sysctl {
    path: &'static str,
    saved: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Self {
        let saved = std::fs::read_to_string(path).expect("sysctl");
        std::fs::write(path, value).expect("set sysctl");
        Self { path, saved }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, self.saved.trim());
    }
}

#[test]
fn events_the_kernel_dropped_are_made_up_by_a_rescan() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to shrink the inotify queue");
        assert!(std::env::var("CI").is_err(), "CI runs as root");
        return;
    }
    let host = Host::exclusive("");
    host.add_rules("[file_limits]\nfile_changed_per_minute = 100000\n");
    let burst = host.path("docs/burst");
    std::fs::create_dir(&burst).expect("burst dir");
    // A queue of 32 events: a burst of 2,000 new files overflows it.
    let queue = Sysctl::set("/proc/sys/fs/inotify/max_queued_events", "32");
    let mut agent = host.start();
    drop(queue); // the agent's inotify instance keeps its small queue
    // Frozen while the files arrive, so that the kernel's queue surely overflows.
    agent.signal(nix::sys::signal::Signal::SIGSTOP);
    for n in 0..2000 {
        std::fs::write(burst.join(format!("new{n:04}.conf")), format!("{n}\n")).expect("write");
    }
    agent.signal(nix::sys::signal::Signal::SIGCONT);
    let prefix = burst.display().to_string();
    let created = |seen: &[Value]| -> Vec<String> {
        seen.iter()
            .filter(|s| s["kind"] == "file_changed" && s["attributes"]["change"] == "created")
            .filter_map(|s| s["attributes"]["path"].as_str())
            .filter(|p| p.starts_with(&prefix))
            .map(str::to_owned)
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while created(agent.drain()).len() < 2000 {
        assert!(
            std::time::Instant::now() < deadline,
            "not every new file was reported"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let seen = agent.stop();
    let mut paths = created(&seen);
    let total = paths.len();
    paths.sort();
    paths.dedup();
    assert_eq!((total, paths.len()), (2000, 2000), "each new file once");
    assert!(
        seen.iter().any(|s| s["attributes"]["found_by"] == "scan"),
        "no rescan after the overflow"
    );
}
