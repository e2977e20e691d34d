//! The command line. Names are a contract (DESIGN.md): scripts and users rely on them.

use crate::advisories::{AdvisoryFeed, AdvisoryFiles};
use crate::config::AgentConfig;
use crate::spool::Spool;
use crate::state::StatePaths;
use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use vedetta_common::{Signal, Timestamp};

#[derive(Debug, Parser)]
#[command(
    name = "vedetta-agent",
    version,
    about = "Vedetta agent: senses this host and forwards summarised signals to the collector"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enroll this agent with a collector: make a key here, get a certificate.
    Enroll {
        /// HOST:PORT of the collector (UDP).
        #[arg(long)]
        collector: String,
        /// The one-time token from `vedetta-collector token create`.
        #[arg(long, env = "VEDETTA_ENROLL_TOKEN", hide_env_values = true)]
        token: String,
        /// The CA fingerprint printed by `vedetta-collector init`.
        #[arg(long)]
        ca_fingerprint: String,
        #[arg(long)]
        config: PathBuf,
        /// A label for people (shown in `agent list` at the collector). None by default:
        /// host names are the member's business unless it chooses to share them.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Run the agent until SIGTERM or SIGINT.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// All sources live, signals printed as NDJSON, nothing sent (no enrollment needed).
        #[arg(long)]
        dry_run: bool,
    },
    /// Scan the watched files (`[sources.files]`) once, in the foreground: the first time
    /// it builds the baseline (like `aide --init`), later it prints what changed since as
    /// NDJSON and records it. Prints the scan's figures as JSON on stderr.
    Scan {
        #[arg(long)]
        config: PathBuf,
    },
    /// Check the configuration file and report what is wrong, with line numbers.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Show enrollment, connection, spool, sources and advisories.
    ///
    /// Reads the state directory: it works whether or not the agent runs. A running agent
    /// writes its sources' state to `sources.json` there when it changes (at most every
    /// 2 seconds); without a running agent, the configured sources are listed as not
    /// running, with what was last known of them.
    ///
    /// `--format json` prints one object; these field names are stable:
    ///
    ///   running              true while an agent holds the state directory's lock
    ///   enrollment           null, or {collector, org, agent_id, ca_fingerprint, enrolled_at}
    ///   uplink               null (never connected), or {state: "connected" |
    ///                        "disconnected" | "stopped", since, collector, last_error}
    ///   spool                null (no spool yet), or {depth, in_batches, drops_total,
    ///                        drops_by_severity: [[severity, count]], acked_total,
    ///                        last_ack_at, invalid_total, dead_letters}
    ///   spool_capacity       the configured spool.max_signals
    ///   sources              one object per source (below): those the running agent
    ///                        reported, else those of the configuration
    ///   sources_reported_at  when the agent last wrote sources.json (null: never)
    ///   other_errors         {name: count}: errors outside the sources ("spool")
    ///   advisories           {in_force, expired, unusable, last_seq, files} (below)
    ///
    /// A source:
    ///
    ///   name            as in heartbeats: "logs:PATHS", "journald:N", "files",
    ///                   "network", "host"
    ///   kind            "logs" | "journald" | "files" | "network" | "host"
    ///   watches         what it watches, for people
    ///   state           "starting" | "running" | "waiting" (no file matches yet) |
    ///                   "failed" | "stopped", as the running agent reports it;
    ///                   "not_running" (no agent runs) or "unknown" (the agent has not
    ///                   reported this source yet)
    ///   reason          why it is waiting or failed, or which part of a running source
    ///                   is not (null: none)
    ///   since           when it entered its reported state
    ///   reported_state  the state in the agent's last report (null: never reported);
    ///                   differs from `state` only when no agent runs
    ///   reported_at     when that report was written
    ///   events          what it read since the agent started: lines (logs), entries
    ///                   (journald), paths looked at (files), packets (network), looks
    ///                   at the processes (host)
    ///   last_event_at   when it last read one (null: never)
    ///   errors          errors met since the agent started
    ///   last_error      the last one's text; last_error_at, its time
    ///
    /// Advisories (entries, one indicator each, in the collector's advisories.ndjson
    /// and the `[advisories] files`; withdrawn advisories are deleted when the
    /// withdrawal arrives, so they are no longer held):
    ///
    ///   in_force        matched now, all files together
    ///   expired         held but past their expiry: no longer matched
    ///   unusable        lines that cannot be used (skipped)
    ///   last_seq        the highest sequence number of the collector's feed applied
    ///                   (0: none received yet)
    ///   files           [{path, origin: "collector" | "local", found, in_force,
    ///                   expired, unusable, error}]
    ///
    /// Times are RFC 3339, in UTC.
    #[command(verbatim_doc_comment)]
    Status {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Run the detection pipeline on a log file, in event time, and print the signals as
    /// NDJSON (no enrollment, nothing sent). Without --config, the built-in rules.
    Replay {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The log file to replay.
        #[arg(long, required_unless_present = "pcap", conflicts_with = "pcap")]
        log: Option<PathBuf>,
        /// A packet capture (pcap or pcapng) to replay through the network detectors.
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// Format of the file: syslog, nginx (also apache), journald-json.
        #[arg(long, default_value = "syslog")]
        format: crate::sources::logs::format::Format,
        /// Year of classic syslog timestamps that have none (default: inferred from the
        /// file's modification time).
        #[arg(long)]
        year: Option<i32>,
        /// UTC offset of timestamps that carry none (classic syslog), e.g. +01:00.
        #[arg(long, default_value = "Z", allow_hyphen_values = true)]
        utc_offset: String,
    },
    /// Show exactly what would leave this host: the configured log sources' current
    /// contents through the rules and the privacy filter, as NDJSON, and what is withheld.
    Preview {
        #[arg(long)]
        config: PathBuf,
    },
    /// Queue signals given as NDJSON on standard input (for a member's own integrations).
    Emit {
        #[arg(long)]
        config: PathBuf,
    },
}

fn load(config: &Path) -> anyhow::Result<AgentConfig> {
    Ok(AgentConfig::load(config)?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Two worker threads are plenty for an agent and keep its footprint small.
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()?)
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Enroll {
            collector,
            token,
            ca_fingerprint,
            config,
            label,
        } => {
            let config = load(&config)?;
            let paths = StatePaths::new(&config.state_dir);
            let enrollment = runtime()?.block_on(crate::enroll::enroll(
                &paths,
                &collector,
                &token,
                &ca_fingerprint,
                &label,
            ))?;
            println!(
                "enrolled as agent {} of org {} with collector {}",
                enrollment.agent_id, enrollment.org, enrollment.collector
            );
            Ok(())
        }
        Command::Run { config, dry_run } => {
            let config = load(&config)?;
            runtime()?.block_on(async {
                // Caught before anything starts: SIGTERM while the sources open is a clean
                // stop too.
                let termination = vedetta_common::shutdown::Termination::listen()
                    .map_err(|error| anyhow::anyhow!("cannot listen for signals: {error}"))?;
                crate::run::run(config, dry_run, termination.wait()).await
            })
        }
        Command::Scan { config } => scan_files(&load(&config)?),
        Command::CheckConfig { config: path } => {
            let config = load(&path)?;
            let rules =
                crate::detect::rules::load(config.rules_dir.as_deref()).map_err(rule_errors)?;
            let file_rules =
                crate::detect::files::load(config.rules_dir.as_deref()).map_err(rule_errors)?;
            if let Some(files) = &config.sources.files {
                for pattern in &files.exclude {
                    glob::Pattern::new(pattern).map_err(|e| {
                        anyhow::anyhow!("sources.files.exclude: invalid pattern {pattern:?}: {e}")
                    })?;
                }
            }
            let advisory_files = AdvisoryFiles::of_config(&config)
                .check(Timestamp::now())
                .map_err(|problems| {
                    anyhow::anyhow!("invalid advisories:\n{}", problems.join("\n"))
                })?;
            println!("{}: configuration OK", path.display());
            println!("  rules: {} in force", rules.len());
            println!("  file path classes: {}", file_rules.classes.len());
            for file in &advisory_files {
                println!("  advisories: {file}");
            }
            println!("  state directory: {}", config.state_dir.display());
            let enrolled = StatePaths::new(&config.state_dir).enrollment.exists();
            println!(
                "  enrolled: {}",
                if enrolled {
                    "yes"
                } else {
                    "no (run `vedetta-agent enroll`)"
                }
            );
            Ok(())
        }
        Command::Status { config, format } => status(&load(&config)?, format),
        Command::Emit { config } => emit(&load(&config)?),
        Command::Preview { config } => preview(&load(&config)?),
        Command::Replay {
            config,
            pcap: Some(pcap),
            ..
        } => {
            let config = config.map(|path| load(&path)).transpose()?;
            let network = config
                .as_ref()
                .and_then(|c| c.sources.network.clone())
                .unwrap_or_default();
            let mut detector = crate::detect::network::NetworkDetector::new(
                network.thresholds.clone(),
                advisories_of(config.as_ref())?,
            );
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let stats = crate::replay::replay_pcap(&pcap, &mut detector, &mut |signal| {
                serde_json::to_writer(&mut out, &signal)?;
                out.write_all(b"\n")?;
                Ok(())
            })?;
            out.flush()?;
            eprintln!("{}", serde_json::to_string(&stats)?);
            Ok(())
        }
        Command::Replay {
            config,
            log: Some(log),
            format,
            year,
            utc_offset,
            ..
        } => {
            let config = config.map(|path| load(&path)).transpose()?;
            let rules =
                crate::detect::rules::load(config.as_ref().and_then(|c| c.rules_dir.as_deref()))
                    .map_err(rule_errors)?;
            let options = crate::replay::ReplayOptions {
                format,
                reference: year.map(|year| {
                    // The last instant of that year: every month belongs to it.
                    let days = crate::sources::logs::format::time::days_from_civil(
                        i64::from(year),
                        12,
                        31,
                    );
                    Timestamp(days * 86_400 * 1_000_000_000)
                }),
                utc_offset_s: crate::sources::logs::format::time::parse_offset(&utc_offset)
                    .map_err(anyhow::Error::msg)?,
                advisories: std::sync::Arc::new(advisories_of(config.as_ref())?),
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let stats = crate::replay::replay_file(&log, rules, &options, &mut out)?;
            eprintln!(
                "replayed {} lines: {} events, {} signals; {} lines not understood, {} cut at {} bytes, {} not UTF-8",
                stats.lines,
                stats.events,
                stats.engine.signals,
                stats.unparsed,
                stats.truncated,
                crate::replay::MAX_LINE_BYTES,
                stats.invalid_utf8
            );
            Ok(())
        }
        Command::Replay { .. } => {
            anyhow::bail!("replay needs --log FILE or --pcap FILE")
        }
    }
}

/// The advisories a configuration names (pushed and local), in force now; none
/// without a configuration.
fn advisories_of(
    config: Option<&AgentConfig>,
) -> anyhow::Result<crate::detect::advisories::Advisories> {
    match config {
        Some(config) => Ok(AdvisoryFiles::of_config(config).load(Timestamp::now())?),
        None => Ok(Default::default()),
    }
}

/// All rule mistakes, one per line, as one error.
fn rule_errors(errors: Vec<crate::detect::rules::RuleError>) -> anyhow::Error {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    anyhow::anyhow!("invalid rules:\n{}", lines.join("\n"))
}

/// `status`: see [`crate::status`] and the command's documentation above.
fn status(config: &AgentConfig, format: Format) -> anyhow::Result<()> {
    let now = Timestamp::now();
    let status = crate::status::gather(config, now)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string(&status)?),
        Format::Text => print!("{}", crate::status::render(&status, now)),
    }
    Ok(())
}

/// `scan`: one file-integrity scan in the foreground.
fn scan_files(config: &AgentConfig) -> anyhow::Result<()> {
    let files = config
        .sources
        .files
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no [sources.files] in the configuration"))?;
    let paths = StatePaths::new(&config.state_dir);
    vedetta_common::files::create_private_dir(&paths.dir)?;
    let rules = crate::detect::files::load(config.rules_dir.as_deref()).map_err(rule_errors)?;
    let advisories = AdvisoryFeed::open(AdvisoryFiles::of_config(config))?;
    let mut source = crate::sources::files::FileSource::open(files, &paths.dir, rules)?
        .with_advisories(advisories.view());
    let started = std::time::Instant::now();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut failed = None;
    let (action, stats) = if source.has_baseline()? {
        let mut print = |signal: Signal| {
            if failed.is_none() {
                failed = serde_json::to_writer(&mut out, &signal)
                    .map_err(std::io::Error::from)
                    .and_then(|()| out.write_all(b"\n"))
                    .err();
            }
        };
        let stats = source.scan_all(&mut print)?;
        // Summaries and bursts are complete at the end of a one-off scan.
        for signal in source.tick(Timestamp(i64::MAX / 2)) {
            print(signal);
        }
        ("scanned", stats)
    } else {
        ("built", source.build()?)
    };
    if let Some(error) = failed {
        return Err(error.into());
    }
    out.flush()?;
    eprintln!(
        "{}",
        serde_json::json!({
            "baseline": action,
            "entries": stats.entries,
            "hashed_bytes": stats.hashed_bytes,
            "unreadable": stats.unreadable,
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

/// `preview`: the sources' current contents, from their beginning, through the pipeline
/// and the privacy filter. Nothing is sent and no read position moves.
fn preview(config: &AgentConfig) -> anyhow::Result<()> {
    use crate::privacy::PrivacyFilter;
    let paths = StatePaths::new(&config.state_dir);
    vedetta_common::files::create_private_dir(&paths.dir)?;
    let privacy = PrivacyFilter::open(
        &paths.dir.join("privacy.key"),
        config.privacy.clone(),
        crate::run::host_name(),
    )?;
    let rules = crate::detect::rules::load(config.rules_dir.as_deref()).map_err(rule_errors)?;
    let engine = crate::detect::engine::EngineConfig {
        update_every: config.detection.update_every,
        max_keys: config.detection.max_keys,
        id_key: privacy.derived_secret("signal-ids"),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut shared, mut withheld) = (0u64, std::collections::BTreeMap::<String, u64>::new());
    if config.sources.logs.is_empty() {
        eprintln!("no log sources configured ([[sources.logs]]): only health reports would leave");
    }
    let advisories = std::sync::Arc::new(advisories_of(Some(config))?);
    for source in &config.sources.logs {
        let options = crate::replay::ReplayOptions {
            format: source.format,
            reference: None,
            utc_offset_s: crate::sources::logs::format::time::parse_offset(&source.utc_offset)
                .map_err(anyhow::Error::msg)?,
            advisories: std::sync::Arc::clone(&advisories),
        };
        for pattern in &source.paths {
            let files: Vec<PathBuf> = glob::glob(pattern)
                .map_err(|e| anyhow::anyhow!("invalid pattern {pattern:?}: {e}"))?
                .filter_map(Result::ok)
                .filter(|path| path.is_file())
                .collect();
            for file in files {
                let stats = crate::replay::replay_with(
                    &file,
                    rules.clone(),
                    &options,
                    engine.clone(),
                    &mut |signal| {
                        match privacy.apply(signal.clone()) {
                            Some(visible) => {
                                shared += 1;
                                serde_json::to_writer(&mut out, &visible)?;
                                use std::io::Write;
                                out.write_all(b"\n")?;
                            }
                            None => *withheld.entry(signal.kind).or_default() += 1,
                        }
                        Ok(())
                    },
                )?;
                eprintln!(
                    "{}: {} lines, {} not understood",
                    file.display(),
                    stats.lines,
                    stats.unparsed
                );
            }
        }
    }
    use std::io::Write;
    out.flush()?;
    eprintln!("{shared} signals would leave this host (shown above, as sent)");
    for (kind, count) in &withheld {
        eprintln!("{count} {kind} signals stay on this host (privacy.deny_kinds / allow_kinds)");
    }
    Ok(())
}

fn emit(config: &AgentConfig) -> anyhow::Result<()> {
    let paths = StatePaths::new(&config.state_dir);
    vedetta_common::files::create_private_dir(&paths.dir)?;
    let mut spool = Spool::open(&paths.spool, config.spool.max_signals)
        .with_context(|| format!("opening {}", paths.spool.display()))?;
    let mut pending = Vec::new();
    let (mut queued, mut invalid) = (0u64, 0u64);
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Signal>(&line)
            .map_err(|error| error.to_string())
            .and_then(|signal| {
                signal
                    .validate()
                    .map(|()| signal)
                    .map_err(|error| error.to_string())
            }) {
            Ok(signal) => pending.push(signal),
            Err(error) => {
                invalid += 1;
                eprintln!("line {}: {error}", number + 1);
            }
        }
        if pending.len() >= 500 {
            queued += pending.len() as u64;
            spool.push(&std::mem::take(&mut pending))?;
        }
    }
    queued += pending.len() as u64;
    spool.push(&pending)?;
    eprintln!(
        "queued {queued} signals{}",
        if invalid > 0 {
            format!(", skipped {invalid} invalid lines")
        } else {
            String::new()
        }
    );
    if invalid > 0 {
        anyhow::bail!("{invalid} lines were not valid signals");
    }
    Ok(())
}
