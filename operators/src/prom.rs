//! OTLP metric points to Prometheus samples, by the OpenTelemetry "Prometheus and OpenMetrics
//! Compatibility" specification, as the Collector's prometheusremotewrite exporter applies it.
//!
//! - Names: every run of characters outside `[a-zA-Z0-9_:]` becomes one `_`; the UCUM unit is
//!   appended in words (`ms` → `milliseconds`, `By` → `bytes`, `By/s` → `bytes_per_second`),
//!   units in braces (`{request}`) are dropped, unit `1` on a gauge becomes `_ratio`;
//!   monotonic sums get `_total`. A unit or `_total` already at the end is not repeated.
//! - Labels: point attributes sanitized (invalid characters to `_`, a leading digit gets
//!   `key_`, a single leading `_` gets `key`); `job` from `service.namespace/service.name`,
//!   `instance` from `service.instance.id`, `otel_scope_name`/`otel_scope_version` from the
//!   scope, `region` from the record's region. The other resource attributes go on one
//!   `target_info` series per resource.
//! - Types: gauges and non-monotonic sums as gauges; monotonic sums as counters; histograms as
//!   cumulative `_bucket{le}` with `+Inf`, `_sum`, `_count`; summaries as `{quantile}` series
//!   with `_sum` and `_count`; exponential histograms converted to classic buckets with
//!   configurable bounds (Prometheus 2.42 takes no native histograms over remote-write 1.0).
//! - Delta temporality is turned into cumulative per series (the Collector drops delta points).
//! - A point flagged "no recorded value" becomes a Prometheus stale marker.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use dwcp_schemas::model::{AnyValue, MetricPoint, PointValue, Temporality};
use serde::{Deserialize, Serialize};

/// The NaN bit pattern Prometheus uses as a staleness marker.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// A label: name and value, shared (interned) so a label set costs a refcount per label to copy.
pub type Label = (Arc<str>, Arc<str>);

/// Builds a label set from string pairs, sorted by name (tests and small callers).
pub fn labels_of<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> Vec<Label> {
    let mut v: Vec<Label> = pairs
        .into_iter()
        .map(|(k, v)| (Arc::from(k.as_ref()), Arc::from(v.as_ref())))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// [`labels_of`] as a shared label set, allocated once.
pub fn label_set_of<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> Arc<[Label]> {
    let mut pairs: Vec<(K, V)> = pairs.into_iter().collect();
    pairs.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
    pairs
        .iter()
        .map(|(k, v)| (Arc::from(k.as_ref()), Arc::from(v.as_ref())))
        .collect()
}

/// One sample of one series. `labels` include `__name__` and are sorted by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Sorted labels, `__name__` among them: shared by the samples of one series that the
    /// converter makes (one refcount per sample, not one allocation and a refcount per label).
    pub labels: Arc<[Label]>,
    /// The value (a stale marker is [`stale_nan`]).
    pub value: f64,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// [`series_hash`] of the labels, computed once at construction (0: not computed).
    #[serde(skip)]
    hash: u64,
}

impl Sample {
    /// A sample; `labels` must be sorted by name.
    pub fn new(labels: impl Into<Arc<[Label]>>, value: f64, timestamp_ms: i64) -> Self {
        let labels = labels.into();
        let hash = series_hash(&labels);
        Sample {
            labels,
            value,
            timestamp_ms,
            hash,
        }
    }

    /// The `__name__` label.
    pub fn name(&self) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| &**k == "__name__")
            .map_or("", |(_, v)| &**v)
    }

    /// A label's value.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| &**k == name).map(|(_, v)| &**v)
    }

    /// A stable 64-bit hash of the label set (the series identity).
    pub fn series_hash(&self) -> u64 {
        if self.hash != 0 {
            self.hash
        } else {
            series_hash(&self.labels)
        }
    }
}

/// A stable hash of a label set: the same in every process and run, so it can pick a shard or
/// a partition. It is the mixed wrapping sum of each label's own hash ([`label_hash`]), so it
/// does not depend on the labels' order, and a sample made of a shared base and its own name
/// (and `le`) costs two label hashes added to the base's sum, not every label hashed again.
pub fn series_hash<K: AsRef<str>, V: AsRef<str>>(labels: &[(K, V)]) -> u64 {
    hash_of_sum(labels_sum(labels))
}

/// The version of [`series_hash`]: state keyed by it alone (no labels to hash again) is dropped
/// when restored from a snapshot of another version. 2: the sum of label hashes.
pub const SERIES_HASH_VERSION: u32 = 2;

/// One label's hash, as [`series_hash`] sums them.
#[inline]
pub fn label_hash(name: &str, value: &str) -> u64 {
    let mut h = StableHasher::default();
    h.write_str(name);
    h.write_str(value);
    h.finish_mixed()
}

/// The wrapping sum of the labels' [`label_hash`]es.
fn labels_sum<K: AsRef<str>, V: AsRef<str>>(labels: &[(K, V)]) -> u64 {
    labels
        .iter()
        .fold(0u64, |a, (k, v)| a.wrapping_add(label_hash(k.as_ref(), v.as_ref())))
}

/// [`series_hash`] from the sum of its labels' hashes: mixed again (a sum's low bits are a
/// poor shard index), never 0 (a [`Sample`]'s "not computed"), every other bit used.
#[inline]
fn hash_of_sum(sum: u64) -> u64 {
    let mut z = sum;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z.max(1)
}

/// A fast, deterministic hasher: eight bytes at a time through a folded multiply, with a final
/// avalanche so the low bits are usable for `% shards`. The same in
/// every process and run, unlike `std`'s randomly keyed hashers.
#[derive(Debug, Default, Clone, Copy)]
pub struct StableHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl StableHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        // Folded 64×64→128 multiply (as in wyhash and aHash): every input bit reaches every
        // output bit, so distinct label sets do not collide beyond chance.
        let r = u128::from(self.0 ^ word) * u128::from(SEED ^ 0x2d35_8dcc_aa6c_78a5);
        #[allow(clippy::cast_possible_truncation)]
        let folded = (r as u64) ^ ((r >> 64) as u64);
        self.0 = folded.rotate_left(23).wrapping_add(SEED);
    }

    /// Hashes a string with its length, so ("ab","c") and ("a","bc") differ.
    #[inline]
    pub fn write_str(&mut self, s: &str) {
        self.add(s.len() as u64);
        Hasher::write(self, s.as_bytes());
    }

    /// The hash, mixed (splitmix64's finalizer).
    #[inline]
    pub fn finish_mixed(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) | 1
    }
}

impl Hasher for StableHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.finish_mixed()
    }
}

/// A `HashMap` with [`StableHasher`]: fast for the hot paths' string and hash keys. Its keys
/// come from input, and a fixed hash can be attacked with colliding keys; the maps that use it
/// are bounded, so the worst case is slower lookups, never unbounded memory.
pub type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<StableHasher>>;
/// A `HashSet` with [`StableHasher`].
pub type FastSet<K> = HashSet<K, std::hash::BuildHasherDefault<StableHasher>>;

/// Interned strings: label names and values repeat across samples, so each distinct string is
/// allocated once and shared. Bounded: past `max` entries the table starts over (strings in
/// use stay alive through their `Arc`s).
#[derive(Debug, Default)]
pub struct Interner {
    set: FastSet<Arc<str>>,
    max: usize,
}

impl Interner {
    /// An interner holding at most `max` strings.
    pub fn new(max: usize) -> Self {
        Interner {
            set: FastSet::default(),
            max,
        }
    }

    /// The shared copy of `s`.
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.set.get(s) {
            return a.clone();
        }
        if self.set.len() >= self.max {
            self.set.clear();
        }
        let a: Arc<str> = Arc::from(s);
        self.set.insert(a.clone());
        a
    }
}

/// The classic bucket bounds exponential histograms are converted to by default: the
/// Collector's spanmetrics defaults in milliseconds, extended.
pub const DEFAULT_EXP_BOUNDS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0,
];

/// Configuration of the conversion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromConfig {
    /// Upper bounds of the classic buckets exponential histograms are converted to.
    pub exp_histogram_bounds: Vec<f64>,
    /// Emit `target_info` series with the resource attributes.
    pub target_info: bool,
    /// Delta series not updated for this long (ms of event time) are forgotten.
    pub delta_state_ttl_ms: u64,
}

impl Default for PromConfig {
    fn default() -> Self {
        PromConfig {
            exp_histogram_bounds: DEFAULT_EXP_BOUNDS.to_vec(),
            target_info: true,
            delta_state_ttl_ms: 3_600_000,
        }
    }
}

/// UCUM units to Prometheus words (the specification's table).
fn unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

/// The denominator of a `x/y` unit, in the singular (`s` → `second`).
fn per_unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// Replaces every run of characters outside `[a-zA-Z0-9_:]` (`[a-zA-Z0-9_]` for labels) by one
/// `_`, keeping existing underscores.
fn sanitize(s: &str, allow_colon: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last_replaced = false;
    for c in s.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (allow_colon && c == ':');
        if ok {
            out.push(c);
            last_replaced = false;
        } else if !last_replaced {
            out.push('_');
            last_replaced = true;
        }
    }
    out
}

/// The unit's words for a metric name (`ms` → `milliseconds`, `By/s` → `bytes_per_second`),
/// empty for units in braces and unknown units are sanitized.
fn unit_suffix(unit: &str) -> String {
    // Annotations in braces carry no unit: `{request}`, `{packet}/s`.
    let mut cleaned = String::new();
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            _ if depth == 0 => cleaned.push(c),
            _ => {}
        }
    }
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned == "1" {
        return String::new();
    }
    let (main, per) = match cleaned.split_once('/') {
        Some((m, p)) => (m.trim(), Some(p.trim())),
        None => (cleaned, None),
    };
    let main_word = unit_word(main)
        .map(str::to_string)
        .unwrap_or_else(|| sanitize(main, false));
    let main_word = if main == "1" { String::new() } else { main_word };
    match per {
        Some(p) if !p.is_empty() => {
            let per_word = per_unit_word(p)
                .map(str::to_string)
                .unwrap_or_else(|| sanitize(p, false));
            if main_word.is_empty() {
                format!("per_{per_word}")
            } else {
                format!("{main_word}_per_{per_word}")
            }
        }
        _ => main_word,
    }
}

/// What a metric becomes in Prometheus, for naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromKind {
    /// A gauge (gauges, non-monotonic sums).
    Gauge,
    /// A counter (monotonic sums): gets `_total`.
    Counter,
    /// A histogram or summary: base name, the suffixes come per series.
    Histogram,
}

/// The Prometheus metric name of an OTLP metric.
pub fn metric_name(name: &str, unit: &str, kind: PromKind) -> String {
    let mut n = sanitize(name, true);
    // Collapse the `__` runs that sanitizing next to an existing `_` can leave, and trim ends.
    while n.contains("__") {
        n = n.replace("__", "_");
    }
    let mut n = n.trim_matches('_').to_string();
    let mut suffix = unit_suffix(unit);
    if kind == PromKind::Gauge && unit.trim() == "1" {
        suffix = "ratio".into();
    }
    if !suffix.is_empty() && !n.ends_with(&suffix) {
        // A counter's name may already end in `_total`: put the unit before it.
        if kind == PromKind::Counter && n.ends_with("_total") {
            n.truncate(n.len() - "_total".len());
        }
        if !n.ends_with(&suffix) {
            n.push('_');
            n.push_str(&suffix);
        }
    }
    if kind == PromKind::Counter && !n.ends_with("_total") {
        n.push_str("_total");
    }
    if n.starts_with(|c: char| c.is_ascii_digit()) {
        n.insert(0, '_');
    }
    if n.is_empty() {
        n.push('_');
    }
    n
}

/// The Prometheus kind a point converts to, for naming.
pub fn prom_kind(v: &PointValue) -> PromKind {
    match v {
        PointValue::Gauge { .. } | PointValue::Sum { monotonic: false, .. } => PromKind::Gauge,
        PointValue::Sum { monotonic: true, .. } => PromKind::Counter,
        PointValue::Histogram { .. } | PointValue::ExponentialHistogram { .. } | PointValue::Summary { .. } => {
            PromKind::Histogram
        }
    }
}

/// A metric's family: its Prometheus name without a `_bucket`, `_sum` or `_count` suffix, so a
/// histogram's or summary's series, and a selector naming any of them, share one family.
pub fn family(prom_name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| prom_name.strip_suffix(s))
        .filter(|f| !f.is_empty())
        .unwrap_or(prom_name)
}

/// A sanitized label name.
pub fn label_name(key: &str) -> String {
    let mut k = sanitize(key, false);
    if k.starts_with(|c: char| c.is_ascii_digit()) {
        k.insert_str(0, "key_");
    } else if k.starts_with('_') && !k.starts_with("__") {
        k.insert_str(0, "key");
    }
    k
}

/// Formats a float as Prometheus label values show it (`le`, `quantile`): shortest round-trip,
/// `+Inf` for infinity.
pub fn format_float(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum DeltaState {
    Sum {
        total: f64,
        last_ms: i64,
    },
    Histogram {
        bounds: Vec<f64>,
        counts: Vec<u64>,
        count: u64,
        sum: f64,
        last_ms: i64,
    },
}

/// Counters of the conversion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromStats {
    /// Delta points dropped because they went back in time for their series.
    pub delta_out_of_order: u64,
    /// Histogram points dropped for an invalid shape (no buckets but a count, say).
    pub invalid_points: u64,
    /// Delta series forgotten after `delta_state_ttl_ms` without a point.
    pub delta_series_expired: u64,
    /// Delta points at the same time as their series' last one (a replay's): not added twice.
    #[serde(default)]
    pub delta_duplicates: u64,
}

/// A delta series' running total in a snapshot (floats as bits: JSON has no infinity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum DeltaSnap {
    Sum {
        total: u64,
        last_ms: i64,
    },
    Histogram {
        bounds: Vec<u64>,
        counts: Vec<u64>,
        count: u64,
        sum: u64,
        last_ms: i64,
    },
}

/// The running totals of the delta series that came from one internal series partition: what
/// a new owner of the partition continues from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaPartState {
    series: Vec<(u64, DeltaSnap)>,
}

impl DeltaPartState {
    /// Delta series it holds.
    pub fn series(&self) -> usize {
        self.series.len()
    }
}

/// The converter: naming (cached), interned labels, and the running totals that turn delta
/// into cumulative.
#[derive(Debug)]
pub struct PromConverter {
    config: PromConfig,
    deltas: FastMap<u64, DeltaState>,
    /// With repartitioning: the internal series partition each delta series came from.
    delta_partitions: FastMap<u64, i32>,
    /// The partition the points being converted came from.
    partition: Option<i32>,
    stats: PromStats,
    max_ms: i64,
    strings: Interner,
    /// Sanitized label names by raw attribute key.
    label_names: FastMap<Arc<str>, Arc<str>>,
    /// Metric names (base, `_bucket`, `_sum`, `_count`) by hash of (name, unit, kind).
    metric_names: FastMap<u64, Arc<MetricNames>>,
    /// `le` and `quantile` values by the bits of the float.
    floats: FastMap<u64, Arc<str>>,
    k_name: Arc<str>,
    k_le: Arc<str>,
    k_quantile: Arc<str>,
    /// `target_info` only from marker points ([`TARGET_INFO_MARKER`]), not per resource seen.
    markers_only: bool,
    /// The samples' label sets by series, which the samples of a series share.
    points: PointCache,
    /// A point's key material ([`PointSeries`]'s `raw`), reused.
    raw: Vec<u8>,
}

/// The metric of the marker point the re-keying stage sends for each resource of an input
/// message, in the partition of the resource's identity ([`target_info_key`]): with several
/// workers each would otherwise write its own copy of the resource's `target_info`.
pub const TARGET_INFO_MARKER: &str = "dwcp.internal.target_info";

/// A marker ([`TARGET_INFO_MARKER`]) for each distinct resource and region of `points`, at its
/// first point's time (the time `target_info` is written at without repartitioning).
pub fn target_info_markers(points: &[MetricPoint]) -> Vec<MetricPoint> {
    let descriptor = Arc::new(dwcp_schemas::model::MetricDescriptor {
        name: TARGET_INFO_MARKER.into(),
        description: String::new(),
        unit: String::new(),
    });
    let scope = Arc::new(dwcp_schemas::model::Scope::default());
    let mut seen: Vec<(*const dwcp_schemas::model::Resource, *const u8)> = Vec::new();
    let mut out = Vec::new();
    for p in points {
        let key = (Arc::as_ptr(&p.origin.resource), p.origin.region.as_ptr());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        out.push(MetricPoint {
            origin: dwcp_schemas::model::Origin {
                region: p.origin.region.clone(),
                resource: p.origin.resource.clone(),
                scope: scope.clone(),
            },
            metric: descriptor.clone(),
            attributes: dwcp_schemas::model::Attributes::default(),
            start_time_unix_nano: 0,
            time_unix_nano: p.time_unix_nano,
            value: PointValue::Gauge {
                value: dwcp_schemas::model::Number::Int(1),
            },
            flags: 0,
        });
    }
    out
}

/// The key of a resource's `target_info` series: its `job`, `instance` and region.
pub fn target_info_key(p: &MetricPoint) -> String {
    let res = &p.origin.resource.attributes;
    format!(
        "target_info/{}/{}/{}",
        job(res).unwrap_or_default(),
        res.get_str("service.instance.id").unwrap_or_default(),
        p.origin.region
    )
}

#[derive(Debug, Clone)]
struct MetricNames {
    name: Box<str>,
    unit: Box<str>,
    kind: PromKind,
    base: Arc<str>,
    bucket: Arc<str>,
    sum: Arc<str>,
    count: Arc<str>,
}

/// Bound of the converter's string tables; past it they start over.
const MAX_INTERNED: usize = 1 << 20;

impl Default for PromConverter {
    fn default() -> Self {
        PromConverter::new(PromConfig::default())
    }
}

/// Inserts `label` in name order; whether it replaced one of the same name.
fn insert_sorted(labels: &mut Vec<Label>, label: Label) -> bool {
    match labels.binary_search_by(|(k, _)| (**k).cmp(&*label.0)) {
        Ok(i) => {
            labels[i] = label;
            true
        }
        Err(i) => {
            labels.insert(i, label);
            false
        }
    }
}

/// The `_sum` and `_count` series of a histogram or summary (stale markers when no value).
#[allow(clippy::too_many_arguments)]
fn sum_and_count(
    out: &mut Vec<Sample>,
    base: &Base<'_>,
    k_name: &Arc<str>,
    n: &MetricNames,
    sum: f64,
    count: u64,
    no_value: bool,
    ts: i64,
) {
    #[allow(clippy::cast_precision_loss)]
    let (sum, count) = if no_value {
        (stale_nan(), stale_nan())
    } else {
        (sum, count as f64)
    };
    out.extend(sample(base, sum, ts, || ((k_name.clone(), n.sum.clone()), None)));
    out.extend(sample(base, count, ts, || ((k_name.clone(), n.count.clone()), None)));
}

/// A point's labels before the metric name (and `le` or `quantile`) is added: sorted, with the
/// sum of their hashes, so each sample's [`series_hash`] adds only its own labels'. Or, for a
/// point whose series is cached ([`PointCache`]), the label sets its samples take in order.
struct Base<'a> {
    labels: &'a [Label],
    sum: u64,
    /// The sets (and hashes) of the samples of the point's series, in the order the conversion
    /// makes them; `labels` is then empty.
    cached: Option<&'a [SeriesSet]>,
    next: Cell<usize>,
    /// Samples a cached base had no set for: not made, counted as invalid points. (None: the
    /// cache is used only when the point's shape, which decides the samples, is the cached one.)
    unmatched: Cell<u64>,
    /// The samples are not of the point's shape (a delta histogram's replay sends its series'
    /// totals): not to be cached.
    unshaped: Cell<bool>,
    /// Set on a cached base instead of making such samples: nothing was made or changed, and
    /// the point is to be converted again without the cache.
    redo: Cell<bool>,
}

impl<'a> Base<'a> {
    fn new(labels: &'a [Label]) -> Self {
        Base {
            labels,
            sum: labels_sum(labels),
            cached: None,
            next: Cell::new(0),
            unmatched: Cell::new(0),
            unshaped: Cell::new(false),
            redo: Cell::new(false),
        }
    }

    fn cached(sets: &'a [SeriesSet]) -> Self {
        Base {
            labels: &[],
            sum: 0,
            cached: Some(sets),
            next: Cell::new(0),
            unmatched: Cell::new(0),
            unshaped: Cell::new(false),
            redo: Cell::new(false),
        }
    }
}

/// A series' label set and its [`series_hash`].
type SeriesSet = (Arc<[Label]>, u64);

/// What the samples of one series' last point were, so that its next point takes their label
/// sets and hashes in order instead of building its labels (interning and sanitizing the
/// attributes, sorting), hashing and looking up each sample's set: one lookup per point instead
/// of one per sample (a 9-bucket histogram point makes 12 samples).
///
/// A point uses the entry only if it matches it exactly: the metric's name and unit (`names`),
/// the value's type, the attributes as they came and the shape that decides which samples a
/// point makes (histogram bounds and bucket count, summary quantiles), all in `raw`; and the
/// origin's labels (job, instance, scope, region). The key is a hash of these; a point whose key
/// finds another series' entry (a collision) just builds its samples and replaces it.
#[derive(Debug)]
struct PointSeries {
    raw: Box<[u8]>,
    origin: Arc<[Label]>,
    names: Arc<MetricNames>,
    /// The key of the series' delta-to-cumulative state.
    delta_key: u64,
    sets: Box<[SeriesSet]>,
}

/// The [`PointSeries`] of the series converted lately (boxed: the table's slots stay small, a
/// third of the memory at a million series). Two generations: an entry not used for a whole
/// generation is forgotten (samples holding its sets keep them alive). A generation ends after
/// [`LABEL_SET_GENERATION_MS`] of event time or when its entries hold its limit of label sets
/// ([`MAX_LABEL_SETS`], or the guard's `max_series_total` in the pipeline), so the cache holds at
/// most about twice that many sets, however many series come and go. (The cache is ahead of
/// the cardinality guard: in an explosion of series it holds up to that many sets of series the
/// guard drops.)
#[derive(Debug)]
struct PointCache {
    current: FastMap<u64, Box<PointSeries>>,
    previous: FastMap<u64, Box<PointSeries>>,
    /// Label sets the entries of each generation hold.
    current_sets: usize,
    previous_sets: usize,
    /// Event time the current generation began at (milliseconds).
    since_ms: i64,
    /// Label sets one generation holds at most.
    max: usize,
}

impl Default for PointCache {
    fn default() -> Self {
        PointCache {
            current: FastMap::default(),
            previous: FastMap::default(),
            current_sets: 0,
            previous_sets: 0,
            since_ms: 0,
            max: MAX_LABEL_SETS,
        }
    }
}

/// How long (event time) a series' label sets stay cached unused: one to two generations.
const LABEL_SET_GENERATION_MS: i64 = 300_000;
/// Label sets one generation holds at most, unless [`PromConverter::limit_label_sets`] says.
pub const MAX_LABEL_SETS: usize = 1 << 20;

impl PointCache {
    /// Takes out the entry of `key` if it is the one of a point of metric `name` and `unit`,
    /// with `raw` and `origin`.
    fn take(&mut self, key: u64, name: &str, unit: &str, raw: &[u8], origin: &[Label]) -> Option<Box<PointSeries>> {
        use std::collections::hash_map::Entry;
        let matches = |e: &PointSeries| {
            *e.raw == *raw
                && *e.names.name == *name
                && *e.names.unit == *unit
                && e.origin.len() == origin.len()
                && e.origin.iter().zip(origin).all(|(a, b)| same_label(a, b))
        };
        if let Entry::Occupied(e) = self.current.entry(key) {
            if !matches(e.get()) {
                return None;
            }
            let e = e.remove();
            self.current_sets -= e.sets.len();
            return Some(e);
        }
        if let Entry::Occupied(e) = self.previous.entry(key) {
            if matches(e.get()) {
                let e = e.remove();
                self.previous_sets -= e.sets.len();
                return Some(e);
            }
        }
        None
    }

    /// Puts `entry` in the current generation, beginning a new one first if this one is full.
    fn keep(&mut self, key: u64, entry: Box<PointSeries>) {
        if self.current_sets + entry.sets.len() > self.max && !self.current.is_empty() {
            self.previous = std::mem::take(&mut self.current);
            self.previous_sets = std::mem::replace(&mut self.current_sets, 0);
        }
        self.current_sets += entry.sets.len();
        if let Some(old) = self.current.insert(key, entry) {
            self.current_sets -= old.sets.len();
        }
    }

    /// Begins a new generation once the current one is [`LABEL_SET_GENERATION_MS`] old.
    fn age(&mut self, now_ms: i64) {
        if now_ms >= self.since_ms.saturating_add(LABEL_SET_GENERATION_MS) {
            self.previous = std::mem::take(&mut self.current);
            self.previous_sets = std::mem::replace(&mut self.current_sets, 0);
            self.since_ms = now_ms;
        }
    }

    /// Label sets the entries hold.
    fn sets(&self) -> usize {
        self.current_sets + self.previous_sets
    }
}

/// Two labels alike: by pointer first (interned strings), by content only when that fails.
#[inline]
fn same_label(a: &Label, b: &Label) -> bool {
    (Arc::ptr_eq(&a.0, &b.0) || a.0 == b.0) && (Arc::ptr_eq(&a.1, &b.1) || a.1 == b.1)
}

/// Appends `v` as a protobuf varint (seven bits a byte, low first; one byte below 128).
pub fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        #[allow(clippy::cast_possible_truncation)]
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    #[allow(clippy::cast_possible_truncation)]
    out.push(v as u8);
}

/// Appends a string after its length (a varint), so ("ab","c") and ("a","bc") differ.
fn put_str(raw: &mut Vec<u8>, s: &str) {
    put_varint(s.len() as u64, raw);
    raw.extend_from_slice(s.as_bytes());
}

/// A sample of the point `base` is of, with `name` and `extra` from `labels` (called only when
/// the sets are not cached). Neither is in `base` as the conversion makes them; if one is (a
/// point attribute sanitized to `le`, say), it replaces the label of `base`. None only if a
/// cached base has no set left (counted in `base.unmatched`).
fn sample(base: &Base<'_>, value: f64, ts: i64, labels: impl FnOnce() -> (Label, Option<Label>)) -> Option<Sample> {
    if let Some(sets) = base.cached {
        let i = base.next.get();
        base.next.set(i + 1);
        let Some((labels, hash)) = sets.get(i) else {
            base.unmatched.set(base.unmatched.get() + 1);
            return None;
        };
        return Some(Sample {
            labels: labels.clone(),
            value,
            timestamp_ms: ts,
            hash: *hash,
        });
    }
    let (name, extra) = labels();
    let mut sum = base.sum.wrapping_add(label_hash(&name.0, &name.1));
    if let Some(e) = &extra {
        sum = sum.wrapping_add(label_hash(&e.0, &e.1));
    }
    let mut labels = Vec::with_capacity(base.labels.len() + 2);
    labels.extend_from_slice(base.labels);
    let mut taken = insert_sorted(&mut labels, name);
    if let Some(e) = extra {
        taken |= insert_sorted(&mut labels, e);
    }
    // A label of the base replaced: the sum above counted it twice.
    if taken {
        return Some(Sample::new(labels, value, ts));
    }
    Some(Sample {
        labels: labels.into(),
        value,
        timestamp_ms: ts,
        hash: hash_of_sum(sum),
    })
}

impl PromConverter {
    /// A converter.
    pub fn new(config: PromConfig) -> Self {
        PromConverter {
            config,
            deltas: FastMap::default(),
            delta_partitions: FastMap::default(),
            partition: None,
            stats: PromStats::default(),
            max_ms: 0,
            strings: Interner::new(MAX_INTERNED),
            label_names: FastMap::default(),
            metric_names: FastMap::default(),
            floats: FastMap::default(),
            k_name: Arc::from("__name__"),
            k_le: Arc::from("le"),
            k_quantile: Arc::from("quantile"),
            markers_only: false,
            points: PointCache::default(),
            raw: Vec::new(),
        }
    }

    /// From now on `target_info` is written for marker points ([`convert_markers`]), not for
    /// each resource [`convert`] sees.
    ///
    /// [`convert_markers`]: PromConverter::convert_markers
    /// [`convert`]: PromConverter::convert
    pub fn target_info_from_markers(&mut self) {
        self.markers_only = true;
    }

    /// The `target_info` of each marker's resource (nothing when `target_info` is off).
    pub fn convert_markers(&mut self, markers: &[MetricPoint], out: &mut Vec<Sample>) {
        if !self.config.target_info {
            return;
        }
        for p in markers {
            #[allow(clippy::cast_possible_wrap)]
            let ts = (p.time_unix_nano / 1_000_000) as i64;
            self.max_ms = self.max_ms.max(ts);
            self.target_info(p, ts, out);
        }
        self.points.age(self.max_ms);
    }

    /// Holds at most `max` label sets per generation (at least 1,024): the pipeline gives the
    /// cardinality guard's `max_series_total`, so the cache, which is ahead of the guard, holds
    /// no more than twice the series the guard admits. The default is [`MAX_LABEL_SETS`].
    pub fn limit_label_sets(&mut self, max: usize) {
        self.points.max = max.max(1024);
    }

    /// Label sets cached for the samples to share (state size).
    pub fn label_sets(&self) -> usize {
        self.points.sets()
    }

    /// Counters so far.
    pub fn stats(&self) -> PromStats {
        self.stats
    }

    /// Delta series being accumulated (state size).
    pub fn delta_series(&self) -> usize {
        self.deltas.len()
    }

    /// [`PromConverter::convert`] of points from internal series partition `partition`: the
    /// delta series among them are that partition's state.
    pub fn convert_from(&mut self, points: &[MetricPoint], partition: Option<i32>, out: &mut Vec<Sample>) {
        self.partition = partition;
        self.convert(points, out);
        self.partition = None;
    }

    /// The running totals of partition `x`'s delta series.
    pub fn snapshot_partition(&self, x: i32) -> DeltaPartState {
        let mut series: Vec<(u64, DeltaSnap)> = self
            .delta_partitions
            .iter()
            .filter(|(_, p)| **p == x)
            .filter_map(|(h, _)| {
                let snap = match self.deltas.get(h)? {
                    DeltaState::Sum { total, last_ms } => DeltaSnap::Sum {
                        total: total.to_bits(),
                        last_ms: *last_ms,
                    },
                    DeltaState::Histogram {
                        bounds,
                        counts,
                        count,
                        sum,
                        last_ms,
                    } => DeltaSnap::Histogram {
                        bounds: bounds.iter().map(|b| b.to_bits()).collect(),
                        counts: counts.clone(),
                        count: *count,
                        sum: sum.to_bits(),
                        last_ms: *last_ms,
                    },
                };
                Some((*h, snap))
            })
            .collect();
        series.sort_unstable_by_key(|(h, _)| *h);
        DeltaPartState { series }
    }

    /// Replaces partition `x`'s delta series with a snapshot's.
    pub fn restore_partition(&mut self, x: i32, state: DeltaPartState) {
        self.drop_partition(x);
        for (h, snap) in state.series {
            let st = match snap {
                DeltaSnap::Sum { total, last_ms } => DeltaState::Sum {
                    total: f64::from_bits(total),
                    last_ms,
                },
                DeltaSnap::Histogram {
                    bounds,
                    counts,
                    count,
                    sum,
                    last_ms,
                } => DeltaState::Histogram {
                    bounds: bounds.into_iter().map(f64::from_bits).collect(),
                    counts,
                    count,
                    sum: f64::from_bits(sum),
                    last_ms,
                },
            };
            self.deltas.insert(h, st);
            self.delta_partitions.insert(h, x);
        }
    }

    /// Forgets partition `x`'s delta series (the partition moved away).
    pub fn drop_partition(&mut self, x: i32) {
        let gone: Vec<u64> = self
            .delta_partitions
            .iter()
            .filter(|(_, p)| **p == x)
            .map(|(h, _)| *h)
            .collect();
        for h in gone {
            self.delta_partitions.remove(&h);
            self.deltas.remove(&h);
        }
    }

    fn label_name(&mut self, key: &str) -> Arc<str> {
        if let Some(n) = self.label_names.get(key) {
            return n.clone();
        }
        if self.label_names.len() >= MAX_INTERNED {
            self.label_names.clear();
        }
        let n: Arc<str> = Arc::from(label_name(key));
        self.label_names.insert(Arc::from(key), n.clone());
        n
    }

    fn names(&mut self, name: &str, unit: &str, kind: PromKind) -> Arc<MetricNames> {
        let mut h = StableHasher::default();
        h.write_str(name);
        h.write_str(unit);
        h.write_u64(kind as u64);
        let key = h.finish_mixed();
        if let Some(n) = self.metric_names.get(&key) {
            if &*n.name == name && &*n.unit == unit && n.kind == kind {
                return n.clone();
            }
        }
        if self.metric_names.len() >= MAX_INTERNED {
            self.metric_names.clear();
        }
        let base = metric_name(name, unit, kind);
        let n = Arc::new(MetricNames {
            name: name.into(),
            unit: unit.into(),
            kind,
            bucket: Arc::from(format!("{base}_bucket")),
            sum: Arc::from(format!("{base}_sum")),
            count: Arc::from(format!("{base}_count")),
            base: Arc::from(base),
        });
        self.metric_names.insert(key, n.clone());
        n
    }

    fn float(&mut self, v: f64) -> Arc<str> {
        if let Some(s) = self.floats.get(&v.to_bits()) {
            return s.clone();
        }
        if self.floats.len() >= MAX_INTERNED {
            self.floats.clear();
        }
        let s: Arc<str> = Arc::from(format_float(v));
        self.floats.insert(v.to_bits(), s.clone());
        s
    }

    /// Interned attributes as labels (sanitized names; values colliding after sanitizing joined
    /// with `;`, as the specification says).
    fn attribute_labels(&mut self, attrs: &dwcp_schemas::model::Attributes, out: &mut Vec<Label>) {
        for kv in &attrs.0 {
            let k = self.label_name(&kv.key);
            let v = match &kv.value {
                AnyValue::String(s) => self.strings.get(s),
                AnyValue::Empty => continue,
                other => self.strings.get(&other.to_text()),
            };
            if k.is_empty() || v.is_empty() {
                continue;
            }
            if let Some(existing) = out.iter_mut().find(|(ek, _)| *ek == k) {
                existing.1 = Arc::from(format!("{};{}", existing.1, v));
            } else {
                out.push((k, v));
            }
        }
    }

    /// The labels every series of one origin shares: job, instance, scope, region.
    fn origin_labels(&mut self, p: &MetricPoint) -> Vec<Label> {
        let res = &p.origin.resource.attributes;
        let mut labels = Vec::with_capacity(5);
        if let Some(job) = job(res) {
            labels.push((self.strings.get("job"), self.strings.get(&job)));
        }
        if let Some(inst) = res.get_str("service.instance.id") {
            labels.push((self.strings.get("instance"), self.strings.get(inst)));
        }
        let scope = &p.origin.scope;
        if !scope.name.is_empty() {
            labels.push((self.strings.get("otel_scope_name"), self.strings.get(&scope.name)));
        }
        if !scope.version.is_empty() {
            labels.push((self.strings.get("otel_scope_version"), self.strings.get(&scope.version)));
        }
        labels.push((self.strings.get("region"), self.strings.get(&p.origin.region)));
        labels
    }

    /// Converts points, appending samples to `out`. One `target_info` per distinct resource in
    /// the call.
    pub fn convert(&mut self, points: &[MetricPoint], out: &mut Vec<Sample>) {
        type OriginKey = (
            *const dwcp_schemas::model::Resource,
            *const dwcp_schemas::model::Scope,
            *const u8,
        );
        // Each origin's labels, and the sum of their hashes (which the points' keys start from).
        let mut origins: Vec<(OriginKey, Arc<[Label]>, u64)> = Vec::new();
        for p in points {
            #[allow(clippy::cast_possible_wrap)]
            let ts = (p.time_unix_nano / 1_000_000) as i64;
            self.max_ms = self.max_ms.max(ts);
            let key: OriginKey = (
                Arc::as_ptr(&p.origin.resource),
                Arc::as_ptr(&p.origin.scope),
                p.origin.region.as_ptr(),
            );
            let at = match origins.iter().position(|(k, ..)| *k == key) {
                Some(i) => i,
                None => {
                    let l = self.origin_labels(p);
                    if self.config.target_info
                        && !self.markers_only
                        && !origins.iter().any(|(k, ..)| k.0 == key.0 && k.2 == key.2)
                    {
                        self.target_info(p, ts, out);
                    }
                    let sum = labels_sum(&l);
                    origins.push((key, l.into(), sum));
                    origins.len() - 1
                }
            };
            let (_, origin, origin_sum) = &origins[at];
            let key = self.point_key(p, *origin_sum);
            let (name, unit) = (&p.metric.name, &p.metric.unit);
            if let Some(entry) = self.points.take(key, name, unit, &self.raw, origin) {
                let base = Base::cached(&entry.sets);
                self.convert_point(p, &base, &entry.names, entry.delta_key, ts, out);
                let (unmatched, redo) = (base.unmatched.get(), base.redo.get());
                if unmatched == 0 {
                    self.points.keep(key, entry);
                } else {
                    self.stats.invalid_points += unmatched;
                }
                if !redo {
                    continue;
                }
            }
            // Attributes first, then the origin's labels, which win over attributes of the same name.
            let mut base = Vec::with_capacity(p.attributes.len() + origin.len() + 2);
            self.attribute_labels(&p.attributes, &mut base);
            base.retain(|(k, _)| !origin.iter().any(|(ok, _)| ok == k));
            base.extend_from_slice(origin);
            base.sort_by(|a, b| a.0.cmp(&b.0));
            let names = self.names(&p.metric.name, &p.metric.unit, prom_kind(&p.value));
            let delta_key = Self::delta_key(&base, &names.base);
            let start = out.len();
            let built = Base::new(&base);
            self.convert_point(p, &built, &names, delta_key, ts, out);
            // Nothing made (an invalid point, a delta point out of order), or samples of another
            // shape than the point's: nothing to keep.
            if out.len() > start && !built.unshaped.get() {
                let entry = Box::new(PointSeries {
                    raw: self.raw.as_slice().into(),
                    origin: origin.clone(),
                    names,
                    delta_key,
                    sets: out[start..].iter().map(|s| (s.labels.clone(), s.hash)).collect(),
                });
                self.points.keep(key, entry);
            }
        }
        self.points.age(self.max_ms);
        self.expire();
    }

    /// The key of `p`'s series in the [`PointCache`], with what its entry must match besides the
    /// metric and origin in `raw`: the value's type, the attributes as they came, and the
    /// bounds and bucket count of a histogram or the quantiles of a summary.
    fn point_key(&mut self, p: &MetricPoint, origin_sum: u64) -> u64 {
        let raw = &mut self.raw;
        raw.clear();
        let (tag, monotonic) = match &p.value {
            PointValue::Gauge { .. } => (0, false),
            PointValue::Sum { monotonic, .. } => (1, *monotonic),
            PointValue::Histogram { .. } => (2, false),
            PointValue::ExponentialHistogram { .. } => (3, false),
            PointValue::Summary { .. } => (4, false),
        };
        raw.push(tag << 1 | u8::from(monotonic));
        // Each part says its length, so two different points never write the same bytes.
        let floats = |raw: &mut Vec<u8>, fs: &mut dyn Iterator<Item = f64>| {
            for f in fs {
                raw.extend_from_slice(&f.to_bits().to_le_bytes());
            }
        };
        match &p.value {
            PointValue::Histogram {
                bounds, bucket_counts, ..
            } => {
                raw.extend_from_slice(&(bucket_counts.len() as u64).to_le_bytes());
                raw.extend_from_slice(&(bounds.len() as u64).to_le_bytes());
                floats(raw, &mut bounds.iter().copied());
            }
            PointValue::Summary { quantiles, .. } => {
                raw.extend_from_slice(&(quantiles.len() as u64).to_le_bytes());
                floats(raw, &mut quantiles.iter().map(|(q, _)| *q));
            }
            PointValue::Gauge { .. } | PointValue::Sum { .. } | PointValue::ExponentialHistogram { .. } => {}
        }
        for kv in &p.attributes.0 {
            put_str(raw, &kv.key);
            match &kv.value {
                AnyValue::String(v) => {
                    raw.push(0);
                    put_str(raw, v);
                }
                AnyValue::Empty => raw.push(1),
                other => {
                    raw.push(2);
                    put_str(raw, &other.to_text());
                }
            }
        }
        let mut h = StableHasher::default();
        h.write_u64(origin_sum);
        h.write_str(&p.metric.name);
        h.write_str(&p.metric.unit);
        h.write(raw);
        h.finish_mixed()
    }

    fn expire(&mut self) {
        #[allow(clippy::cast_possible_wrap)]
        let ttl = self.config.delta_state_ttl_ms as i64;
        let horizon = self.max_ms.saturating_sub(ttl);
        let before = self.deltas.len();
        self.deltas.retain(|_, s| match s {
            DeltaState::Sum { last_ms, .. } | DeltaState::Histogram { last_ms, .. } => *last_ms >= horizon,
        });
        let deltas = &self.deltas;
        self.delta_partitions.retain(|h, _| deltas.contains_key(h));
        self.stats.delta_series_expired += (before - self.deltas.len()) as u64;
    }

    fn delta_key(base: &[Label], name: &str) -> u64 {
        let mut h = StableHasher::default();
        h.write_str(name);
        for (k, v) in base {
            h.write_str(k);
            h.write_str(v);
        }
        h.finish_mixed()
    }

    /// The samples of point `p`: `n` are its metric's names (for its kind), `delta_key` the key
    /// of its series' delta-to-cumulative state.
    fn convert_point(
        &mut self,
        p: &MetricPoint,
        base: &Base<'_>,
        n: &MetricNames,
        delta_key: u64,
        ts: i64,
        out: &mut Vec<Sample>,
    ) {
        let no_value = p.flags & 1 == 1;
        let k_name = &self.k_name;
        match &p.value {
            PointValue::Gauge { value } => {
                let v = if no_value { stale_nan() } else { value.as_f64() };
                out.extend(sample(base, v, ts, || ((k_name.clone(), n.base.clone()), None)));
            }
            PointValue::Sum { value, temporality, .. } => {
                let v = if no_value {
                    stale_nan()
                } else if *temporality == Temporality::Delta {
                    let h = delta_key;
                    if let Some(x) = self.partition {
                        self.delta_partitions.insert(h, x);
                    }
                    match self.deltas.entry(h).or_insert(DeltaState::Sum {
                        total: 0.0,
                        last_ms: i64::MIN,
                    }) {
                        DeltaState::Sum { total, last_ms } => {
                            if ts < *last_ms {
                                self.stats.delta_out_of_order += 1;
                                return;
                            }
                            // The last point again (a replay): its total is sent again, not
                            // added to.
                            if ts == *last_ms {
                                self.stats.delta_duplicates += 1;
                            } else {
                                *total += value.as_f64();
                                *last_ms = ts;
                            }
                            *total
                        }
                        DeltaState::Histogram { .. } => {
                            self.stats.invalid_points += 1;
                            return;
                        }
                    }
                } else {
                    value.as_f64()
                };
                let k_name = &self.k_name;
                out.extend(sample(base, v, ts, || ((k_name.clone(), n.base.clone()), None)));
            }
            PointValue::Histogram {
                count,
                sum,
                bounds,
                bucket_counts,
                temporality,
                ..
            } => {
                if bucket_counts.is_empty() && *count > 0 && !bounds.is_empty() {
                    self.stats.invalid_points += 1;
                    return;
                }
                let counts: &[u64] = if bucket_counts.is_empty() {
                    std::slice::from_ref(count)
                } else {
                    bucket_counts
                };
                self.histogram(
                    base,
                    n,
                    delta_key,
                    bounds,
                    counts,
                    *count,
                    sum.unwrap_or(f64::NAN),
                    *temporality,
                    no_value,
                    ts,
                    out,
                );
            }
            PointValue::ExponentialHistogram {
                count,
                sum,
                scale,
                zero_count,
                positive,
                negative,
                temporality,
                ..
            } => {
                let bounds = self.config.exp_histogram_bounds.clone();
                let counts = exp_to_classic(*scale, *zero_count, positive, negative, &bounds);
                self.histogram(
                    base,
                    n,
                    delta_key,
                    &bounds,
                    &counts,
                    *count,
                    sum.unwrap_or(f64::NAN),
                    *temporality,
                    no_value,
                    ts,
                    out,
                );
            }
            PointValue::Summary { count, sum, quantiles } => {
                let k_name = self.k_name.clone();
                for (q, v) in quantiles {
                    let v = if no_value { stale_nan() } else { *v };
                    out.extend(sample(base, v, ts, || {
                        let quantile = (self.k_quantile.clone(), self.float(*q));
                        ((k_name.clone(), n.base.clone()), Some(quantile))
                    }));
                }
                sum_and_count(out, base, &k_name, n, *sum, *count, no_value, ts);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn histogram(
        &mut self,
        base: &Base<'_>,
        n: &MetricNames,
        delta_key: u64,
        bounds: &[f64],
        counts: &[u64],
        count: u64,
        sum: f64,
        temporality: Temporality,
        no_value: bool,
        ts: i64,
        out: &mut Vec<Sample>,
    ) {
        let accumulated;
        let (bounds, counts, count, sum) = if temporality == Temporality::Delta && !no_value {
            let h = delta_key;
            if let Some(x) = self.partition {
                self.delta_partitions.insert(h, x);
            }
            let st = self.deltas.entry(h).or_insert_with(|| DeltaState::Histogram {
                bounds: bounds.to_vec(),
                counts: vec![0; counts.len()],
                count: 0,
                sum: 0.0,
                last_ms: i64::MIN,
            });
            match st {
                DeltaState::Histogram {
                    bounds: sb,
                    counts: sc,
                    count: scount,
                    sum: ssum,
                    last_ms,
                } => {
                    if ts < *last_ms {
                        self.stats.delta_out_of_order += 1;
                        return;
                    }
                    // The last point again (a replay): its totals are sent again, not added to.
                    let again = ts == *last_ms;
                    // A replay whose series' totals have another shape than the point (its
                    // attributes in another order, say): the totals' samples are sent, which
                    // are not the ones cached for this point.
                    if again && (sb.as_slice() != bounds || sc.len() != counts.len()) {
                        if base.cached.is_some() {
                            base.redo.set(true);
                            return;
                        }
                        base.unshaped.set(true);
                    }
                    if again {
                        self.stats.delta_duplicates += 1;
                    } else if sb.as_slice() != bounds || sc.len() != counts.len() {
                        // The bounds changed: a new series history, as a counter reset.
                        *sb = bounds.to_vec();
                        *sc = vec![0; counts.len()];
                        *scount = 0;
                        *ssum = 0.0;
                    }
                    if !again {
                        for (a, b) in sc.iter_mut().zip(counts) {
                            *a += b;
                        }
                        *scount += count;
                        if sum.is_finite() {
                            *ssum += sum;
                        }
                        *last_ms = ts;
                    }
                    accumulated = (sb.clone(), sc.clone());
                    (accumulated.0.as_slice(), accumulated.1.as_slice(), *scount, *ssum)
                }
                DeltaState::Sum { .. } => {
                    self.stats.invalid_points += 1;
                    return;
                }
            }
        } else {
            (bounds, counts, count, sum)
        };
        let k_name = self.k_name.clone();
        let k_le = self.k_le.clone();
        let mut cum = 0u64;
        for (i, c) in counts.iter().enumerate() {
            cum += c;
            #[allow(clippy::cast_precision_loss)]
            let v = if no_value { stale_nan() } else { cum as f64 };
            out.extend(sample(base, v, ts, || {
                let le = (
                    k_le.clone(),
                    self.float(bounds.get(i).copied().unwrap_or(f64::INFINITY)),
                );
                ((k_name.clone(), n.bucket.clone()), Some(le))
            }));
        }
        if bounds.len() >= counts.len() {
            // No +Inf bucket in the data (only bounds): add it from the count.
            #[allow(clippy::cast_precision_loss)]
            let v = if no_value { stale_nan() } else { count as f64 };
            out.extend(sample(base, v, ts, || {
                let inf = (k_le.clone(), self.float(f64::INFINITY));
                ((k_name.clone(), n.bucket.clone()), Some(inf))
            }));
        }
        sum_and_count(out, base, &k_name, n, sum, count, no_value, ts);
    }

    fn target_info(&mut self, p: &MetricPoint, ts: i64, out: &mut Vec<Sample>) {
        let res = &p.origin.resource.attributes;
        let mut labels: Vec<Label> = Vec::new();
        for kv in &res.0 {
            if matches!(
                kv.key.as_str(),
                "service.name" | "service.namespace" | "service.instance.id"
            ) {
                continue;
            }
            let v = match &kv.value {
                AnyValue::Empty => continue,
                AnyValue::String(s) => self.strings.get(s),
                other => self.strings.get(&other.to_text()),
            };
            let k = self.label_name(&kv.key);
            if !labels.iter().any(|(ek, _)| *ek == k) && !v.is_empty() {
                labels.push((k, v));
            }
        }
        let mut origin = self.origin_labels(p);
        origin.retain(|(k, _)| !k.starts_with("otel_scope_"));
        labels.retain(|(k, _)| !origin.iter().any(|(ok, _)| ok == k));
        labels.extend(origin);
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        let name = (self.k_name.clone(), self.strings.get("target_info"));
        out.extend(sample(&Base::new(&labels), 1.0, ts, || (name, None)));
    }
}

fn job(res: &dwcp_schemas::model::Attributes) -> Option<String> {
    let name = res.get_str("service.name")?;
    Some(match res.get_str("service.namespace") {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    })
}

/// Converts an exponential histogram to classic bucket counts for `bounds` (+Inf last).
///
/// Each exponential bucket `(base^i, base^(i+1)]` is assigned whole to the first classic bucket
/// whose bound is at or above the exponential bucket's upper end; when a classic bound falls
/// strictly inside an exponential bucket, the count goes to the bucket above it. So the classic
/// cumulative counts never overstate `le` (a value is never counted below its true bucket), and
/// the error is at most one exponential bucket width (a factor of 2^(2^-scale)). Negative
/// values and the zero bucket go to the first bucket whose bound is at or above them.
pub fn exp_to_classic(
    scale: i32,
    zero_count: u64,
    positive: &dwcp_schemas::model::ExpBuckets,
    negative: &dwcp_schemas::model::ExpBuckets,
    bounds: &[f64],
) -> Vec<u64> {
    let mut counts = vec![0u64; bounds.len() + 1];
    let base = 2f64.powf(2f64.powi(-scale));
    let slot = |v: f64| bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
    for (i, c) in positive.bucket_counts.iter().enumerate() {
        if *c == 0 {
            continue;
        }
        #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
        let idx = positive.offset.saturating_add(i as i32);
        let upper = base.powi(idx.saturating_add(1));
        counts[slot(upper)] += c;
    }
    // Negative bucket i holds [-base^(i+1), -base^i): its upper end is -base^i.
    for (i, c) in negative.bucket_counts.iter().enumerate() {
        if *c == 0 {
            continue;
        }
        #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
        let idx = negative.offset.saturating_add(i as i32);
        counts[slot(-base.powi(idx))] += c;
    }
    counts[slot(0.0)] += zero_count;
    counts
}

#[cfg(test)]
mod tests;
