//! `vedetta-agent replay`: the same pipeline as a live agent, on a file, in event time,
//! with signals printed as NDJSON. Deterministic: the same file and rules always give the
//! same output (ids included), which is how members test rules before joining.
//!
//! Classic syslog lines carry no year: it is inferred from the file's modification time
//! (the day the log was last written), or from `--year`.

use crate::detect::engine::EngineConfig;
use crate::detect::rules::Rule;
use crate::pipeline::{LogPipeline, PipelineStats, read_bounded_line};
use crate::sources::logs::format::Format;
use anyhow::Context as _;
use std::io::{BufReader, Write};
use std::path::Path;
use vedetta_common::Timestamp;

/// Lines longer than this are cut (and counted).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Options of a replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub format: Format,
    /// Anchors the year of classic syslog timestamps; the file's mtime by default.
    pub reference: Option<Timestamp>,
    pub utc_offset_s: i64,
    /// Indicators to match in the events (from the configuration's advisory files).
    pub advisories: std::sync::Arc<crate::detect::advisories::Advisories>,
}

/// Replays `path` through `rules`, writing each signal as one JSON line to `out`.
pub fn replay_file(
    path: &Path,
    rules: Vec<Rule>,
    options: &ReplayOptions,
    out: &mut impl Write,
) -> anyhow::Result<PipelineStats> {
    let stats = replay_with(
        path,
        rules,
        options,
        EngineConfig::default(),
        &mut |signal| {
            serde_json::to_writer(&mut *out, &signal)?;
            out.write_all(b"\n")?;
            Ok(())
        },
    )?;
    out.flush()?;
    Ok(stats)
}

/// Replays `path`, handing each signal to `emit`.
pub fn replay_with(
    path: &Path,
    rules: Vec<Rule>,
    options: &ReplayOptions,
    engine: EngineConfig,
    emit: &mut dyn FnMut(vedetta_common::Signal) -> anyhow::Result<()>,
) -> anyhow::Result<PipelineStats> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reference = match options.reference {
        Some(reference) => reference,
        None => {
            let modified = file.metadata()?.modified()?;
            Timestamp::from_datetime(modified.into())
        }
    };
    let mut pipeline = LogPipeline::new(
        options.format,
        reference,
        options.utc_offset_s,
        rules,
        engine,
    );
    pipeline.set_advisories(std::sync::Arc::clone(&options.advisories));
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut line = Vec::with_capacity(1024);
    let mut write = |signals: Vec<vedetta_common::Signal>| -> anyhow::Result<()> {
        signals.into_iter().try_for_each(&mut *emit)
    };
    while let Some(truncated) = read_bounded_line(&mut reader, &mut line, MAX_LINE_BYTES)
        .with_context(|| format!("reading {}", path.display()))?
    {
        let (text, invalid) = match std::str::from_utf8(&line) {
            Ok(text) => (std::borrow::Cow::Borrowed(text), false),
            Err(_) => (String::from_utf8_lossy(&line), true),
        };
        let signals = pipeline.line(&text);
        pipeline.note_damage(truncated, invalid);
        write(signals)?;
    }
    pipeline.flush().try_for_each(&mut *emit)?;
    Ok(pipeline.stats())
}

/// Figures about a pcap replay.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PcapReplayStats {
    pub file: crate::sources::network::pcap::PcapStats,
    pub decoded: u64,
    pub not_ip: u64,
    pub malformed: u64,
    pub network: crate::detect::network::NetworkStats,
}

/// Replays a capture file through the network detectors, in packet time, handing each
/// signal to `emit`.
pub fn replay_pcap(
    path: &Path,
    detector: &mut crate::detect::network::NetworkDetector,
    emit: &mut dyn FnMut(vedetta_common::Signal) -> anyhow::Result<()>,
) -> anyhow::Result<PcapReplayStats> {
    use crate::sources::network::decode::{Skip, decode};
    let mut stats = PcapReplayStats::default();
    let mut failed = None;
    let mut last_tick = i64::MIN;
    stats.file = crate::sources::network::pcap::read(path, &mut |link, bytes, at, length| {
        if failed.is_some() {
            return;
        }
        match decode(link, bytes, at, length) {
            Ok(packet) => {
                stats.decoded += 1;
                // Time passes as the packets say: series close and update as they would
                // live.
                let second = packet.at.0.div_euclid(1_000_000_000);
                if second > last_tick {
                    last_tick = second;
                    for signal in detector.tick(packet.at) {
                        if let Err(error) = emit(signal) {
                            failed = Some(error);
                            return;
                        }
                    }
                }
                for signal in detector.process(&packet) {
                    if let Err(error) = emit(signal) {
                        failed = Some(error);
                        return;
                    }
                }
            }
            Err(Skip::NotIp) => stats.not_ip += 1,
            Err(Skip::Malformed) => stats.malformed += 1,
        }
    })?;
    if let Some(error) = failed {
        return Err(error);
    }
    for signal in detector.flush() {
        emit(signal)?;
    }
    stats.network = detector.stats();
    Ok(stats)
}
