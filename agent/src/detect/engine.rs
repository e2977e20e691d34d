//! The detection engine: sliding windows keyed by source (or user), in event time, with
//! bounded memory; rules decide when a key becomes a signal.
//!
//! * A window is a ring of time buckets (1/16 of the window each), so that a key costs
//!   the same whether it made 10 attempts or 10 million.
//! * When a rule's threshold is crossed, a *series* opens for (signal kind, key): the
//!   first signal goes out at once, and while the attack goes on the series sends an
//!   update at most every `update_every`, an eighth of the rule's window, or half the
//!   attack's age, whichever is longest (same `series` attribute, growing `count`), not one signal per event. Rules of
//!   the same kind (a burst and a low-and-slow brute force) share one series per key; a
//!   more severe (or faster) one crossing later takes the series over. A series closes
//!   after its window passes quietly.
//! * Keys are capped per rule: beyond `max_keys`, expired keys go first, then the least
//!   recently seen.
//! * Signal ids are derived from a secret key and the series (HMAC-SHA256), so that a
//!   replay is deterministic and two agents never produce the same id.

use super::events::Event;
use super::rules::{Aggregate, Field, Rule};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use vedetta_common::{AttributeValue, IndicatorType, Signal, SignalId, Timestamp};

const BUCKETS: i64 = 16;

/// Keys (source addresses, user names) are kept as 64-bit hashes under a random per-engine
/// key: computed once per event, cheap to look up in every rule's table, and no text is
/// copied until a key becomes a signal. Collisions between 50,000 keys are a 1 in 10^10
/// event, and nobody outside can aim for one.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here (see write_u64); anything else is folded in.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type KeyMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<KeyHasher>>;
type KeySet = HashSet<u64, std::hash::BuildHasherDefault<KeyHasher>>;

/// A series is identified by its signal kind and its key's hash.
type SeriesKey = (usize, u64);
const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Least time between two updates of one series (event time).
    pub update_every: std::time::Duration,
    /// Most keys a rule tracks at once.
    pub max_keys: usize,
    /// Secret that makes signal ids unpredictable and unique to this agent.
    pub id_key: [u8; 32],
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            update_every: std::time::Duration::from_secs(600),
            max_keys: 50_000,
            id_key: [0; 32],
        }
    }
}

/// Figures about the engine's work and memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineStats {
    pub events: u64,
    pub signals: u64,
    pub keys: u64,
    pub open_series: u64,
    pub evicted_keys: u64,
}

/// A bucket number as stored (see `Window::newest`).
fn bucket_index(bucket: i64) -> u32 {
    u32::try_from(bucket.max(0)).unwrap_or(u32::MAX)
}

/// The events of one key within one rule's window. Kept small and free of heap
/// allocations: there is one per key per rule, and a flood of sources makes tens of
/// thousands of them.
#[derive(Debug, Default)]
struct Window {
    /// Events per bucket, in a ring indexed by bucket number modulo `BUCKETS`: the slots
    /// of buckets that left the window are zeroed as time moves on (see `advance`).
    counts: [u32; BUCKETS as usize],
    /// The newest bucket's number. Buckets last at least a second and are counted since
    /// the epoch, so this fits in 32 bits until 2106 (earlier times are clamped, see
    /// `bucket_index`).
    newest: u32,
    /// Sum of `counts`.
    sum: u64,
    /// Keyed 64-bit hashes of the distinct values and when each was last seen
    /// (distinct rules only), bounded: the count is what matters, not the text.
    values: Option<Box<KeyMap<i64>>>,
    /// The first event still in the window (exact until its bucket expires, then the
    /// start of the oldest bucket).
    first_seen: i64,
    last_seen: i64,
}

impl Window {
    fn slot(bucket: i64) -> usize {
        bucket.rem_euclid(BUCKETS) as usize
    }

    /// Moves the window's end to `now_bucket`, forgetting the buckets that leave it.
    fn advance(&mut self, now_bucket: i64, bucket_nanos: i64) {
        let newest = i64::from(self.newest);
        if now_bucket <= newest {
            return;
        }
        if self.sum > 0 {
            // The slots of the buckets entering the window are those of the buckets
            // leaving it.
            let mut pruned = false;
            for bucket in (newest + 1..=now_bucket).take(BUCKETS as usize) {
                let count = std::mem::take(&mut self.counts[Self::slot(bucket)]);
                self.sum -= u64::from(count);
                pruned |= count > 0;
            }
            if pruned && let Some(oldest) = self.oldest_bucket(now_bucket) {
                self.first_seen = self.first_seen.max(oldest.saturating_mul(bucket_nanos));
            }
        }
        self.newest = bucket_index(now_bucket);
    }

    /// The oldest bucket that still holds events, if any.
    fn oldest_bucket(&self, now_bucket: i64) -> Option<i64> {
        (now_bucket - BUCKETS + 1..=now_bucket).find(|&bucket| self.counts[Self::slot(bucket)] > 0)
    }

    fn add(&mut self, at: i64, bucket: i64, count: u64, bucket_nanos: i64) {
        self.advance(bucket, bucket_nanos);
        if self.sum == 0 {
            // Empty (new, or everything left the window): the window starts here.
            self.first_seen = at;
            self.newest = bucket_index(bucket);
        }
        // Out-of-order events land in the newest bucket: windows stay approximate to one
        // bucket, never unbounded.
        let slot = &mut self.counts[Self::slot(i64::from(self.newest))];
        let before = *slot;
        *slot = slot.saturating_add(u32::try_from(count).unwrap_or(u32::MAX));
        self.sum += u64::from(*slot - before);
        self.first_seen = self.first_seen.min(at);
        self.last_seen = self.last_seen.max(at);
    }

    /// Forgets every event (a success consumes the failures before it).
    fn clear(&mut self) {
        self.counts = [0; BUCKETS as usize];
        self.sum = 0;
    }

    fn first_seen(&self) -> i64 {
        if self.sum == 0 {
            self.last_seen
        } else {
            self.first_seen
        }
    }

    fn values(&self) -> impl Iterator<Item = (&u64, &i64)> {
        self.values.iter().flat_map(|values| values.iter())
    }
}

#[derive(Debug)]
struct RuleState {
    windows: KeyMap<Window>,
    bucket_nanos: i64,
    window_nanos: i64,
}

#[derive(Debug)]
struct Series {
    rule: usize,
    key: Box<str>,
    key_hash: u64,
    source_ip: Option<IpAddr>,
    first_seen: i64,
    last_seen: i64,
    count: u64,
    reported_count: u64,
    last_emit: i64,
    updates: u32,
    series_id: Option<SignalId>,
    /// Keyed hashes of the distinct users and paths seen by the series (bounded), for
    /// the signal's figures.
    users: KeySet,
    paths: KeySet,
    /// The account named by the latest event (a login after failures names it).
    last_user: Option<Box<str>>,
    extra: BTreeMap<String, AttributeValue>,
}

const SERIES_SAMPLE_LIMIT: usize = 1024;

impl Series {
    fn absorb(
        &mut self,
        event: &Event,
        count: u64,
        hasher: &std::collections::hash_map::RandomState,
    ) {
        use std::hash::BuildHasher;
        self.count += count;
        self.last_seen = self.last_seen.max(event.at.0);
        if let Some(user) = &event.user {
            if self.users.len() < SERIES_SAMPLE_LIMIT {
                self.users.insert(hasher.hash_one(user.as_ref()));
            }
            self.last_user = Some(user.as_ref().into());
        }
        if let Some(path) = &event.path
            && self.paths.len() < SERIES_SAMPLE_LIMIT
        {
            self.paths.insert(hasher.hash_one(path.as_ref()));
        }
        if let Some(scanner) = event.scanner {
            self.extra.insert("scanner".into(), scanner.into());
        }
        if let Some(exploit) = event.exploit {
            // Every class the source tried, in the order first seen.
            let known = match self.extra.get("exploit") {
                Some(AttributeValue::Text(classes)) => classes.clone(),
                _ => String::new(),
            };
            if !known.split(',').any(|class| class == exploit) {
                let classes = if known.is_empty() {
                    exploit.to_owned()
                } else {
                    format!("{known},{exploit}")
                };
                self.extra.insert("exploit".into(), classes.into());
            }
            if let Some(path) = &event.path {
                self.extra
                    .entry("sample_target".into())
                    .or_insert_with(|| path.chars().take(200).collect::<String>().into());
            }
        }
    }
}

/// The engine. Feed it events in (roughly) time order.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<Rule>,
    states: Vec<RuleState>,
    /// Index of each rule's kind in `kinds`.
    rule_kind: Vec<usize>,
    kinds: Vec<String>,
    series: HashMap<SeriesKey, Series>,
    /// Keys the hashes of distinct values (random per engine: no crafted collisions).
    hasher: std::collections::hash_map::RandomState,
    config: EngineConfig,
    now: i64,
    stats: EngineStats,
}

impl Engine {
    pub fn new(rules: Vec<Rule>, config: EngineConfig) -> Self {
        let mut kinds: Vec<String> = Vec::new();
        let rule_kind = rules
            .iter()
            .map(|rule| match kinds.iter().position(|k| *k == rule.kind) {
                Some(index) => index,
                None => {
                    kinds.push(rule.kind.clone());
                    kinds.len() - 1
                }
            })
            .collect();
        let states = rules
            .iter()
            .map(|rule| {
                let window_nanos = i64::try_from(rule.window.as_nanos()).unwrap_or(i64::MAX);
                RuleState {
                    windows: KeyMap::default(),
                    bucket_nanos: (window_nanos / BUCKETS).max(NANOS_PER_SECOND),
                    window_nanos,
                }
            })
            .collect();
        Self {
            rules,
            states,
            rule_kind,
            kinds,
            series: HashMap::new(),
            hasher: std::collections::hash_map::RandomState::new(),
            config,
            now: i64::MIN,
            stats: EngineStats::default(),
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn stats(&self) -> EngineStats {
        let mut stats = self.stats.clone();
        stats.keys = self.states.iter().map(|s| s.windows.len() as u64).sum();
        stats.open_series = self.series.len() as u64;
        stats
    }

    /// Least event time between two signals of a series opened by `rule`.
    /// It grows with the attack's age (half of it), so that an attack lasting days sends
    /// a dozen updates, not hundreds.
    fn update_interval(&self, rule: usize, age: i64) -> i64 {
        let configured = i64::try_from(self.config.update_every.as_nanos()).unwrap_or(i64::MAX);
        configured
            .max(self.states[rule].window_nanos / 8)
            .max(age / 2)
    }

    /// Whether a signal kind is already being reported for `key`.
    fn reporting(&self, kind: &str, key: u64) -> bool {
        self.kinds
            .iter()
            .position(|k| k == kind)
            .is_some_and(|index| self.series.contains_key(&(index, key)))
    }

    fn window(&mut self, rule: usize, key: u64) -> &mut Window {
        let max_keys = self.config.max_keys;
        let now = self.now;
        let state = &mut self.states[rule];
        let present = state.windows.contains_key(&key);
        if !present && state.windows.len() >= max_keys {
            let before = state.windows.len();
            let horizon = now.saturating_sub(state.window_nanos);
            state.windows.retain(|_, w| w.last_seen >= horizon);
            if state.windows.len() >= max_keys {
                // Still full of live keys: forget the least recently seen tenth.
                let mut seen: Vec<i64> = state.windows.values().map(|w| w.last_seen).collect();
                let cut = seen.len() / 10;
                let (_, threshold, _) = seen.select_nth_unstable(cut);
                let threshold = *threshold;
                state.windows.retain(|_, w| w.last_seen > threshold);
            }
            self.stats.evicted_keys += (before - state.windows.len()) as u64;
        }
        // The key is copied only when it is new: most events are about known sources.
        state.windows.entry(key).or_default()
    }

    /// Processes one event; returns the signals it causes (new series, due updates).
    pub fn process(&mut self, event: &Event) -> Vec<Signal> {
        self.stats.events += 1;
        self.now = self.now.max(event.at.0);
        let at = event.at.0;
        let count = u64::from(event.count.max(1));
        let mut out = Vec::new();
        let mut absorbed: Vec<usize> = Vec::new();
        // Each key field's hash, computed at most once for this event.
        let mut hashes: [Option<Option<u64>>; 9] = [None; 9];
        let hasher = self.hasher.clone();
        let mut key_hash = |field: Field| -> Option<u64> {
            *hashes[field as usize].get_or_insert_with(|| {
                field
                    .text(event)
                    .map(|text| std::hash::BuildHasher::hash_one(&hasher, text.as_ref()))
            })
        };
        for index in 0..self.rules.len() {
            let rule = &self.rules[index];
            let (key_field, aggregate, threshold) = (rule.key, rule.aggregate, rule.threshold);
            if rule.reset_on.is_some() && rule.reset_on == event.kind {
                if let Some(key) = key_hash(key_field) {
                    self.states[index].windows.remove(&key);
                }
                continue;
            }
            let bucket = at.div_euclid(self.states[index].bucket_nanos);
            if aggregate == Aggregate::After && rule.after == event.kind {
                if let Some(key) = key_hash(key_field) {
                    let bucket_nanos = self.states[index].bucket_nanos;
                    self.window(index, key).add(at, bucket, count, bucket_nanos);
                }
                continue;
            }
            if !rule.matches(event) {
                continue;
            }
            let Some(key) = key_hash(key_field) else {
                continue;
            };
            let distinct = self.rules[index].distinct;
            let max_per_value = self.rules[index].max_per_value;
            let min_span = i64::try_from(self.rules[index].min_span.as_nanos()).unwrap_or(i64::MAX);
            let window_nanos = self.states[index].window_nanos;
            let bucket_nanos = self.states[index].bucket_nanos;
            let value_hash = distinct
                .and_then(|field| field.text(event))
                .map(|value| std::hash::BuildHasher::hash_one(&self.hasher, value.as_ref()));
            let window = self.window(index, key);
            let (crossed, figure, first_seen) = match aggregate {
                Aggregate::Count => {
                    window.add(at, bucket, count, bucket_nanos);
                    let spread = window.last_seen - window.first_seen() >= min_span;
                    (
                        window.sum >= threshold && spread,
                        window.sum,
                        window.first_seen(),
                    )
                }
                Aggregate::Distinct => {
                    window.add(at, bucket, count, bucket_nanos);
                    let cap = (threshold as usize).saturating_mul(2).max(256);
                    let values = window.values.get_or_insert_default();
                    if let Some(value) = value_hash
                        && (values.len() < cap || values.contains_key(&value))
                    {
                        values.insert(value, at);
                    }
                    // Values seen before the window no longer count. Checked only when
                    // the count could matter, so that the common case stays cheap.
                    if values.len() as u64 >= threshold || values.len() >= cap {
                        let horizon = at - window_nanos;
                        values.retain(|_, seen| *seen >= horizon);
                    }
                    let distinct_values = values.len() as u64;
                    let average_ok = max_per_value.is_none_or(|max| {
                        distinct_values > 0 && window.sum as f64 / distinct_values as f64 <= max
                    });
                    (
                        distinct_values >= threshold && average_ok,
                        distinct_values,
                        window.first_seen(),
                    )
                }
                Aggregate::After => {
                    window.advance(bucket, bucket_nanos);
                    let failures = window.sum;
                    // A success consumes the failures before it: someone who mistypes,
                    // then logs in, then mistypes again later never adds up to an attack.
                    window.clear();
                    (failures >= threshold, failures, at)
                }
            };
            let kind = self.rule_kind[index];
            if absorbed.contains(&kind) {
                continue;
            }
            let series_key: SeriesKey = (kind, key);
            // A series whose window passed quietly is over: report and forget it.
            if let Some(series) = self.series.get(&series_key)
                && at - series.last_seen > self.states[series.rule].window_nanos
                && let Some(old) = self.series.remove(&series_key)
            {
                out.extend(self.final_update(old));
            }
            if let Some(series) = self.series.get_mut(&series_key) {
                series.absorb(event, count, &self.hasher);
                absorbed.push(kind);
                // A more severe rule of the same kind crossing (an account added to an
                // admin group after its creation), or a faster one (a burst inside a slow
                // campaign), describes the attack better from now on.
                let current = series.rule;
                let last_emit = series.last_emit;
                let (new, old) = (&self.rules[index], &self.rules[current]);
                let better = new.severity > old.severity
                    || (new.severity == old.severity && new.window < old.window);
                if crossed && current != index && better {
                    if let Some(series) = self.series.get_mut(&series_key) {
                        series.rule = index;
                    }
                    out.extend(self.emit(&series_key));
                    continue;
                }
                let age = self
                    .series
                    .get(&series_key)
                    .map_or(0, |s| s.last_seen - s.first_seen);
                if at - last_emit >= self.update_interval(current, age) {
                    out.extend(self.emit(&series_key));
                }
            } else if crossed
                && !self.rules[index]
                    .suppressed_by
                    .iter()
                    .any(|kind| self.reporting(kind, key))
            {
                let mut series = Series {
                    rule: index,
                    key: key_field
                        .text(event)
                        .map(|text| text.as_ref().into())
                        .unwrap_or_default(),
                    key_hash: key,
                    source_ip: if key_field == Field::Source {
                        event.source_ip
                    } else {
                        None
                    },
                    first_seen,
                    last_seen: at,
                    count: if aggregate == Aggregate::After {
                        0
                    } else {
                        figure
                    },
                    reported_count: 0,
                    last_emit: at,
                    updates: 0,
                    series_id: None,
                    users: Default::default(),
                    paths: Default::default(),
                    last_user: None,
                    extra: BTreeMap::new(),
                };
                if aggregate == Aggregate::Count || aggregate == Aggregate::Distinct {
                    // The event that crossed the threshold is already in `figure`.
                    series.absorb(event, 0, &self.hasher);
                } else {
                    series.absorb(event, count, &self.hasher);
                    series
                        .extra
                        .insert("failures_before".into(), AttributeValue::from(figure));
                }
                if aggregate == Aggregate::Distinct
                    && let Some(window) = self.states[index].windows.get(&key)
                {
                    series.count = window.sum;
                    // What the rule counted, so that the signal's figures are exact.
                    let counted = window
                        .values()
                        .map(|(value, _)| *value)
                        .take(SERIES_SAMPLE_LIMIT);
                    match distinct {
                        Some(Field::User) => series.users.extend(counted),
                        Some(Field::Path) => series.paths.extend(counted),
                        _ => {}
                    }
                }
                self.series.insert(series_key, series);
                absorbed.push(kind);
                out.extend(self.emit(&series_key));
            }
        }
        out
    }

    /// Emits the series' current state as a signal.
    fn emit(&mut self, series_key: &SeriesKey) -> Option<Signal> {
        let series = self.series.get_mut(series_key)?;
        series.last_emit = self.now.max(series.last_seen);
        series.reported_count = series.count;
        series.updates += 1;
        let rule = &self.rules[series.rule];
        let id = derive_id(
            &self.config.id_key,
            &self.kinds[series_key.0],
            &series.key,
            series.first_seen,
            series.updates,
        );
        let series_id = *series.series_id.get_or_insert(id);
        let mut signal = Signal::new(
            rule.kind.clone(),
            rule.severity,
            Timestamp(series.first_seen),
        );
        signal.id = id;
        signal.last_seen = Timestamp(series.last_seen.max(series.first_seen));
        signal.count = series.count.max(1);
        signal.mitre = rule.mitre.clone();
        match rule.key {
            Field::Source => {
                let kind = if series.source_ip.is_some() {
                    IndicatorType::Ip
                } else {
                    IndicatorType::Domain
                };
                signal = signal.with_indicator(kind, series.key.to_string());
            }
            Field::User => {
                signal = signal.with_indicator(IndicatorType::User, series.key.to_string())
            }
            _ => {}
        }
        for (name, value) in &rule.attributes {
            signal.attributes.insert(name.clone(), value.clone());
        }
        signal = signal
            .with_attribute("rule", rule.id.as_str())
            .with_attribute("window_s", rule.window.as_secs())
            .with_attribute("threshold", rule.threshold)
            .with_attribute("series", series_id.to_string())
            .with_attribute("update", u64::from(series.updates));
        if !series.users.is_empty() {
            signal = signal.with_attribute("distinct_users", series.users.len() as u64);
        }
        if series.paths.len() > 1 {
            signal = signal.with_attribute("distinct_paths", series.paths.len() as u64);
        }
        // A login after failures names the account that was broken into.
        if rule.aggregate == Aggregate::After
            && let Some(user) = &series.last_user
        {
            signal = signal.with_indicator(IndicatorType::User, user.to_string());
        }
        for (name, value) in &series.extra {
            signal.attributes.insert(name.clone(), value.clone());
        }
        self.stats.signals += 1;
        Some(signal)
    }

    fn final_update(&mut self, series: Series) -> Option<Signal> {
        let key: SeriesKey = (self.rule_kind[series.rule], series.key_hash);
        let due = series.count > series.reported_count;
        self.series.insert(key, series);
        let signal = if due { self.emit(&key) } else { None };
        self.series.remove(&key);
        signal
    }

    /// Advances the clock (live operation): sends updates that are due and closes series
    /// whose window passed quietly.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Signal> {
        self.now = self.now.max(now.0);
        let mut out = Vec::new();
        let keys: Vec<SeriesKey> = self.series.keys().copied().collect();
        for key in keys {
            let Some(series) = self.series.get(&key) else {
                continue;
            };
            let expired = self.now - series.last_seen > self.states[series.rule].window_nanos;
            let due = series.count > series.reported_count
                && self.now - series.last_emit
                    >= self.update_interval(series.rule, series.last_seen - series.first_seen);
            if expired {
                if let Some(series) = self.series.remove(&key) {
                    out.extend(self.final_update(series));
                }
            } else if due {
                out.extend(self.emit(&key));
            }
        }
        out
    }

    /// End of input (replay, shutdown): reports every series' final state, one signal at
    /// a time, in the order of kind and key text so that a replay's output is
    /// deterministic. The windows are freed first: no new event can cross a threshold.
    pub fn flush(&mut self) -> impl Iterator<Item = Signal> + '_ {
        for state in &mut self.states {
            state.windows = KeyMap::default();
        }
        let mut keys: Vec<SeriesKey> = self.series.keys().copied().collect();
        keys.sort_by(|a, b| (a.0, &self.series[a].key).cmp(&(b.0, &self.series[b].key)));
        keys.into_iter().filter_map(move |key| {
            let series = self.series.remove(&key)?;
            self.final_update(series)
        })
    }
}

/// A UUID (version 8) from HMAC-SHA256 of the series and its update number.
pub(crate) fn derive_id(
    key: &[u8; 32],
    kind: &str,
    series_key: &str,
    first_seen: i64,
    update: u32,
) -> SignalId {
    let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut context = ring::hmac::Context::with_key(&mac);
    for part in [kind.as_bytes(), b"\0", series_key.as_bytes(), b"\0"] {
        context.update(part);
    }
    context.update(&first_seen.to_be_bytes());
    context.update(&update.to_be_bytes());
    let tag = context.sign();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&tag.as_ref()[..16]);
    SignalId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::events::EventKind;
    use crate::detect::rules::load;

    const MINUTE: i64 = 60 * NANOS_PER_SECOND;

    fn engine(max_keys: usize) -> Engine {
        Engine::new(
            load(None).expect("rules"),
            EngineConfig {
                max_keys,
                ..EngineConfig::default()
            },
        )
    }

    fn event<'a>(kind: EventKind, minute: i64, source: &'a str, user: &'a str) -> Event<'a> {
        Event {
            kind: Some(kind),
            at: Timestamp(1_800_000_000 * NANOS_PER_SECOND + minute * MINUTE),
            count: 1,
            source: Some(source.into()),
            source_ip: source.parse().ok(),
            user: Some(user.into()),
            method: Some("password".into()),
            ..Event::default()
        }
    }

    #[test]
    fn a_window_forgets_what_leaves_it_and_restarts_when_emptied() {
        let bucket_nanos = MINUTE; // a 16-minute window
        let mut window = Window::default();
        for minute in [0, 1, 1, 5] {
            window.add(minute * MINUTE, minute, 1, bucket_nanos);
        }
        assert_eq!((window.sum, window.first_seen()), (4, 0));
        // Minute 16: the bucket of minute 0 leaves; the first event still in is at 1.
        window.add(16 * MINUTE, 16, 1, bucket_nanos);
        assert_eq!((window.sum, window.first_seen()), (4, MINUTE));
        // Out of order: counted in the newest bucket, first_seen stays exact.
        window.add(15 * MINUTE, 15, 1, bucket_nanos);
        assert_eq!(window.sum, 5);
        // An hour later everything has left: the window starts again at the new event.
        window.add(80 * MINUTE, 80, 2, bucket_nanos);
        assert_eq!((window.sum, window.first_seen()), (2, 80 * MINUTE));
        assert_eq!(window.counts.iter().map(|c| u64::from(*c)).sum::<u64>(), 2);
        // Floods saturate a bucket instead of overflowing, and the sum agrees.
        window.add(80 * MINUTE, 80, u64::MAX, bucket_nanos);
        assert_eq!(window.sum, u64::from(u32::MAX));
    }

    #[test]
    fn memory_is_bounded_by_max_keys_whatever_the_number_of_sources() {
        let mut engine = engine(1_000);
        for n in 0..50_000u32 {
            let source = std::net::Ipv4Addr::from(0x0a00_0000 + n).to_string();
            engine.process(&event(
                EventKind::SshFailed,
                i64::from(n / 1000),
                &source,
                "root",
            ));
        }
        let stats = engine.stats();
        let rules_on_failures = 4; // burst, slow, spraying, and the failures fed to "after"
        assert!(stats.keys <= 1_000 * rules_on_failures, "{stats:?}");
        assert!(stats.evicted_keys > 0);
    }

    #[test]
    fn distinct_values_expire_with_their_window() {
        let mut engine = engine(1_000);
        // Eight different accounts, but one per hour: never eight within the hour.
        let users = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        let mut signals = Vec::new();
        for (hour, user) in users.iter().enumerate() {
            signals.extend(engine.process(&event(
                EventKind::SshFailed,
                hour as i64 * 61,
                "203.0.113.1",
                user,
            )));
        }
        assert!(
            signals.iter().all(|s| s.kind != "ssh_password_spraying"),
            "{signals:?}"
        );
    }

    #[test]
    fn a_success_consumes_the_failures_before_it() {
        let mut engine = engine(1_000);
        let mut signals = Vec::new();
        // Four rounds of "mistype, then log in": never five failures before a success.
        for round in 0..4 {
            signals.extend(engine.process(&event(
                EventKind::SshFailed,
                round * 5,
                "10.0.0.5",
                "alice",
            )));
            signals.extend(engine.process(&event(
                EventKind::SshFailed,
                round * 5 + 1,
                "10.0.0.5",
                "alice",
            )));
            signals.extend(engine.process(&event(
                EventKind::SshAccepted,
                round * 5 + 2,
                "10.0.0.5",
                "alice",
            )));
        }
        assert!(signals.is_empty(), "{signals:?}");
        for minute in 30..36 {
            engine.process(&event(EventKind::SshFailed, minute, "10.0.0.5", "alice"));
        }
        let broken = engine.process(&event(EventKind::SshAccepted, 37, "10.0.0.5", "alice"));
        assert_eq!(broken.len(), 1);
        assert_eq!(broken[0].kind, "ssh_login_after_failures");
        assert_eq!(
            broken[0].attributes.get("failures_before"),
            Some(&AttributeValue::Int(6))
        );
    }

    #[test]
    fn a_long_attack_sends_few_updates() {
        let mut engine = engine(1_000);
        let mut signals = Vec::new();
        // Two attempts a minute for three days.
        for minute in 0..3 * 24 * 60 {
            for _ in 0..2 {
                signals.extend(engine.process(&event(
                    EventKind::SshFailed,
                    minute,
                    "203.0.113.2",
                    "root",
                )));
            }
        }
        signals.extend(engine.flush());
        assert!(
            signals.len() <= 16,
            "{} signals for one attack",
            signals.len()
        );
        let last = signals.last().expect("signals");
        assert_eq!(last.count, 2 * 3 * 24 * 60);
        let series = &signals[0].id.to_string();
        assert!(
            signals
                .iter()
                .all(|s| s.attributes.get("series") == Some(&AttributeValue::Text(series.clone())))
        );
    }
}
