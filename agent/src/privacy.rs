//! The privacy filter: the last step before anything leaves the host.
//!
//! Private and internal addresses, user names and the host name are replaced by keyed
//! pseudonyms (`pn:` + 16 hex digits of HMAC-SHA256 under a key created at first run,
//! 0600, never sent). The same value gives the same pseudonym on this host, so the
//! collector can count ("57 accounts") without learning names, and pseudonyms of two
//! members never match, so they cannot be correlated across organisations. Members choose
//! which signal kinds leave at all, and may opt in to sending names in clear.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::Path;
use vedetta_common::files::write_private;
use vedetta_common::{IndicatorType, Signal};

/// What leaves the host, in `[privacy]` of the agent configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Signal kinds that never leave this host.
    #[serde(default)]
    pub deny_kinds: Vec<String>,
    /// When set, only these signal kinds leave this host.
    #[serde(default)]
    pub allow_kinds: Option<Vec<String>>,
    /// Send this host's name in clear (default: a pseudonym).
    #[serde(default)]
    pub share_hostname: bool,
    /// Send user names in clear (default: pseudonyms).
    #[serde(default)]
    pub share_users: bool,
    /// Send private and internal addresses in clear (default: pseudonyms).
    #[serde(default)]
    pub share_internal_addresses: bool,
    /// Send file paths in clear (default: their class and a pseudonym).
    #[serde(default)]
    pub share_file_paths: bool,
    /// More networks to treat as internal, e.g. the member's own public ranges
    /// (`["198.51.100.0/24"]`). Private, loopback and link-local ranges always are.
    #[serde(default)]
    pub internal_networks: Vec<String>,
}

/// A network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl Network {
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid =
            || format!("invalid network {text:?}: expected e.g. 198.51.100.0/24 or 2001:db8::/32");
        let (address, prefix) = text.split_once('/').ok_or_else(invalid)?;
        let address: IpAddr = address.trim().parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.trim().parse().map_err(|_| invalid())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(invalid());
        }
        Ok(Self { address, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u32) {
            match ip {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ((network, width), (candidate, other)) = (bits(self.address), bits(ip));
        if width != other {
            return false;
        }
        let shift = width - u32::from(self.prefix);
        shift >= width || network >> shift == candidate >> shift
    }
}

/// Addresses that identify the member's inside rather than the outside world.
pub use vedetta_common::address::is_internal;

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error("cannot {action} the privacy key {path}: {source}")]
    Key {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("the privacy key {0} is damaged (expected 32 bytes)")]
    Damaged(String),
    #[error("{0}")]
    Config(String),
}

/// Attributes that hold file paths (see `detect::files`).
const PATH_ATTRIBUTES: &[&str] = &["path", "from_path", "sample_path"];
/// Attributes that hold one of the member's own addresses (see `detect::network`):
/// pseudonymised, public or private, unless the member shares internal addresses.
const ADDRESS_ATTRIBUTES: &[&str] = &["target", "host_address"];

/// The filter, with its key.
pub struct PrivacyFilter {
    key: ring::hmac::Key,
    secret: [u8; 32],
    config: PrivacyConfig,
    internal: Vec<Network>,
    host: Option<String>,
}

impl std::fmt::Debug for PrivacyFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("PrivacyFilter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Loads the key from `path`, creating it (0600) on first run.
fn load_key(path: &Path) -> Result<[u8; 32], PrivacyError> {
    use ring::rand::SecureRandom;
    match std::fs::read(path) {
        Ok(bytes) => bytes
            .try_into()
            .map_err(|_| PrivacyError::Damaged(path.display().to_string())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            ring::rand::SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| PrivacyError::Damaged("no system randomness".into()))?;
            write_private(path, &key).map_err(|source| PrivacyError::Key {
                action: "create",
                path: path.display().to_string(),
                source,
            })?;
            Ok(key)
        }
        Err(source) => Err(PrivacyError::Key {
            action: "read",
            path: path.display().to_string(),
            source,
        }),
    }
}

impl PrivacyFilter {
    /// `key_path` is created on first run; `host` is this host's name.
    pub fn open(
        key_path: &Path,
        config: PrivacyConfig,
        host: Option<String>,
    ) -> Result<Self, PrivacyError> {
        Self::with_secret(load_key(key_path)?, config, host)
    }

    pub fn with_secret(
        secret: [u8; 32],
        config: PrivacyConfig,
        host: Option<String>,
    ) -> Result<Self, PrivacyError> {
        let internal = config
            .internal_networks
            .iter()
            .map(|text| Network::parse(text))
            .collect::<Result<_, _>>()
            .map_err(PrivacyError::Config)?;
        Ok(Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            secret,
            config,
            internal,
            host,
        })
    }

    /// A secret derived from the key for other uses (signal ids), never the key itself.
    pub fn derived_secret(&self, purpose: &str) -> [u8; 32] {
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.secret),
            purpose.as_bytes(),
        );
        let mut out = [0u8; 32];
        out.copy_from_slice(&tag.as_ref()[..32]);
        out
    }

    pub fn pseudonym(&self, class: &str, value: &str) -> String {
        let mut context = ring::hmac::Context::with_key(&self.key);
        context.update(class.as_bytes());
        context.update(b"\0");
        context.update(value.as_bytes());
        let tag = context.sign();
        format!("pn:{}", vedetta_common::identity::hex(&tag.as_ref()[..8]))
    }

    fn internal(&self, ip: IpAddr) -> bool {
        is_internal(ip) || self.internal.iter().any(|network| network.contains(ip))
    }

    pub fn shares_kind(&self, kind: &str) -> bool {
        !self.config.deny_kinds.iter().any(|k| k == kind)
            && self
                .config
                .allow_kinds
                .as_ref()
                .is_none_or(|allowed| allowed.iter().any(|k| k == kind))
    }

    /// What may leave of `signal`: `None` if its kind stays on this host.
    pub fn apply(&self, mut signal: Signal) -> Option<Signal> {
        if !self.shares_kind(&signal.kind) {
            return None;
        }
        for indicator in &mut signal.indicators {
            match indicator.kind {
                IndicatorType::User if !self.config.share_users => {
                    indicator.value = self.pseudonym("user", &indicator.value);
                }
                IndicatorType::Ip | IndicatorType::Cidr
                    if !self.config.share_internal_addresses =>
                {
                    let address = indicator.value.split('/').next().unwrap_or("");
                    if address.parse().is_ok_and(|ip| self.internal(ip)) {
                        indicator.value = self.pseudonym("ip", &indicator.value);
                    }
                }
                // A host name (old PAM `rhost=`) may name an inside machine: only
                // fully qualified names leave in clear.
                IndicatorType::Domain
                    if !self.config.share_internal_addresses && !indicator.value.contains('.') =>
                {
                    indicator.value = self.pseudonym("host", &indicator.value);
                }
                _ => {}
            }
        }
        if !self.config.share_internal_addresses {
            // The member's own addresses, public ones included (an IPv6 address may even
            // carry a MAC address).
            for name in ADDRESS_ATTRIBUTES {
                if let Some(vedetta_common::AttributeValue::Text(address)) =
                    signal.attributes.get_mut(*name)
                {
                    *address = self.pseudonym("ip", address);
                }
            }
        }
        if !self.config.share_file_paths {
            for name in PATH_ATTRIBUTES {
                if let Some(vedetta_common::AttributeValue::Text(path)) =
                    signal.attributes.get_mut(*name)
                {
                    *path = self.pseudonym("path", path);
                }
            }
        }
        signal.host = self.host.as_ref().map(|host| {
            if self.config.share_hostname {
                host.clone()
            } else {
                self.pseudonym("host", host)
            }
        });
        Some(signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vedetta_common::{Severity, Timestamp};

    fn filter(config: PrivacyConfig) -> PrivacyFilter {
        PrivacyFilter::with_secret([7; 32], config, Some("db-prod-1".into())).expect("filter")
    }

    fn signal() -> Signal {
        Signal::new("ssh_login_after_failures", Severity::Critical, Timestamp(0))
            .with_indicator(IndicatorType::Ip, "10.1.2.3")
            .with_indicator(IndicatorType::Ip, "203.0.113.7")
            .with_indicator(IndicatorType::User, "deploy")
            .with_indicator(IndicatorType::Ip, "fd00::5")
            .with_indicator(IndicatorType::Ip, "198.51.100.9")
    }

    #[test]
    fn internal_things_become_stable_pseudonyms_and_outside_attackers_stay() {
        let out = filter(PrivacyConfig {
            internal_networks: vec!["198.51.100.0/24".into()],
            ..PrivacyConfig::default()
        })
        .apply(signal())
        .expect("shared");
        let values: Vec<&str> = out.indicators.iter().map(|i| i.value.as_str()).collect();
        assert!(values[0].starts_with("pn:") && values[0].len() == 19);
        assert_eq!(values[1], "203.0.113.7");
        assert!(values[2].starts_with("pn:"));
        assert!(values[3].starts_with("pn:"));
        assert!(values[4].starts_with("pn:"), "a declared internal network");
        assert!(out.host.as_deref().is_some_and(|h| h.starts_with("pn:")));
        // Stable on this host, different under another key.
        let again = filter(PrivacyConfig::default())
            .apply(signal())
            .expect("shared");
        assert_eq!(again.indicators[2].value, out.indicators[2].value);
        let other = PrivacyFilter::with_secret([8; 32], PrivacyConfig::default(), None)
            .expect("filter")
            .apply(signal())
            .expect("shared");
        assert_ne!(other.indicators[2].value, out.indicators[2].value);
    }

    #[test]
    fn file_paths_leave_as_pseudonyms_unless_shared() {
        let file_signal = || {
            Signal::new("file_changed", Severity::High, Timestamp(0))
                .with_attribute("path", "/home/alice/.ssh/authorized_keys")
                .with_attribute("from_path", "/home/alice/.ssh/authorized_keys.new")
                .with_attribute("path_class", "ssh_keys")
                .with_indicator(IndicatorType::Sha256, "ab".repeat(32))
        };
        let out = filter(PrivacyConfig::default())
            .apply(file_signal())
            .expect("shared");
        let text = |name: &str| match out.attributes.get(name) {
            Some(vedetta_common::AttributeValue::Text(text)) => text.clone(),
            other => panic!("{name}: {other:?}"),
        };
        assert!(text("path").starts_with("pn:"));
        assert!(text("from_path").starts_with("pn:"));
        assert_ne!(text("path"), text("from_path"));
        // The class and the hash are what the operations centre correlates on.
        assert_eq!(text("path_class"), "ssh_keys");
        assert_eq!(out.indicators[0].value, "ab".repeat(32));
        let shared = filter(PrivacyConfig {
            share_file_paths: true,
            ..PrivacyConfig::default()
        })
        .apply(file_signal())
        .expect("shared");
        assert_eq!(
            shared.attributes.get("path"),
            Some(&vedetta_common::AttributeValue::Text(
                "/home/alice/.ssh/authorized_keys".into()
            ))
        );
    }

    #[test]
    fn members_choose_what_leaves() {
        let open = filter(PrivacyConfig {
            share_users: true,
            share_hostname: true,
            share_internal_addresses: true,
            ..PrivacyConfig::default()
        })
        .apply(signal())
        .expect("shared");
        assert_eq!(open.indicators[0].value, "10.1.2.3");
        assert_eq!(open.indicators[2].value, "deploy");
        assert_eq!(open.host.as_deref(), Some("db-prod-1"));
        let denied = filter(PrivacyConfig {
            deny_kinds: vec!["ssh_login_after_failures".into()],
            ..PrivacyConfig::default()
        });
        assert!(denied.apply(signal()).is_none());
        let allow = filter(PrivacyConfig {
            allow_kinds: Some(vec!["web_scan".into()]),
            ..PrivacyConfig::default()
        });
        assert!(allow.apply(signal()).is_none());
        assert!(allow.shares_kind("web_scan"));
    }

    #[test]
    fn networks_and_the_key_file() {
        let net = Network::parse("10.0.0.0/8").expect("net");
        assert!(net.contains("10.255.0.1".parse().expect("ip")));
        assert!(!net.contains("11.0.0.1".parse().expect("ip")));
        assert!(!net.contains("::1".parse().expect("ip")));
        assert!(
            Network::parse("2001:db8::/32")
                .expect("v6")
                .contains("2001:db8:1::1".parse().expect("ip"))
        );
        assert!(
            Network::parse("0.0.0.0/0")
                .expect("all")
                .contains("8.8.8.8".parse().expect("ip"))
        );
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(is_internal("100.64.0.1".parse().expect("cgnat")));
        assert!(!is_internal("8.8.8.8".parse().expect("public")));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("privacy.key");
        let first = load_key(&path).expect("create");
        assert_eq!(load_key(&path).expect("reload"), first);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&path, b"short").expect("damage");
        assert!(matches!(load_key(&path), Err(PrivacyError::Damaged(_))));
        let debug = format!("{:?}", filter(PrivacyConfig::default()));
        assert!(!debug.contains("7, 7"), "the key is never printed");
    }
}
