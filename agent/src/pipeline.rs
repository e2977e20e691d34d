//! The log pipeline shared by `run`, `replay` and `preview`: lines → records (format) →
//! events → signals (rules, and advisories: an event from an advised address or domain
//! is an `ioc_match`), with every line that does not parse counted, not fatal.

use crate::detect::advisories::Advisories;
use crate::detect::engine::{Engine, EngineConfig, EngineStats};
use crate::detect::events::{self, Event};
use crate::detect::ioc::{IocStats, LogIocDetector};
use crate::detect::rules::Rule;
use crate::sources::logs::format::{Format, Parser, Record};
use std::io::BufRead;
use std::sync::Arc;
use vedetta_common::{Signal, Timestamp};

/// What the pipeline saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PipelineStats {
    pub lines: u64,
    /// Lines no parser understood (garbage, binary, other programs' formats).
    pub unparsed: u64,
    /// Lines cut at the length cap.
    pub truncated: u64,
    /// Lines that were not valid UTF-8 (read lossily).
    pub invalid_utf8: u64,
    pub events: u64,
    pub engine: EngineStats,
    pub advisories: IocStats,
}

/// Parser and engine for one stream of lines.
#[derive(Debug)]
pub struct LogPipeline {
    parser: Parser,
    engine: Engine,
    ioc: LogIocDetector,
    stats: PipelineStats,
}

impl LogPipeline {
    pub fn new(
        format: Format,
        reference: Timestamp,
        utc_offset_s: i64,
        rules: Vec<Rule>,
        config: EngineConfig,
    ) -> Self {
        Self {
            parser: Parser::new(format, reference, utc_offset_s),
            ioc: LogIocDetector::new(config.id_key),
            engine: Engine::new(rules, config),
            stats: PipelineStats::default(),
        }
    }

    /// Replaces the advisories matched from now on (none at first).
    pub fn set_advisories(&mut self, advisories: Arc<Advisories>) {
        self.ioc.set_advisories(advisories);
    }

    /// Feeds one line (without its newline).
    pub fn line(&mut self, line: &str) -> Vec<Signal> {
        self.stats.lines += 1;
        // The event borrows from the record, which borrows from the line: no copies.
        match self.parser.parse(line) {
            Some(Record::Log(record)) => match events::from_log(&record) {
                Some(event) => self.event(&event),
                None => Vec::new(),
            },
            Some(Record::Access(record)) => self.event(&events::from_access(&record)),
            None => {
                self.stats.unparsed += 1;
                Vec::new()
            }
        }
    }

    fn event(&mut self, event: &Event) -> Vec<Signal> {
        self.stats.events += 1;
        let mut signals = self.engine.process(event);
        self.ioc.process(event, &mut signals);
        signals
    }

    /// The parser, to set the program or the time of plain lines.
    pub fn parser_mut(&mut self) -> &mut Parser {
        &mut self.parser
    }

    /// Counts a line that had to be cut or decoded lossily.
    pub fn note_damage(&mut self, truncated: bool, invalid_utf8: bool) {
        self.stats.truncated += u64::from(truncated);
        self.stats.invalid_utf8 += u64::from(invalid_utf8);
    }

    pub fn tick(&mut self, now: Timestamp) -> Vec<Signal> {
        let mut signals = self.engine.tick(now);
        signals.extend(self.ioc.tick(now));
        signals
    }

    pub fn flush(&mut self) -> impl Iterator<Item = Signal> + '_ {
        let matches = self.ioc.flush();
        self.engine.flush().chain(matches)
    }

    pub fn stats(&self) -> PipelineStats {
        PipelineStats {
            engine: self.engine.stats(),
            advisories: self.ioc.stats(),
            ..self.stats.clone()
        }
    }
}

/// Reads the next line into `line`, keeping at most `cap` bytes of it (the rest up to
/// the newline is skipped). Returns `None` at the end, else whether the line was cut.
/// Memory stays bounded whatever the input: no line is ever held beyond `cap`.
pub fn read_bounded_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let mut truncated = false;
    let mut any = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(any.then_some(truncated));
        }
        any = true;
        let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
            Some(end) => (&available[..end], Some(end + 1)),
            None => (available, None),
        };
        let room = cap.saturating_sub(line.len());
        if chunk.len() > room {
            truncated = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = found.unwrap_or(available.len());
        reader.consume(used);
        if found.is_some() {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(truncated));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_lines() {
        let input = b"short\r\nexactly10!\nthis one is much too long\nlast".to_vec();
        let mut reader = std::io::BufReader::with_capacity(4, &input[..]);
        let mut line = Vec::new();
        let mut read = Vec::new();
        while let Some(truncated) = read_bounded_line(&mut reader, &mut line, 10).expect("read") {
            read.push((String::from_utf8_lossy(&line).into_owned(), truncated));
        }
        assert_eq!(
            read,
            vec![
                ("short".into(), false),
                ("exactly10!".into(), false),
                ("this one i".into(), true),
                ("last".into(), false),
            ]
        );
    }
}
