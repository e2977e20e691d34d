//! Advisories as a lookup table: the indicators the operations centre published (and a
//! member's own lists), ready to be matched against what the sources see. Pure logic:
//! the files they come from are read by `crate::advisories`, and the detectors
//! (`network`, `ioc` for log events, `files`) decide what a match means.
//!
//! * `ip`: an exact address; `cidr`: a network (the longest advised prefix wins, found
//!   with one hash lookup per distinct prefix length, so that 100,000 networks cost no
//!   more per address than a few);
//! * `domain`: the name and every name under it (`evil.example` advises
//!   `cdn.evil.example`);
//! * `sha256`: a file's content.
//!
//! Every value is checked and put in one canonical form when it is added, so that a
//! garbage indicator from the wire or a hand-edited file is refused on its own (the
//! others still apply) and never reaches a match.
//!
//! Expiry is decided against the wall clock, not at each match: whoever holds the table
//! calls [`Advisories::expire`] when [`Advisories::next_expiry`] has passed (the
//! advisory feed does, for every source at once). Matching stays free of clocks, and an
//! expired indicator is gone for good rather than checked on every packet.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use vedetta_common::{IndicatorType, Severity, Timestamp};

/// The longest domain name (RFC 1035).
const MAX_DOMAIN: usize = 253;
/// The SHA-256 of no content at all: advising it would flag every empty file.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What an advisory says of an indicator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advised {
    /// The advisory's identifier (`ADV-…`), quoted by the `ioc_match` it causes.
    pub advisory: String,
    pub severity: Severity,
    /// After this the indicator is no longer matched; `None`: until withdrawn.
    pub expires_at: Option<Timestamp>,
}

impl Advised {
    pub fn new(advisory: impl Into<String>, severity: Severity) -> Self {
        Self {
            advisory: advisory.into(),
            severity,
            expires_at: None,
        }
    }

    pub fn expiring(mut self, at: Timestamp) -> Self {
        self.expires_at = Some(at);
        self
    }

    fn expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Why an indicator cannot be matched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndicatorError {
    #[error("{0:?} is not an IP address")]
    Ip(String),
    #[error("{0:?} is not a network (expected e.g. 198.51.100.0/24 or 2001:db8::/32)")]
    Cidr(String),
    #[error("{0:?} is not a domain name")]
    Domain(String),
    #[error("{0:?} is not a SHA-256 (64 hex digits)")]
    Sha256(String),
    #[error("the SHA-256 of empty content would match every empty file")]
    EmptySha256,
    #[error("{0} indicators are not matched by the agent")]
    Unsupported(&'static str),
}

/// A network: its address masked to the prefix, as a number, and the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct NetworkKey {
    v6: bool,
    prefix: u8,
    bits: u128,
}

fn address_bits(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (true, u128::from(v6)),
    }
}

fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
    let shift = width - u32::from(prefix);
    if shift >= 128 { 0 } else { bits >> shift }
}

impl NetworkKey {
    fn of(ip: IpAddr, prefix: u8) -> Self {
        let (v6, bits) = address_bits(ip);
        let width = if v6 { 128 } else { 32 };
        Self {
            v6,
            prefix,
            bits: masked(bits, width, prefix),
        }
    }
}

/// Parses `address/prefix`.
fn parse_network(text: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = text.split_once('/')?;
    let address: IpAddr = address.trim().parse().ok()?;
    let prefix: u8 = prefix.trim().parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((address, prefix))
}

/// A domain in canonical form: lower case, no final dot; `None` if it is no name.
fn canonical_domain(text: &str) -> Option<String> {
    let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= MAX_DOMAIN
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then_some(name)
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (index, pair) in text.as_bytes().chunks(2).enumerate() {
        let digits = std::str::from_utf8(pair).ok()?;
        out[index] = u8::from_str_radix(digits, 16).ok()?;
    }
    Some(out)
}

/// The canonical form of an indicator the agent can match (what `ioc_match` signals
/// carry and what the advisories file stores), or why it cannot be matched.
pub fn normalise(kind: IndicatorType, value: &str) -> Result<String, IndicatorError> {
    match kind {
        IndicatorType::Ip => value
            .trim()
            .parse::<IpAddr>()
            .map(|ip| ip.to_string())
            .map_err(|_| IndicatorError::Ip(value.to_owned())),
        IndicatorType::Cidr => parse_network(value)
            .map(|(address, prefix)| format!("{address}/{prefix}"))
            .ok_or_else(|| IndicatorError::Cidr(value.to_owned())),
        IndicatorType::Domain => {
            canonical_domain(value).ok_or_else(|| IndicatorError::Domain(value.to_owned()))
        }
        IndicatorType::Sha256 => {
            parse_sha256(value).ok_or_else(|| IndicatorError::Sha256(value.to_owned()))?;
            let hex = value.trim().to_ascii_lowercase();
            if hex == EMPTY_SHA256 {
                return Err(IndicatorError::EmptySha256);
            }
            Ok(hex)
        }
        other => Err(IndicatorError::Unsupported(other.as_str())),
    }
}

/// A match: the advised indicator (as advised, canonical) and what the advisory says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match<'a> {
    pub kind: IndicatorType,
    pub value: &'a str,
    pub advised: &'a Advised,
}

/// Indicators pushed by the collector (or listed locally), to be matched.
#[derive(Debug, Clone, Default)]
pub struct Advisories {
    addresses: HashMap<IpAddr, (String, Advised)>,
    networks: HashMap<NetworkKey, (String, Advised)>,
    /// The prefix lengths present, longest first: the most specific network wins.
    prefixes: BTreeSet<(std::cmp::Reverse<u8>, bool)>,
    domains: HashMap<String, (String, Advised)>,
    hashes: HashMap<[u8; 32], (String, Advised)>,
    /// The earliest `expires_at` of any entry (maybe of one since replaced: then the
    /// next [`Advisories::expire`] finds nothing and looks again).
    next_expiry: Option<Timestamp>,
}

impl Advisories {
    /// Adds an indicator (`ip`, `cidr`, `domain` or `sha256`). The same indicator
    /// advised again replaces the earlier entry.
    pub fn add(
        &mut self,
        kind: IndicatorType,
        value: &str,
        advised: Advised,
    ) -> Result<(), IndicatorError> {
        let canonical = normalise(kind, value)?;
        if let Some(at) = advised.expires_at {
            self.next_expiry = Some(self.next_expiry.map_or(at, |next| next.min(at)));
        }
        match kind {
            IndicatorType::Ip => {
                let ip = canonical
                    .parse()
                    .map_err(|_| IndicatorError::Ip(value.to_owned()))?;
                self.addresses.insert(ip, (canonical, advised));
            }
            IndicatorType::Cidr => {
                let (address, prefix) =
                    parse_network(&canonical).ok_or_else(|| IndicatorError::Cidr(value.into()))?;
                let key = NetworkKey::of(address, prefix);
                self.prefixes
                    .insert((std::cmp::Reverse(key.prefix), key.v6));
                self.networks.insert(key, (canonical, advised));
            }
            IndicatorType::Domain => {
                self.domains.insert(canonical.clone(), (canonical, advised));
            }
            IndicatorType::Sha256 => {
                let hash = parse_sha256(&canonical)
                    .ok_or_else(|| IndicatorError::Sha256(value.to_owned()))?;
                self.hashes.insert(hash, (canonical, advised));
            }
            other => return Err(IndicatorError::Unsupported(other.as_str())),
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.addresses.len() + self.networks.len() + self.domains.len() + self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether any address or network is advised (lets a detector skip the lookup).
    pub fn has_addresses(&self) -> bool {
        !self.addresses.is_empty() || !self.networks.is_empty()
    }

    pub fn has_domains(&self) -> bool {
        !self.domains.is_empty()
    }

    pub fn has_hashes(&self) -> bool {
        !self.hashes.is_empty()
    }

    /// When the next entry expires: [`Advisories::expire`] is due then.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.next_expiry
    }

    /// Forgets every entry whose expiry is at or before `now`; returns how many.
    pub fn expire(&mut self, now: Timestamp) -> usize {
        if self.next_expiry.is_none_or(|next| next > now) {
            return 0;
        }
        let before = self.len();
        let mut next: Option<Timestamp> = None;
        let mut keep = |(_, advised): &(String, Advised)| {
            if advised.expired(now) {
                return false;
            }
            if let Some(at) = advised.expires_at {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            true
        };
        self.addresses.retain(|_, entry| keep(entry));
        self.networks.retain(|_, entry| keep(entry));
        self.domains.retain(|_, entry| keep(entry));
        self.hashes.retain(|_, entry| keep(entry));
        self.next_expiry = next;
        self.prefixes = self
            .networks
            .keys()
            .map(|key| (std::cmp::Reverse(key.prefix), key.v6))
            .collect();
        before - self.len()
    }

    /// The advised address or network `ip` falls under (the address itself first, then
    /// the most specific network).
    pub fn address(&self, ip: IpAddr) -> Option<Match<'_>> {
        if let Some((value, advised)) = self.addresses.get(&ip) {
            return Some(Match {
                kind: IndicatorType::Ip,
                value,
                advised,
            });
        }
        if self.networks.is_empty() {
            return None;
        }
        let (v6, bits) = address_bits(ip);
        let width = if v6 { 128 } else { 32 };
        self.prefixes
            .iter()
            .filter(|(_, family)| *family == v6)
            .find_map(|&(std::cmp::Reverse(prefix), _)| {
                let key = NetworkKey {
                    v6,
                    prefix,
                    bits: masked(bits, width, prefix),
                };
                self.networks.get(&key)
            })
            .map(|(value, advised)| Match {
                kind: IndicatorType::Cidr,
                value,
                advised,
            })
    }

    /// The advised domain `name` is, or is under (case and a final dot do not matter).
    pub fn domain(&self, name: &str) -> Option<Match<'_>> {
        if self.domains.is_empty() {
            return None;
        }
        let name = name.trim_end_matches('.');
        let lowered;
        let mut rest = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = name.to_ascii_lowercase();
            lowered.as_str()
        } else {
            name
        };
        loop {
            if let Some((value, advised)) = self.domains.get(rest) {
                return Some(Match {
                    kind: IndicatorType::Domain,
                    value,
                    advised,
                });
            }
            rest = rest.split_once('.')?.1;
        }
    }

    /// The advisory of a file content.
    pub fn sha256(&self, hash: &[u8; 32]) -> Option<Match<'_>> {
        self.hashes.get(hash).map(|(value, advised)| Match {
            kind: IndicatorType::Sha256,
            value,
            advised,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000_000;

    fn advised(id: &str) -> Advised {
        Advised::new(id, Severity::High)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn addresses_networks_domains_and_hashes_match() {
        let mut table = Advisories::default();
        table
            .add(IndicatorType::Ip, " 203.0.113.7 ", advised("A"))
            .expect("ip");
        table
            .add(IndicatorType::Cidr, "192.0.2.0/24", advised("B"))
            .expect("cidr");
        table
            .add(IndicatorType::Cidr, "192.0.2.128/25", advised("C"))
            .expect("cidr");
        table
            .add(IndicatorType::Cidr, "2001:db8::/32", advised("D"))
            .expect("v6");
        table
            .add(IndicatorType::Domain, "Evil.Example.", advised("E"))
            .expect("domain");
        let hash = "AB".repeat(32);
        table
            .add(IndicatorType::Sha256, &hash, advised("F"))
            .expect("sha256");
        assert_eq!(table.len(), 6);

        let found = table.address(ip("203.0.113.7")).expect("exact");
        assert_eq!(
            (found.kind, found.value),
            (IndicatorType::Ip, "203.0.113.7")
        );
        assert_eq!(found.advised.advisory, "A");
        // The most specific network wins.
        let found = table.address(ip("192.0.2.200")).expect("narrow");
        assert_eq!(
            (found.value, found.advised.advisory.as_str()),
            ("192.0.2.128/25", "C")
        );
        let found = table.address(ip("192.0.2.5")).expect("wide");
        assert_eq!(found.value, "192.0.2.0/24");
        assert_eq!(
            table.address(ip("2001:db8:1::9")).map(|m| m.value),
            Some("2001:db8::/32")
        );
        assert!(table.address(ip("198.51.100.1")).is_none());
        // An IPv4 address never falls into an IPv6 network of the same bits.
        assert!(table.address(ip("32.1.13.184")).is_none());

        assert_eq!(
            table.domain("CDN.evil.example.").map(|m| m.value),
            Some("evil.example")
        );
        assert_eq!(
            table.domain("evil.example").map(|m| m.value),
            Some("evil.example")
        );
        assert!(table.domain("notevil.example").is_none());
        assert!(table.domain("example").is_none());

        assert_eq!(
            table
                .sha256(&[0xab; 32])
                .map(|m| (m.kind, m.value.to_owned())),
            Some((IndicatorType::Sha256, "ab".repeat(32)))
        );
        assert!(table.sha256(&[0xac; 32]).is_none());
    }

    #[test]
    fn garbage_is_refused_one_by_one() {
        let mut table = Advisories::default();
        for (kind, value) in [
            (IndicatorType::Ip, "999.1.1.1"),
            (IndicatorType::Ip, ""),
            (IndicatorType::Cidr, "10.0.0.0/33"),
            (IndicatorType::Cidr, "10.0.0.0"),
            (IndicatorType::Domain, "evil..example"),
            (IndicatorType::Domain, "evil example"),
            (IndicatorType::Domain, &"a".repeat(300)),
            (IndicatorType::Sha256, "abc"),
            (IndicatorType::Sha256, &"zz".repeat(32)),
            (IndicatorType::Sha256, EMPTY_SHA256),
            (IndicatorType::Url, "http://evil.example/x"),
            (IndicatorType::User, "root"),
        ] {
            assert!(
                table.add(kind, value, advised("X")).is_err(),
                "{kind:?} {value:?}"
            );
        }
        assert!(table.is_empty());
        table
            .add(IndicatorType::Ip, "2001:DB8::1", advised("ok"))
            .expect("valid");
        assert_eq!(
            table.address(ip("2001:db8::1")).map(|m| m.value),
            Some("2001:db8::1")
        );
    }

    #[test]
    fn expired_entries_stop_matching_when_their_time_passes() {
        let now = Timestamp(1_800_000_000 * SECOND);
        let mut table = Advisories::default();
        table
            .add(
                IndicatorType::Ip,
                "203.0.113.7",
                advised("soon").expiring(Timestamp(now.0 + 10 * SECOND)),
            )
            .expect("ip");
        table
            .add(
                IndicatorType::Cidr,
                "198.51.100.0/24",
                advised("later").expiring(Timestamp(now.0 + 60 * SECOND)),
            )
            .expect("cidr");
        table
            .add(IndicatorType::Domain, "evil.example", advised("forever"))
            .expect("domain");
        assert_eq!(table.next_expiry(), Some(Timestamp(now.0 + 10 * SECOND)));
        assert_eq!(table.expire(now), 0);
        assert!(table.address(ip("203.0.113.7")).is_some());

        assert_eq!(table.expire(Timestamp(now.0 + 10 * SECOND)), 1);
        assert!(table.address(ip("203.0.113.7")).is_none());
        assert!(table.address(ip("198.51.100.9")).is_some());
        assert_eq!(table.next_expiry(), Some(Timestamp(now.0 + 60 * SECOND)));

        assert_eq!(table.expire(Timestamp(now.0 + 3600 * SECOND)), 1);
        assert!(table.address(ip("198.51.100.9")).is_none());
        assert_eq!(table.next_expiry(), None);
        assert!(table.domain("www.evil.example").is_some(), "no expiry");
    }
}
