//! `journalctl --output=json` records. Fields are strings, except that a value that is
//! not valid UTF-8 is written as an array of byte values; both are accepted.

use super::LogRecord;
use serde::Deserialize;
use std::borrow::Cow;
use vedetta_common::Timestamp;

/// A journald field value: text, or bytes when the value was not valid UTF-8.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Value<'a> {
    #[serde(borrow)]
    Text(Cow<'a, str>),
    Bytes(Vec<u8>),
}

impl<'a> Value<'a> {
    fn into_text(self) -> Cow<'a, str> {
        match self {
            Self::Text(text) => text,
            Self::Bytes(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Entry<'a> {
    #[serde(rename = "__REALTIME_TIMESTAMP", borrow)]
    realtime: Option<Cow<'a, str>>,
    #[serde(rename = "__CURSOR", borrow)]
    cursor: Option<Cow<'a, str>>,
    #[serde(rename = "_HOSTNAME", borrow)]
    hostname: Option<Value<'a>>,
    #[serde(rename = "SYSLOG_IDENTIFIER", borrow)]
    identifier: Option<Value<'a>>,
    #[serde(rename = "_COMM", borrow)]
    command: Option<Value<'a>>,
    #[serde(rename = "_PID", borrow)]
    pid: Option<Cow<'a, str>>,
    #[serde(rename = "MESSAGE", borrow)]
    message: Option<Value<'a>>,
}

/// One journald record, and its cursor (kept by the live source to resume).
pub fn parse_with_cursor(line: &str) -> Option<(LogRecord<'_>, Option<Cow<'_, str>>)> {
    let entry: Entry<'_> = serde_json::from_str(line).ok()?;
    let micros: i64 = entry.realtime?.parse().ok()?;
    let program = entry
        .identifier
        .or(entry.command)
        .map(Value::into_text)
        .unwrap_or_default();
    Some((
        LogRecord {
            time: Timestamp(micros.checked_mul(1000)?),
            host: entry.hostname.map(Value::into_text).unwrap_or_default(),
            program,
            pid: entry.pid.and_then(|pid| pid.parse().ok()),
            message: entry.message?.into_text(),
        },
        entry.cursor,
    ))
}

pub fn parse(line: &str) -> Option<LogRecord<'_>> {
    parse_with_cursor(line).map(|(record, _)| record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_byte_messages() {
        let line = r#"{"__CURSOR":"s=abc;i=1","__REALTIME_TIMESTAMP":"1763600463123456","_HOSTNAME":"web1","SYSLOG_IDENTIFIER":"sshd","_PID":"4242","MESSAGE":"Failed password for root from 203.0.113.7 port 4022 ssh2"}"#;
        let (record, cursor) = parse_with_cursor(line).expect("parse");
        assert_eq!(record.time.to_rfc3339(), "2025-11-20T01:01:03.123456Z");
        assert_eq!((&*record.program, record.pid), ("sshd", Some(4242)));
        assert_eq!(cursor.as_deref(), Some("s=abc;i=1"));
        let bytes = r#"{"__REALTIME_TIMESTAMP":"1","_COMM":"sshd","MESSAGE":[104,105,255]}"#;
        let record = parse(bytes).expect("bytes");
        assert_eq!(record.message, "hi\u{fffd}");
        assert_eq!(record.program, "sshd");
        assert!(parse(r#"{"MESSAGE":"no time"}"#).is_none());
        assert!(parse("{broken").is_none());
    }
}
