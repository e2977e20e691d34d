//! The signal model: a summary of many events ("203.0.113.7 tried 412 passwords on 57
//! accounts in 10 minutes"), never a raw log line.
//!
//! The same types are written as JSON for people (RFC 3339 times, attribute values as
//! plain JSON scalars) and as compact bincode on the wire. Serde's `is_human_readable`
//! tells the two apart, so that no type needs two definitions.

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Well-known signal kinds. Kinds are open (rules may define new ones), so a kind is a
/// validated string, and these constants keep the built-in names in one place.
pub mod kinds {
    pub const AGENT_HEALTH: &str = "agent_health";
    pub const SSH_BRUTEFORCE: &str = "ssh_bruteforce";
    pub const SSH_LOGIN_AFTER_FAILURES: &str = "ssh_login_after_failures";
    pub const WEB_SCAN: &str = "web_scan";
    pub const WEB_EXPLOIT_ATTEMPT: &str = "web_exploit_attempt";
    pub const FILE_CHANGED: &str = "file_changed";
    pub const RANSOMWARE_ACTIVITY: &str = "ransomware_activity";
    pub const PORT_SCAN: &str = "port_scan";
    pub const SYN_FLOOD: &str = "syn_flood";
    pub const IOC_MATCH: &str = "ioc_match";
    pub const DNS_TUNNEL_SUSPECTED: &str = "dns_tunnel_suspected";
    pub const SUSPICIOUS_PROCESS: &str = "suspicious_process";
}

/// Bounds every signal must respect: the collector trusts no agent to keep them, and the
/// agent checks them before spooling so that a bad signal never blocks its queue.
pub mod limits {
    pub const MAX_KIND_LEN: usize = 64;
    pub const MAX_INDICATORS: usize = 64;
    pub const MAX_ATTRIBUTES: usize = 64;
    pub const MAX_TEXT_LEN: usize = 1024;
}

/// A 128-bit signal id, time-ordered (UUIDv7) so that the collector's unique index grows
/// at its end instead of being written at random places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SignalId(pub uuid::Uuid);

impl SignalId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
}

impl Default for SignalId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SignalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How bad it is. Ordered: `Info < Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Self::Info,
        Self::Low,
        Self::Medium,
        Self::High,
        Self::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// Rank used for storage and ordering (0 = info … 4 = critical).
    pub fn rank(self) -> u8 {
        self as u8
    }

    pub fn from_rank(rank: i64) -> Option<Self> {
        Self::ALL.get(usize::try_from(rank).ok()?).copied()
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that tables can align severities with `{:<10}`.
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|level| level.as_str() == s)
            .ok_or_else(|| {
                format!("unknown severity {s:?}: use info, low, medium, high or critical")
            })
    }
}

/// A point in time with nanosecond precision, stored as nanoseconds since the Unix epoch.
/// JSON shows it as RFC 3339; the wire carries the integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    pub fn from_datetime(at: OffsetDateTime) -> Self {
        // i64 nanoseconds cover 1677..2262: clamp instead of failing on absurd dates.
        let nanos = at
            .unix_timestamp_nanos()
            .clamp(i64::MIN as i128, i64::MAX as i128);
        Self(nanos as i64)
    }

    pub fn from_unix_millis(millis: i64) -> Self {
        Self(millis.saturating_mul(1_000_000))
    }

    pub fn unix_millis(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    pub fn to_datetime(self) -> OffsetDateTime {
        // Every i64 of nanoseconds is inside time's supported range.
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    pub fn to_rfc3339(self) -> String {
        self.to_datetime()
            .format(&Rfc3339)
            .unwrap_or_else(|_| self.0.to_string())
    }

    pub fn parse_rfc3339(text: &str) -> Result<Self, String> {
        OffsetDateTime::parse(text, &Rfc3339)
            .map(Self::from_datetime)
            .map_err(|error| format!("invalid RFC 3339 time {text:?}: {error}"))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_rfc3339())
        } else {
            serializer.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            Self::parse_rfc3339(&text).map_err(de::Error::custom)
        } else {
            i64::deserialize(deserializer).map(Self)
        }
    }
}

/// What an indicator names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndicatorType {
    Ip,
    Cidr,
    Domain,
    Url,
    Sha256,
    /// A user name, always pseudonymised by the agent's privacy filter.
    User,
    Port,
}

impl IndicatorType {
    pub const ALL: [IndicatorType; 7] = [
        Self::Ip,
        Self::Cidr,
        Self::Domain,
        Self::Url,
        Self::Sha256,
        Self::User,
        Self::Port,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Cidr => "cidr",
            Self::Domain => "domain",
            Self::Url => "url",
            Self::Sha256 => "sha256",
            Self::User => "user",
            Self::Port => "port",
        }
    }
}

impl std::str::FromStr for IndicatorType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| format!("unknown indicator type {s:?}"))
    }
}

/// Something an analyst can act on or correlate: an address, a domain, a file hash…
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Indicator {
    #[serde(rename = "type")]
    pub kind: IndicatorType,
    pub value: String,
}

impl Indicator {
    pub fn new(kind: IndicatorType, value: impl Into<String>) -> Self {
        Self {
            kind,
            value: value.into(),
        }
    }
}

/// One extra figure about a signal. JSON shows the bare scalar (`"distinct_users": 57`);
/// the wire keeps the variant tag, since bincode cannot guess types.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
}

impl From<i64> for AttributeValue {
    fn from(value: i64) -> Self {
        Self::Int(value)
    }
}
impl From<u64> for AttributeValue {
    fn from(value: u64) -> Self {
        Self::Int(i64::try_from(value).unwrap_or(i64::MAX))
    }
}
impl From<f64> for AttributeValue {
    fn from(value: f64) -> Self {
        Self::Float(value)
    }
}
impl From<bool> for AttributeValue {
    fn from(value: bool) -> Self {
        Self::Bool(value)
    }
}
impl From<&str> for AttributeValue {
    fn from(value: &str) -> Self {
        Self::Text(value.to_owned())
    }
}
impl From<String> for AttributeValue {
    fn from(value: String) -> Self {
        Self::Text(value)
    }
}

/// The tagged form used on the wire.
#[derive(Serialize, Deserialize)]
enum TaggedAttribute {
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
}

impl Serialize for AttributeValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            match self {
                Self::Int(value) => serializer.serialize_i64(*value),
                Self::Float(value) => serializer.serialize_f64(*value),
                Self::Bool(value) => serializer.serialize_bool(*value),
                Self::Text(value) => serializer.serialize_str(value),
            }
        } else {
            let tagged = match self {
                Self::Int(value) => TaggedAttribute::Int(*value),
                Self::Float(value) => TaggedAttribute::Float(*value),
                Self::Bool(value) => TaggedAttribute::Bool(*value),
                Self::Text(value) => TaggedAttribute::Text(value.clone()),
            };
            tagged.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for AttributeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if !deserializer.is_human_readable() {
            return Ok(match TaggedAttribute::deserialize(deserializer)? {
                TaggedAttribute::Int(value) => Self::Int(value),
                TaggedAttribute::Float(value) => Self::Float(value),
                TaggedAttribute::Bool(value) => Self::Bool(value),
                TaggedAttribute::Text(value) => Self::Text(value),
            });
        }
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = AttributeValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, a boolean or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(AttributeValue::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(AttributeValue::from(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(AttributeValue::Float(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(AttributeValue::Bool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(AttributeValue::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// A summarised signal. Org and agent are deliberately absent: the collector takes them
/// from the client certificate of the connection, never from what the agent claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    pub id: SignalId,
    pub kind: String,
    pub severity: Severity,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub count: u64,
    #[serde(
        default,
        deserialize_with = "crate::bounded::vec::<_, _, { limits::MAX_INDICATORS }>"
    )]
    pub indicators: Vec<Indicator>,
    #[serde(
        default,
        deserialize_with = "crate::bounded::map::<_, _, _, { limits::MAX_ATTRIBUTES }>"
    )]
    pub attributes: BTreeMap<String, AttributeValue>,
    #[serde(default)]
    pub mitre: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
}

/// Why a signal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    #[error("kind {0:?} is not snake_case ASCII of at most 64 characters")]
    Kind(String),
    #[error("count must be at least 1")]
    Count,
    #[error("first_seen is after last_seen")]
    TimeOrder,
    #[error("too many {what}: {got}, at most {limit}")]
    TooMany {
        what: &'static str,
        got: usize,
        limit: usize,
    },
    #[error("{what} is longer than {limit} bytes")]
    TooLong { what: &'static str, limit: usize },
    #[error("attribute {0:?} is not a finite number")]
    NotFinite(String),
}

impl Signal {
    /// A new signal of `kind` seen once, now.
    pub fn new(kind: impl Into<String>, severity: Severity, at: Timestamp) -> Self {
        Self {
            id: SignalId::new(),
            kind: kind.into(),
            severity,
            first_seen: at,
            last_seen: at,
            count: 1,
            indicators: Vec::new(),
            attributes: BTreeMap::new(),
            mitre: None,
            host: None,
        }
    }

    pub fn with_indicator(mut self, kind: IndicatorType, value: impl Into<String>) -> Self {
        self.indicators.push(Indicator::new(kind, value));
        self
    }

    pub fn with_attribute(mut self, key: &str, value: impl Into<AttributeValue>) -> Self {
        self.attributes.insert(key.to_owned(), value.into());
        self
    }

    /// Checks the bounds in [`limits`] and the internal consistency of the signal.
    pub fn validate(&self) -> Result<(), SignalError> {
        use limits::*;
        let kind_ok = !self.kind.is_empty()
            && self.kind.len() <= MAX_KIND_LEN
            && self.kind.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !kind_ok {
            return Err(SignalError::Kind(self.kind.chars().take(80).collect()));
        }
        if self.count == 0 {
            return Err(SignalError::Count);
        }
        if self.first_seen > self.last_seen {
            return Err(SignalError::TimeOrder);
        }
        if self.indicators.len() > MAX_INDICATORS {
            return Err(SignalError::TooMany {
                what: "indicators",
                got: self.indicators.len(),
                limit: MAX_INDICATORS,
            });
        }
        if self.attributes.len() > MAX_ATTRIBUTES {
            return Err(SignalError::TooMany {
                what: "attributes",
                got: self.attributes.len(),
                limit: MAX_ATTRIBUTES,
            });
        }
        let too_long = |what, text: &str| {
            if text.len() > MAX_TEXT_LEN {
                Err(SignalError::TooLong {
                    what,
                    limit: MAX_TEXT_LEN,
                })
            } else {
                Ok(())
            }
        };
        for indicator in &self.indicators {
            too_long("indicator value", &indicator.value)?;
        }
        for (key, value) in &self.attributes {
            too_long("attribute name", key)?;
            match value {
                AttributeValue::Text(text) => too_long("attribute value", text)?,
                // JSON has no NaN or infinity: such a value could not be read back.
                AttributeValue::Float(number) if !number.is_finite() => {
                    return Err(SignalError::NotFinite(key.chars().take(80).collect()));
                }
                _ => {}
            }
        }
        if let Some(mitre) = &self.mitre {
            too_long("mitre", mitre)?;
        }
        if let Some(host) = &self.host {
            too_long("host", host)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Signal {
        Signal::new(
            kinds::SSH_BRUTEFORCE,
            Severity::High,
            Timestamp(1_763_600_463_123_456_000),
        )
        .with_indicator(IndicatorType::Ip, "203.0.113.7")
        .with_attribute("distinct_users", 57_i64)
        .with_attribute("rate", 1.5)
        .with_attribute("scan_type", "syn")
    }

    #[test]
    fn json_is_for_people() {
        let signal = sample();
        let json = serde_json::to_value(&signal).expect("serialise");
        assert_eq!(json["first_seen"], "2025-11-20T01:01:03.123456Z");
        assert_eq!(json["severity"], "high");
        assert_eq!(json["indicators"][0]["type"], "ip");
        assert_eq!(json["attributes"]["distinct_users"], 57);
        assert_eq!(json["attributes"]["scan_type"], "syn");
        let back: Signal = serde_json::from_value(json).expect("deserialise");
        assert_eq!(back, signal);
    }

    #[test]
    fn validation_catches_each_bound() {
        assert_eq!(sample().validate(), Ok(()));
        let mut bad = sample();
        bad.kind = "SSH Brute".into();
        assert!(matches!(bad.validate(), Err(SignalError::Kind(_))));
        let mut bad = sample();
        bad.count = 0;
        assert_eq!(bad.validate(), Err(SignalError::Count));
        let mut bad = sample();
        bad.first_seen = Timestamp(bad.last_seen.0 + 1);
        assert_eq!(bad.validate(), Err(SignalError::TimeOrder));
        let mut bad = sample();
        bad.indicators = vec![Indicator::new(IndicatorType::Ip, "x"); 65];
        assert!(matches!(bad.validate(), Err(SignalError::TooMany { .. })));
        for number in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let bad = sample().with_attribute("rate", number);
            assert!(matches!(bad.validate(), Err(SignalError::NotFinite(_))));
        }
        let mut bad = sample();
        bad.host = Some("h".repeat(2000));
        assert!(matches!(bad.validate(), Err(SignalError::TooLong { .. })));
    }

    #[test]
    fn severity_orders_and_parses() {
        assert!(Severity::Info < Severity::Critical);
        assert_eq!("medium".parse::<Severity>(), Ok(Severity::Medium));
        assert_eq!(Severity::from_rank(4), Some(Severity::Critical));
        assert_eq!(Severity::from_rank(9), None);
    }
}
