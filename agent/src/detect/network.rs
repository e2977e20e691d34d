//! Network detection: packet summaries in, signals out, in packet time. Pure logic with
//! bounded memory (every table has a cap and evicts the least recently seen).
//!
//! * `port_scan`: probes that never complete a handshake (SYN, FIN, NULL, Xmas) or UDP
//!   datagrams, from one source to many ports of a host (vertical) or one port of many
//!   hosts (horizontal). A browser opening connections to many sites completes them, so
//!   it is never counted.
//! * `syn_flood`: a high rate of SYNs to one destination port, few of them completed.
//! * `ioc_match`: traffic to or from an address or network of the advisories, or a DNS
//!   question about a domain of them (or a name under it).
//! * `dns_tunnel_suspected`: many questions under one domain with long, random-looking
//!   labels, or an unusual volume of TXT/NULL questions.
//!
//! Each finding is a *series*: one signal at once, then updates while it lasts (count
//! grows), and a last update when it has been quiet for its window.

use crate::detect::advisories::{Advised, Advisories};
use crate::sources::network::decode::{PacketInfo, Transport, flags};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Arc;
use vedetta_common::{IndicatorType, Severity, Signal, SignalId, Timestamp};

const SECOND: i64 = 1_000_000_000;

/// Thresholds, from `[sources.network]` (defaults are those of a busy office network).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkThresholds {
    /// Distinct ports of one host probed by one source within `scan_window_s`.
    pub scan_ports: usize,
    /// Distinct hosts probed on one port by one source within `scan_window_s`.
    pub scan_hosts: usize,
    pub scan_window_s: u64,
    /// SYNs a second to one destination port, sustained over `flood_window_s`…
    pub flood_syn_per_s: u64,
    pub flood_window_s: u64,
    /// …of which at most this share completed.
    pub flood_completed_ratio: f64,
    /// Questions under one domain with encoded-looking labels within `dns_window_s`.
    pub dns_encoded_queries: u64,
    /// TXT or NULL questions under one domain within `dns_window_s`.
    pub dns_txt_queries: u64,
    pub dns_window_s: u64,
    /// Most sources, destinations or domains tracked at once (each table).
    pub max_keys: usize,
    /// Least time between two updates of one series.
    pub update_every_s: u64,
}

impl Default for NetworkThresholds {
    fn default() -> Self {
        Self {
            scan_ports: 15,
            scan_hosts: 20,
            scan_window_s: 60,
            flood_syn_per_s: 200,
            flood_window_s: 5,
            flood_completed_ratio: 0.1,
            dns_encoded_queries: 20,
            dns_txt_queries: 50,
            dns_window_s: 300,
            max_keys: 100_000,
            update_every_s: 60,
        }
    }
}

/// An ongoing finding.
#[derive(Debug)]
struct Series {
    id: SignalId,
    first_seen: i64,
    last_seen: i64,
    last_emit: i64,
    count: u64,
    reported: u64,
    updates: u64,
    window: i64,
    /// The signal as last sent, updated in place.
    signal: Signal,
}

/// Probes of one source.
#[derive(Debug, Default)]
struct Prober {
    /// (destination hash, port, protocol) → (kind, when), not yet completed.
    probes: HashMap<(u64, u16, bool), (u8, i64)>,
    ports_per_host: HashMap<u64, usize>,
    hosts_per_port: HashMap<(u16, bool), usize>,
    kinds: [u64; 6],
    last_seen: i64,
    sweep_at: i64,
}

/// Probe kinds.
const SYN: u8 = 0;
const FIN: u8 = 1;
const NULL: u8 = 2;
const XMAS: u8 = 3;
const UDP: u8 = 4;
const KIND_NAMES: [&str; 6] = ["syn", "fin", "null", "xmas", "udp", "other"];
/// Probes remembered per source: far above any threshold.
const PROBES_PER_SOURCE: usize = 1024;
/// Probes remembered in all: a flood of forged sources cannot make the tables grow
/// beyond this (about 100 MB).
const PROBES_TOTAL: usize = 1_000_000;
/// Distinct sources remembered per flooded target: only "few" or "many" matters.
const SOURCES_PER_TARGET: usize = 64;
/// Distinct names and clients remembered per domain (far above the thresholds).
const NAMES_PER_DOMAIN: usize = 1024;
const CLIENTS_PER_DOMAIN: usize = 64;

/// SYNs and completions to one destination port, per second.
#[derive(Debug, Default)]
struct Target {
    /// (second, syns, completions), oldest first.
    seconds: std::collections::VecDeque<(i64, u64, u64)>,
    sources: HashSet<u64>,
    last_source: Option<IpAddr>,
    last_seen: i64,
}

/// Questions under one domain.
#[derive(Debug, Default)]
struct Domain {
    window_start: i64,
    queries: u64,
    encoded: u64,
    txt: u64,
    names: HashSet<u64>,
    longest_label: usize,
    clients: HashSet<u64>,
    last_seen: i64,
}

/// Figures about the detector's work.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetworkStats {
    pub packets: u64,
    pub signals: u64,
    pub tracked_sources: u64,
    pub evicted: u64,
}

/// The network detector.
#[derive(Debug)]
pub struct NetworkDetector {
    thresholds: NetworkThresholds,
    /// Shared with the other sources (see `crate::advisories::AdvisoryFeed`).
    advisories: Arc<Advisories>,
    hasher: std::collections::hash_map::RandomState,
    probers: HashMap<IpAddr, Prober>,
    total_probes: usize,
    targets: HashMap<(IpAddr, u16), Target>,
    domains: HashMap<String, Domain>,
    series: HashMap<(&'static str, String), Series>,
    now: i64,
    stats: NetworkStats,
}

/// Removes the least recently seen tenth of `table` when it is full.
fn make_room<K: Eq + Hash + Clone, V>(
    table: &mut HashMap<K, V>,
    max: usize,
    last_seen: impl Fn(&V) -> i64,
) -> u64 {
    if table.len() < max.max(1) {
        return 0;
    }
    let mut seen: Vec<i64> = table.values().map(&last_seen).collect();
    let cut = seen.len() / 10;
    let (_, threshold, _) = seen.select_nth_unstable(cut);
    let threshold = *threshold;
    let before = table.len();
    table.retain(|_, value| last_seen(value) > threshold);
    (before - table.len()) as u64
}

/// Shannon entropy in bits per character of a label.
fn label_entropy(label: &str) -> f64 {
    let mut counts = [0u32; 256];
    for byte in label.bytes() {
        counts[usize::from(byte)] += 1;
    }
    let total = label.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / total;
            -p * p.log2()
        })
        .sum()
}

/// The domain a name belongs to: its last two labels (three under a two-letter
/// second-level domain such as `co.uk`).
pub fn registered_domain(name: &str) -> &str {
    let labels: Vec<&str> = name.rsplitn(4, '.').collect();
    const SECOND_LEVELS: [&str; 10] = [
        "co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go",
    ];
    let keep = if labels.len() >= 3 && labels[0].len() == 2 && SECOND_LEVELS.contains(&labels[1]) {
        3
    } else {
        2
    };
    if labels.len() <= keep {
        return name;
    }
    let tail: usize = labels[..keep].iter().map(|l| l.len()).sum::<usize>() + keep - 1;
    &name[name.len() - tail..]
}

impl NetworkDetector {
    pub fn new(thresholds: NetworkThresholds, advisories: impl Into<Arc<Advisories>>) -> Self {
        Self {
            thresholds,
            advisories: advisories.into(),
            hasher: std::collections::hash_map::RandomState::new(),
            probers: HashMap::new(),
            total_probes: 0,
            targets: HashMap::new(),
            domains: HashMap::new(),
            series: HashMap::new(),
            now: i64::MIN,
            stats: NetworkStats::default(),
        }
    }

    /// Replaces the advisories (the collector pushed new ones, or some expired).
    pub fn set_advisories(&mut self, advisories: Arc<Advisories>) {
        self.advisories = advisories;
    }

    pub fn advisories(&self) -> &Advisories {
        &self.advisories
    }

    pub fn stats(&self) -> NetworkStats {
        NetworkStats {
            tracked_sources: self.probers.len() as u64,
            ..self.stats.clone()
        }
    }

    fn hash(&self, value: impl Hash) -> u64 {
        self.hasher.hash_one(value)
    }

    /// Processes one packet; returns the signals it causes.
    pub fn process(&mut self, packet: &PacketInfo) -> Vec<Signal> {
        self.stats.packets += 1;
        self.now = self.now.max(packet.at.0);
        let mut out = Vec::new();
        if !self.advisories.is_empty() {
            self.ioc(packet, &mut out);
        }
        match packet.transport {
            Transport::Tcp { dport, flags, .. } => {
                self.tcp(packet, dport, flags, &mut out);
            }
            // Only a datagram from an ephemeral port to a port is a probe of it: a
            // service's answers (DNS from 53, NTP from 123) come from its own port.
            Transport::Udp { dport, sport }
                if sport >= 1024 && packet.dns.as_ref().is_none_or(|dns| !dns.response) =>
            {
                self.probe(packet, dport, false, UDP, &mut out);
            }
            _ => {}
        }
        if let Some(dns) = &packet.dns
            && !dns.response
        {
            self.dns(packet, &mut out);
        }
        self.stats.signals += out.len() as u64;
        out
    }

    fn tcp(&mut self, packet: &PacketInfo, dport: u16, tcp_flags: u8, out: &mut Vec<Signal>) {
        let syn = tcp_flags & flags::SYN != 0;
        let ack = tcp_flags & flags::ACK != 0;
        let kind = match tcp_flags
            & (flags::FIN | flags::SYN | flags::RST | flags::PSH | flags::ACK | flags::URG)
        {
            f if f == flags::SYN => Some(SYN),
            f if f == flags::FIN => Some(FIN),
            0 => Some(NULL),
            f if f == flags::FIN | flags::PSH | flags::URG => Some(XMAS),
            _ => None,
        };
        if let Some(kind) = kind {
            self.probe(packet, dport, true, kind, out);
        }
        if syn && !ack {
            self.syn(packet, dport, out);
        } else if ack && !syn && tcp_flags & (flags::RST | flags::FIN) == 0 {
            // The client's side of a completed handshake (or any later segment).
            self.completed(packet, dport);
        }
    }

    fn probe(
        &mut self,
        packet: &PacketInfo,
        port: u16,
        tcp: bool,
        kind: u8,
        out: &mut Vec<Signal>,
    ) {
        let at = packet.at.0;
        let window =
            i64::try_from(self.thresholds.scan_window_s).unwrap_or(i64::MAX / SECOND) * SECOND;
        if !self.probers.contains_key(&packet.src) {
            let max = self.thresholds.max_keys;
            let evicted = make_room(&mut self.probers, max, |p| p.last_seen);
            if evicted > 0 {
                self.stats.evicted += evicted;
                self.total_probes = self.probers.values().map(|p| p.probes.len()).sum();
            }
        }
        let host = self.hash(packet.dst);
        let prober = self.probers.entry(packet.src).or_default();
        prober.last_seen = prober.last_seen.max(at);
        // Forget probes older than the window now and then (each costs a pass).
        if at >= prober.sweep_at {
            prober.sweep_at = at.saturating_add(window / 4);
            let horizon = at.saturating_sub(window);
            let before = prober.probes.len();
            let (ports_per_host, hosts_per_port) =
                (&mut prober.ports_per_host, &mut prober.hosts_per_port);
            prober.probes.retain(|&(host, port, tcp), &mut (_, seen)| {
                let keep = seen >= horizon;
                if !keep {
                    forget(ports_per_host, hosts_per_port, host, port, tcp);
                }
                keep
            });
            self.total_probes = self
                .total_probes
                .saturating_sub(before - prober.probes.len());
        }
        if prober.probes.len() >= PROBES_PER_SOURCE || self.total_probes >= PROBES_TOTAL {
            return;
        }
        let key = (host, port, tcp);
        if prober.probes.insert(key, (kind, at)).is_none() {
            self.total_probes += 1;
            *prober.ports_per_host.entry(host).or_default() += 1;
            *prober.hosts_per_port.entry((port, tcp)).or_default() += 1;
        }
        prober.kinds[usize::from(kind)] += 1;
        let ports = prober.ports_per_host.get(&host).copied().unwrap_or(0);
        let hosts = prober
            .hosts_per_port
            .get(&(port, tcp))
            .copied()
            .unwrap_or(0);
        // Horizontal only for TCP: a UDP client talking to many hosts on one port (QUIC
        // to web sites) looks the same as a sweep, and no handshake tells them apart.
        let pattern = if ports >= self.thresholds.scan_ports {
            "vertical"
        } else if tcp && hosts >= self.thresholds.scan_hosts {
            "horizontal"
        } else {
            return self.touch(("port_scan", scan_key(packet.src, kind)), at, out);
        };
        let scan_type = KIND_NAMES[usize::from(kind)];
        let mut sample: Vec<u16> = prober
            .probes
            .keys()
            .filter(|(h, _, t)| *t == tcp && (pattern != "vertical" || *h == host))
            .map(|(_, p, _)| *p)
            .collect();
        sample.sort_unstable();
        sample.dedup();
        let distinct_ports = sample.len();
        let distinct_hosts = prober.ports_per_host.len();
        let ports_text: Vec<String> = sample.iter().take(20).map(u16::to_string).collect();
        let mut signal = Signal::new("port_scan", Severity::Medium, packet.at)
            .with_indicator(IndicatorType::Ip, packet.src.to_string())
            .with_attribute("scan_type", scan_type)
            .with_attribute("pattern", pattern)
            .with_attribute("distinct_ports", distinct_ports as u64)
            .with_attribute("distinct_hosts", distinct_hosts as u64)
            .with_attribute("ports", ports_text.join(","))
            .with_attribute("window_s", self.thresholds.scan_window_s);
        if pattern == "vertical" {
            signal = signal.with_attribute("target", packet.dst.to_string());
        } else {
            signal = signal.with_attribute("port", u64::from(port));
        }
        signal.mitre = Some("T1046".into());
        self.report(
            ("port_scan", scan_key(packet.src, kind)),
            signal,
            window,
            at,
            out,
        );
    }

    fn syn(&mut self, packet: &PacketInfo, port: u16, out: &mut Vec<Signal>) {
        let at = packet.at.0;
        let second = at.div_euclid(SECOND);
        let key = (packet.dst, port);
        if !self.targets.contains_key(&key) {
            let max = self.thresholds.max_keys;
            self.stats.evicted += make_room(&mut self.targets, max, |t| t.last_seen);
        }
        let source = self.hash(packet.src);
        let window = i64::try_from(self.thresholds.flood_window_s.max(1)).unwrap_or(5);
        let target = self.targets.entry(key).or_default();
        target.last_seen = target.last_seen.max(at);
        match target.seconds.back_mut() {
            Some(back) if back.0 >= second => back.1 += 1,
            _ => target.seconds.push_back((second, 1, 0)),
        }
        while target
            .seconds
            .front()
            .is_some_and(|f| f.0 <= second - window)
        {
            target.seconds.pop_front();
        }
        if target.sources.len() < SOURCES_PER_TARGET {
            target.sources.insert(source);
        }
        target.last_source = Some(packet.src);
        let syns: u64 = target.seconds.iter().map(|s| s.1).sum();
        let completed: u64 = target.seconds.iter().map(|s| s.2).sum();
        let span = (second - target.seconds.front().map_or(second, |f| f.0) + 1).max(1) as u64;
        let flood = span >= (window as u64).min(3)
            && syns >= self.thresholds.flood_syn_per_s.saturating_mul(span)
            && (completed as f64) <= self.thresholds.flood_completed_ratio * syns as f64;
        let series_key = ("syn_flood", format!("{}:{port}", packet.dst));
        if !flood {
            // Ordinary SYNs after a flood do not keep it open.
            return;
        }
        let sources = target.sources.len() as u64;
        let mut signal = Signal::new("syn_flood", Severity::High, packet.at)
            .with_attribute("target", packet.dst.to_string())
            .with_attribute("port", u64::from(port))
            .with_attribute("syn_per_s", syns / span)
            .with_attribute("completed", completed)
            .with_attribute("distinct_sources", sources)
            .with_attribute("window_s", self.thresholds.flood_window_s);
        // A few sources are the attackers; thousands are forged addresses.
        if sources <= 3
            && let Some(source) = target.last_source
        {
            signal = signal.with_indicator(IndicatorType::Ip, source.to_string());
        }
        signal.mitre = Some("T1498.001".into());
        let quiet = window * SECOND * 2;
        self.report(series_key, signal, quiet, at, out);
    }

    /// An ACK from a client: it completes a handshake only if it answers a SYN of that
    /// client still pending (a busy server's ongoing traffic, or a flood of bare ACKs,
    /// does not count as completions).
    fn completed(&mut self, packet: &PacketInfo, port: u16) {
        let Some(prober) = self.probers.get_mut(&packet.src) else {
            return;
        };
        let host = self.hasher.hash_one(packet.dst);
        if prober.probes.remove(&(host, port, true)).is_none() {
            return;
        }
        self.total_probes = self.total_probes.saturating_sub(1);
        forget(
            &mut prober.ports_per_host,
            &mut prober.hosts_per_port,
            host,
            port,
            true,
        );
        let second = packet.at.0.div_euclid(SECOND);
        let window = i64::try_from(self.thresholds.flood_window_s.max(1)).unwrap_or(5);
        if let Some(target) = self.targets.get_mut(&(packet.dst, port)) {
            match target.seconds.back_mut() {
                Some(back) if back.0 >= second => back.2 += 1,
                _ => target.seconds.push_back((second, 0, 1)),
            }
            while target
                .seconds
                .front()
                .is_some_and(|f| f.0 <= second - window)
            {
                target.seconds.pop_front();
            }
        }
    }

    fn dns(&mut self, packet: &PacketInfo, out: &mut Vec<Signal>) {
        let Some(dns) = &packet.dns else { return };
        let at = packet.at.0;
        let domain = registered_domain(&dns.name).to_owned();
        if domain.is_empty() || domain == dns.name {
            return;
        }
        let window = i64::try_from(self.thresholds.dns_window_s).unwrap_or(300) * SECOND;
        if !self.domains.contains_key(&domain) {
            let max = self.thresholds.max_keys;
            self.stats.evicted += make_room(&mut self.domains, max, |d| d.last_seen);
        }
        let subdomain = &dns.name[..dns.name.len() - domain.len()];
        let longest = subdomain.split('.').map(str::len).max().unwrap_or(0);
        let encoded = subdomain
            .split('.')
            .any(|label| label.len() >= 24 && label_entropy(label) >= 3.5);
        let (name_hash, client_hash) = (self.hash(&dns.name), self.hash(packet.src));
        let entry = self.domains.entry(domain.clone()).or_default();
        if at - entry.window_start > window {
            *entry = Domain {
                window_start: at,
                ..Domain::default()
            };
        }
        entry.last_seen = at;
        entry.queries += 1;
        entry.encoded += u64::from(encoded);
        entry.txt += u64::from(dns.qtype == 16 || dns.qtype == 10);
        entry.longest_label = entry.longest_label.max(longest);
        if entry.names.len() < NAMES_PER_DOMAIN {
            entry.names.insert(name_hash);
        }
        if entry.clients.len() < CLIENTS_PER_DOMAIN {
            entry.clients.insert(client_hash);
        }
        let suspicious = (entry.encoded >= self.thresholds.dns_encoded_queries
            && entry.names.len() as u64 >= self.thresholds.dns_encoded_queries)
            || entry.txt >= self.thresholds.dns_txt_queries;
        let series_key = ("dns_tunnel_suspected", domain.clone());
        if !suspicious {
            return;
        }
        if !(encoded || dns.qtype == 16 || dns.qtype == 10) {
            // An ordinary question under a tunnel's domain adds nothing to it.
            return;
        }
        let mut signal = Signal::new("dns_tunnel_suspected", Severity::High, packet.at)
            .with_indicator(IndicatorType::Domain, domain)
            .with_attribute("queries", entry.queries)
            .with_attribute("encoded_queries", entry.encoded)
            .with_attribute("txt_queries", entry.txt)
            .with_attribute("distinct_names", entry.names.len() as u64)
            .with_attribute("longest_label", entry.longest_label as u64)
            .with_attribute("clients", entry.clients.len() as u64)
            .with_attribute("window_s", self.thresholds.dns_window_s);
        signal.mitre = Some("T1071.004".into());
        self.report(series_key, signal, window, at, out);
    }

    fn ioc(&mut self, packet: &PacketInfo, out: &mut Vec<Signal>) {
        let at = packet.at.0;
        let mut found: Vec<(String, IndicatorType, Advised, &'static str, IpAddr)> = Vec::new();
        if let Some(found_to) = self.advisories.address(packet.dst) {
            let (value, kind) = (found_to.value.to_owned(), found_to.kind);
            found.push((value, kind, found_to.advised.clone(), "to", packet.src));
        }
        if let Some(found_from) = self.advisories.address(packet.src) {
            let (value, kind) = (found_from.value.to_owned(), found_from.kind);
            found.push((value, kind, found_from.advised.clone(), "from", packet.dst));
        }
        if let Some(dns) = &packet.dns
            && let Some(found_name) = self.advisories.domain(&dns.name)
        {
            let local = if dns.response { packet.dst } else { packet.src };
            let value = found_name.value.to_owned();
            found.push((
                value,
                IndicatorType::Domain,
                found_name.advised.clone(),
                "dns",
                local,
            ));
        }
        for (value, kind, advised, direction, local) in found {
            let mut signal = Signal::new("ioc_match", advised.severity, packet.at)
                .with_indicator(kind, value.clone())
                .with_attribute("advisory", advised.advisory.clone())
                .with_attribute("direction", direction)
                .with_attribute("host_address", local.to_string());
            if let Transport::Tcp { dport, .. } | Transport::Udp { dport, .. } = packet.transport {
                signal = signal.with_attribute("port", u64::from(dport));
            }
            let window = 600 * SECOND;
            self.report(
                ("ioc_match", format!("{value}/{direction}")),
                signal,
                window,
                at,
                out,
            );
        }
    }

    /// Counts one more event for an open series (an update when due).
    fn touch(&mut self, key: (&'static str, String), at: i64, out: &mut Vec<Signal>) {
        let every = i64::try_from(self.thresholds.update_every_s).unwrap_or(60) * SECOND;
        if let Some(series) = self.series.get_mut(&key) {
            series.count += 1;
            series.last_seen = series.last_seen.max(at);
            if at - series.last_emit >= every {
                out.push(emit(series));
            }
        }
    }

    /// Opens a series with `signal`, or updates the open one.
    fn report(
        &mut self,
        key: (&'static str, String),
        signal: Signal,
        window: i64,
        at: i64,
        out: &mut Vec<Signal>,
    ) {
        let every = i64::try_from(self.thresholds.update_every_s).unwrap_or(60) * SECOND;
        match self.series.get_mut(&key) {
            Some(series) => {
                series.count += 1;
                series.last_seen = series.last_seen.max(at);
                // The newest figures, the series' identity and start.
                let (first, id) = (series.signal.first_seen, series.id);
                series.signal = signal;
                series.signal.first_seen = first;
                series.signal.id = id;
                if at - series.last_emit >= every {
                    out.push(emit(series));
                }
            }
            None => {
                if self.series.len() >= self.thresholds.max_keys {
                    return;
                }
                let id = SignalId::new();
                let mut series = Series {
                    id,
                    first_seen: at,
                    last_seen: at,
                    last_emit: at,
                    count: 1,
                    reported: 0,
                    updates: 0,
                    window,
                    signal,
                };
                series.signal.id = id;
                out.push(emit(&mut series));
                self.series.insert(key, series);
            }
        }
    }

    /// Advances the clock: due updates, and the last update of series gone quiet.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Signal> {
        self.now = self.now.max(now.0);
        let every = i64::try_from(self.thresholds.update_every_s).unwrap_or(60) * SECOND;
        let now = self.now;
        let mut out = Vec::new();
        self.series.retain(|_, series| {
            let pending = series.count > series.reported;
            if now - series.last_seen > series.window {
                if pending {
                    out.push(emit(series));
                }
                return false;
            }
            if pending && now - series.last_emit >= every {
                out.push(emit(series));
            }
            true
        });
        out
    }

    /// End of input (a pcap replay): the final state of every open series, in order.
    pub fn flush(&mut self) -> Vec<Signal> {
        let mut series: Vec<_> = self.series.drain().collect();
        series.sort_by(|a, b| a.0.cmp(&b.0));
        series
            .into_iter()
            .filter(|(_, s)| s.count > s.reported)
            .map(|(_, mut s)| emit(&mut s))
            .collect()
    }
}

/// A scan is one series per source and technique: a SYN and then an Xmas scan from one
/// address are two findings.
fn scan_key(source: IpAddr, kind: u8) -> String {
    format!("{source}/{}", KIND_NAMES[usize::from(kind)])
}

fn forget(
    ports_per_host: &mut HashMap<u64, usize>,
    hosts_per_port: &mut HashMap<(u16, bool), usize>,
    host: u64,
    port: u16,
    tcp: bool,
) {
    if let Some(count) = ports_per_host.get_mut(&host) {
        *count -= 1;
        if *count == 0 {
            ports_per_host.remove(&host);
        }
    }
    if let Some(count) = hosts_per_port.get_mut(&(port, tcp)) {
        *count -= 1;
        if *count == 0 {
            hosts_per_port.remove(&(port, tcp));
        }
    }
}

/// The series' current state as a signal (a new id each time, the same `series`).
fn emit(series: &mut Series) -> Signal {
    series.updates += 1;
    series.reported = series.count;
    series.last_emit = series.last_seen;
    let mut signal = series.signal.clone();
    signal.id = if series.updates == 1 {
        series.id
    } else {
        SignalId::new()
    };
    signal.first_seen = Timestamp(series.first_seen);
    signal.last_seen = Timestamp(series.last_seen);
    signal.count = series.count;
    signal
        .with_attribute("series", series.id.to_string())
        .with_attribute("update", series.updates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::network::decode::{DnsQuestion, flags};

    fn packet(src: &str, dst: &str, transport: Transport, second: i64) -> PacketInfo {
        PacketInfo {
            at: Timestamp(1_800_000_000 * SECOND + second * SECOND),
            src: src.parse().expect("src"),
            dst: dst.parse().expect("dst"),
            transport,
            length: 60,
            dns: None,
        }
    }

    fn detector() -> NetworkDetector {
        NetworkDetector::new(NetworkThresholds::default(), Advisories::default())
    }

    #[test]
    fn completed_connections_to_many_sites_are_not_a_scan() {
        let mut detector = detector();
        let mut signals = Vec::new();
        for n in 0..100u16 {
            let site = format!("198.51.100.{}", n % 250);
            let syn = Transport::Tcp {
                sport: 40000 + n,
                dport: 443,
                flags: flags::SYN,
            };
            let ack = Transport::Tcp {
                sport: 40000 + n,
                dport: 443,
                flags: flags::ACK,
            };
            signals.extend(detector.process(&packet("10.0.0.5", &site, syn, 1)));
            signals.extend(detector.process(&packet("10.0.0.5", &site, ack, 1)));
        }
        // NTP answers from port 123 to many clients, QUIC to many sites.
        for n in 0..100u16 {
            let client = format!("10.0.1.{}", n % 250);
            let ntp = Transport::Udp {
                sport: 123,
                dport: 123,
            };
            signals.extend(detector.process(&packet("192.0.2.123", &client, ntp, 2)));
            let quic = Transport::Udp {
                sport: 50000 + n,
                dport: 443,
            };
            let site = format!("203.0.113.{}", n % 250);
            signals.extend(detector.process(&packet("10.0.0.5", &site, quic, 2)));
        }
        assert!(signals.is_empty(), "{signals:#?}");
    }

    #[test]
    fn a_sweep_of_uncompleted_syns_is_a_horizontal_scan() {
        let mut detector = detector();
        let mut signals = Vec::new();
        for n in 0..30u16 {
            let host = format!("10.0.2.{n}");
            let syn = Transport::Tcp {
                sport: 55555,
                dport: 3389,
                flags: flags::SYN,
            };
            signals.extend(detector.process(&packet("203.0.113.9", &host, syn, 3)));
        }
        assert_eq!(signals.len(), 1, "{signals:#?}");
        let scan = &signals[0];
        assert_eq!(scan.attributes.get("pattern"), Some(&"horizontal".into()));
        assert_eq!(scan.attributes.get("port"), Some(&3389u64.into()));
        assert_eq!(scan.indicators[0].value, "203.0.113.9");
        // It lasts: one more signal at the end, with the whole count.
        let last = detector.tick(Timestamp(1_800_000_000 * SECOND + 200 * SECOND));
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].count, 30 - 20 + 1);
    }

    #[test]
    fn advised_domains_match_their_subdomains_and_addresses_their_networks() {
        let mut advisories = Advisories::default();
        let advised = Advised::new("ADV-1", Severity::Critical);
        advisories
            .add(IndicatorType::Domain, "Evil.Example.", advised.clone())
            .expect("domain");
        advisories
            .add(IndicatorType::Cidr, "192.0.2.0/24", advised)
            .expect("cidr");
        let mut detector = NetworkDetector::new(NetworkThresholds::default(), advisories);
        let mut query = packet(
            "10.0.0.7",
            "10.0.0.53",
            Transport::Udp {
                sport: 5000,
                dport: 53,
            },
            1,
        );
        query.dns = Some(DnsQuestion {
            name: "cdn.evil.example".into(),
            qtype: 1,
            response: false,
            answers: 0,
        });
        let signals = detector.process(&query);
        assert_eq!(signals.len(), 1, "{signals:#?}");
        assert_eq!(signals[0].indicators[0].value, "evil.example");
        let to_network = packet(
            "10.0.0.7",
            "192.0.2.44",
            Transport::Tcp {
                sport: 5000,
                dport: 443,
                flags: flags::SYN,
            },
            1,
        );
        let signals = detector.process(&to_network);
        assert_eq!(signals[0].indicators[0].value, "192.0.2.0/24");
        assert_eq!(signals[0].severity, Severity::Critical);
    }

    #[test]
    fn registered_domains() {
        assert_eq!(registered_domain("a.b.example.com"), "example.com");
        assert_eq!(registered_domain("x.y.example.co.uk"), "example.co.uk");
        assert_eq!(registered_domain("example.org"), "example.org");
    }
}
