//! Live log sources: each `[[sources.logs]]` group of files runs on a thread of its own,
//! polling its [`Tailer`] and feeding its own pipeline (format + rules), so that a slow
//! disk or a flood in one log never delays another.
//!
//! Read positions are committed after the lines of a poll were handled (their signals
//! are in the channel to the sink), so a restart neither skips nor re-reads a line.

use super::tail::{TailCondition, TailConfig, Tailer};
use crate::advisories::AdvisoryView;
use crate::config::{LogSourceConfig, StartAt};
use crate::detect::engine::EngineConfig;
use crate::detect::rules::Rule;
use crate::health::{Health, SourceState};
use crate::pipeline::LogPipeline;
use crate::sources::logs::format::{Format, time::parse_offset};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, warn};
use vedetta_common::{Signal, Timestamp};

/// How often files are looked at when nothing new arrived.
const POLL: Duration = Duration::from_millis(250);
/// Lines handled per poll at most (then the read positions are committed).
const LINES_PER_POLL: usize = 10_000;

/// The name a group of log files is reported under.
pub fn source_name(config: &LogSourceConfig) -> String {
    format!("logs:{}", config.paths.join(","))
}

/// A log source's state from what its tailer follows: running while a file is open
/// and readable, waiting while no file matches, failed while every file found is
/// unreadable; and the reason (also for the part of a running source that is not).
pub fn state_of(condition: &TailCondition) -> (SourceState, Option<String>) {
    let failing = condition.failing.first().map(|(path, error)| {
        let more = condition.failing.len() - 1;
        if more > 0 {
            format!("cannot read {path}: {error} (and {more} more)")
        } else {
            format!("cannot read {path}: {error}")
        }
    });
    let unmatched = (!condition.unmatched.is_empty())
        .then(|| format!("no file matches {} yet", condition.unmatched.join(", ")));
    if condition.following > 0 {
        (SourceState::Running, failing.or(unmatched))
    } else if let Some(failing) = failing {
        (SourceState::Failed, Some(failing))
    } else {
        (
            SourceState::Waiting,
            Some(unmatched.unwrap_or_else(|| "no regular file matches yet".into())),
        )
    }
}

/// A running log source.
#[derive(Debug)]
pub struct LogSource {
    name: String,
    tailer: Tailer,
    pipeline: LogPipeline,
    plain: bool,
    errors_seen: u64,
    /// What the tailer followed at the last poll (reported when it changes).
    condition: Option<TailCondition>,
    /// The agent's advisories, looked at before each poll's lines.
    advisories: Option<AdvisoryView>,
}

impl LogSource {
    /// Opens source number `index`, keeping its read positions in `state_dir`.
    pub fn open(
        index: usize,
        config: &LogSourceConfig,
        state_dir: &Path,
        rules: Vec<Rule>,
        engine: EngineConfig,
    ) -> anyhow::Result<Self> {
        let tail = TailConfig {
            paths: config.paths.clone(),
            start_at_end: config.start_at == StartAt::End,
            max_line_bytes: config.max_line_bytes,
            ..TailConfig::default()
        };
        let tailer = Tailer::new(tail, state_dir.join(format!("positions-{index}.json")))?;
        let offset = parse_offset(&config.utc_offset).map_err(anyhow::Error::msg)?;
        let mut pipeline = LogPipeline::new(config.format, Timestamp::now(), offset, rules, engine);
        let plain = config.format == Format::Plain;
        *pipeline.parser_mut() = pipeline.parser_mut().clone().with_program(&config.program);
        Ok(Self {
            name: source_name(config),
            tailer,
            pipeline,
            plain,
            errors_seen: 0,
            condition: None,
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

    /// Reads what is new and returns its signals; `true` if the poll was full (more
    /// may be waiting).
    pub fn poll(&mut self, health: &Health) -> anyhow::Result<(Vec<Signal>, bool)> {
        // Before the lines are read: a line written after an advisory arrived is
        // matched against it.
        if let Some(advisories) = self.advisories.as_mut().and_then(AdvisoryView::changed) {
            self.pipeline.set_advisories(advisories);
        }
        let lines = self.tailer.poll(LINES_PER_POLL);
        let full = lines.len() == LINES_PER_POLL;
        let now = Timestamp::now();
        if self.plain {
            self.pipeline.parser_mut().set_now(now);
        }
        let mut signals = Vec::new();
        for line in &lines {
            signals.extend(self.pipeline.line(&line.text));
            self.pipeline.note_damage(line.truncated, false);
        }
        signals.extend(self.pipeline.tick(now));
        health.source_events(&self.name, lines.len() as u64);
        let condition = self.tailer.condition();
        let errors = self.tailer.stats().errors;
        if errors > self.errors_seen {
            let text = condition.failing.first().map_or_else(
                || "cannot follow a log file".to_owned(),
                |(path, error)| format!("{path}: {error}"),
            );
            for _ in self.errors_seen..errors {
                health.source_error(&self.name, &text);
            }
        }
        self.errors_seen = errors;
        if self.condition.as_ref() != Some(&condition) {
            let (state, reason) = state_of(&condition);
            health.source_state(&self.name, state, reason.as_deref());
            self.condition = Some(condition);
        }
        Ok((signals, full))
    }

    /// Records that everything returned so far was handled.
    pub fn commit(&mut self) -> anyhow::Result<()> {
        Ok(self.tailer.commit()?)
    }

    /// The final state of every open series (at shutdown).
    pub fn flush(&mut self) -> impl Iterator<Item = Signal> + '_ {
        self.pipeline.flush()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Runs `source` on the calling thread until `stop` is set.
pub fn run(
    mut source: LogSource,
    signals: mpsc::Sender<Signal>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
) {
    info!(source = %source.name(), "log source started");
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        match source.poll(&health) {
            Ok((found, full)) => {
                for signal in found {
                    if signals.blocking_send(signal).is_err() {
                        return;
                    }
                }
                if let Err(error) = source.commit() {
                    health.source_error(source.name(), &error);
                    warn!(source = %source.name(), %error, "cannot save read positions");
                }
                if stopping {
                    for signal in source.flush() {
                        let _ = signals.blocking_send(signal);
                    }
                    info!(source = %source.name(), "log source stopped");
                    return;
                }
                if !full {
                    std::thread::sleep(POLL);
                }
            }
            Err(error) => {
                health.source_error(source.name(), &error);
                warn!(source = %source.name(), %error, "log source error");
                std::thread::sleep(POLL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(following: usize, unmatched: &[&str], failing: &[(&str, &str)]) -> TailCondition {
        TailCondition {
            following,
            unmatched: unmatched.iter().map(|p| (*p).to_owned()).collect(),
            failing: failing
                .iter()
                .map(|(p, e)| ((*p).to_owned(), (*e).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn the_state_follows_what_the_tailer_can_read() {
        assert_eq!(
            state_of(&condition(0, &["/var/log/app.log"], &[])),
            (
                SourceState::Waiting,
                Some("no file matches /var/log/app.log yet".into())
            )
        );
        assert_eq!(
            state_of(&condition(0, &[], &[])),
            (
                SourceState::Waiting,
                Some("no regular file matches yet".into())
            )
        );
        assert_eq!(
            state_of(&condition(2, &[], &[])),
            (SourceState::Running, None)
        );
        assert_eq!(
            state_of(&condition(1, &["/var/log/b*.log"], &[])),
            (
                SourceState::Running,
                Some("no file matches /var/log/b*.log yet".into())
            )
        );
        let denied = [
            ("/var/log/a.log", "Permission denied (os error 13)"),
            ("/var/log/b.log", "Permission denied (os error 13)"),
        ];
        assert_eq!(
            state_of(&condition(0, &[], &denied)),
            (
                SourceState::Failed,
                Some(
                    "cannot read /var/log/a.log: Permission denied (os error 13) (and 1 more)"
                        .into()
                )
            )
        );
        assert_eq!(
            state_of(&condition(1, &["/x"], &denied[..1])).0,
            SourceState::Running,
            "one readable file is enough to run"
        );
    }
}
