//! Who is who: the names both sides agree on, certificate fingerprints, and how an agent's
//! org and id are read from its certificate (the only place the collector takes them from).

use ring::digest;
use x509_parser::prelude::{FromDer, X509Certificate};

/// ALPN of the signal protocol (mutual TLS required).
pub const ALPN: &[u8] = b"vedetta/1";
/// ALPN of enrollment: the agent has no certificate yet and pins the CA by fingerprint.
pub const ALPN_ENROLL: &[u8] = b"vedetta-enroll/1";
/// The name in the collector's server certificate that agents verify. A private CA that
/// the agent pins makes DNS names irrelevant, and a fixed name lets agents reach the
/// collector through any address, NAT or load balancer.
pub const SERVER_NAME: &str = "vedetta-collector";

/// SHA-256 of a DER certificate as lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, der).as_ref())
}

/// SHA-256 of any bytes as lowercase hex (tokens, keys).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

/// Accepts a fingerprint as people paste it: any case, with or without `:` separators
/// or a `sha256:` prefix.
pub fn normalize_fingerprint(text: &str) -> Result<String, String> {
    let text = text.trim();
    let text = text
        .strip_prefix("sha256:")
        .or_else(|| text.strip_prefix("SHA256:"))
        .unwrap_or(text);
    let hex: String = text
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(format!(
            "{text:?} is not a SHA-256 fingerprint (64 hex digits, as printed by `vedetta-collector init`)"
        ))
    }
}

/// Org names and agent ids: lowercase ASCII letters, digits, `-`, `_` and `.`, starting
/// with a letter or digit, at most 63 characters. They appear in certificates, file names
/// and URLs, so they are kept boring.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} {name:?}: use 1-63 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))
    }
}

/// An agent as its certificate names it: organisation (O) and agent id (CN).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentIdentity {
    pub org: String,
    pub agent_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate cannot be parsed: {0}")]
    Parse(String),
    #[error("certificate has no {0}")]
    Missing(&'static str),
    #[error("certificate names {0}")]
    Invalid(String),
}

impl AgentIdentity {
    /// Reads org and agent id from a DER client certificate that the TLS layer has already
    /// verified against the collector's CA.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, certificate) = X509Certificate::from_der(der)
            .map_err(|error| IdentityError::Parse(error.to_string()))?;
        let subject = certificate.subject();
        fn single<'a>(
            mut values: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
            what: &'static str,
        ) -> Result<String, IdentityError> {
            let value = values.next().ok_or(IdentityError::Missing(what))?;
            if values.next().is_some() {
                return Err(IdentityError::Invalid(format!("several {what}")));
            }
            value
                .as_str()
                .map(str::to_owned)
                .map_err(|_| IdentityError::Invalid(format!("a non-text {what}")))
        }
        let org = single(subject.iter_organization(), "organization (O)")?;
        let agent_id = single(subject.iter_common_name(), "common name (CN)")?;
        validate_name("org", &org).map_err(IdentityError::Invalid)?;
        validate_name("agent id", &agent_id).map_err(IdentityError::Invalid)?;
        Ok(Self { org, agent_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_normalised() {
        let plain = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(normalize_fingerprint(&colons), Ok(plain.clone()));
        assert_eq!(normalize_fingerprint(&format!("sha256:{plain}")), Ok(plain));
        assert!(normalize_fingerprint("abcd").is_err());
        assert!(normalize_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn names_are_boring() {
        assert!(validate_name("org", "comune-di-roma").is_ok());
        assert!(validate_name("org", "bank.1_x").is_ok());
        assert!(validate_name("org", "").is_err());
        assert!(validate_name("org", "-x").is_err());
        assert!(validate_name("org", "Roma").is_err());
        assert!(validate_name("org", "a/b").is_err());
        assert!(validate_name("org", &"a".repeat(64)).is_err());
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(
            AgentIdentity::from_certificate(b"not a certificate"),
            Err(IdentityError::Parse(_))
        ));
    }
}
