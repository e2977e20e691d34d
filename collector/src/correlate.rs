//! Correlation: the reason the collector exists. Pure decisions over plain data, with the
//! time passed in (never read from a clock here), so that every rule is unit-tested with
//! an injected clock. The store feeds these functions the state it keeps and writes their
//! answer back in the same transaction as the signals (`store::sqlite`), so a restart
//! loses nothing and several collector nodes sharing one database agree.
//!
//! * **Campaigns**: an indicator (address, network, domain, URL, SHA-256) seen in signals
//!   of at least `min_orgs` distinct organisations within `window` becomes a campaign. It
//!   grows as organisations, signals and kinds join, and closes after `quiet_period`
//!   without a new signal. Shared infrastructure (public resolvers, CDNs, the members'
//!   own declared addresses, an operator's list) never correlates; nor do private
//!   addresses or pseudonyms, which mean different things at different members.
//! * **Incidents**: inside one organisation, a chain of steps from the same source (scan
//!   → brute force → login after failures) or on the same host (exploit attempt → web
//!   shell), in order, within `window`.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::time::Duration;
use vedetta_common::address::is_local_or_group;
use vedetta_common::duration::serde_human;
use vedetta_common::{Indicator, IndicatorType, Severity, Timestamp};

/// `[correlation]` in `collector.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationConfig {
    /// Distinct organisations that must see an indicator for it to become a campaign.
    #[serde(default = "default_min_orgs")]
    pub min_orgs: usize,
    /// How close in time (event time) the sightings of different organisations must be.
    #[serde(default = "default_window", with = "serde_human")]
    pub window: Duration,
    /// A campaign or incident with no new signal for this long is closed.
    #[serde(default = "default_quiet_period", with = "serde_human")]
    pub quiet_period: Duration,
    /// Indicator types that correlate across organisations.
    #[serde(default = "default_types")]
    pub indicator_types: Vec<IndicatorType>,
    /// Also never correlate the well-known shared infrastructure built in (public DNS
    /// resolvers, CDN and cloud front domains).
    #[serde(default = "default_true")]
    pub builtin_allowlist: bool,
    /// Addresses, networks (CIDR) and domains (with the names under them) that never
    /// correlate. The members' own declared addresses (`org add --address`) are added.
    #[serde(default)]
    pub allowlist: Vec<String>,
    /// Chains of signal kinds inside one organisation that raise an incident.
    #[serde(default = "default_chains")]
    pub chains: Vec<ChainRule>,
    #[serde(default)]
    pub auto_advisory: AutoAdvisory,
}

/// Whether a campaign publishes its indicator as an advisory by itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoAdvisory {
    #[serde(default)]
    pub enabled: bool,
    /// Organisations the campaign must reach first.
    #[serde(default = "default_auto_orgs")]
    pub min_orgs: usize,
    /// Lowest campaign severity that publishes.
    #[serde(default = "default_auto_severity")]
    pub min_severity: Severity,
    /// How long the advisory stays in force.
    #[serde(default = "default_auto_ttl", with = "serde_human")]
    pub expires_after: Duration,
}

impl Default for AutoAdvisory {
    fn default() -> Self {
        Self {
            enabled: false,
            min_orgs: default_auto_orgs(),
            min_severity: default_auto_severity(),
            expires_after: default_auto_ttl(),
        }
    }
}

/// A chain of steps, each a set of signal kinds, keyed by the same source or host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainRule {
    pub name: String,
    /// What the steps must share: `source` (the same `ip` indicator) or `host` (the same
    /// agent).
    pub key: ChainKey,
    /// The steps in order; a step is any of its kinds.
    pub steps: Vec<Vec<String>>,
    /// Steps (in order) needed to raise the incident.
    #[serde(default = "default_min_steps")]
    pub min_steps: usize,
    /// The incident's severity once the last step is reached (a login after brute
    /// force is a compromise; an exploit attempt after a scan is not yet one).
    #[serde(default = "default_completed_severity")]
    pub completed_severity: Severity,
}

fn default_completed_severity() -> Severity {
    Severity::Critical
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainKey {
    Source,
    Host,
}

impl ChainKey {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Host => "host",
        }
    }
}

fn default_min_orgs() -> usize {
    2
}
fn default_window() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_quiet_period() -> Duration {
    Duration::from_secs(48 * 3600)
}
fn default_types() -> Vec<IndicatorType> {
    vec![
        IndicatorType::Ip,
        IndicatorType::Cidr,
        IndicatorType::Domain,
        IndicatorType::Url,
        IndicatorType::Sha256,
    ]
}
fn default_true() -> bool {
    true
}
fn default_min_steps() -> usize {
    2
}
fn default_auto_orgs() -> usize {
    3
}
fn default_auto_severity() -> Severity {
    Severity::High
}
fn default_auto_ttl() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_chains() -> Vec<ChainRule> {
    let step = |kinds: &[&str]| kinds.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>();
    vec![
        ChainRule {
            name: "ssh_intrusion".into(),
            key: ChainKey::Source,
            steps: vec![
                step(&["port_scan"]),
                step(&["ssh_bruteforce"]),
                step(&["ssh_login_after_failures"]),
            ],
            min_steps: 2,
            completed_severity: Severity::Critical,
        },
        ChainRule {
            name: "web_attack".into(),
            key: ChainKey::Source,
            steps: vec![
                step(&["port_scan", "web_scan"]),
                step(&["web_exploit_attempt"]),
            ],
            min_steps: 2,
            completed_severity: Severity::High,
        },
        ChainRule {
            name: "web_compromise".into(),
            key: ChainKey::Host,
            steps: vec![
                step(&["web_scan", "web_exploit_attempt"]),
                step(&["webshell_suspected"]),
            ],
            min_steps: 2,
            completed_severity: Severity::Critical,
        },
    ]
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        Self {
            min_orgs: default_min_orgs(),
            window: default_window(),
            quiet_period: default_quiet_period(),
            indicator_types: default_types(),
            builtin_allowlist: true,
            allowlist: Vec::new(),
            chains: default_chains(),
            auto_advisory: AutoAdvisory::default(),
        }
    }
}

/// Public resolvers: every member talks to them, none is an attacker.
const BUILTIN_ADDRESSES: &[&str] = &[
    "8.8.8.8",
    "8.8.4.4",
    "1.1.1.1",
    "1.0.0.1",
    "9.9.9.9",
    "149.112.112.112",
    "208.67.222.222",
    "208.67.220.220",
    "2001:4860:4860::8888",
    "2001:4860:4860::8844",
    "2606:4700:4700::1111",
    "2606:4700:4700::1001",
    "2620:fe::fe",
];

/// Shared front ends: a name under these says nothing about who is behind it.
const BUILTIN_DOMAINS: &[&str] = &[
    "akamaiedge.net",
    "akamaitechnologies.com",
    "akamai.net",
    "cloudfront.net",
    "cloudflare.com",
    "cloudflare.net",
    "fastly.net",
    "azureedge.net",
    "googleusercontent.com",
    "gstatic.com",
    "edgekey.net",
    "windowsupdate.com",
    "ubuntu.com",
    "debian.org",
];

/// Indicator values that must never correlate.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    addresses: HashSet<IpAddr>,
    networks: Vec<IpNet>,
    domains: HashSet<String>,
}

impl Allowlist {
    /// The configured list plus, if asked, the built-in one. Entries that are neither an
    /// address, a network nor a domain name are an error naming them.
    pub fn new(config: &CorrelationConfig) -> Result<Self, String> {
        let mut list = Self::default();
        if config.builtin_allowlist {
            for entry in BUILTIN_ADDRESSES.iter().chain(BUILTIN_DOMAINS) {
                list.add(entry)?;
            }
        }
        for entry in &config.allowlist {
            list.add(entry)?;
        }
        Ok(list)
    }

    pub fn add(&mut self, entry: &str) -> Result<(), String> {
        let entry = entry.trim();
        if let Ok(address) = entry.parse::<IpAddr>() {
            self.addresses.insert(address);
        } else if let Ok(network) = entry.parse::<IpNet>() {
            self.networks.push(network.trunc());
        } else if is_domain(entry) {
            self.domains
                .insert(entry.trim_end_matches('.').to_ascii_lowercase());
        } else {
            return Err(format!(
                "allowlist entry {entry:?} is not an address, a network or a domain"
            ));
        }
        Ok(())
    }

    fn has_address(&self, address: IpAddr) -> bool {
        self.addresses.contains(&address) || self.networks.iter().any(|n| n.contains(&address))
    }

    fn has_domain(&self, name: &str) -> bool {
        let mut rest = name.trim_end_matches('.');
        loop {
            if self.domains.contains(rest) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => return false,
            }
        }
    }
}

fn is_domain(text: &str) -> bool {
    let text = text.trim_end_matches('.');
    !text.is_empty()
        && text.len() <= 253
        && text.contains('.')
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Pseudonyms made by agents' privacy filters: keyed per member, so equal pseudonyms at
/// two members are a coincidence, not the same thing.
pub fn is_pseudonym(value: &str) -> bool {
    value.starts_with("pn:")
}

/// What the correlator knows of one organisation's sightings of an indicator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgSighting {
    pub org: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub signals: u64,
    pub kinds: BTreeSet<String>,
    pub max_severity: Severity,
}

/// One stored signal as the correlator sees it.
#[derive(Debug, Clone, Copy)]
pub struct SignalView<'a> {
    pub org: &'a str,
    pub agent_id: &'a str,
    pub kind: &'a str,
    pub severity: Severity,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Open,
    Closed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(Self::Open),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }
}

/// One organisation's part in a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignOrg {
    pub org: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub signals: u64,
}

/// An indicator seen across organisations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: String,
    pub indicator: Indicator,
    pub status: Status,
    pub severity: Severity,
    /// 0–100: how much attention it deserves (see [`score`]).
    pub score: u32,
    pub orgs: Vec<CampaignOrg>,
    pub kinds: BTreeSet<String>,
    pub signals: u64,
    /// Event time of the first and last signal.
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Collector time it opened, last changed and closed.
    pub opened_at: Timestamp,
    pub updated_at: Timestamp,
    pub closed_at: Option<Timestamp>,
}

impl Campaign {
    pub fn org_names(&self) -> Vec<&str> {
        self.orgs.iter().map(|o| o.org.as_str()).collect()
    }
}

/// A chain of steps inside one organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub org: String,
    pub chain: String,
    /// `source` (an address, maybe a pseudonym: it never leaves its organisation's view)
    /// or `host` (an agent id).
    pub key_type: ChainKey,
    pub key: String,
    pub status: Status,
    pub severity: Severity,
    /// The kinds seen, in the chain's order.
    pub steps: Vec<String>,
    /// Whether the chain's last step was reached (a login, a web shell).
    pub completed: bool,
    pub signals: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub opened_at: Timestamp,
    pub updated_at: Timestamp,
    pub closed_at: Option<Timestamp>,
}

/// What changed, for the live stream and the logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    CampaignOpened { campaign: Campaign },
    CampaignGrew { campaign: Campaign },
    CampaignClosed { campaign: Campaign },
    IncidentOpened { incident: Incident },
    IncidentGrew { incident: Incident },
    IncidentClosed { incident: Incident },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Self::CampaignOpened { .. } => "campaign_opened",
            Self::CampaignGrew { .. } => "campaign_grew",
            Self::CampaignClosed { .. } => "campaign_closed",
            Self::IncidentOpened { .. } => "incident_opened",
            Self::IncidentGrew { .. } => "incident_grew",
            Self::IncidentClosed { .. } => "incident_closed",
        }
    }
}

/// A campaign's score, 0–100: breadth weighs most (each organisation 20), then variety (each
/// kind of signal 5, up to 20), then how bad (each severity rank 5), then volume (one
/// point per doubling of signals, up to 10).
pub fn score(orgs: usize, kinds: usize, severity: Severity, signals: u64) -> u32 {
    let breadth = 20 * orgs.min(5) as u32;
    let variety = 5 * kinds.min(4) as u32;
    let badness = 5 * u32::from(severity.rank());
    let volume = (64 - signals.max(1).leading_zeros()).min(10);
    (breadth + variety + badness + volume).min(100)
}

/// The severity of a campaign: its worst signal, one step worse once three or more
/// organisations are hit (a coordinated attack on the partnership).
pub fn campaign_severity(max_signal: Severity, orgs: usize) -> Severity {
    if orgs >= 3 {
        Severity::from_rank(i64::from(max_signal.rank()) + 1).unwrap_or(Severity::Critical)
    } else {
        max_signal
    }
}

/// The correlator: configuration and allowlist; no state of its own.
#[derive(Debug, Clone)]
pub struct Correlator {
    config: CorrelationConfig,
    allowlist: Allowlist,
    types: HashSet<IndicatorType>,
}

fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

impl Correlator {
    pub fn new(config: CorrelationConfig) -> Result<Self, String> {
        if config.min_orgs < 2 {
            return Err("correlation.min_orgs must be at least 2".into());
        }
        for chain in &config.chains {
            if chain.steps.len() < 2 || chain.min_steps < 2 || chain.min_steps > chain.steps.len() {
                return Err(format!(
                    "chain {:?}: needs at least two steps and 2 ≤ min_steps ≤ steps",
                    chain.name
                ));
            }
        }
        let allowlist = Allowlist::new(&config)?;
        let types = config.indicator_types.iter().copied().collect();
        Ok(Self {
            config,
            allowlist,
            types,
        })
    }

    pub fn config(&self) -> &CorrelationConfig {
        &self.config
    }

    /// Adds the members' own declared addresses (or any other entry) to the allowlist.
    pub fn allow(&mut self, entry: &str) -> Result<(), String> {
        self.allowlist.add(entry)
    }

    /// Whether this indicator may tie organisations together.
    pub fn correlates(&self, indicator: &Indicator) -> bool {
        if !self.types.contains(&indicator.kind) || is_pseudonym(&indicator.value) {
            return false;
        }
        let value = indicator.value.as_str();
        match indicator.kind {
            IndicatorType::Ip => match value.parse::<IpAddr>() {
                Ok(address) => !is_local_or_group(address) && !self.allowlist.has_address(address),
                Err(_) => false,
            },
            IndicatorType::Cidr => match value.parse::<IpNet>() {
                Ok(network) => {
                    !is_local_or_group(network.network())
                        && !self.allowlist.has_address(network.network())
                        && network.prefix_len() >= if network.network().is_ipv4() { 16 } else { 32 }
                }
                Err(_) => false,
            },
            IndicatorType::Domain => is_domain(value) && !self.allowlist.has_domain(value),
            IndicatorType::Url => {
                let host = value
                    .split_once("://")
                    .map_or(value, |(_, rest)| rest)
                    .split(['/', ':', '?', '#'])
                    .next()
                    .unwrap_or("");
                match host.parse::<IpAddr>() {
                    Ok(address) => {
                        !is_local_or_group(address) && !self.allowlist.has_address(address)
                    }
                    Err(_) => is_domain(host) && !self.allowlist.has_domain(host),
                }
            }
            IndicatorType::Sha256 => {
                value.len() == 64
                    && value.bytes().all(|b| b.is_ascii_hexdigit())
                    // The hash of nothing is every empty file.
                    && !value.eq_ignore_ascii_case(
                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                    )
            }
            IndicatorType::User | IndicatorType::Port => false,
        }
    }

    /// Whether another organisation's sighting is close enough in (event) time to this
    /// signal to count with it.
    pub fn in_window(&self, at: Timestamp, sighting: &OrgSighting) -> bool {
        let window = nanos(self.config.window);
        sighting.last_seen.0 >= at.0.saturating_sub(window)
            && sighting.first_seen.0 <= at.0.saturating_add(window)
    }

    /// Where to start looking for sightings in the window (for the store's query).
    pub fn window_start(&self, at: Timestamp) -> Timestamp {
        Timestamp(at.0.saturating_sub(nanos(self.config.window)))
    }

    /// The decision for one signal carrying a correlatable indicator.
    ///
    /// `sightings` are every organisation's sightings of the indicator, this signal's
    /// already counted in; `open` is the indicator's open campaign, if any. Returns the
    /// campaign to store and the news of it (none when an open campaign only counted one
    /// more signal), or nothing if no campaign is due.
    pub fn observe(
        &self,
        now: Timestamp,
        id: impl FnOnce() -> String,
        indicator: &Indicator,
        signal: SignalView<'_>,
        sightings: &[OrgSighting],
        open: Option<Campaign>,
    ) -> Option<(Campaign, Option<Event>)> {
        match open {
            Some(mut campaign) => {
                let orgs_before = campaign.orgs.len();
                let kinds_before = campaign.kinds.len();
                match campaign.orgs.iter_mut().find(|o| o.org == signal.org) {
                    Some(part) => {
                        part.signals += 1;
                        part.first_seen = part.first_seen.min(signal.first_seen);
                        part.last_seen = part.last_seen.max(signal.last_seen);
                    }
                    None => campaign.orgs.push(CampaignOrg {
                        org: signal.org.to_owned(),
                        first_seen: signal.first_seen,
                        last_seen: signal.last_seen,
                        signals: 1,
                    }),
                }
                campaign.kinds.insert(signal.kind.to_owned());
                campaign.signals += 1;
                campaign.first_seen = campaign.first_seen.min(signal.first_seen);
                campaign.last_seen = campaign.last_seen.max(signal.last_seen);
                campaign.updated_at = now;
                // From the signals, never from the campaign's severity: that one is
                // already raised for breadth and would climb with every signal.
                let worst = sightings
                    .iter()
                    .filter(|s| campaign.orgs.iter().any(|part| part.org == s.org))
                    .map(|s| s.max_severity)
                    .fold(signal.severity, Severity::max);
                campaign.severity = campaign_severity(worst, campaign.orgs.len());
                campaign.score = score(
                    campaign.orgs.len(),
                    campaign.kinds.len(),
                    campaign.severity,
                    campaign.signals,
                );
                let grew = campaign.orgs.len() > orgs_before || campaign.kinds.len() > kinds_before;
                // Only growth is news for the live stream; the signal is linked anyway.
                let event = grew.then(|| Event::CampaignGrew {
                    campaign: campaign.clone(),
                });
                Some((campaign, event))
            }
            None => {
                let close: Vec<&OrgSighting> = sightings
                    .iter()
                    .filter(|s| s.org == signal.org || self.in_window(signal.last_seen, s))
                    .collect();
                let orgs: BTreeSet<&str> = close.iter().map(|s| s.org.as_str()).collect();
                if orgs.len() < self.config.min_orgs {
                    return None;
                }
                let mut parts: Vec<CampaignOrg> = close
                    .iter()
                    .map(|s| CampaignOrg {
                        org: s.org.clone(),
                        first_seen: s.first_seen,
                        last_seen: s.last_seen,
                        signals: s.signals,
                    })
                    .collect();
                parts.sort_by(|a, b| a.first_seen.cmp(&b.first_seen).then(a.org.cmp(&b.org)));
                let kinds: BTreeSet<String> =
                    close.iter().flat_map(|s| s.kinds.iter().cloned()).collect();
                let signals = close.iter().map(|s| s.signals).sum();
                let worst = close
                    .iter()
                    .map(|s| s.max_severity)
                    .max()
                    .unwrap_or(signal.severity);
                let severity = campaign_severity(worst, parts.len());
                let campaign = Campaign {
                    id: id(),
                    indicator: indicator.clone(),
                    status: Status::Open,
                    severity,
                    score: score(parts.len(), kinds.len(), severity, signals),
                    first_seen: parts
                        .iter()
                        .map(|p| p.first_seen)
                        .min()
                        .unwrap_or(signal.first_seen),
                    last_seen: parts
                        .iter()
                        .map(|p| p.last_seen)
                        .max()
                        .unwrap_or(signal.last_seen),
                    orgs: parts,
                    kinds,
                    signals,
                    opened_at: now,
                    updated_at: now,
                    closed_at: None,
                };
                let event = Event::CampaignOpened {
                    campaign: campaign.clone(),
                };
                Some((campaign, Some(event)))
            }
        }
    }

    /// Whether a campaign or incident last changed at `updated_at` has gone quiet.
    pub fn is_quiet(&self, updated_at: Timestamp, now: Timestamp) -> bool {
        now.0.saturating_sub(updated_at.0) >= nanos(self.config.quiet_period)
    }

    /// The collector time before which open campaigns and incidents are quiet.
    pub fn quiet_before(&self, now: Timestamp) -> Timestamp {
        Timestamp(now.0.saturating_sub(nanos(self.config.quiet_period)))
    }

    /// Whether this campaign should publish its indicator now (it does so once).
    pub fn wants_advisory(&self, campaign: &Campaign) -> bool {
        let auto = &self.config.auto_advisory;
        auto.enabled
            && campaign.orgs.len() >= auto.min_orgs
            && campaign.severity >= auto.min_severity
    }

    /// The chains a signal kind can advance beyond their first step: only such a signal
    /// can raise or grow an incident, so only then is the organisation's history read.
    pub fn chains_advanced_by<'a>(
        &'a self,
        kind: &'a str,
    ) -> impl Iterator<Item = &'a ChainRule> + 'a {
        self.config.chains.iter().filter(move |chain| {
            chain
                .steps
                .iter()
                .skip(1)
                .any(|step| step.iter().any(|k| k == kind))
        })
    }

    /// The decision for a chain, given the organisation's signals of the chain's kinds
    /// for the same key within the window (this signal included) and the open incident.
    pub fn chain(
        &self,
        now: Timestamp,
        id: impl FnOnce() -> String,
        rule: &ChainRule,
        (org, key): (&str, &str),
        history: &[StepSignal],
        open: Option<Incident>,
    ) -> Option<(Incident, Option<Event>)> {
        let path = chain_path(rule, history);
        if path.len() < rule.min_steps {
            return None;
        }
        let steps: Vec<String> = path.iter().map(|&(_, kind)| kind.to_owned()).collect();
        let completed = path
            .last()
            .is_some_and(|&(step, _)| step + 1 == rule.steps.len());
        let worst = history
            .iter()
            .map(|s| s.severity)
            .max()
            .unwrap_or(Severity::Medium);
        // A completed chain takes the rule's severity; one that progressed is at least
        // as bad as its worst signal, and never below medium.
        let severity = if completed {
            rule.completed_severity.max(worst)
        } else {
            worst.max(Severity::Medium)
        };
        let first_seen = history.iter().map(|s| s.first_seen).min().unwrap_or(now);
        let last_seen = history.iter().map(|s| s.last_seen).max().unwrap_or(now);
        let signals = history.len() as u64;
        match open {
            Some(mut incident) => {
                // The history read is bounded (the newest signals): steps that scrolled
                // out of it are still the open incident's.
                let start = path.first().map_or(0, |&(index, _)| index);
                let step_of =
                    |kind: &str| rule.steps.iter().position(|s| s.iter().any(|k| k == kind));
                let mut steps: Vec<String> = incident
                    .steps
                    .iter()
                    .filter(|kind| step_of(kind).is_some_and(|index| index < start))
                    .cloned()
                    .chain(steps)
                    .collect();
                steps.dedup();
                let grew = steps.len() > incident.steps.len() || (completed && !incident.completed);
                if steps.len() >= incident.steps.len() {
                    incident.steps = steps;
                }
                incident.completed |= completed;
                incident.severity = incident.severity.max(severity);
                incident.signals = incident.signals.max(signals);
                incident.first_seen = incident.first_seen.min(first_seen);
                incident.last_seen = incident.last_seen.max(last_seen);
                incident.updated_at = now;
                let event = grew.then(|| Event::IncidentGrew {
                    incident: incident.clone(),
                });
                Some((incident, event))
            }
            None => {
                let incident = Incident {
                    id: id(),
                    org: org.to_owned(),
                    chain: rule.name.clone(),
                    key_type: rule.key,
                    key: key.to_owned(),
                    status: Status::Open,
                    severity,
                    steps,
                    completed,
                    signals,
                    first_seen,
                    last_seen,
                    opened_at: now,
                    updated_at: now,
                    closed_at: None,
                };
                let event = Event::IncidentOpened {
                    incident: incident.clone(),
                };
                Some((incident, Some(event)))
            }
        }
    }
}

/// A signal of an organisation, as a candidate step of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSignal {
    pub kind: String,
    pub severity: Severity,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// Steps of a chain, in order: `(step index, kind)`.
pub type Run<'a> = Vec<(usize, &'a str)>;

/// The longest run of the chain's steps, in order, that the signals show: step `i + 1`
/// counts after step `i` if it was seen (last) no earlier than step `i` began. Returns
/// `(step index, kind)` for each step of the run.
pub fn chain_path<'a>(rule: &ChainRule, history: &'a [StepSignal]) -> Run<'a> {
    // best[i]: the longest run ending with step i, and the time that step began.
    let mut best: Vec<Option<(Run<'a>, Timestamp)>> = vec![None; rule.steps.len()];
    for (index, step) in rule.steps.iter().enumerate() {
        let seen: Vec<&StepSignal> = history.iter().filter(|s| step.contains(&s.kind)).collect();
        let Some(earliest) = seen.iter().min_by_key(|s| s.first_seen) else {
            continue;
        };
        let mut run: Run<'a> = Vec::new();
        let mut start = earliest.first_seen;
        for previous in best.iter().take(index).flatten() {
            let (path, began) = previous;
            // A signal of this step that ended after the previous step began.
            if let Some(after) = seen
                .iter()
                .filter(|s| s.last_seen >= *began)
                .min_by_key(|s| s.first_seen)
                && path.len() + 1 > run.len()
            {
                run = path.clone();
                start = after.first_seen;
                run.push((index, after.kind.as_str()));
            }
        }
        if run.is_empty() {
            run.push((index, earliest.kind.as_str()));
        }
        best[index] = Some((run, start));
    }
    best.into_iter()
        .flatten()
        .map(|(path, _)| path)
        .max_by_key(Vec::len)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000_000;

    fn at(hours: i64) -> Timestamp {
        Timestamp(1_800_000_000_000_000_000 + hours * HOUR)
    }

    fn correlator() -> Correlator {
        Correlator::new(CorrelationConfig::default()).expect("defaults are valid")
    }

    fn ip(value: &str) -> Indicator {
        Indicator::new(IndicatorType::Ip, value)
    }

    fn sighting(org: &str, hours: i64, signals: u64, kind: &str) -> OrgSighting {
        OrgSighting {
            org: org.into(),
            first_seen: at(hours),
            last_seen: at(hours),
            signals,
            kinds: BTreeSet::from([kind.to_owned()]),
            max_severity: Severity::High,
        }
    }

    fn view<'a>(org: &'a str, kind: &'a str, hours: i64) -> SignalView<'a> {
        SignalView {
            org,
            agent_id: "agent",
            kind,
            severity: Severity::High,
            first_seen: at(hours),
            last_seen: at(hours),
        }
    }

    #[test]
    fn shared_infrastructure_private_addresses_and_pseudonyms_never_correlate() {
        let mut correlator = Correlator::new(CorrelationConfig {
            allowlist: vec!["203.0.113.0/28".into(), "cdn.example".into()],
            ..CorrelationConfig::default()
        })
        .expect("config");
        correlator.allow("198.51.100.9").expect("member address");
        for (kind, value, expected) in [
            (IndicatorType::Ip, "203.0.113.77", true),
            (IndicatorType::Ip, "203.0.113.7", false),
            (IndicatorType::Ip, "198.51.100.9", false),
            (IndicatorType::Ip, "8.8.8.8", false),
            (IndicatorType::Ip, "10.1.2.3", false),
            (IndicatorType::Ip, "192.168.0.1", false),
            (IndicatorType::Ip, "100.64.0.1", false),
            (IndicatorType::Ip, "fe80::1", false),
            (IndicatorType::Ip, "::ffff:10.0.0.1", false),
            (IndicatorType::Ip, "pn:0123456789abcdef", false),
            (IndicatorType::Ip, "not an address", false),
            (IndicatorType::Domain, "evil.example", true),
            (IndicatorType::Domain, "a.b.cdn.example", false),
            (IndicatorType::Domain, "x.cloudfront.net", false),
            (IndicatorType::Url, "http://evil.example/x", true),
            (IndicatorType::Url, "http://10.0.0.1/x", false),
            (IndicatorType::Cidr, "198.18.0.0/24", true),
            (IndicatorType::Cidr, "0.0.0.0/1", false),
            (IndicatorType::Sha256, &"ab".repeat(32), true),
            (IndicatorType::Sha256, "abc", false),
            (
                IndicatorType::Sha256,
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                false,
            ),
            (IndicatorType::User, "root", false),
            (IndicatorType::Port, "22", false),
        ] {
            assert_eq!(
                correlator.correlates(&Indicator::new(kind, value)),
                expected,
                "{kind:?} {value}"
            );
        }
        assert!(
            Correlator::new(CorrelationConfig {
                allowlist: vec!["not/valid/at all".into()],
                ..CorrelationConfig::default()
            })
            .is_err()
        );
    }

    #[test]
    fn one_organisation_is_not_a_campaign_two_within_the_window_are() {
        let correlator = correlator();
        let indicator = ip("203.0.113.7");
        let alone = [sighting("bank", 0, 40, "ssh_bruteforce")];
        let none = correlator.observe(
            at(0),
            || "c1".into(),
            &indicator,
            view("bank", "ssh_bruteforce", 0),
            &alone,
            None,
        );
        assert!(none.is_none());
        // A second organisation, but two days later: outside the 24 h window.
        let late = [alone[0].clone(), sighting("city", 48, 3, "port_scan")];
        assert!(
            correlator
                .observe(
                    at(48),
                    || "c1".into(),
                    &indicator,
                    view("city", "port_scan", 48),
                    &late,
                    None
                )
                .is_none()
        );
        let close = [alone[0].clone(), sighting("city", 5, 3, "port_scan")];
        let (campaign, event) = correlator
            .observe(
                at(5),
                || "c1".into(),
                &indicator,
                view("city", "port_scan", 5),
                &close,
                None,
            )
            .expect("campaign");
        assert!(matches!(event, Some(Event::CampaignOpened { .. })));
        assert_eq!(campaign.org_names(), ["bank", "city"]);
        assert_eq!(campaign.signals, 43);
        assert_eq!(campaign.severity, Severity::High);
        assert_eq!(
            campaign.kinds,
            BTreeSet::from(["port_scan".to_owned(), "ssh_bruteforce".to_owned()])
        );
        assert_eq!((campaign.first_seen, campaign.last_seen), (at(0), at(5)));
        assert_eq!(campaign.opened_at, at(5));
    }

    #[test]
    fn a_campaign_grows_with_organisations_and_kinds_and_its_severity_rises_at_three() {
        let correlator = correlator();
        let indicator = ip("203.0.113.7");
        let sightings = [
            sighting("bank", 0, 1, "ssh_bruteforce"),
            sighting("city", 1, 1, "ssh_bruteforce"),
        ];
        let (campaign, _) = correlator
            .observe(
                at(1),
                || "c1".into(),
                &indicator,
                view("city", "ssh_bruteforce", 1),
                &sightings,
                None,
            )
            .expect("opened");
        let before = campaign.score;
        // The same org again with the same kind: counted, no news.
        let (campaign, event) = correlator
            .observe(
                at(2),
                || unreachable!(),
                &indicator,
                view("city", "ssh_bruteforce", 2),
                &sightings,
                Some(campaign),
            )
            .expect("kept");
        assert!(event.is_none());
        assert_eq!(campaign.signals, 3);
        assert_eq!(campaign.updated_at, at(2));
        // A third organisation: news, and the severity rises one step.
        let (campaign, event) = correlator
            .observe(
                at(3),
                || unreachable!(),
                &indicator,
                view("hospital", "web_exploit_attempt", 3),
                &sightings,
                Some(campaign),
            )
            .expect("grew");
        assert!(matches!(event, Some(Event::CampaignGrew { .. })));
        assert_eq!(campaign.org_names(), ["bank", "city", "hospital"]);
        assert_eq!(campaign.severity, Severity::Critical);
        assert!(campaign.score > before);
        assert!(campaign.kinds.contains("web_exploit_attempt"));
    }

    #[test]
    fn a_campaign_of_low_signals_at_three_organisations_is_raised_once_not_per_signal() {
        let correlator = correlator();
        let indicator = ip("203.0.113.7");
        let low = |org: &str| OrgSighting {
            max_severity: Severity::Low,
            ..sighting(org, 0, 1, "port_scan")
        };
        let sightings = [low("bank"), low("city"), low("hospital")];
        let quiet = |org| SignalView {
            severity: Severity::Low,
            ..view(org, "port_scan", 0)
        };
        let (mut campaign, _) = correlator
            .observe(
                at(0),
                || "c1".into(),
                &indicator,
                quiet("hospital"),
                &sightings,
                None,
            )
            .expect("opened");
        assert_eq!(campaign.severity, Severity::Medium);
        for _ in 0..5 {
            (campaign, _) = correlator
                .observe(
                    at(1),
                    || unreachable!(),
                    &indicator,
                    quiet("bank"),
                    &sightings,
                    Some(campaign),
                )
                .expect("kept");
        }
        assert_eq!(
            campaign.severity,
            Severity::Medium,
            "one step for breadth, once"
        );
    }

    #[test]
    fn quiet_campaigns_close_after_the_quiet_period() {
        let correlator = correlator();
        assert!(!correlator.is_quiet(at(0), at(47)));
        assert!(correlator.is_quiet(at(0), at(48)));
        assert_eq!(correlator.quiet_before(at(50)), at(2));
    }

    fn step(kind: &str, from: i64, to: i64) -> StepSignal {
        StepSignal {
            kind: kind.into(),
            severity: Severity::Medium,
            first_seen: at(from),
            last_seen: at(to),
        }
    }

    #[test]
    fn a_chain_in_order_raises_an_incident_and_the_last_step_makes_it_critical() {
        let correlator = correlator();
        let intrusion = correlator
            .chains_advanced_by("ssh_bruteforce")
            .next()
            .expect("intrusion chain")
            .clone();
        assert_eq!(correlator.chains_advanced_by("port_scan").count(), 0);
        // A scan alone, or a login alone, is no chain.
        assert!(chain_path(&intrusion, &[step("port_scan", 0, 0)]).len() < 2);
        // Brute force that ended before the scan began is out of order.
        let backwards = [step("ssh_bruteforce", 0, 1), step("port_scan", 2, 3)];
        assert_eq!(chain_path(&intrusion, &backwards).len(), 1);
        let history = [step("port_scan", 0, 1), step("ssh_bruteforce", 1, 2)];
        let (incident, event) = correlator
            .chain(
                at(2),
                || "i1".into(),
                &intrusion,
                ("bank", "203.0.113.7"),
                &history,
                None,
            )
            .expect("incident");
        assert!(matches!(event, Some(Event::IncidentOpened { .. })));
        assert_eq!(incident.steps, ["port_scan", "ssh_bruteforce"]);
        assert!(!incident.completed);
        assert_eq!(incident.severity, Severity::Medium);
        let history = [
            step("port_scan", 0, 1),
            step("ssh_bruteforce", 1, 2),
            step("ssh_login_after_failures", 2, 2),
        ];
        let (incident, event) = correlator
            .chain(
                at(3),
                || unreachable!(),
                &intrusion,
                ("bank", "203.0.113.7"),
                &history,
                Some(incident),
            )
            .expect("grew");
        assert!(matches!(event, Some(Event::IncidentGrew { .. })));
        assert!(incident.completed);
        assert_eq!(incident.severity, Severity::Critical);
        assert_eq!(incident.steps.len(), 3);
        // Once the scan has scrolled out of the (bounded) history, the open incident
        // keeps it: the steps stay the whole chain.
        let mut open = incident.clone();
        open.steps = vec!["port_scan".into(), "ssh_bruteforce".into()];
        open.completed = false;
        let recent = [
            step("ssh_bruteforce", 1, 2),
            step("ssh_login_after_failures", 2, 2),
        ];
        let (incident, _) = correlator
            .chain(
                at(3),
                || unreachable!(),
                &intrusion,
                ("bank", "203.0.113.7"),
                &recent,
                Some(open),
            )
            .expect("grew");
        assert_eq!(
            incident.steps,
            ["port_scan", "ssh_bruteforce", "ssh_login_after_failures"]
        );
        assert!(incident.completed);
        // Brute force then login, without a scan, is also a chain (two steps in order).
        let skipped = [
            step("ssh_bruteforce", 0, 1),
            step("ssh_login_after_failures", 1, 1),
        ];
        assert_eq!(
            chain_path(&intrusion, &skipped)
                .iter()
                .map(|(_, k)| *k)
                .collect::<Vec<_>>(),
            ["ssh_bruteforce", "ssh_login_after_failures"]
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        for config in [
            CorrelationConfig {
                min_orgs: 1,
                ..CorrelationConfig::default()
            },
            CorrelationConfig {
                chains: vec![ChainRule {
                    name: "short".into(),
                    key: ChainKey::Host,
                    steps: vec![vec!["a".into()]],
                    min_steps: 2,
                    completed_severity: Severity::High,
                }],
                ..CorrelationConfig::default()
            },
        ] {
            assert!(Correlator::new(config).is_err());
        }
    }

    #[test]
    fn scores_rank_breadth_first() {
        // One more organisation weighs more than one more kind or one severity step.
        assert!(score(3, 1, Severity::High, 10) > score(2, 2, Severity::Critical, 10));
        assert_eq!(score(10, 10, Severity::Critical, u64::MAX), 100);
        assert_eq!(campaign_severity(Severity::Critical, 5), Severity::Critical);
        assert_eq!(campaign_severity(Severity::Medium, 2), Severity::Medium);
    }

    #[test]
    fn auto_advisories_are_off_by_default() {
        let campaign = Campaign {
            id: "c".into(),
            indicator: ip("203.0.113.7"),
            status: Status::Open,
            severity: Severity::Critical,
            score: 90,
            orgs: ["a", "b", "c"]
                .iter()
                .map(|org| CampaignOrg {
                    org: (*org).into(),
                    first_seen: at(0),
                    last_seen: at(0),
                    signals: 1,
                })
                .collect(),
            kinds: BTreeSet::new(),
            signals: 3,
            first_seen: at(0),
            last_seen: at(0),
            opened_at: at(0),
            updated_at: at(0),
            closed_at: None,
        };
        assert!(!correlator().wants_advisory(&campaign));
        let mut config = CorrelationConfig::default();
        config.auto_advisory.enabled = true;
        let eager = Correlator::new(config).expect("config");
        assert!(eager.wants_advisory(&campaign));
    }
}
