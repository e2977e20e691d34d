//! Apache/nginx access logs, combined format (common format is accepted, with empty
//! referer and user agent):
//! `203.0.113.7 - - [10/Oct/2026:13:55:36 +0200] "GET /a HTTP/1.1" 404 153 "-" "curl/8.5"`

use super::AccessRecord;
use super::time::parse_access;

/// The next `"quoted"` field (backslash escapes kept as they are) and the rest.
fn quoted(text: &str) -> Option<(&str, &str)> {
    let text = text.strip_prefix('"')?;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some((&text[..i], &text[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

pub fn parse(line: &str) -> Option<AccessRecord<'_>> {
    let (client, rest) = line.split_once(' ')?;
    let open = rest.find('[')?;
    let close = open + rest[open..].find(']')?;
    let time = parse_access(&rest.as_bytes()[open + 1..close])?;
    let (request, rest) = quoted(rest[close + 1..].trim_start())?;
    let mut parts = request.splitn(3, ' ');
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let mut fields = rest.trim_start().splitn(3, ' ');
    let status: u16 = fields.next()?.parse().ok()?;
    let bytes = fields.next().and_then(|b| b.parse().ok()).unwrap_or(0);
    let rest = fields.next().unwrap_or("").trim_start();
    let (referer, user_agent) = match quoted(rest) {
        Some((referer, rest)) => (referer, quoted(rest.trim_start()).map_or("", |(ua, _)| ua)),
        None => ("", ""),
    };
    Some(AccessRecord {
        time,
        client,
        method,
        target,
        status,
        bytes,
        referer,
        user_agent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_and_common() {
        let line = r#"203.0.113.7 - - [10/Oct/2026:13:55:36 +0200] "GET /wp-login.php?x=\"1\" HTTP/1.1" 404 153 "-" "Mozilla/5.0 (compatible; Nmap Scripting Engine)""#;
        let record = parse(line).expect("combined");
        assert_eq!(
            (record.client, record.method, record.status, record.bytes),
            ("203.0.113.7", "GET", 404, 153)
        );
        assert_eq!(record.target, r#"/wp-login.php?x=\"1\""#);
        assert!(record.user_agent.contains("Nmap"));
        assert_eq!(record.time.to_rfc3339(), "2026-10-10T11:55:36Z");
        let common =
            r#"2001:db8::1 - alice [10/Oct/2026:13:55:36 -0000] "POST /api HTTP/2.0" 200 -"#;
        let record = parse(common).expect("common");
        assert_eq!(
            (
                record.client,
                record.status,
                record.bytes,
                record.user_agent
            ),
            ("2001:db8::1", 200, 0, "")
        );
        assert!(parse("not an access log").is_none());
        assert!(parse(r#"1.2.3.4 - - [bad] "GET / HTTP/1.1" 200 1"#).is_none());
        assert!(
            parse(r#"1.2.3.4 - - [10/Oct/2026:13:55:36 +0200] "GET / HTTP/1.1" two 1"#).is_none()
        );
    }
}
