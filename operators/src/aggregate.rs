//! Cross-region aggregation over event-time tumbling windows.
//!
//! Each rule picks an OTLP metric by name. A point's group key is its metric plus its
//! attributes and `job`, without `region` and the configured `without` labels (by default
//! `instance`), so the same series from every region and instance meet in one group. Each
//! closed window emits, per region and for `region="global"`:
//!
//! | aggregation | gauges, non-monotonic sums | counters (monotonic sums) | histograms |
//! | --- | --- | --- | --- |
//! | `count` | points | points | observations in the window |
//! | `sum` | sum of values | increase in the window | sum of observations |
//! | `min`, `max` | of values | of per-point increases | of the points' min/max (delta points only) |
//! | `mean` | mean value | mean per-point increase | sum / count |
//! | `rate` | — | increase / window seconds | observations / window seconds |
//! | `p50` `p95` `p99` `p999` | HDR histogram of values | — | merged buckets, interpolated |
//!
//! Quantiles come from the data:
//! - Histograms: each series' bucket increase over the window (cumulative points differenced
//!   per series, delta points as they are) is merged bucket by bucket into the group's
//!   histogram. When a series has other bounds than the group's first, its counts are
//!   re-bucketed onto the group's bounds by linear interpolation of its cumulative
//!   distribution. The quantile is then interpolated linearly inside its bucket, exactly as
//!   Prometheus' `histogram_quantile` does, so it can be compared with a PromQL query.
//! - Gauges: an HDR histogram (3 significant digits, values recorded in thousandths), so a
//!   quantile is within 0.1 % of the exact order statistic (plus 0.001 absolute); negative
//!   values count as 0 for quantiles (count, sum, min, max and mean stay exact).
//!
//! The first cumulative point of a series counts from zero when it carries a start time (the
//! series began then, as OTLP defines it), else it only sets the baseline. A cumulative value
//! lower than the previous one is a reset: the new value is the increase.
//!
//! Output names follow the recording-rule convention: `<record>:<aggregation>:<window>`, such as
//! `dwcp:latency:p95:10s` and `dwcp:requests:rate:10s`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dwcp_schemas::model::{MetricPoint, PointValue, Temporality};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::prom::{exp_to_classic, label_name, Label, Sample, DEFAULT_EXP_BOUNDS};
use crate::EventTime;

/// The aggregations a rule can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// Points or observations.
    Count,
    /// Sum or increase.
    Sum,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Mean.
    Mean,
    /// Per second.
    Rate,
    /// Median.
    P50,
    /// 95th percentile.
    P95,
    /// 99th percentile.
    P99,
    /// 99.9th percentile.
    P999,
}

impl Aggregation {
    fn name(self) -> &'static str {
        match self {
            Aggregation::Count => "count",
            Aggregation::Sum => "sum",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::Mean => "mean",
            Aggregation::Rate => "rate",
            Aggregation::P50 => "p50",
            Aggregation::P95 => "p95",
            Aggregation::P99 => "p99",
            Aggregation::P999 => "p999",
        }
    }

    fn quantile(self) -> Option<f64> {
        match self {
            Aggregation::P50 => Some(0.5),
            Aggregation::P95 => Some(0.95),
            Aggregation::P99 => Some(0.99),
            Aggregation::P999 => Some(0.999),
            _ => None,
        }
    }

    /// Every aggregation.
    pub const ALL: [Aggregation; 10] = [
        Aggregation::Count,
        Aggregation::Sum,
        Aggregation::Min,
        Aggregation::Max,
        Aggregation::Mean,
        Aggregation::Rate,
        Aggregation::P50,
        Aggregation::P95,
        Aggregation::P99,
        Aggregation::P999,
    ];
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationRule {
    /// The OTLP metric name (`dwcp.latency`).
    pub metric: String,
    /// Output name prefix; default: the metric name with `.` as `:` (`dwcp:latency`).
    #[serde(default)]
    pub record: Option<String>,
    /// Which aggregations; default all that apply to the metric's type.
    #[serde(default)]
    pub aggregations: Option<Vec<Aggregation>>,
}

impl AggregationRule {
    /// The output name prefix (`dwcp:latency` for `dwcp:latency:p95:10s`).
    pub fn record(&self) -> String {
        self.record.clone().unwrap_or_else(|| self.metric.replace('.', ":"))
    }
}

/// Configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregationConfig {
    /// Window length, ms.
    pub window_ms: u64,
    /// Labels left out of the group key besides `region`.
    pub without: Vec<String>,
    /// Classic bounds for exponential histograms.
    pub exp_histogram_bounds: Vec<f64>,
    /// The rules.
    pub rules: Vec<AggregationRule>,
    /// Per-series state (for differencing cumulative points) unused this long expires, ms.
    pub series_ttl_ms: u64,
}

impl Default for AggregationConfig {
    fn default() -> Self {
        AggregationConfig {
            window_ms: 10_000,
            without: vec!["instance".into()],
            exp_histogram_bounds: DEFAULT_EXP_BOUNDS.to_vec(),
            rules: Vec::new(),
            series_ttl_ms: 600_000,
        }
    }
}

/// What kind of data a group holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Kind {
    Gauge,
    Counter,
    Histogram,
}

/// The accumulated statistics of one group in one region and window.
#[derive(Debug, Clone)]
struct Stats {
    count: f64,
    sum: f64,
    min: f64,
    max: f64,
    /// Gauge values ×1000.
    /// u32 counts: half the memory of u64 ones (a 3-digit histogram of values up to 30,000 is
    /// 6,144 counters), and no window holds 4 billion points of one group.
    hdr: Option<Histogram<u32>>,
    /// Histogram bounds and per-bucket counts (non-cumulative, +Inf last).
    bounds: Vec<f64>,
    buckets: Vec<f64>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            count: 0.0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            hdr: None,
            bounds: Vec::new(),
            buckets: Vec::new(),
        }
    }

    fn observe_minmax(&mut self, v: f64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    fn record_gauge(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        self.count += 1.0;
        self.sum += v;
        self.observe_minmax(v);
        let h = self.hdr.get_or_insert_with(|| {
            #[allow(clippy::unwrap_used)] // 3 significant digits is a valid constant argument
            Histogram::new(3).unwrap()
        });
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let scaled = (v.max(0.0) * 1000.0).round() as u64;
        // An auto-resizing histogram grows to fit; recording fails only past u64 range.
        let _ = h.record(scaled);
    }

    fn add_buckets(&mut self, bounds: &[f64], counts: &[f64]) {
        if self.bounds.is_empty() && self.buckets.is_empty() {
            self.bounds = bounds.to_vec();
            self.buckets = vec![0.0; bounds.len() + 1];
        }
        if self.bounds == bounds {
            for (a, b) in self.buckets.iter_mut().zip(counts) {
                *a += b;
            }
        } else {
            let rebucketed = rebucket(bounds, counts, &self.bounds);
            for (a, b) in self.buckets.iter_mut().zip(&rebucketed) {
                *a += b;
            }
        }
    }

    fn merge(&mut self, o: &Stats) {
        self.count += o.count;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if let Some(oh) = &o.hdr {
            match &mut self.hdr {
                Some(h) => {
                    let _ = h.add(oh);
                }
                None => self.hdr = Some(oh.clone()),
            }
        }
        if !o.buckets.is_empty() {
            self.add_buckets(&o.bounds, &o.buckets);
        }
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        if !self.buckets.is_empty() {
            return histogram_quantile(q, &self.bounds, &self.buckets);
        }
        let h = self.hdr.as_ref()?;
        if h.is_empty() {
            return None;
        }
        #[allow(clippy::cast_precision_loss)]
        Some(h.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// [`Stats`] as a snapshot holds it: floats as their bits (JSON has no infinity, and the
/// minimum of an empty group is one), the HDR histogram as its recorded (value, count) pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StatsState {
    count: u64,
    sum: u64,
    min: u64,
    max: u64,
    hdr: Option<Vec<(u64, u64)>>,
    bounds: Vec<u64>,
    buckets: Vec<u64>,
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn from_bits(v: &[u64]) -> Vec<f64> {
    v.iter().map(|x| f64::from_bits(*x)).collect()
}

impl Stats {
    fn state(&self) -> StatsState {
        StatsState {
            count: self.count.to_bits(),
            sum: self.sum.to_bits(),
            min: self.min.to_bits(),
            max: self.max.to_bits(),
            // Each bucket's highest equivalent value records into the same bucket again, so
            // the restored histogram answers every quantile as this one does.
            hdr: self.hdr.as_ref().map(|h| {
                h.iter_recorded()
                    .map(|v| (v.value_iterated_to(), u64::from(v.count_at_value())))
                    .collect()
            }),
            bounds: bits(&self.bounds),
            buckets: bits(&self.buckets),
        }
    }

    fn from_state(s: &StatsState) -> Self {
        let hdr = s.hdr.as_ref().map(|pairs| {
            #[allow(clippy::unwrap_used)] // 3 significant digits is a valid constant argument
            let mut h = Histogram::new(3).unwrap();
            // The largest value first: the auto-resizing histogram then grows once, not at each
            // new power of two.
            for (v, n) in pairs.iter().rev() {
                // Auto-resizing: fails only past u64 range, which a snapshot cannot hold.
                let _ = h.record_n(*v, u32::try_from(*n).unwrap_or(u32::MAX));
            }
            h
        });
        Stats {
            count: f64::from_bits(s.count),
            sum: f64::from_bits(s.sum),
            min: f64::from_bits(s.min),
            max: f64::from_bits(s.max),
            hdr,
            bounds: from_bits(&s.bounds),
            buckets: from_bits(&s.buckets),
        }
    }
}

/// One group of one open window in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct GroupState {
    start: EventTime,
    key: u64,
    rule: usize,
    labels: Vec<(String, String)>,
    kind: Kind,
    regions: Vec<(String, StatsState)>,
}

/// A cumulative series' last point in a snapshot (floats as bits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum LastState {
    Counter {
        value: u64,
        time: EventTime,
    },
    Histogram {
        bounds: Vec<u64>,
        counts: Vec<u64>,
        count: u64,
        sum: u64,
        time: EventTime,
    },
}

/// The operator's state: its open windows, the last point of each cumulative series (what the
/// next point's increase is measured from), and how far windows are closed. Restored into an
/// operator with the same rules, it emits what this one would have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateState {
    windows: Vec<GroupState>,
    last: Vec<(u64, LastState)>,
    #[serde(default)]
    seen: Vec<(u64, EventTime)>,
    closed_until: EventTime,
    late: u64,
}

impl AggregateState {
    /// Open (window, group) pairs it holds.
    pub fn groups(&self) -> usize {
        self.windows.len()
    }
}

/// Re-buckets per-bucket `counts` over `from` bounds onto `to` bounds, by linear
/// interpolation of the cumulative distribution inside each source bucket.
pub fn rebucket(from: &[f64], counts: &[f64], to: &[f64]) -> Vec<f64> {
    // Cumulative distribution at each target bound.
    let cdf_at = |x: f64| -> f64 {
        let mut cum = 0.0;
        let mut lower = 0.0f64.min(from.first().copied().unwrap_or(0.0));
        for (i, c) in counts.iter().enumerate() {
            let upper = from.get(i).copied().unwrap_or(f64::INFINITY);
            if x >= upper {
                cum += c;
                lower = upper;
                continue;
            }
            if x > lower && upper.is_finite() {
                cum += c * (x - lower) / (upper - lower);
            }
            break;
        }
        cum
    };
    let total: f64 = counts.iter().sum();
    let mut out = Vec::with_capacity(to.len() + 1);
    let mut prev = 0.0;
    for b in to {
        let c = cdf_at(*b).min(total);
        out.push((c - prev).max(0.0));
        prev = c.max(prev);
    }
    out.push((total - prev).max(0.0));
    out
}

/// Prometheus' `histogram_quantile` over per-bucket counts (+Inf last): the rank `q * total`
/// is found in its bucket and interpolated linearly between the bucket's bounds (the first
/// bucket's lower bound is 0 when its upper bound is positive); a rank in the +Inf bucket gives
/// the highest finite bound.
pub fn histogram_quantile(q: f64, bounds: &[f64], counts: &[f64]) -> Option<f64> {
    let total: f64 = counts.iter().sum();
    if total <= 0.0 || q.is_nan() {
        return None;
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    let rank = q * total;
    let mut cum = 0.0;
    for (i, c) in counts.iter().enumerate() {
        let prev_cum = cum;
        cum += c;
        if cum >= rank {
            let Some(&upper) = bounds.get(i) else {
                return bounds.last().copied();
            };
            let lower = match i {
                0 if upper <= 0.0 => return Some(upper),
                0 => 0.0,
                _ => bounds[i - 1],
            };
            if *c <= 0.0 {
                return Some(lower);
            }
            return Some(lower + (upper - lower) * ((rank - prev_cum) / c));
        }
    }
    bounds.last().copied()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Last {
    Counter {
        value: f64,
        time: EventTime,
    },
    Histogram {
        bounds: Vec<f64>,
        counts: Vec<u64>,
        count: u64,
        sum: f64,
        time: EventTime,
    },
}

/// A label value of a group key, borrowed from the point when it can be.
#[derive(Debug)]
enum KeyValue<'p> {
    Str(&'p str),
    Owned(String),
    /// `job`: namespace and service name, written `namespace/name`.
    Job(Option<&'p str>, &'p str),
}

impl std::fmt::Display for KeyValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyValue::Str(s) => f.write_str(s),
            KeyValue::Owned(s) => f.write_str(s),
            KeyValue::Job(Some(ns), name) => write!(f, "{ns}/{name}"),
            KeyValue::Job(None, name) => f.write_str(name),
        }
    }
}

/// Per window: group key hash → (key, kind, region → stats).
type Groups = crate::prom::FastMap<u64, (GroupKey, Kind, BTreeMap<Arc<str>, Stats>)>;

/// A group: rule index and key labels (sorted).
type GroupKey = (usize, Vec<(String, String)>);

/// The operator.
#[derive(Debug)]
pub struct AggregateOperator {
    config: AggregationConfig,
    by_metric: HashMap<String, Vec<usize>>,
    /// window start → group → region → stats
    windows: BTreeMap<EventTime, Groups>,
    label_names: crate::prom::FastMap<Box<str>, Arc<str>>,
    job: Arc<str>,
    last: crate::prom::FastMap<u64, Last>,
    /// Per gauge or delta series: the time of its last point added (a point again at or before
    /// it is a duplicate, as a replay after a crash re-reads: not added twice).
    seen: crate::prom::FastMap<u64, EventTime>,
    closed_until: EventTime,
    late: u64,
    duplicates: u64,
    /// Per rule, its aggregations with their output names (`dwcp:latency:p95:10s`), made once.
    names: Vec<Vec<(Aggregation, Arc<str>)>>,
    /// The label names and the region the outputs share.
    name_label: Arc<str>,
    region_label: Arc<str>,
    global: Arc<str>,
}

fn window_label(ms: u64) -> String {
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl AggregateOperator {
    /// A new operator.
    pub fn new(config: AggregationConfig) -> Self {
        let mut by_metric: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in config.rules.iter().enumerate() {
            by_metric.entry(r.metric.clone()).or_default().push(i);
        }
        let window = window_label(config.window_ms);
        let names = config
            .rules
            .iter()
            .map(|r| {
                let record = r.record();
                r.aggregations
                    .clone()
                    .unwrap_or_else(|| Aggregation::ALL.to_vec())
                    .into_iter()
                    .map(|a| (a, Arc::from(format!("{record}:{}:{window}", a.name()))))
                    .collect()
            })
            .collect();
        AggregateOperator {
            config,
            by_metric,
            windows: BTreeMap::new(),
            label_names: crate::prom::FastMap::default(),
            job: Arc::from("job"),
            last: crate::prom::FastMap::default(),
            seen: crate::prom::FastMap::default(),
            closed_until: 0,
            late: 0,
            duplicates: 0,
            names,
            name_label: Arc::from("__name__"),
            region_label: Arc::from("region"),
            global: Arc::from("global"),
        }
    }

    /// The operator's state, for a changelog.
    pub fn snapshot(&self) -> AggregateState {
        let mut windows = Vec::new();
        for (start, groups) in &self.windows {
            let mut keys: Vec<&u64> = groups.keys().collect();
            keys.sort_unstable();
            for key in keys {
                let ((rule, labels), kind, regions) = &groups[key];
                windows.push(GroupState {
                    start: *start,
                    key: *key,
                    rule: *rule,
                    labels: labels.clone(),
                    kind: *kind,
                    regions: regions.iter().map(|(r, st)| (r.to_string(), st.state())).collect(),
                });
            }
        }
        let mut last: Vec<(u64, LastState)> = self
            .last
            .iter()
            .map(|(sid, l)| {
                let l = match l {
                    Last::Counter { value, time } => LastState::Counter {
                        value: value.to_bits(),
                        time: *time,
                    },
                    Last::Histogram {
                        bounds,
                        counts,
                        count,
                        sum,
                        time,
                    } => LastState::Histogram {
                        bounds: bits(bounds),
                        counts: counts.clone(),
                        count: *count,
                        sum: sum.to_bits(),
                        time: *time,
                    },
                };
                (*sid, l)
            })
            .collect();
        last.sort_unstable_by_key(|(sid, _)| *sid);
        let mut seen: Vec<(u64, EventTime)> = self.seen.iter().map(|(k, v)| (*k, *v)).collect();
        seen.sort_unstable();
        AggregateState {
            windows,
            last,
            seen,
            closed_until: self.closed_until,
            late: self.late,
        }
    }

    /// Replaces the operator's state with a snapshot's. Groups of rules this operator does not
    /// have (the configuration changed) are dropped.
    pub fn restore(&mut self, state: AggregateState) {
        self.windows.clear();
        for g in state.windows {
            if g.rule >= self.config.rules.len() {
                continue;
            }
            let regions = g
                .regions
                .iter()
                .map(|(r, st)| (Arc::from(r.as_str()), Stats::from_state(st)))
                .collect();
            self.windows
                .entry(g.start)
                .or_default()
                .insert(g.key, ((g.rule, g.labels), g.kind, regions));
        }
        self.last = state
            .last
            .into_iter()
            .map(|(sid, l)| {
                let l = match l {
                    LastState::Counter { value, time } => Last::Counter {
                        value: f64::from_bits(value),
                        time,
                    },
                    LastState::Histogram {
                        bounds,
                        counts,
                        count,
                        sum,
                        time,
                    } => Last::Histogram {
                        bounds: from_bits(&bounds),
                        counts,
                        count,
                        sum: f64::from_bits(sum),
                        time,
                    },
                };
                (sid, l)
            })
            .collect();
        self.seen = state.seen.into_iter().collect();
        self.closed_until = state.closed_until;
        self.late = state.late;
    }

    /// Points that arrived after their window closed.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Points not added because their series already had one at or after their time (a
    /// replay's duplicates).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Whether `t` is later than the last point added of gauge or delta series `sid` (and
    /// records it); a duplicate is counted.
    fn first_at(&mut self, sid: u64, t: EventTime) -> bool {
        match self.seen.get_mut(&sid) {
            Some(pt) if *pt >= t => {
                self.duplicates += 1;
                false
            }
            Some(pt) => {
                *pt = t;
                true
            }
            None => {
                self.seen.insert(sid, t);
                true
            }
        }
    }

    /// Per-series baselines kept (state size).
    pub fn series(&self) -> usize {
        self.last.len() + self.seen.len()
    }

    /// The sanitized name of an attribute key, cached.
    fn label_name(&mut self, key: &str) -> std::sync::Arc<str> {
        if let Some(n) = self.label_names.get(key) {
            return n.clone();
        }
        if self.label_names.len() >= 100_000 {
            self.label_names.clear();
        }
        let n: std::sync::Arc<str> = std::sync::Arc::from(label_name(key));
        self.label_names.insert(key.into(), n.clone());
        n
    }

    /// The group key of a point: its labels as sorted `(name, value)` pairs (attributes
    /// without `region` and the `without` labels, plus `job`), borrowed from the point where
    /// possible, and the key's hash (with the rule).
    fn key_of<'p>(&mut self, p: &'p MetricPoint, rule: usize) -> (Vec<(Arc<str>, KeyValue<'p>)>, u64) {
        let mut labels: Vec<(Arc<str>, KeyValue<'p>)> = Vec::with_capacity(p.attributes.len() + 1);
        for kv in &p.attributes.0 {
            let k = self.label_name(&kv.key);
            if &*k == "region" || self.config.without.iter().any(|w| **w == *k) {
                continue;
            }
            let v = match &kv.value {
                dwcp_schemas::model::AnyValue::String(s) if !s.is_empty() => KeyValue::Str(s),
                dwcp_schemas::model::AnyValue::String(_) | dwcp_schemas::model::AnyValue::Empty => continue,
                other => KeyValue::Owned(other.to_text()),
            };
            labels.push((k, v));
        }
        let res = &p.origin.resource.attributes;
        if !self.config.without.iter().any(|w| w == "job") {
            if let Some(name) = res.get_str("service.name") {
                let ns = res.get_str("service.namespace").filter(|ns| !ns.is_empty());
                labels.push((self.job.clone(), KeyValue::Job(ns, name)));
            }
        }
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels.dedup_by(|a, b| a.0 == b.0);
        let mut h = crate::prom::StableHasher::default();
        std::hash::Hasher::write_u64(&mut h, rule as u64);
        for (k, v) in &labels {
            h.write_str(k);
            match v {
                KeyValue::Str(s) => h.write_str(s),
                KeyValue::Owned(s) => h.write_str(s),
                KeyValue::Job(ns, name) => {
                    h.write_str(ns.unwrap_or(""));
                    h.write_str(name);
                }
            }
        }
        (labels, h.finish_mixed())
    }

    /// Consumes a batch of points.
    pub fn process(&mut self, points: &[MetricPoint]) {
        let window = self.config.window_ms * 1_000_000;
        for p in points {
            let Some(rules) = self.by_metric.get(&p.metric.name) else {
                continue;
            };
            let (first, n) = (rules[0], rules.len());
            let t = p.time_unix_nano;
            if t == 0 || t < self.closed_until {
                self.late += 1;
                continue;
            }
            let start = t - t % window;
            let instance = p
                .origin
                .resource
                .attributes
                .get_str("service.instance.id")
                .unwrap_or("");
            for i in 0..n {
                let rule = if i == 0 {
                    first
                } else {
                    self.by_metric[&p.metric.name][i]
                };
                let (key_labels, key_hash) = self.key_of(p, rule);
                // The full series identity, for differencing cumulative points.
                let mut h = crate::prom::StableHasher::default();
                std::hash::Hasher::write_u64(&mut h, key_hash);
                h.write_str(&p.origin.region);
                h.write_str(instance);
                for kv in &p.attributes.0 {
                    h.write_str(&kv.key);
                    match &kv.value {
                        dwcp_schemas::model::AnyValue::String(v) => h.write_str(v),
                        other => h.write_str(&other.to_text()),
                    }
                }
                let sid = h.finish_mixed();
                let Some((kind, update)) = self.update_for(p, sid) else {
                    continue;
                };
                let groups = self.windows.entry(start).or_default();
                let group = groups.entry(key_hash).or_insert_with(|| {
                    let labels = key_labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                    ((rule, labels), kind, BTreeMap::new())
                });
                let stats = group.2.entry(p.origin.region.clone()).or_insert_with(Stats::new);
                update.apply(stats);
            }
        }
    }

    /// Works out what a point adds to its window, updating the series baseline.
    fn update_for<'p>(&mut self, p: &'p MetricPoint, sid: u64) -> Option<(Kind, Update<'p>)> {
        let t = p.time_unix_nano;
        match &p.value {
            PointValue::Gauge { value }
            | PointValue::Sum {
                value,
                monotonic: false,
                ..
            } => self
                .first_at(sid, t)
                .then(|| (Kind::Gauge, Update::Gauge(value.as_f64()))),
            PointValue::Sum {
                value,
                temporality,
                monotonic: true,
            } => {
                let v = value.as_f64();
                if *temporality == Temporality::Delta {
                    return self.first_at(sid, t).then_some((Kind::Counter, Update::Increase(v)));
                }
                let inc = match self.last.get(&sid) {
                    Some(Last::Counter { value: pv, time: pt }) if *pt < t => {
                        if v >= *pv {
                            v - *pv
                        } else {
                            v
                        }
                    }
                    // A point again (a replay) or an older one: the baseline stays, so a
                    // replay's later points are not measured from its earlier ones.
                    Some(Last::Counter { time: pt, .. }) => {
                        if *pt == t {
                            self.duplicates += 1;
                        }
                        return None;
                    }
                    // The series was a histogram: it starts over as a counter.
                    Some(Last::Histogram { .. }) => {
                        self.last.insert(sid, Last::Counter { value: v, time: t });
                        return None;
                    }
                    None if p.start_time_unix_nano > 0 && p.start_time_unix_nano <= t => v,
                    None => 0.0,
                };
                self.last.insert(sid, Last::Counter { value: v, time: t });
                Some((Kind::Counter, Update::Increase(inc)))
            }
            PointValue::Histogram {
                count,
                sum,
                min,
                max,
                bounds,
                bucket_counts,
                temporality,
            } => {
                let counts: &[u64] = if bucket_counts.is_empty() {
                    std::slice::from_ref(count)
                } else {
                    bucket_counts
                };
                self.histogram_update(
                    sid,
                    p,
                    std::borrow::Cow::Borrowed(bounds.as_slice()),
                    counts,
                    *count,
                    sum.unwrap_or(0.0),
                    *min,
                    *max,
                    *temporality,
                )
            }
            PointValue::ExponentialHistogram {
                count,
                sum,
                min,
                max,
                scale,
                zero_count,
                positive,
                negative,
                temporality,
                ..
            } => {
                let bounds = self.config.exp_histogram_bounds.clone();
                let counts = exp_to_classic(*scale, *zero_count, positive, negative, &bounds);
                self.histogram_update(
                    sid,
                    p,
                    std::borrow::Cow::Owned(bounds),
                    &counts,
                    *count,
                    sum.unwrap_or(0.0),
                    *min,
                    *max,
                    *temporality,
                )
            }
            PointValue::Summary { .. } => None,
        }
    }

    #[allow(clippy::too_many_arguments, clippy::cast_precision_loss)]
    fn histogram_update<'a>(
        &mut self,
        sid: u64,
        p: &MetricPoint,
        bounds: std::borrow::Cow<'a, [f64]>,
        counts: &[u64],
        count: u64,
        sum: f64,
        min: Option<f64>,
        max: Option<f64>,
        temporality: Temporality,
    ) -> Option<(Kind, Update<'a>)> {
        let t = p.time_unix_nano;
        let as_f64 = |c: &[u64]| c.iter().map(|c| *c as f64).collect::<Vec<f64>>();
        if temporality == Temporality::Delta {
            if !self.first_at(sid, t) {
                return None;
            }
            return Some((
                Kind::Histogram,
                Update::Histogram {
                    bounds,
                    counts: as_f64(counts),
                    count: count as f64,
                    sum,
                    min,
                    max,
                },
            ));
        }
        let (dc, dcount, dsum) = match self.last.get_mut(&sid) {
            Some(Last::Histogram {
                bounds: pb,
                counts: pc,
                count: pcount,
                sum: psum,
                time: pt,
            }) if *pt < t => {
                let same = pb.as_slice() == &*bounds && pc.len() == counts.len();
                let delta = if same && count >= *pcount && counts.iter().zip(pc.iter()).all(|(a, b)| a >= b) {
                    (
                        counts.iter().zip(pc.iter()).map(|(a, b)| (a - b) as f64).collect(),
                        (count - *pcount) as f64,
                        sum - *psum,
                    )
                } else {
                    // A reset or new bounds: the current point is the increase.
                    (as_f64(counts), count as f64, sum)
                };
                // Update the baseline in place: no new vectors when the shape holds.
                if same {
                    pc.copy_from_slice(counts);
                } else {
                    *pb = bounds.to_vec();
                    *pc = counts.to_vec();
                }
                (*pcount, *psum, *pt) = (count, sum, t);
                delta
            }
            Some(_) => return None,
            None => {
                self.last.insert(
                    sid,
                    Last::Histogram {
                        bounds: bounds.to_vec(),
                        counts: counts.to_vec(),
                        count,
                        sum,
                        time: t,
                    },
                );
                if p.start_time_unix_nano > 0 && p.start_time_unix_nano <= t {
                    (as_f64(counts), count as f64, sum)
                } else {
                    return None;
                }
            }
        };
        Some((
            Kind::Histogram,
            Update::Histogram {
                bounds,
                counts: dc,
                count: dcount,
                sum: dsum,
                min: None,
                max: None,
            },
        ))
    }

    /// Closes the windows that end at or before `watermark`, emitting their samples.
    pub fn on_watermark(&mut self, watermark: EventTime, out: &mut Vec<Sample>) {
        let window = self.config.window_ms * 1_000_000;
        while let Some((&start, _)) = self.windows.first_key_value() {
            let end = start.saturating_add(window);
            if end > watermark {
                break;
            }
            let Some((_, groups)) = self.windows.pop_first() else {
                break;
            };
            self.closed_until = self.closed_until.max(end);
            #[allow(clippy::cast_possible_wrap)]
            let ts = (end / 1_000_000) as i64;
            let mut groups: Vec<_> = groups.into_values().collect();
            groups.sort_by(|a, b| a.0.cmp(&b.0));
            let mut scratch = Vec::new();
            for ((rule, labels), kind, regions) in groups {
                let mut global = Stats::new();
                for s in regions.values() {
                    global.merge(s);
                }
                // The group's labels, made once and shared by every sample it emits.
                let shared: Vec<Label> = labels
                    .iter()
                    .map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str())))
                    .collect();
                let regions = regions
                    .into_iter()
                    .chain(std::iter::once((self.global.clone(), global)));
                for (region, stats) in regions {
                    self.emit(rule, &shared, kind, &region, &stats, ts, &mut scratch, out);
                }
            }
        }
        if watermark != EventTime::MAX {
            self.closed_until = self.closed_until.max(watermark - watermark % window);
        }
        // Forget baselines of series silent for the TTL.
        let horizon = watermark.saturating_sub(self.config.series_ttl_ms * 1_000_000);
        self.last.retain(|_, l| match l {
            Last::Counter { time, .. } | Last::Histogram { time, .. } => *time >= horizon,
        });
        self.seen.retain(|_, time| *time >= horizon);
    }

    /// The samples of one group's `region` (or `global`) in a closed window: one per
    /// aggregation of `rule` with a value. `scratch` is a buffer kept between calls.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        rule: usize,
        labels: &[Label],
        kind: Kind,
        region: &Arc<str>,
        s: &Stats,
        ts: i64,
        scratch: &mut Vec<Label>,
        out: &mut Vec<Sample>,
    ) {
        #[allow(clippy::cast_precision_loss)]
        let secs = self.config.window_ms as f64 / 1000.0;
        for (a, name) in &self.names[rule] {
            let a = *a;
            let v = match (a, kind) {
                (Aggregation::Count, _) => Some(s.count),
                (Aggregation::Sum, _) => Some(s.sum),
                (Aggregation::Min, _) => s.min.is_finite().then_some(s.min),
                (Aggregation::Max, _) => s.max.is_finite().then_some(s.max),
                (Aggregation::Mean, _) => (s.count > 0.0).then(|| s.sum / s.count),
                (Aggregation::Rate, Kind::Counter) => Some(s.sum / secs),
                (Aggregation::Rate, Kind::Histogram) => Some(s.count / secs),
                (Aggregation::Rate, Kind::Gauge) => None,
                (q, Kind::Gauge | Kind::Histogram) => q.quantile().and_then(|q| s.quantile(q)),
                (_, Kind::Counter) => None,
            };
            let Some(v) = v else { continue };
            // Refcounts, one allocation for the set: sorted by name, as `label_set_of` sorts.
            scratch.clear();
            scratch.extend(labels.iter().cloned());
            scratch.push((self.name_label.clone(), name.clone()));
            scratch.push((self.region_label.clone(), region.clone()));
            scratch.sort_by(|a, b| a.0.cmp(&b.0));
            out.push(Sample::new(Arc::<[Label]>::from(scratch.as_slice()), v, ts));
        }
    }
}

enum Update<'a> {
    Gauge(f64),
    Increase(f64),
    Histogram {
        bounds: std::borrow::Cow<'a, [f64]>,
        counts: Vec<f64>,
        count: f64,
        sum: f64,
        min: Option<f64>,
        max: Option<f64>,
    },
}

impl Update<'_> {
    fn apply(self, s: &mut Stats) {
        match self {
            Update::Gauge(v) => s.record_gauge(v),
            Update::Increase(v) => {
                s.count += 1.0;
                s.sum += v;
                s.observe_minmax(v);
            }
            Update::Histogram {
                bounds,
                counts,
                count,
                sum,
                min,
                max,
            } => {
                s.count += count;
                s.sum += sum;
                if let Some(m) = min {
                    s.min = s.min.min(m);
                }
                if let Some(m) = max {
                    s.max = s.max.max(m);
                }
                s.add_buckets(&bounds, &counts);
            }
        }
    }
}

#[cfg(test)]
mod tests;
