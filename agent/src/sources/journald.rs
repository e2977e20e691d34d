//! The journald source: `journalctl --follow --output=json`, filtered by unit and
//! identifier, resumed from a saved cursor, restarted with backoff if it exits.
//!
//! Going through journalctl (rather than linking libsystemd) keeps the agent free of C
//! dependencies and works with any journal journalctl can read: the system's, or a
//! directory or files given in the configuration (a container's journal, a copy).

use crate::advisories::AdvisoryView;
use crate::detect::engine::EngineConfig;
use crate::detect::rules::Rule;
use crate::health::{Health, SourceState};
use crate::pipeline::{LogPipeline, read_bounded_line};
use crate::sources::logs::format::{Format, journald};
use crate::sources::sleep_unless_stopped;
use serde::{Deserialize, Serialize};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn};
use vedetta_common::files::write_atomic;
use vedetta_common::{Signal, Timestamp};

/// One `[[sources.journald]]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournaldConfig {
    /// Only entries of these systemd units (`ssh.service`); all when empty.
    #[serde(default)]
    pub units: Vec<String>,
    /// Only entries with these syslog identifiers (`sshd`, `sudo`); all when empty.
    #[serde(default)]
    pub identifiers: Vec<String>,
    /// Read this journal directory instead of the system journal.
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Read these journal files instead of the system journal.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// At the very first start (no saved cursor): `end` (only new entries) or `beginning`.
    #[serde(default = "default_start_at")]
    pub start_at: crate::config::StartAt,
    /// The journalctl program.
    #[serde(default = "default_journalctl")]
    pub journalctl: PathBuf,
}

fn default_start_at() -> crate::config::StartAt {
    crate::config::StartAt::End
}
fn default_journalctl() -> PathBuf {
    PathBuf::from("journalctl")
}

/// Longest journal entry (as JSON) read whole; longer ones are cut and counted.
const MAX_ENTRY_BYTES: usize = 256 * 1024;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The cursor is saved at least this often while entries arrive.
const CURSOR_SAVE: Duration = Duration::from_secs(1);

/// The name journald source number `index` is reported under.
pub fn source_name(index: usize) -> String {
    format!("journald:{index}")
}

/// What a journald source reads, for people: which journal, which entries.
pub fn describe(config: &JournaldConfig) -> String {
    let mut text = match (&config.directory, config.files.is_empty()) {
        (Some(directory), _) => format!("journal in {}", directory.display()),
        (None, false) => {
            let files: Vec<String> = config
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect();
            format!("journal files {}", files.join(", "))
        }
        (None, true) => "the system journal".to_owned(),
    };
    if !config.units.is_empty() {
        text.push_str(&format!(", units {}", config.units.join(", ")));
    }
    if !config.identifiers.is_empty() {
        text.push_str(&format!(", identifiers {}", config.identifiers.join(", ")));
    }
    text
}

/// The journalctl arguments for a start after `cursor` (or the first start).
pub fn arguments(config: &JournaldConfig, cursor: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = ["--follow", "--output=json", "--no-pager", "--quiet"]
        .map(String::from)
        .to_vec();
    match cursor {
        Some(cursor) => args.push(format!("--after-cursor={cursor}")),
        None if config.start_at == crate::config::StartAt::Beginning => {
            args.push("--no-tail".into())
        }
        None => args.push("--lines=0".into()),
    }
    if let Some(directory) = &config.directory {
        args.push(format!("--directory={}", directory.display()));
    }
    for file in &config.files {
        args.push(format!("--file={}", file.display()));
    }
    for unit in &config.units {
        args.push(format!("--unit={unit}"));
    }
    for identifier in &config.identifiers {
        args.push(format!("--identifier={identifier}"));
    }
    args
}

/// A journald source and its state.
#[derive(Debug)]
pub struct JournaldSource {
    config: JournaldConfig,
    cursor_path: PathBuf,
    cursor: Option<String>,
    pipeline: LogPipeline,
    name: String,
    /// The agent's advisories, looked at before each entry.
    advisories: Option<AdvisoryView>,
}

impl JournaldSource {
    pub fn open(
        index: usize,
        config: &JournaldConfig,
        state_dir: &Path,
        rules: Vec<Rule>,
        engine: EngineConfig,
    ) -> anyhow::Result<Self> {
        let cursor_path = state_dir.join(format!("journald-{index}.cursor"));
        let cursor = match std::fs::read_to_string(&cursor_path) {
            Ok(text) => Some(text.trim().to_owned()).filter(|c| !c.is_empty()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => anyhow::bail!("cannot read {}: {error}", cursor_path.display()),
        };
        Ok(Self {
            config: config.clone(),
            cursor_path,
            cursor,
            pipeline: LogPipeline::new(Format::JournaldJson, Timestamp::now(), 0, rules, engine),
            name: source_name(index),
            advisories: None,
        })
    }

    /// Matches the agent's advisories too (remote parties of the events).
    pub fn with_advisories(mut self, mut advisories: AdvisoryView) -> Self {
        let _ = advisories.changed();
        self.pipeline.set_advisories(advisories.current());
        self.advisories = Some(advisories);
        self
    }

    fn spawn(&self) -> std::io::Result<Child> {
        use std::os::unix::process::CommandExt as _;
        Command::new(&self.config.journalctl)
            .args(arguments(&self.config, self.cursor.as_deref()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that stopping it also stops whatever it started
            // (a wrapper script's journalctl would otherwise keep our pipe open).
            .process_group(0)
            .spawn()
    }

    fn save_cursor(&self, health: &Health) {
        if let Some(cursor) = &self.cursor
            && let Err(error) = write_atomic(&self.cursor_path, cursor.as_bytes(), 0o600)
        {
            health.source_error(
                &self.name,
                &format!("cannot save the journal cursor: {error}"),
            );
            warn!(source = %self.name, %error, "cannot save the journal cursor");
        }
    }
}

/// Runs the source on the calling thread until `stop` is set.
pub fn run(
    mut source: JournaldSource,
    signals: mpsc::Sender<Signal>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
) {
    let mut backoff = BACKOFF_MIN;
    while !stop.load(Ordering::Relaxed) {
        let mut child = match source.spawn() {
            Ok(child) => child,
            Err(error) => {
                let text = format!(
                    "cannot start {}: {error}",
                    source.config.journalctl.display()
                );
                health.source_error(&source.name, &text);
                health.source_state(
                    &source.name,
                    SourceState::Failed,
                    Some(&format!("{text}; trying again in {backoff:?}")),
                );
                warn!(source = %source.name, %error, "cannot start journalctl");
                sleep_unless_stopped(&stop, backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        info!(source = %source.name, resume = source.cursor.is_some(), "journald source started");
        health.source_state(&source.name, SourceState::Running, None);
        let started = Instant::now();
        // A reader thread turns journalctl's output into lines, so that this thread can
        // notice `stop` even when the journal is quiet.
        let (lines, received) = std_mpsc::sync_channel::<String>(1024);
        let stdout = child.stdout.take();
        let reader = std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            while let Ok(Some(_)) = read_bounded_line(&mut reader, &mut line, MAX_ENTRY_BYTES) {
                if lines
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    return;
                }
            }
        });
        let mut last_save = Instant::now();
        let mut dirty = false;
        loop {
            let received_line = received.recv_timeout(Duration::from_millis(250));
            if let Some(advisories) = source.advisories.as_mut().and_then(AdvisoryView::changed) {
                source.pipeline.set_advisories(advisories);
            }
            match received_line {
                Ok(line) => {
                    health.source_events(&source.name, 1);
                    if let Some((_, Some(cursor))) = journald::parse_with_cursor(&line) {
                        source.cursor = Some(cursor.into_owned());
                        dirty = true;
                    }
                    for signal in source.pipeline.line(&line) {
                        if signals.blocking_send(signal).is_err() {
                            stop_group(&mut child);
                            let _ = child.wait();
                            return;
                        }
                    }
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
            for signal in source.pipeline.tick(Timestamp::now()) {
                let _ = signals.blocking_send(signal);
            }
            if dirty && last_save.elapsed() >= CURSOR_SAVE {
                source.save_cursor(&health);
                (last_save, dirty) = (Instant::now(), false);
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        stop_group(&mut child);
        let status = child.wait();
        // The reader ends when the pipe closes, which the group's end makes sure of; a
        // process that left the group could keep it open, so the wait is bounded.
        drop(received);
        let deadline = Instant::now() + Duration::from_secs(2);
        while !reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if reader.is_finished() {
            let _ = reader.join();
        } else {
            warn!(source = %source.name, "journalctl's output is still open after it ended");
        }
        source.save_cursor(&health);
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut detail = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            use std::io::Read;
            let _ = (&mut stderr).take(4096).read_to_string(&mut detail);
        }
        let exited = match status {
            Ok(status) => format!("journalctl exited ({status})"),
            Err(error) => format!("journalctl ended: {error}"),
        };
        let exited = match detail.trim() {
            "" => exited,
            detail => format!("{exited}: {detail}"),
        };
        health.source_error(&source.name, &exited);
        warn!(source = %source.name, error = %exited, "journalctl exited; restarting");
        if started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        health.source_state(
            &source.name,
            SourceState::Failed,
            Some(&format!("{exited}; restarting in {backoff:?}")),
        );
        sleep_unless_stopped(&stop, backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    for signal in source.pipeline.flush() {
        let _ = signals.blocking_send(signal);
    }
    info!(source = %source.name, "journald source stopped");
}

/// Kills journalctl and everything in its process group.
fn stop_group(child: &mut Child) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    match i32::try_from(child.id()) {
        Ok(pid) if killpg(Pid::from_raw(pid), Signal::SIGKILL).is_ok() => {}
        _ => {
            let _ = child.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_follow_the_configuration_and_the_cursor() {
        let mut config: JournaldConfig =
            toml::from_str("units = [\"ssh.service\"]\nidentifiers = [\"sudo\"]").expect("config");
        assert_eq!(
            arguments(&config, None),
            [
                "--follow",
                "--output=json",
                "--no-pager",
                "--quiet",
                "--lines=0",
                "--unit=ssh.service",
                "--identifier=sudo"
            ]
        );
        config.files = vec![PathBuf::from("/tmp/x.journal")];
        let args = arguments(&config, Some("s=abc;i=9"));
        assert!(args.contains(&"--after-cursor=s=abc;i=9".to_owned()));
        assert!(args.contains(&"--file=/tmp/x.journal".to_owned()));
        config.start_at = crate::config::StartAt::Beginning;
        assert!(arguments(&config, None).contains(&"--no-tail".to_owned()));
    }

    #[test]
    fn the_description_names_the_journal_and_the_filters() {
        let mut config: JournaldConfig =
            toml::from_str("units = [\"ssh.service\"]\nidentifiers = [\"sudo\"]").expect("config");
        assert_eq!(
            describe(&config),
            "the system journal, units ssh.service, identifiers sudo"
        );
        config.units.clear();
        config.identifiers.clear();
        config.directory = Some(PathBuf::from("/var/log/journal/remote"));
        assert_eq!(describe(&config), "journal in /var/log/journal/remote");
        assert_eq!(source_name(2), "journald:2");
    }
}
