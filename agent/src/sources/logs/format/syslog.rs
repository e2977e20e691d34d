//! Syslog lines in their three common shapes, detected per line:
//!
//! * classic: `Nov 20 00:01:03 host sshd[123]: message`
//! * rsyslog high precision: `2026-11-20T00:01:03.123456+01:00 host sshd[123]: message`
//! * RFC 5424: `<38>1 2026-11-20T00:01:03.123Z host sshd 123 - - message`

use super::LogRecord;
use super::time::{YearGuess, parse_classic, parse_iso};
use std::borrow::Cow;

/// Splits `tag[pid]: message` (or `tag: message`).
fn split_tag(rest: &str) -> Option<(&str, Option<u32>, &str)> {
    let colon = rest.find(": ")?;
    let (tag, message) = (&rest[..colon], &rest[colon + 2..]);
    if tag.is_empty() || tag.contains(' ') {
        // `host message without a tag`: keep the whole text as the message.
        return None;
    }
    match tag.strip_suffix(']').and_then(|t| t.rsplit_once('[')) {
        Some((program, pid)) => Some((program, pid.parse().ok(), message)),
        None => Some((tag, None, message)),
    }
}

/// `host tag[pid]: message` after a timestamp.
fn host_and_tag(rest: &str) -> Option<(&str, &str, Option<u32>, &str)> {
    let (host, rest) = rest.split_once(' ')?;
    match split_tag(rest) {
        Some((program, pid, message)) => Some((host, program, pid, message)),
        None => Some((host, "", None, rest)),
    }
}

fn rfc5424(line: &str) -> Option<LogRecord<'_>> {
    // <PRI>VERSION TIMESTAMP HOST APP PROCID MSGID [SD] MSG
    let close = line.find('>')?;
    if close > 4 || !line[1..close].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = line[close + 1..].strip_prefix("1 ")?;
    let (time, used) = parse_iso(rest.as_bytes())?;
    let mut fields = rest[used..].trim_start().splitn(5, ' ');
    let host = fields.next()?;
    let app = fields.next()?;
    let procid = fields.next()?;
    let _msgid = fields.next()?;
    let rest = fields.next().unwrap_or("");
    // Structured data: `-` or one or more `[...]` elements (quoted values may hold `]`).
    let message = if let Some(after) = rest.strip_prefix('-') {
        after.trim_start()
    } else if rest.starts_with('[') {
        let bytes = rest.as_bytes();
        let (mut depth, mut quoted, mut escaped, mut end) = (0i32, false, false, rest.len());
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b'[' if !quoted => depth += 1,
                b']' if !quoted => {
                    depth -= 1;
                    if depth == 0 && bytes.get(i + 1) != Some(&b'[') {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest[end..].trim_start()
    } else {
        rest
    };
    let message = message.strip_prefix('\u{feff}').unwrap_or(message);
    fn nil(value: &str) -> &str {
        if value == "-" { "" } else { value }
    }
    Some(LogRecord {
        time,
        host: Cow::Borrowed(nil(host)),
        program: Cow::Borrowed(nil(app)),
        pid: procid.parse().ok(),
        message: Cow::Borrowed(message),
    })
}

/// Parses one syslog line of any of the three shapes.
pub fn parse<'a>(line: &'a str, utc_offset_s: i64, years: &mut YearGuess) -> Option<LogRecord<'a>> {
    let bytes = line.as_bytes();
    let (time, used) = match bytes.first()? {
        b'<' => return rfc5424(line),
        b'0'..=b'9' => parse_iso(bytes)?,
        _ => parse_classic(bytes, utc_offset_s, years)?,
    };
    let rest = line.get(used..)?.strip_prefix(' ')?;
    let (host, program, pid, message) = host_and_tag(rest)?;
    Some(LogRecord {
        time,
        host: Cow::Borrowed(host),
        program: Cow::Borrowed(program),
        pid,
        message: Cow::Borrowed(message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vedetta_common::Timestamp;

    fn years() -> YearGuess {
        YearGuess::new(Timestamp::parse_rfc3339("2026-11-22T00:00:00Z").expect("reference"))
    }

    #[test]
    fn classic_line() {
        let record = parse(
            "Nov 20 00:01:03 web1 sshd[123]: Failed password for root",
            0,
            &mut years(),
        )
        .expect("parse");
        assert_eq!(record.time.to_rfc3339(), "2026-11-20T00:01:03Z");
        assert_eq!(
            (&*record.host, &*record.program, record.pid),
            ("web1", "sshd", Some(123))
        );
        assert_eq!(record.message, "Failed password for root");
    }

    #[test]
    fn old_pam_tag_and_no_pid() {
        let line = "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; rhost=218.188.2.4";
        let record = parse(line, 0, &mut years()).expect("parse");
        assert_eq!(&*record.program, "sshd(pam_unix)");
        assert_eq!(record.pid, Some(19939));
        let record =
            parse("Jun 14 15:16:01 combo kernel: eth0 up", 0, &mut years()).expect("parse");
        assert_eq!((&*record.program, record.pid), ("kernel", None));
        let record = parse("Jun 14 15:16:01 combo -- MARK --", 0, &mut years()).expect("parse");
        assert_eq!((&*record.program, &*record.message), ("", "-- MARK --"));
    }

    #[test]
    fn rsyslog_high_precision() {
        let line = "2026-11-20T00:01:03.123456+01:00 web1 sshd[4242]: Accepted publickey for alice";
        let record = parse(line, 0, &mut years()).expect("parse");
        assert_eq!(record.time.to_rfc3339(), "2026-11-19T23:01:03.123456Z");
        assert_eq!((&*record.program, record.pid), ("sshd", Some(4242)));
    }

    #[test]
    fn rfc5424_with_and_without_structured_data() {
        let line = "<38>1 2026-11-20T00:01:03.123Z web1 sshd 4242 - - Failed password for root";
        let record = parse(line, 0, &mut years()).expect("parse");
        assert_eq!(
            (&*record.host, &*record.program, record.pid),
            ("web1", "sshd", Some(4242))
        );
        assert_eq!(record.message, "Failed password for root");
        let line = r#"<38>1 2026-11-20T00:01:03Z web1 sshd - ID47 [x@1 a="b]c" d="e"][y@2 f="g"] hello there"#;
        let record = parse(line, 0, &mut years()).expect("parse");
        assert_eq!((record.pid, &*record.message), (None, "hello there"));
    }

    #[test]
    fn garbage_is_refused_not_misread() {
        for line in [
            "",
            "garbage",
            "<999999>1 x",
            "Nov 20 00:01:03",
            "2026-11-20T00:01:03Z",
            "\u{0}\u{1}",
        ] {
            assert!(parse(line, 0, &mut years()).is_none(), "{line:?}");
        }
    }
}
