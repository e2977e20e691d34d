//! `ioc_match` from log events: a login attempt, a sudo failure or a web request whose
//! remote party is an advised address, network or domain (an old PAM `rhost=` or sshd
//! with `UseDNS` logs a host name: it is matched as a domain). Pure logic, in event time.
//!
//! A match is a *series*, as in the network detector: the first event of an advised
//! indicator and event kind raises a signal at once (an advised address knocking is news
//! now, not in ten minutes), then updates carry the growing count at most every
//! [`UPDATE_EVERY_S`], and a last update follows once the series has been quiet for
//! [`WINDOW_S`]. A failed and an accepted login from one address are two series: the
//! second is the one that matters. The number of series is bounded: when full, the least
//! recently seen tenth are closed (with their last update), so memory stays flat under
//! a flood of matching sources. Signal ids are derived like the engine's, so that a
//! replay gives the same output every time.

use super::advisories::{Advised, Advisories};
use super::engine::derive_id;
use super::events::{Event, EventKind};
use std::collections::HashMap;
use std::sync::Arc;
use vedetta_common::{IndicatorType, Signal, SignalId, Timestamp};

const SECOND: i64 = 1_000_000_000;
/// Least time between two updates of one series.
pub const UPDATE_EVERY_S: i64 = 60;
/// A series closes after this long without a match.
pub const WINDOW_S: i64 = 600;
/// Most series open at once.
pub const MAX_SERIES: usize = 10_000;

/// Figures about the matching.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IocStats {
    /// Events whose remote party was advised.
    pub matches: u64,
    pub signals: u64,
    /// Series closed early to keep within [`MAX_SERIES`].
    pub evicted: u64,
}

#[derive(Debug)]
struct Series {
    kind: IndicatorType,
    value: String,
    event: EventKind,
    advised: Advised,
    first_seen: i64,
    last_seen: i64,
    last_emit: i64,
    count: u64,
    reported: u64,
    updates: u32,
    series_id: Option<SignalId>,
}

type SeriesKey = (String, EventKind);

/// Matches log events against the advisories.
#[derive(Debug)]
pub struct LogIocDetector {
    advisories: Arc<Advisories>,
    series: HashMap<SeriesKey, Series>,
    id_key: [u8; 32],
    max_series: usize,
    now: i64,
    stats: IocStats,
}

impl LogIocDetector {
    /// `id_key`: the engine's secret for signal ids.
    pub fn new(id_key: [u8; 32]) -> Self {
        Self::with_max_series(id_key, MAX_SERIES)
    }

    pub fn with_max_series(id_key: [u8; 32], max_series: usize) -> Self {
        Self {
            advisories: Arc::default(),
            series: HashMap::new(),
            id_key,
            max_series: max_series.max(1),
            now: i64::MIN,
            stats: IocStats::default(),
        }
    }

    /// Replaces the advisories (new ones pushed, some expired). Open series go on.
    pub fn set_advisories(&mut self, advisories: Arc<Advisories>) {
        self.advisories = advisories;
    }

    pub fn advisories(&self) -> &Advisories {
        &self.advisories
    }

    pub fn stats(&self) -> IocStats {
        self.stats.clone()
    }

    /// Looks at one event; a match adds its signal (new series, due update) to `out`.
    pub fn process(&mut self, event: &Event, out: &mut Vec<Signal>) {
        let Some(event_kind) = event.kind else { return };
        let found = match (event.source_ip, &event.source) {
            (Some(ip), _) if self.advisories.has_addresses() => self.advisories.address(ip),
            (None, Some(name)) if self.advisories.has_domains() => self.advisories.domain(name),
            _ => None,
        };
        let Some(found) = found else { return };
        let (kind, value, advised) = (found.kind, found.value.to_owned(), found.advised.clone());
        self.stats.matches += 1;
        let at = event.at.0;
        self.now = self.now.max(at);
        let count = u64::from(event.count.max(1));
        let key: SeriesKey = (value, event_kind);
        // A series whose window passed quietly is over: its last word, then a new one.
        if self
            .series
            .get(&key)
            .is_some_and(|series| at - series.last_seen > WINDOW_S * SECOND)
            && let Some(old) = self.series.remove(&key)
        {
            self.close(old, out);
        }
        match self.series.get_mut(&key) {
            Some(series) => {
                series.count += count;
                series.last_seen = series.last_seen.max(at);
                series.advised = advised;
                if at - series.last_emit >= UPDATE_EVERY_S * SECOND {
                    let signal = emit(series, &self.id_key, self.now);
                    self.stats.signals += 1;
                    out.push(signal);
                }
            }
            None => {
                if self.series.len() >= self.max_series {
                    self.make_room(out);
                }
                let mut series = Series {
                    kind,
                    value: key.0.clone(),
                    event: event_kind,
                    advised,
                    first_seen: at,
                    last_seen: at,
                    last_emit: at,
                    count,
                    reported: 0,
                    updates: 0,
                    series_id: None,
                };
                out.push(emit(&mut series, &self.id_key, self.now));
                self.stats.signals += 1;
                self.series.insert(key, series);
            }
        }
    }

    /// Closes the least recently seen tenth of the series (at least one).
    fn make_room(&mut self, out: &mut Vec<Signal>) {
        let mut seen: Vec<i64> = self.series.values().map(|s| s.last_seen).collect();
        let cut = seen.len() / 10;
        let (_, threshold, _) = seen.select_nth_unstable(cut);
        let threshold = *threshold;
        let closing: Vec<SeriesKey> = self
            .series
            .iter()
            .filter(|(_, series)| series.last_seen <= threshold)
            .map(|(key, _)| key.clone())
            .collect();
        for key in closing {
            if let Some(series) = self.series.remove(&key) {
                self.stats.evicted += 1;
                self.close(series, out);
            }
        }
    }

    fn close(&mut self, mut series: Series, out: &mut Vec<Signal>) {
        if series.count > series.reported {
            out.push(emit(&mut series, &self.id_key, self.now));
            self.stats.signals += 1;
        }
    }

    /// Advances the clock: due updates, and the last update of series gone quiet.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Signal> {
        self.now = self.now.max(now.0);
        let now = self.now;
        let mut out = Vec::new();
        let id_key = self.id_key;
        self.series.retain(|_, series| {
            let pending = series.count > series.reported;
            if now - series.last_seen > WINDOW_S * SECOND {
                if pending {
                    out.push(emit(series, &id_key, now));
                }
                return false;
            }
            if pending && now - series.last_emit >= UPDATE_EVERY_S * SECOND {
                out.push(emit(series, &id_key, now));
            }
            true
        });
        self.stats.signals += out.len() as u64;
        out
    }

    /// End of input (a replay, shutdown): the last state of every open series, in the
    /// order of their keys so that a replay's output is deterministic.
    pub fn flush(&mut self) -> Vec<Signal> {
        let mut open: Vec<(SeriesKey, Series)> = self.series.drain().collect();
        open.sort_by(|a, b| {
            (a.0.0.as_str(), a.0.1.as_str()).cmp(&(b.0.0.as_str(), b.0.1.as_str()))
        });
        let mut out = Vec::new();
        for (_, series) in open {
            self.close(series, &mut out);
        }
        out
    }
}

/// The series' current state as a signal.
fn emit(series: &mut Series, id_key: &[u8; 32], now: i64) -> Signal {
    series.updates += 1;
    series.reported = series.count;
    series.last_emit = now.max(series.last_seen);
    let id = derive_id(
        id_key,
        "ioc_match",
        &format!("{}/{}", series.value, series.event.as_str()),
        series.first_seen,
        series.updates,
    );
    let series_id = *series.series_id.get_or_insert(id);
    let mut signal = Signal::new(
        "ioc_match",
        series.advised.severity,
        Timestamp(series.first_seen),
    );
    signal.id = id;
    signal.last_seen = Timestamp(series.last_seen.max(series.first_seen));
    signal.count = series.count.max(1);
    signal
        .with_indicator(series.kind, series.value.clone())
        .with_attribute("advisory", series.advised.advisory.clone())
        .with_attribute("source", "logs")
        .with_attribute("event", series.event.as_str())
        .with_attribute("direction", "from")
        .with_attribute("series", series_id.to_string())
        .with_attribute("update", u64::from(series.updates))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use vedetta_common::{AttributeValue, Severity};

    const T0: i64 = 1_800_000_000 * SECOND;

    fn table() -> Arc<Advisories> {
        let mut advisories = Advisories::default();
        advisories
            .add(
                IndicatorType::Ip,
                "203.0.113.7",
                Advised::new("ADV-IP", Severity::Critical),
            )
            .expect("ip");
        advisories
            .add(
                IndicatorType::Cidr,
                "198.51.100.0/24",
                Advised::new("ADV-NET", Severity::Medium),
            )
            .expect("cidr");
        advisories
            .add(
                IndicatorType::Domain,
                "evil.example",
                Advised::new("ADV-DNS", Severity::High),
            )
            .expect("domain");
        Arc::new(advisories)
    }

    fn event(kind: EventKind, source: &str, second: i64) -> Event<'static> {
        Event {
            kind: Some(kind),
            at: Timestamp(T0 + second * SECOND),
            count: 1,
            source_ip: source.parse().ok(),
            source: Some(Cow::Owned(source.to_owned())),
            ..Event::default()
        }
    }

    fn detector() -> LogIocDetector {
        let mut detector = LogIocDetector::new([3; 32]);
        detector.set_advisories(table());
        detector
    }

    fn text(signal: &Signal, name: &str) -> String {
        match signal.attributes.get(name) {
            Some(AttributeValue::Text(text)) => text.clone(),
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn advised_sources_match_at_once_then_as_a_series() {
        let mut detector = detector();
        let mut out = Vec::new();
        detector.process(&event(EventKind::SshFailed, "192.0.2.1", 0), &mut out);
        assert!(out.is_empty(), "not advised");
        detector.process(&event(EventKind::SshFailed, "203.0.113.7", 1), &mut out);
        assert_eq!(out.len(), 1);
        let first = out[0].clone();
        assert_eq!(first.kind, "ioc_match");
        assert_eq!(first.severity, Severity::Critical);
        assert_eq!(first.indicators[0].kind, IndicatorType::Ip);
        assert_eq!(first.indicators[0].value, "203.0.113.7");
        assert_eq!(text(&first, "advisory"), "ADV-IP");
        assert_eq!(text(&first, "source"), "logs");
        assert_eq!(text(&first, "event"), "ssh_failed");
        assert_eq!(text(&first, "direction"), "from");
        // More attempts within the minute: counted, not sent.
        for second in 2..30 {
            detector.process(
                &event(EventKind::SshFailed, "203.0.113.7", second),
                &mut out,
            );
        }
        assert_eq!(out.len(), 1);
        // A minute on: one update with the count, same series.
        detector.process(&event(EventKind::SshFailed, "203.0.113.7", 62), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].count, 30);
        assert_eq!(text(&out[1], "series"), text(&first, "series"));
        assert_ne!(out[1].id, first.id);
        // A login from it is a series of its own, at once.
        detector.process(&event(EventKind::SshAccepted, "203.0.113.7", 63), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(text(&out[2], "event"), "ssh_accepted");
        // Networks and host names.
        detector.process(&event(EventKind::WebRequest, "198.51.100.77", 64), &mut out);
        assert_eq!(out[3].indicators[0].value, "198.51.100.0/24");
        assert_eq!(out[3].indicators[0].kind, IndicatorType::Cidr);
        assert_eq!(out[3].severity, Severity::Medium);
        detector.process(
            &event(EventKind::SshFailed, "Host7.EVIL.example", 65),
            &mut out,
        );
        assert_eq!(out[4].indicators[0].value, "evil.example");
        assert_eq!(out[4].indicators[0].kind, IndicatorType::Domain);
        assert_eq!(out.len(), 5);
        // Quiet: the pending count goes out once, then the series closes.
        detector.process(&event(EventKind::SshFailed, "203.0.113.7", 70), &mut out);
        let last = detector.tick(Timestamp(T0 + 2000 * SECOND));
        let failed: Vec<_> = last
            .iter()
            .filter(|s| s.indicators[0].value == "203.0.113.7")
            .collect();
        assert_eq!(failed.len(), 1, "{last:#?}");
        assert_eq!(failed[0].count, 31);
        assert!(detector.tick(Timestamp(T0 + 4000 * SECOND)).is_empty());
        assert_eq!(detector.stats().matches, 34);
    }

    #[test]
    fn ids_are_deterministic_and_the_series_bounded() {
        let run = || {
            let mut detector = LogIocDetector::with_max_series([1; 32], 20);
            detector.set_advisories(table());
            let mut out = Vec::new();
            for n in 0..100i64 {
                let source = format!("198.51.100.{n}");
                detector.process(&event(EventKind::SshFailed, &source, n), &mut out);
                // Every address of the network adds to one series (one advised value).
                detector.process(&event(EventKind::SudoFailed, "203.0.113.7", n), &mut out);
            }
            out.extend(detector.flush());
            (out, detector.series.len(), detector.stats())
        };
        let (first, open, stats) = run();
        let (second, _, _) = run();
        assert_eq!(
            first.iter().map(|s| s.id).collect::<Vec<_>>(),
            second.iter().map(|s| s.id).collect::<Vec<_>>()
        );
        assert_eq!(open, 0);
        assert!(stats.matches == 200 && stats.evicted == 0, "{stats:?}");

        let mut detector = LogIocDetector::with_max_series([1; 32], 20);
        let mut advisories = Advisories::default();
        for n in 0..100 {
            advisories
                .add(
                    IndicatorType::Ip,
                    &format!("192.0.2.{n}"),
                    Advised::new("ADV-MANY", Severity::High),
                )
                .expect("ip");
        }
        detector.set_advisories(Arc::new(advisories));
        let mut out = Vec::new();
        for n in 0..100i64 {
            detector.process(
                &event(EventKind::SshFailed, &format!("192.0.2.{n}"), n),
                &mut out,
            );
            assert!(detector.series.len() <= 20);
        }
        assert_eq!(out.len(), 100, "every new match is said at once");
        assert!(detector.stats().evicted > 0);
    }

    #[test]
    fn event_kind_names_are_those_of_the_rules() {
        for kind in EventKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).expect("json"),
                serde_json::Value::from(kind.as_str())
            );
        }
    }
}
