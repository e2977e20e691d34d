//! From log records to security events: one attempt is one event, however many lines the
//! system writes about it.
//!
//! OpenSSH writes up to four lines per failed password (PAM's `authentication failure`,
//! `Failed password ...`, and for unknown users `Invalid user ...` and
//! `input_userauth_request ...`). Only the `Failed <method>` line counts as an attempt;
//! rsyslog's `message repeated N times: [ ... ]` counts N. Old systems where PAM logs as
//! `sshd(pam_unix)` and sshd writes no `Failed` line count PAM's failure line instead.
//! Counting lines instead flags a third of the sources that tried once or twice.

use crate::sources::logs::format::{AccessRecord, LogRecord};
use std::borrow::Cow;
use std::net::IpAddr;
use vedetta_common::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A failed SSH authentication attempt (password, keyboard-interactive, none, publickey).
    SshFailed,
    /// A successful SSH login.
    SshAccepted,
    /// An SSH connection naming a user that does not exist.
    SshInvalidUser,
    /// Wrong passwords given to sudo.
    SudoFailed,
    /// sudo used by a user who is not allowed to.
    SudoNotInSudoers,
    /// An account created, deleted, given a group, or its password changed.
    AccountChanged,
    /// One request in a web server's access log.
    WebRequest,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        Self::SshFailed,
        Self::SshAccepted,
        Self::SshInvalidUser,
        Self::SudoFailed,
        Self::SudoNotInSudoers,
        Self::AccountChanged,
        Self::WebRequest,
    ];

    /// The snake_case name, as in rules and signal attributes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SshFailed => "ssh_failed",
            Self::SshAccepted => "ssh_accepted",
            Self::SshInvalidUser => "ssh_invalid_user",
            Self::SudoFailed => "sudo_failed",
            Self::SudoNotInSudoers => "sudo_not_in_sudoers",
            Self::AccountChanged => "account_changed",
            Self::WebRequest => "web_request",
        }
    }
}

/// One security-relevant event. Fields that do not apply are empty. Text fields borrow
/// from the line where they can: events are made for every line, and most are forgotten.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event<'a> {
    pub kind: Option<EventKind>,
    pub at: Timestamp,
    /// How many attempts this event stands for (`message repeated 3 times`, `3 incorrect
    /// password attempts`).
    pub count: u32,
    /// The remote party as logged: an address, or a host name (old PAM `rhost=`).
    pub source: Option<Cow<'a, str>>,
    pub source_ip: Option<IpAddr>,
    pub user: Option<Cow<'a, str>>,
    pub invalid_user: bool,
    /// SSH authentication method, or the kind of account change.
    pub method: Option<Cow<'a, str>>,
    pub group: Option<Cow<'a, str>>,
    /// Web: the request target; sudo: the command.
    pub path: Option<Cow<'a, str>>,
    pub status: u16,
    /// Web: the scanner a user agent names (`nikto`, `sqlmap`, …).
    pub scanner: Option<&'static str>,
    /// Web: the class of exploit the request carries (`path_traversal`, `log4shell`, …).
    pub exploit: Option<&'static str>,
}

impl<'a> Event<'a> {
    fn new(kind: EventKind, at: Timestamp) -> Self {
        Self {
            kind: Some(kind),
            at,
            count: 1,
            ..Self::default()
        }
    }

    /// The same event, owning its text (to keep it beyond the line it came from).
    pub fn into_owned(self) -> Event<'static> {
        let own = |text: Option<Cow<'a, str>>| text.map(|t| Cow::Owned(t.into_owned()));
        Event {
            kind: self.kind,
            at: self.at,
            count: self.count,
            source: own(self.source),
            source_ip: self.source_ip,
            user: own(self.user),
            invalid_user: self.invalid_user,
            method: own(self.method),
            group: own(self.group),
            path: own(self.path),
            status: self.status,
            scanner: self.scanner,
            exploit: self.exploit,
        }
    }

    fn with_source(mut self, source: &'a str) -> Self {
        let source = source.trim_matches(|c| c == '[' || c == ']');
        if !source.is_empty() {
            self.source_ip = source.parse().ok();
            self.source = Some(Cow::Borrowed(source));
        }
        self
    }
}

/// `message repeated N times: [ inner ]` → (N, inner).
fn repeated(message: &str) -> (u32, &str) {
    if let Some(rest) = message.strip_prefix("message repeated ")
        && let Some((n, inner)) = rest.split_once(" times: [ ")
        && let Ok(n) = n.parse::<u32>()
    {
        return (n.max(1), inner.strip_suffix(" ]").unwrap_or(inner));
    }
    (1, message)
}

/// The word after `key` in `text`.
fn word_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(key)? + key.len();
    text[start..].split_whitespace().next()
}

/// `user from ADDR port P` → (user, addr).
fn user_from(rest: &str) -> Option<(&str, &str)> {
    let split = rest.rfind(" from ")?;
    let user = &rest[..split];
    let source = rest[split + 6..].split_whitespace().next()?;
    Some((user, source))
}

fn sshd<'a>(record: &LogRecord<'_>, count: u32, message: &'a str) -> Option<Event<'a>> {
    let at = record.time;
    if let Some(rest) = message.strip_prefix("Failed ") {
        let (method, rest) = rest.split_once(" for ")?;
        let (invalid, rest) = match rest.strip_prefix("invalid user ") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        let (user, source) = user_from(rest)?;
        let mut event = Event::new(EventKind::SshFailed, at).with_source(source);
        event.count = count;
        event.user = Some(Cow::Borrowed(user));
        event.invalid_user = invalid;
        event.method = Some(Cow::Borrowed(method));
        return Some(event);
    }
    if let Some(rest) = message.strip_prefix("Accepted ") {
        let (method, rest) = rest.split_once(" for ")?;
        let (user, source) = user_from(rest)?;
        let mut event = Event::new(EventKind::SshAccepted, at).with_source(source);
        event.user = Some(Cow::Borrowed(user));
        event.method = Some(Cow::Borrowed(method));
        return Some(event);
    }
    // `Invalid user X from ADDR [port P]`, and the forms newer OpenSSH logs when the
    // client gives up before a password: `Connection closed by invalid user X ADDR port P
    // [preauth]`, `Disconnected from invalid user X ADDR port P [preauth]`.
    let invalid = message
        .strip_prefix("Invalid user ")
        .and_then(user_from)
        .or_else(|| {
            let rest = message
                .strip_prefix("Connection closed by invalid user ")
                .or_else(|| message.strip_prefix("Disconnected from invalid user "))
                .or_else(|| message.strip_prefix("Connection reset by invalid user "))?;
            let rest = rest.strip_suffix(" [preauth]").unwrap_or(rest);
            let port = rest.rfind(" port ")?;
            let (user, source) = rest[..port].rsplit_once(' ')?;
            Some((user, source))
        });
    if let Some((user, source)) = invalid {
        let mut event = Event::new(EventKind::SshInvalidUser, at).with_source(source);
        event.user = Some(Cow::Borrowed(user));
        return Some(event);
    }
    None
}

/// Old-style PAM logging (`sshd(pam_unix)[pid]: authentication failure; ... rhost=X user=Y`):
/// the only record of each attempt on such systems.
fn old_pam<'a>(record: &LogRecord<'_>, count: u32, message: &'a str) -> Option<Event<'a>> {
    if !message.starts_with("authentication failure;") {
        return None;
    }
    let mut event = Event::new(EventKind::SshFailed, record.time);
    if let Some(rhost) = word_after(message, "rhost=").filter(|r| !r.contains('=')) {
        event = event.with_source(rhost);
    }
    event.user = word_after(message, " user=").map(Cow::Borrowed);
    event.count = count;
    event.method = Some("password".into());
    Some(event)
}

fn sudo<'a>(record: &LogRecord<'_>, message: &'a str) -> Option<Event<'a>> {
    // `alice : 3 incorrect password attempts ; TTY=pts/0 ; ... ; COMMAND=/bin/sh`
    let (user, rest) = message.split_once(" : ")?;
    let user = user.trim();
    let command = rest
        .split(" ; ")
        .find_map(|part| part.strip_prefix("COMMAND="));
    let mut event = if let Some(count) = rest
        .split_once(" incorrect password attempt")
        .map(|(n, _)| n)
    {
        let mut event = Event::new(EventKind::SudoFailed, record.time);
        event.count = count.trim().parse().unwrap_or(1);
        event
    } else if rest.starts_with("user NOT in sudoers")
        || rest.starts_with("user NOT authorized on host")
    {
        Event::new(EventKind::SudoNotInSudoers, record.time)
    } else {
        return None;
    };
    event.user = Some(Cow::Borrowed(user));
    event.path = command.map(Cow::Borrowed);
    Some(event)
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = start + text[start..].find(close)?;
    Some(&text[start..end])
}

fn account<'a>(record: &LogRecord<'_>, message: &'a str) -> Option<Event<'a>> {
    fn changed<'a>(
        at: Timestamp,
        action: &'static str,
        user: &'a str,
        group: Option<&'a str>,
    ) -> Option<Event<'a>> {
        let mut event = Event::new(EventKind::AccountChanged, at);
        event.method = Some(Cow::Borrowed(action));
        event.user = Some(Cow::Borrowed(user));
        event.group = group.map(Cow::Borrowed);
        Some(event)
    }
    let change = |action, user, group| changed(record.time, action, user, group);
    match &*record.program {
        "useradd" => {
            let name = between(message, "new user: name=", ",")?;
            change("user_added", name, None)
        }
        "userdel" => change(
            "user_deleted",
            between(message, "delete user '", "'")?,
            None,
        ),
        "usermod" | "gpasswd" => {
            // usermod: `add 'eve' to group 'sudo'` (also `... to shadow group ...`);
            // gpasswd: `user eve added by root to group sudo`.
            if let Some(rest) = message.strip_prefix("add '") {
                let (user, rest) = rest.split_once('\'')?;
                let group = between(rest, "group '", "'")?;
                return change("group_added", user, Some(group));
            }
            if let Some(rest) = message.strip_prefix("user ") {
                let (user, rest) = rest.split_once(" added by ")?;
                let group = rest.rsplit_once(" to group ")?.1;
                return change("group_added", user, Some(group.trim()));
            }
            if message.starts_with("change user '") && message.contains("' password") {
                return change(
                    "password_changed",
                    between(message, "change user '", "'")?,
                    None,
                );
            }
            None
        }
        "passwd" | "chpasswd" | "chage" => {
            let user = message.split_once("password changed for ")?.1.trim();
            change("password_changed", user, None)
        }
        _ => None,
    }
}

/// The event a system log line stands for, if any.
pub fn from_log<'a>(record: &'a LogRecord<'_>) -> Option<Event<'a>> {
    let (count, message) = repeated(&record.message);
    match &*record.program {
        // OpenSSH 9.8 moved per-connection logging to `sshd-session`.
        "sshd" | "sshd-session" => sshd(record, count, message),
        "sshd(pam_unix)" => old_pam(record, count, message),
        "sudo" => sudo(record, message),
        _ => account(record, message),
    }
}

/// Case-insensitive ASCII substring search, without allocating.
fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.len() >= needle.len()
        && haystack
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

/// Decodes `%xx` escapes once (attackers encode what they hide), lossily.
fn percent_decoded(text: &str) -> Cow<'_, str> {
    if !text.contains('%') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(high), Some(low)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Exploit classes and the fragments that reveal them (matched case-insensitively in the
/// decoded request target, and for `log4shell` also in the headers logged).
const EXPLOITS: &[(&str, &[&str])] = &[
    ("log4shell", &["${jndi:", "${${", "${lower:", "${env:"]),
    (
        "path_traversal",
        &[
            "../",
            "..\\",
            "/etc/passwd",
            "/etc/shadow",
            "win.ini",
            "/proc/self/environ",
        ],
    ),
    (
        "sql_injection",
        &[
            "union select",
            "union all select",
            "' or '1'='1",
            "\" or \"1\"=\"1",
            " or 1=1",
            "'or'1'='1",
            "sleep(",
            "benchmark(",
            "information_schema",
            "waitfor delay",
        ],
    ),
    (
        "rce_probe",
        &[
            "/bin/sh",
            "/bin/bash",
            "cmd.exe",
            ";wget ",
            "|wget ",
            "wget http",
            "curl http",
            "/vendor/phpunit/",
            "eval-stdin.php",
            "/boaform/",
            "/hnap1",
            "think\\app",
            "invokefunction",
            "/cgi-bin/",
            "shell?cd",
            "allow_url_include",
            "auto_prepend_file",
        ],
    ),
    (
        "admin_probe",
        &[
            "/.env",
            "/.git/",
            "/wp-config",
            "/phpmyadmin",
            "/pma/",
            "/actuator/",
            "/manager/html",
            "/solr/admin",
            "/server-status",
            "/.aws/",
            "/config.json",
            "/.ds_store",
        ],
    ),
    ("xss", &["<script", "javascript:", "onerror="]),
];

const SCANNERS: &[(&str, &str)] = &[
    ("nikto", "nikto"),
    ("sqlmap", "sqlmap"),
    ("nmap", "nmap"),
    ("masscan", "masscan"),
    ("zgrab", "zgrab"),
    ("gobuster", "gobuster"),
    ("dirbuster", "dirbuster"),
    ("feroxbuster", "feroxbuster"),
    ("wpscan", "wpscan"),
    ("nuclei", "nuclei"),
    ("acunetix", "acunetix"),
    ("nessus", "nessus"),
    ("openvas", "openvas"),
    ("hydra", "hydra"),
    ("fuzz faster u fool", "ffuf"),
    ("wfuzz", "wfuzz"),
    ("zmeu", "zmeu"),
    ("jorgee", "jorgee"),
];

/// The exploit class a request carries, if any.
pub fn exploit_class(target: &str, user_agent: &str, referer: &str) -> Option<&'static str> {
    let decoded = percent_decoded(target);
    let decoded = decoded.as_bytes();
    for (class, fragments) in EXPLOITS {
        let headers_too = *class == "log4shell";
        for fragment in *fragments {
            let fragment = fragment.as_bytes();
            if contains_ignore_case(decoded, fragment)
                || (headers_too
                    && (contains_ignore_case(user_agent.as_bytes(), fragment)
                        || contains_ignore_case(referer.as_bytes(), fragment)))
            {
                return Some(class);
            }
        }
    }
    None
}

pub fn scanner(user_agent: &str) -> Option<&'static str> {
    SCANNERS
        .iter()
        .find(|(fragment, _)| contains_ignore_case(user_agent.as_bytes(), fragment.as_bytes()))
        .map(|(_, name)| *name)
}

/// The event of one access log record.
pub fn from_access<'a>(record: &AccessRecord<'a>) -> Event<'a> {
    let mut event = Event::new(EventKind::WebRequest, record.time).with_source(record.client);
    event.method = Some(Cow::Borrowed(record.method));
    let end = record
        .target
        .char_indices()
        .nth(512)
        .map_or(record.target.len(), |(at, _)| at);
    event.path = Some(Cow::Borrowed(&record.target[..end]));
    event.status = record.status;
    event.scanner = scanner(record.user_agent);
    event.exploit = exploit_class(record.target, record.user_agent, record.referer);
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use Cow;

    fn log<'a>(program: &'a str, message: &'a str) -> LogRecord<'a> {
        LogRecord {
            time: Timestamp(0),
            host: Cow::Borrowed("h"),
            program: Cow::Borrowed(program),
            pid: Some(1),
            message: Cow::Borrowed(message),
        }
    }

    fn event(program: &str, message: &str) -> Option<Event<'static>> {
        from_log(&log(program, message)).map(Event::into_owned)
    }

    #[test]
    fn openssh_failures_count_attempts_not_lines() {
        let e = event(
            "sshd",
            "Failed password for invalid user admin from 203.0.113.7 port 4022 ssh2",
        )
        .expect("failed");
        assert_eq!(
            (e.kind, e.invalid_user, e.user.as_deref()),
            (Some(EventKind::SshFailed), true, Some("admin"))
        );
        assert_eq!(e.source_ip, Some("203.0.113.7".parse().expect("ip")));
        let e = event(
            "sshd",
            "Failed password for root from 2001:db8::7 port 4022 ssh2",
        )
        .expect("v6");
        assert_eq!(e.source.as_deref(), Some("2001:db8::7"));
        let e = event(
            "sshd",
            "message repeated 5 times: [ Failed password for root from 203.0.113.7 port 4022 ssh2]",
        )
        .expect("repeat");
        assert_eq!(e.count, 5);
        let e = event(
            "sshd-session",
            "Failed keyboard-interactive/pam for bob from 198.51.100.2 port 1 ssh2",
        )
        .expect("kbd");
        assert_eq!(e.method.as_deref(), Some("keyboard-interactive/pam"));
        // A user name with spaces is kept whole.
        let e = event(
            "sshd",
            "Failed password for invalid user  from 203.0.113.7 port 1 ssh2",
        )
        .expect("empty user");
        assert_eq!(e.user.as_deref(), Some(""));
        for not_an_attempt in [
            "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.7  user=root",
            "pam_unix(sshd:auth): check pass; user unknown",
            "input_userauth_request: invalid user admin [preauth]",
            "PAM 2 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.7  user=root",
            "Received disconnect from 203.0.113.7 port 4022:11: Bye Bye [preauth]",
            "Connection closed by 203.0.113.7 port 4022 [preauth]",
            "Accepted",
        ] {
            assert_eq!(event("sshd", not_an_attempt), None, "{not_an_attempt}");
        }
    }

    #[test]
    fn invalid_users_in_every_openssh_version() {
        for message in [
            "Invalid user oracle from 203.0.113.7",
            "Invalid user oracle from 203.0.113.7 port 4022",
            "Connection closed by invalid user oracle 203.0.113.7 port 4022 [preauth]",
            "Disconnected from invalid user oracle 203.0.113.7 port 4022 [preauth]",
        ] {
            let e = event("sshd", message).expect(message);
            assert_eq!(
                (e.kind, e.user.as_deref(), e.source.as_deref()),
                (
                    Some(EventKind::SshInvalidUser),
                    Some("oracle"),
                    Some("203.0.113.7")
                )
            );
        }
    }

    #[test]
    fn old_pam_logging_counts_its_failure_lines() {
        let e = event("sshd(pam_unix)", "authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4  user=root").expect("pam");
        assert_eq!(
            (e.kind, e.source.as_deref(), e.user.as_deref()),
            (
                Some(EventKind::SshFailed),
                Some("218.188.2.4"),
                Some("root")
            )
        );
        let e = event("sshd(pam_unix)", "authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=220-135-151-1.hinet-ip.hinet.net  user=root").expect("host");
        assert_eq!(
            (e.source.as_deref(), e.source_ip),
            (Some("220-135-151-1.hinet-ip.hinet.net"), None)
        );
        assert_eq!(event("sshd(pam_unix)", "check pass; user unknown"), None);
    }

    #[test]
    fn accepted_logins() {
        let e = event(
            "sshd",
            "Accepted publickey for alice from 192.0.2.10 port 50000 ssh2: ED25519 SHA256:abc",
        )
        .expect("accepted");
        assert_eq!(
            (e.kind, e.user.as_deref(), e.method.as_deref()),
            (
                Some(EventKind::SshAccepted),
                Some("alice"),
                Some("publickey")
            )
        );
    }

    #[test]
    fn sudo_and_accounts() {
        let e = event("sudo", "   alice : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/bash").expect("sudo");
        assert_eq!(
            (e.kind, e.count, e.user.as_deref(), e.path.as_deref()),
            (
                Some(EventKind::SudoFailed),
                3,
                Some("alice"),
                Some("/bin/bash")
            )
        );
        let e = event("sudo", "bob : user NOT in sudoers ; TTY=pts/1 ; PWD=/home/bob ; USER=root ; COMMAND=/usr/bin/id").expect("sudoers");
        assert_eq!(e.kind, Some(EventKind::SudoNotInSudoers));
        assert_eq!(
            event(
                "sudo",
                "alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/apt update"
            ),
            None
        );
        assert_eq!(
            event(
                "sudo",
                "pam_unix(sudo:auth): authentication failure; logname=alice uid=1000 euid=0 tty=/dev/pts/0 ruser=alice rhost=  user=alice"
            ),
            None
        );
        let e = event("useradd", "new user: name=eve, UID=1001, GID=1001, home=/home/eve, shell=/bin/bash, from=/dev/pts/0").expect("useradd");
        assert_eq!(
            (e.method.as_deref(), e.user.as_deref()),
            (Some("user_added"), Some("eve"))
        );
        let e = event("usermod", "add 'eve' to group 'sudo'").expect("usermod");
        assert_eq!(
            (e.method.as_deref(), e.group.as_deref()),
            (Some("group_added"), Some("sudo"))
        );
        let e = event("gpasswd", "user eve added by root to group wheel").expect("gpasswd");
        assert_eq!(e.group.as_deref(), Some("wheel"));
        let e = event(
            "passwd",
            "pam_unix(passwd:chauthtok): password changed for eve",
        )
        .expect("passwd");
        assert_eq!(
            (e.method.as_deref(), e.user.as_deref()),
            (Some("password_changed"), Some("eve"))
        );
        let e = event("userdel", "delete user 'eve'").expect("userdel");
        assert_eq!(e.method.as_deref(), Some("user_deleted"));
        assert_eq!(
            event("CRON", "(root) CMD (run-parts /etc/cron.hourly)"),
            None
        );
    }

    #[test]
    fn web_exploits_and_scanners() {
        assert_eq!(
            exploit_class("/index.php?page=..%2F..%2Fetc%2Fpasswd", "", ""),
            Some("path_traversal")
        );
        assert_eq!(
            exploit_class("/", "${jndi:ldap://x/a}", ""),
            Some("log4shell")
        );
        assert_eq!(
            exploit_class("/item?id=1%20UNION%20SELECT%20password", "", ""),
            Some("sql_injection")
        );
        assert_eq!(
            exploit_class(
                "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
                "",
                ""
            ),
            Some("rce_probe")
        );
        assert_eq!(exploit_class("/.env", "", ""), Some("admin_probe"));
        assert_eq!(
            exploit_class("/search?q=<script>alert(1)</script>", "", ""),
            Some("xss")
        );
        for benign in [
            "/",
            "/index.html",
            "/blog/2026/11/union-station",
            "/img/logo.png?v=3",
            "/%E2%82%AC",
        ] {
            assert_eq!(
                exploit_class(benign, "Mozilla/5.0", "https://example.org/"),
                None,
                "{benign}"
            );
        }
        assert_eq!(scanner("Mozilla/5.00 (Nikto/2.1.6)"), Some("nikto"));
        assert_eq!(
            scanner("Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"),
            None
        );
    }
}
