//! Log line formats. Each parser takes one line and returns a record borrowing from it,
//! or `None` for a line it does not understand (counted by the caller, never fatal).
//!
//! * [`syslog`]: classic BSD syslog (`Nov 20 00:01:03 host sshd[123]: ...`), rsyslog's
//!   high-precision ISO 8601 timestamps (the default on current Debian/Ubuntu), and
//!   RFC 5424 — told apart line by line, so a file may mix them;
//! * [`access`]: Apache/nginx combined (and common) access logs;
//! * [`journald`]: `journalctl --output=json` records;
//! * plain: bare messages without a header, as `sshd -E FILE` writes them; their time
//!   is when they were read, their program comes from the configuration.

pub mod access;
pub mod journald;
pub mod syslog;
pub mod time;

use std::borrow::Cow;
use vedetta_common::Timestamp;

/// A system log record: who said what, when.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord<'a> {
    pub time: Timestamp,
    pub host: Cow<'a, str>,
    /// The program (syslog tag), e.g. `sshd`, `sudo`, `sshd(pam_unix)`.
    pub program: Cow<'a, str>,
    pub pid: Option<u32>,
    pub message: Cow<'a, str>,
}

/// A web server access log record.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessRecord<'a> {
    pub time: Timestamp,
    pub client: &'a str,
    pub method: &'a str,
    pub target: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub referer: &'a str,
    pub user_agent: &'a str,
}

/// What a line turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Record<'a> {
    Log(LogRecord<'a>),
    Access(AccessRecord<'a>),
}

/// The format of a log source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Classic, ISO 8601 (rsyslog) or RFC 5424 syslog, detected per line.
    Syslog,
    /// Apache/nginx combined or common access log.
    #[serde(alias = "apache", alias = "access")]
    Nginx,
    /// `journalctl --output=json`.
    JournaldJson,
    /// Bare messages (`sshd -E FILE`): time of reading, program from the configuration.
    Plain,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "syslog" => Ok(Self::Syslog),
            "nginx" | "apache" | "access" => Ok(Self::Nginx),
            "journald-json" | "journald" => Ok(Self::JournaldJson),
            other => Err(format!(
                "unknown log format {other:?}: use syslog, nginx or journald-json"
            )),
        }
    }
}

/// Parses lines of one source, carrying what the format needs between lines (the year
/// of classic syslog timestamps).
#[derive(Debug, Clone)]
pub struct Parser {
    format: Format,
    utc_offset_s: i64,
    years: time::YearGuess,
    /// The program of plain lines.
    program: String,
    /// The time of plain lines (set by the caller as lines are read).
    now: Timestamp,
}

impl Parser {
    /// `reference` anchors classic syslog years (now, or a replayed file's mtime);
    /// `utc_offset_s` is the offset of timestamps that carry none (classic syslog).
    pub fn new(format: Format, reference: Timestamp, utc_offset_s: i64) -> Self {
        Self {
            format,
            utc_offset_s,
            years: time::YearGuess::new(reference),
            program: "sshd".into(),
            now: reference,
        }
    }

    /// The program plain lines come from (`sshd` by default).
    pub fn with_program(mut self, program: &str) -> Self {
        program.clone_into(&mut self.program);
        self
    }

    /// The time given to plain lines from now on.
    pub fn set_now(&mut self, now: Timestamp) {
        self.now = now;
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn parse<'a>(&mut self, line: &'a str) -> Option<Record<'a>> {
        match self.format {
            Format::Syslog => {
                syslog::parse(line, self.utc_offset_s, &mut self.years).map(Record::Log)
            }
            Format::Nginx => access::parse(line).map(Record::Access),
            Format::JournaldJson => journald::parse(line).map(Record::Log),
            Format::Plain => (!line.is_empty()).then(|| {
                Record::Log(LogRecord {
                    time: self.now,
                    host: Cow::Borrowed(""),
                    program: Cow::Owned(self.program.clone()),
                    pid: None,
                    message: Cow::Borrowed(line),
                })
            }),
        }
    }
}
