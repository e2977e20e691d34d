//! Rules are data. The built-in rules are TOML files shipped with the agent
//! (`agent/rules/*.toml`, compiled in); a rules directory adds rules or replaces a
//! built-in one with the same `id` (`enabled = false` turns it off). Every mistake is
//! reported with its file and line, by `check-config` and at start.

use super::events::{Event, EventKind};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;
use vedetta_common::{AttributeValue, Severity};

/// The rules compiled into the agent: (file name, contents).
pub const BUILT_IN: &[(&str, &str)] = &[
    ("built-in/sshd.toml", include_str!("../../rules/sshd.toml")),
    (
        "built-in/system.toml",
        include_str!("../../rules/system.toml"),
    ),
    ("built-in/web.toml", include_str!("../../rules/web.toml")),
    (
        "built-in/files.toml",
        include_str!("../../rules/files.toml"),
    ),
];

/// A mistake in a rules file, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct RuleError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// At least `threshold` events (attempts) within `window`.
    Count,
    /// At least `threshold` distinct values of the `distinct` field within `window`.
    Distinct,
    /// The event, when at least `threshold` `after` events of the same key preceded it
    /// within `window`.
    After,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<Spanned<RuleSpec>>,
    // File-integrity sections, read (and checked) by `detect::files`.
    #[serde(default, rename = "path_class")]
    _path_class: Vec<toml::Value>,
    #[serde(rename = "webshell")]
    _webshell: Option<toml::Value>,
    #[serde(rename = "ransomware")]
    _ransomware: Option<toml::Value>,
    #[serde(rename = "file_limits")]
    _file_limits: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    kind: Option<Spanned<String>>,
    #[serde(default)]
    description: String,
    #[serde(default = "enabled")]
    enabled: bool,
    event: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    aggregate: Option<Aggregate>,
    threshold: Option<Spanned<u64>>,
    window: Option<Spanned<String>>,
    severity: Option<Severity>,
    mitre: Option<String>,
    #[serde(default, rename = "match")]
    conditions: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    distinct: Option<Spanned<String>>,
    max_per_value: Option<f64>,
    after: Option<Spanned<String>>,
    reset_on: Option<Spanned<String>>,
    min_span: Option<Spanned<String>>,
    #[serde(default)]
    suppressed_by: Vec<String>,
    #[serde(default)]
    attributes: BTreeMap<String, toml::Value>,
}

fn enabled() -> bool {
    true
}

/// An event field a rule can key on, count or test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Source,
    User,
    InvalidUser,
    Method,
    Group,
    Path,
    Status,
    Scanner,
    Exploit,
}

impl Field {
    const NAMES: [(&'static str, Field); 9] = [
        ("source", Field::Source),
        ("user", Field::User),
        ("invalid_user", Field::InvalidUser),
        ("method", Field::Method),
        ("group", Field::Group),
        ("path", Field::Path),
        ("status", Field::Status),
        ("scanner", Field::Scanner),
        ("exploit", Field::Exploit),
    ];

    fn parse(name: &str) -> Result<Self, String> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::NAMES.iter().map(|(n, _)| *n).collect();
                format!("unknown field {name:?}: use one of {}", names.join(", "))
            })
    }

    /// The field's value in `event`, as text.
    pub fn text<'e>(self, event: &'e Event<'_>) -> Option<Cow<'e, str>> {
        let borrowed = |value: &'e Option<Cow<'_, str>>| value.as_deref().map(Cow::Borrowed);
        match self {
            Self::Source => borrowed(&event.source),
            Self::User => borrowed(&event.user),
            Self::InvalidUser => Some(Cow::Borrowed(if event.invalid_user {
                "true"
            } else {
                "false"
            })),
            Self::Method => borrowed(&event.method),
            Self::Group => borrowed(&event.group),
            Self::Path => borrowed(&event.path),
            Self::Status => (event.status > 0).then(|| Cow::Owned(event.status.to_string())),
            Self::Scanner => event.scanner.map(Cow::Borrowed),
            Self::Exploit => event.exploit.map(Cow::Borrowed),
        }
    }
}

/// A test on one field.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    /// `"*"`: the field is present.
    Present,
    /// Any of these values.
    OneOf(Vec<String>),
    /// `"4xx"`: an HTTP status class.
    StatusClass(u16),
}

impl Matcher {
    fn matches(&self, field: Field, event: &Event) -> bool {
        match self {
            Self::Present => field.text(event).is_some(),
            Self::OneOf(values) => field
                .text(event)
                .is_some_and(|v| values.iter().any(|x| *x == *v)),
            Self::StatusClass(hundreds) => event.status / 100 == *hundreds,
        }
    }
}

/// A compiled rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: String,
    pub kind: String,
    pub description: String,
    pub event: EventKind,
    pub key: Field,
    pub aggregate: Aggregate,
    pub threshold: u64,
    pub window: Duration,
    pub severity: Severity,
    pub mitre: Option<String>,
    pub conditions: Vec<(Field, Matcher)>,
    pub distinct: Option<Field>,
    pub max_per_value: Option<f64>,
    pub after: Option<EventKind>,
    pub reset_on: Option<EventKind>,
    /// The counted events must spread over at least this long (low-and-slow patterns).
    pub min_span: Duration,
    /// Signal kinds that, when already reported for the same key, make this rule quiet
    /// (one attack, one signal: spraying is not also a brute force).
    pub suppressed_by: Vec<String>,
    pub attributes: Vec<(String, AttributeValue)>,
}

impl Rule {
    /// Whether `event` is one this rule counts.
    pub fn matches(&self, event: &Event) -> bool {
        event.kind == Some(self.event)
            && self
                .conditions
                .iter()
                .all(|(field, matcher)| matcher.matches(*field, event))
    }
}

fn event_kind(name: &str) -> Result<EventKind, String> {
    let value = toml::Value::String(name.to_owned());
    EventKind::deserialize(value).map_err(|_| {
        let names: Vec<String> = EventKind::ALL
            .iter()
            .filter_map(|k| serde_json::to_value(k).ok())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        format!("unknown event {name:?}: use one of {}", names.join(", "))
    })
}

fn matcher(field: Field, value: &toml::Value) -> Result<Matcher, String> {
    let text = |value: &toml::Value| match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        other => Err(format!(
            "a condition value must be text, a number or a boolean, not {other}"
        )),
    };
    match value {
        toml::Value::String(s) if s == "*" => Ok(Matcher::Present),
        toml::Value::String(s)
            if field == Field::Status
                && s.len() == 3
                && s.ends_with("xx")
                && s.as_bytes()[0].is_ascii_digit() =>
        {
            Ok(Matcher::StatusClass(u16::from(s.as_bytes()[0] - b'0')))
        }
        toml::Value::Array(values) => Ok(Matcher::OneOf(
            values.iter().map(text).collect::<Result<_, _>>()?,
        )),
        single => Ok(Matcher::OneOf(vec![text(single)?])),
    }
}

fn attribute(value: &toml::Value) -> Result<AttributeValue, String> {
    match value {
        toml::Value::String(s) => Ok(AttributeValue::Text(s.clone())),
        toml::Value::Integer(i) => Ok(AttributeValue::Int(*i)),
        toml::Value::Float(f) if f.is_finite() => Ok(AttributeValue::Float(*f)),
        toml::Value::Boolean(b) => Ok(AttributeValue::Bool(*b)),
        other => Err(format!(
            "attribute values must be text, numbers or booleans, not {other}"
        )),
    }
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// What one rules file says: rules to add or replace, and ids to disable.
#[derive(Debug, Default)]
pub struct Parsed {
    pub rules: Vec<Rule>,
    pub disabled: Vec<String>,
}

/// Parses and checks one rules file. Errors carry `file:line`.
pub fn parse_file(file: &str, text: &str) -> Result<Parsed, Vec<RuleError>> {
    let error = |offset: usize, message: String| RuleError {
        file: file.to_owned(),
        line: line_of(text, offset),
        message,
    };
    let parsed: RuleFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |span| span.start);
        vec![error(offset, e.message().to_owned())]
    })?;
    let mut out = Parsed::default();
    let mut errors = Vec::new();
    for spanned in parsed.rule {
        let at = spanned.span().start;
        let spec = spanned.into_inner();
        if !spec.enabled {
            out.disabled.push(spec.id);
            continue;
        }
        match compile(spec, at) {
            Ok(rule) => out.rules.push(rule),
            Err((offset, message)) => errors.push(error(offset, message)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

type Located = (usize, String);

fn required<T>(
    value: Option<Spanned<T>>,
    rule_at: usize,
    what: &str,
) -> Result<Spanned<T>, Located> {
    value.ok_or_else(|| (rule_at, format!("rule is missing `{what}`")))
}

fn compile(spec: RuleSpec, at: usize) -> Result<Rule, Located> {
    let located = |spanned_at: usize| move |message: String| (spanned_at, message);
    vedetta_common::identity::validate_name("rule id", &spec.id).map_err(located(at))?;
    let event = required(spec.event, at, "event")?;
    let event_kind_value = event_kind(event.get_ref()).map_err(located(event.span().start))?;
    let key = match spec.key {
        Some(key) => Field::parse(key.get_ref()).map_err(located(key.span().start))?,
        None => Field::Source,
    };
    let threshold = required(spec.threshold, at, "threshold")?;
    if *threshold.get_ref() == 0 {
        return Err((
            threshold.span().start,
            "threshold must be at least 1".into(),
        ));
    }
    let window = required(spec.window, at, "window")?;
    let window_value = vedetta_common::duration::parse_duration(window.get_ref())
        .map_err(located(window.span().start))?;
    if window_value.is_zero() || window_value > Duration::from_secs(7 * 86_400) {
        return Err((
            window.span().start,
            "window must be between 1s and 7d".into(),
        ));
    }
    let aggregate = spec.aggregate.unwrap_or(Aggregate::Count);
    let distinct = match (&aggregate, spec.distinct) {
        (Aggregate::Distinct, Some(field)) => {
            Some(Field::parse(field.get_ref()).map_err(located(field.span().start))?)
        }
        (Aggregate::Distinct, None) => {
            return Err((
                at,
                "aggregate = \"distinct\" needs `distinct` (the field to count)".into(),
            ));
        }
        (_, Some(field)) => {
            return Err((
                field.span().start,
                "`distinct` only goes with aggregate = \"distinct\"".into(),
            ));
        }
        (_, None) => None,
    };
    let after = match (&aggregate, spec.after) {
        (Aggregate::After, Some(name)) => {
            Some(event_kind(name.get_ref()).map_err(located(name.span().start))?)
        }
        (Aggregate::After, None) => {
            return Err((
                at,
                "aggregate = \"after\" needs `after` (the preceding event)".into(),
            ));
        }
        (_, Some(name)) => {
            return Err((
                name.span().start,
                "`after` only goes with aggregate = \"after\"".into(),
            ));
        }
        (_, None) => None,
    };
    let reset_on = match spec.reset_on {
        Some(name) => Some(event_kind(name.get_ref()).map_err(located(name.span().start))?),
        None => None,
    };
    let min_span = match spec.min_span {
        Some(span) => vedetta_common::duration::parse_duration(span.get_ref())
            .map_err(located(span.span().start))?,
        None => Duration::ZERO,
    };
    let mut conditions = Vec::new();
    for (name, value) in spec.conditions {
        let field = Field::parse(name.get_ref()).map_err(located(name.span().start))?;
        conditions.push((
            field,
            matcher(field, value.get_ref()).map_err(located(value.span().start))?,
        ));
    }
    let kind = match spec.kind {
        Some(kind) => {
            let probe = vedetta_common::Signal::new(
                kind.get_ref().clone(),
                Severity::Info,
                vedetta_common::Timestamp(0),
            );
            probe
                .validate()
                .map_err(|e| (kind.span().start, e.to_string()))?;
            kind.into_inner()
        }
        None => spec.id.clone(),
    };
    let mut attributes = Vec::new();
    for (name, value) in &spec.attributes {
        attributes.push((name.clone(), attribute(value).map_err(located(at))?));
    }
    Ok(Rule {
        id: spec.id,
        kind,
        description: spec.description,
        event: event_kind_value,
        key,
        aggregate,
        threshold: threshold.into_inner(),
        window: window_value,
        severity: spec
            .severity
            .ok_or((at, "rule is missing `severity`".to_owned()))?,
        mitre: spec.mitre,
        conditions,
        distinct,
        max_per_value: spec.max_per_value.filter(|m| m.is_finite() && *m > 0.0),
        after,
        reset_on,
        min_span,
        suppressed_by: spec.suppressed_by,
        attributes,
    })
}

/// The rules files in force, as (name, text): the built-ins, then every `*.toml` of `dir`
/// in name order.
pub fn rule_sources(dir: Option<&Path>) -> Result<Vec<(String, String)>, Vec<RuleError>> {
    let mut sources: Vec<(String, String)> = BUILT_IN
        .iter()
        .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
        .collect();
    if let Some(dir) = dir {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            vec![RuleError {
                file: dir.display().to_string(),
                line: 0,
                message: format!("cannot read the rules directory: {e}"),
            }]
        })?;
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                vec![RuleError {
                    file: path.display().to_string(),
                    line: 0,
                    message: format!("cannot read: {e}"),
                }]
            })?;
            sources.push((path.display().to_string(), text));
        }
    }
    Ok(sources)
}

/// The log rules in force: the built-ins, then every `*.toml` of `dir` in name order.
pub fn load(dir: Option<&Path>) -> Result<Vec<Rule>, Vec<RuleError>> {
    let sources = rule_sources(dir)?;
    let mut rules: Vec<Rule> = Vec::new();
    let mut errors = Vec::new();
    for (file, text) in &sources {
        match parse_file(file, text) {
            Ok(parsed) => {
                rules.retain(|rule| !parsed.disabled.contains(&rule.id));
                for rule in parsed.rules {
                    match rules.iter_mut().find(|existing| existing.id == rule.id) {
                        Some(existing) => *existing = rule,
                        None => rules.push(rule),
                    }
                }
            }
            Err(mut found) => errors.append(&mut found),
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_rules_compile() {
        let rules = load(None).expect("built-ins");
        assert!(rules.len() >= 14);
        let brute = rules
            .iter()
            .find(|r| r.id == "ssh_bruteforce_burst")
            .expect("burst");
        assert_eq!(
            (brute.threshold, brute.window),
            (10, Duration::from_secs(600))
        );
    }

    #[test]
    fn a_rules_directory_adds_replaces_and_disables() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("local.toml"),
            r#"
[[rule]]
id = "ssh_bruteforce_burst"
kind = "ssh_bruteforce"
event = "ssh_failed"
aggregate = "count"
threshold = 4
window = "5m"
severity = "critical"

[[rule]]
id = "web_scan_paths"
enabled = false

[[rule]]
id = "nginx_admin"
event = "web_request"
threshold = 1
window = "1m"
severity = "low"
match = { path = ["/admin", "/wp-admin/"], status = "2xx" }
"#,
        )
        .expect("write");
        let rules = load(Some(dir.path())).expect("rules");
        let brute = rules
            .iter()
            .find(|r| r.id == "ssh_bruteforce_burst")
            .expect("replaced");
        assert_eq!((brute.threshold, brute.severity), (4, Severity::Critical));
        assert!(rules.iter().all(|r| r.id != "web_scan_paths"));
        let admin = rules.iter().find(|r| r.id == "nginx_admin").expect("added");
        assert_eq!(admin.kind, "nginx_admin");
        assert_eq!(
            admin.conditions[1],
            (Field::Status, Matcher::StatusClass(2))
        );
    }

    #[test]
    fn mistakes_are_reported_with_their_line() {
        let cases = [
            (
                "[[rule]]\nid = \"x\"\nevent = \"ssh_failed\"\nthreshold = 1\nwindow = \"1m\"\nseverity = \"low\"\nkey = \"ip\"\n",
                7,
                "unknown field \"ip\"",
            ),
            (
                "[[rule]]\nid = \"x\"\nevent = \"ssh_fail\"\nthreshold = 1\nwindow = \"1m\"\nseverity = \"low\"\n",
                3,
                "unknown event",
            ),
            (
                "[[rule]]\nid = \"x\"\nevent = \"ssh_failed\"\nthreshold = 0\nwindow = \"1m\"\nseverity = \"low\"\n",
                4,
                "at least 1",
            ),
            (
                "[[rule]]\nid = \"x\"\nevent = \"ssh_failed\"\nthreshold = 1\nwindow = \"1 fortnight\"\nseverity = \"low\"\n",
                5,
                "invalid duration",
            ),
            (
                "\n[[rule]]\nid = \"x\"\nevent = \"ssh_failed\"\nthreshold = 1\nwindow = \"1m\"\nseverity = \"dire\"\n",
                7,
                "unknown variant",
            ),
            (
                "[[rule]]\nid = \"x\"\nevent = \"ssh_failed\"\nthreshold = 1\nwindow = \"1m\"\nseverity = \"low\"\nthresold = 3\n",
                7,
                "unknown field",
            ),
            (
                "[[rule]]\nid = \"x\"\nevent = \"ssh_failed\"\naggregate = \"distinct\"\nthreshold = 1\nwindow = \"1m\"\nseverity = \"low\"\n",
                1,
                "needs `distinct`",
            ),
            (
                "[[rule]]\nid = \"x\"\nevent = \"ssh_failed\"\nthreshold = 1\nwindow = \"1m\"\nseverity = \"low\"\nmatch = { colour = \"red\" }\n",
                7,
                "unknown field \"colour\"",
            ),
        ];
        for (text, line, message) in cases {
            let errors = parse_file("local.toml", text).expect_err(message);
            assert_eq!(errors[0].line, line, "{errors:?}");
            assert!(errors[0].message.contains(message), "{errors:?}");
            assert!(
                errors[0]
                    .to_string()
                    .starts_with(&format!("local.toml:{line}: "))
            );
        }
    }
}
