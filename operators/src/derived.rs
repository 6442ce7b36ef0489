//! SLAs, region health, region-pair network telemetry and capacity forecasts, derived from the
//! Prometheus series the metrics path produces (and the hops of stitched traces).
//!
//! Inputs are named by Prometheus series selectors in the configuration, so they are the names
//! users see in Prometheus. Counters become increments per series (the first sample of a series
//! only sets its base, a decrease is a reset, as in PromQL's `increase`); increments and gauge
//! values are summed per event-time minute, per region (the `region` label) and across regions
//! (`region="global"`). When the watermark passes the end of a minute, the minute is closed:
//!
//! - **SLAs** ([`crate::sla`]): availability from a good (or bad) and total counter pair, or from
//!   `up`-style series (a sample ≥ 1 is good); latency from a histogram (`_bucket` at the largest
//!   bound ≤ `threshold` over `_count`); throughput (a minute is good when the counter's rate
//!   reached `min_rate`; minutes without samples count as zero). Reports every
//!   `report_interval_ms`.
//! - **Health** ([`crate::health`]): each factor is a gauge mean, a ratio of two counters'
//!   increments, or a histogram's mean (`_sum` over `_count`), as `offset + scale × raw`; a
//!   factor without data this minute keeps its last value for `carry_minutes`, then is left out.
//!   A region is scored every minute; a change (first score, healthy flag, trend, a component's
//!   status, or the score moving by `change_points`) is a [`HealthChange`].
//! - **Network** ([`crate::network`]): per (`region`, `peer_region`) pair, a latency gauge (each
//!   sample a probe: RFC 3550 jitter), packet counters (loss), byte counters (bandwidth and
//!   utilization) and a tunnel-up gauge; plus cross-region hop latency from stitched traces.
//! - **Capacity** ([`crate::capacity`]): a utilization gauge per resource and region, kept as
//!   hourly means; forecasts when an hour closes, once 48 hours are known.
//!
//! Every output series is a Prometheus sample at the closing minute's end:
//!
//! | series | labels |
//! | --- | --- |
//! | `dwcp_sla_compliance_ratio`, `dwcp_sla_month_compliance_ratio`, `dwcp_sla_target_ratio` | sla, kind, region |
//! | `dwcp_error_budget_remaining_ratio`, `dwcp_error_budget_consumed_ratio`, `dwcp_error_budget_remaining_seconds` | sla, kind, region |
//! | `dwcp_sla_burn_rate` | sla, kind, region, window (5m 30m 1h 6h 3d) |
//! | `dwcp_sla_burn_alert` (0, 1 ticket, 2 page) | sla, kind, region |
//! | `dwcp_region_health_score`, `dwcp_region_healthy`, `dwcp_region_health_trend` (−1, 0, 1) | region |
//! | `dwcp_region_health_factor_score` | region, factor |
//! | `dwcp_network_jitter_milliseconds`, `dwcp_network_latency_milliseconds`, `dwcp_network_packet_loss_ratio` | region, peer_region |
//! | `dwcp_network_sent_bytes_per_second`, `dwcp_network_received_bytes_per_second`, `dwcp_network_utilization_ratio` | region, peer_region |
//! | `dwcp_tunnel_status` (1 up, 0.5 degraded, 0 down), `dwcp_tunnel_flaps` | region, peer_region |
//! | `dwcp_cross_region_hop_latency_milliseconds` | region, peer_region, stat (mean, max) |
//! | `dwcp_capacity_forecast` | resource, region, horizon (30d 60d 90d) |
//! | `dwcp_capacity_days_to_exhaustion`, `dwcp_capacity_nodes_needed`, `dwcp_capacity_bottleneck_rank` | resource, region |
//!
//! State is serde data ([`DerivedState`]): snapshot and restore give the same outputs as an
//! uninterrupted run.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::alerts::{fingerprint, AlertState, AlertTransition};
use crate::capacity::{rank_bottlenecks, Bottleneck, CapacityTracker, Forecast};
use crate::health::{ComponentStatus, Health, HealthConfig, HealthInputs, HealthTracker, Trend};
use crate::network::{NetworkConfig, PairReport, PairTelemetry};
use crate::prom::{labels_of, FastMap, Sample};
use crate::selector::Selector;
use crate::sla::{BurnAlert, SlaConfig, SlaKind, SlaReport, SlaTracker};
use crate::EventTime;

const MINUTE: u64 = 60_000_000_000;
const HOUR_MINUTES: u64 = 60;
/// The region of the cross-region rollup.
pub const GLOBAL: &str = "global";

/// The series the operator writes (a rule reading one of them is evaluated where the operator
/// runs).
pub const OUTPUT_NAMES: [&str; 26] = [
    "dwcp_capacity_bottleneck_rank",
    "dwcp_capacity_days_to_exhaustion",
    "dwcp_capacity_forecast",
    "dwcp_capacity_history_hours",
    "dwcp_capacity_nodes_needed",
    "dwcp_cross_region_hop_latency_milliseconds",
    "dwcp_error_budget_consumed_ratio",
    "dwcp_error_budget_remaining_ratio",
    "dwcp_error_budget_remaining_seconds",
    "dwcp_network_jitter_milliseconds",
    "dwcp_network_latency_milliseconds",
    "dwcp_network_packet_loss_ratio",
    "dwcp_network_received_bytes_per_second",
    "dwcp_network_sent_bytes_per_second",
    "dwcp_network_utilization_ratio",
    "dwcp_region_health_factor_score",
    "dwcp_region_health_score",
    "dwcp_region_health_trend",
    "dwcp_region_healthy",
    "dwcp_sla_burn_alert",
    "dwcp_sla_burn_rate",
    "dwcp_sla_compliance_ratio",
    "dwcp_sla_month_compliance_ratio",
    "dwcp_sla_target_ratio",
    "dwcp_tunnel_flaps",
    "dwcp_tunnel_status",
];

fn default_true() -> bool {
    true
}
fn default_period() -> u32 {
    30
}
fn default_one() -> f64 {
    1.0
}

/// One SLA in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaSpec {
    /// Name, unique.
    pub name: String,
    /// Availability, latency or throughput.
    pub kind: SlaKind,
    /// Target ratio of good, in (0, 1), e.g. 0.9995.
    pub target: f64,
    /// Rolling period, days.
    #[serde(default = "default_period")]
    pub period_days: u32,
    /// Counter of all requests (availability, throughput).
    #[serde(default)]
    pub total: Option<String>,
    /// Counter of good requests (availability; or `bad`).
    #[serde(default)]
    pub good: Option<String>,
    /// Counter of bad requests (availability; or `good`).
    #[serde(default)]
    pub bad: Option<String>,
    /// `up`-style gauge: a sample ≥ 1 is good (availability, instead of counters).
    #[serde(default)]
    pub up: Option<String>,
    /// Histogram base name with optional matchers, e.g. `dwcp_latency_milliseconds{job="x"}`
    /// (latency): its `_bucket` and `_count` series are read.
    #[serde(default)]
    pub histogram: Option<String>,
    /// Latency threshold in the histogram's unit (latency).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Minimum rate per second of `total` for a good minute (throughput).
    #[serde(default)]
    pub min_rate: Option<f64>,
    /// Track each region as well as the global rollup.
    #[serde(default = "default_true")]
    pub per_region: bool,
}

/// How a health factor is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactorSpec {
    /// A gauge: the mean of its samples in the minute.
    #[serde(default)]
    pub gauge: Option<String>,
    /// Counters: the numerator's increase over the denominator's.
    #[serde(default)]
    pub ratio: Option<RatioSpec>,
    /// A histogram's mean: increase of `_sum` over increase of `_count`.
    #[serde(default)]
    pub histogram_mean: Option<String>,
    /// Multiplier of the raw value.
    #[serde(default = "default_one")]
    pub scale: f64,
    /// Added after scaling (availability = 100 − 100 × errors / total: scale −100, offset 100).
    #[serde(default)]
    pub offset: f64,
}

/// Two counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatioSpec {
    /// Numerator counter.
    pub numerator: String,
    /// Denominator counter.
    pub denominator: String,
}

/// Region health inputs and scoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// Availability, percent.
    #[serde(default)]
    pub availability: Option<FactorSpec>,
    /// Resource utilization, percent.
    #[serde(default)]
    pub utilization: Option<FactorSpec>,
    /// Network latency, ms.
    #[serde(default)]
    pub latency: Option<FactorSpec>,
    /// Error rate, percent.
    #[serde(default)]
    pub error_rate: Option<FactorSpec>,
    /// Consensus health, percent.
    #[serde(default)]
    pub consensus: Option<FactorSpec>,
    /// Curves, weights, threshold and trend.
    #[serde(default)]
    pub scoring: HealthConfig,
    /// Minutes a factor keeps its last value without new data.
    #[serde(default = "default_carry")]
    pub carry_minutes: u64,
    /// A score move of this many points is a change.
    #[serde(default = "default_change_points")]
    pub change_points: f64,
}

fn default_carry() -> u64 {
    5
}
fn default_change_points() -> f64 {
    5.0
}

/// Region-pair network inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// The label naming the peer region (the other end is `region`).
    #[serde(default = "default_peer_label")]
    pub peer_label: String,
    /// Latency gauge, one probe per sample.
    #[serde(default)]
    pub latency: Option<String>,
    /// Unit of the latency gauge in milliseconds (1 for ms, 1000 for seconds).
    #[serde(default = "default_one")]
    pub latency_scale_ms: f64,
    /// Packets-sent counter.
    #[serde(default)]
    pub packets_sent: Option<String>,
    /// Packets-received counter.
    #[serde(default)]
    pub packets_received: Option<String>,
    /// Bytes-sent counter.
    #[serde(default)]
    pub bytes_sent: Option<String>,
    /// Bytes-received counter.
    #[serde(default)]
    pub bytes_received: Option<String>,
    /// Tunnel-up gauge (≥ 1 up).
    #[serde(default)]
    pub tunnel_up: Option<String>,
    /// Thresholds and link capacity.
    #[serde(default)]
    pub thresholds: NetworkConfig,
}

fn default_peer_label() -> String {
    "peer_region".to_string()
}

/// One resource for capacity planning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacitySpec {
    /// Resource name, unique.
    pub resource: String,
    /// Utilization gauge.
    pub series: String,
    /// The value at which the resource is exhausted (1 for a ratio, 100 for percent).
    #[serde(default = "default_one")]
    pub capacity: f64,
    /// Nodes serving it now.
    #[serde(default = "default_nodes")]
    pub nodes: u32,
    /// Utilization to stay under at the horizon, as a share of capacity.
    #[serde(default = "default_target_utilization")]
    pub target_utilization: f64,
    /// Hourly means kept (default 180 days).
    #[serde(default = "default_max_hours")]
    pub max_hours: usize,
}

fn default_nodes() -> u32 {
    1
}
fn default_target_utilization() -> f64 {
    0.7
}
fn default_max_hours() -> usize {
    180 * 24
}

/// The derived operator's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DerivedConfig {
    /// SLAs.
    pub sla: Vec<SlaSpec>,
    /// Region health.
    pub health: Option<HealthSpec>,
    /// Network telemetry.
    pub network: Option<NetworkSpec>,
    /// Capacity planning.
    pub capacity: Vec<CapacitySpec>,
    /// SLA reports every this many ms of event time (a multiple of a minute).
    pub report_interval_ms: u64,
    /// Bound on SLA groups, regions, pairs and capacity keys, each.
    pub max_groups: usize,
    /// Bound on counter series tracked for increments.
    pub max_counter_series: usize,
    /// Pairs and regions without data for this long stop being reported, minutes.
    pub expire_minutes: u64,
}

impl Default for DerivedConfig {
    fn default() -> Self {
        DerivedConfig {
            sla: Vec::new(),
            health: None,
            network: None,
            capacity: Vec::new(),
            report_interval_ms: 60_000,
            max_groups: 10_000,
            max_counter_series: 1_000_000,
            expire_minutes: 10,
        }
    }
}

impl DerivedConfig {
    /// Whether anything is configured.
    pub fn is_enabled(&self) -> bool {
        !self.sla.is_empty() || self.health.is_some() || self.network.is_some() || !self.capacity.is_empty()
    }
}

/// A configuration error: the field path and the message.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    /// E.g. `sla[0].total`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

fn sel(field: &str, text: &str) -> Result<Selector, SpecError> {
    Selector::parse(text).map_err(|m| err(field, m))
}

/// What a matching sample feeds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Input {
    SlaTotal(usize),
    SlaGood(usize),
    SlaBad(usize),
    SlaUp(usize),
    SlaBucket(usize),
    SlaCount(usize),
    /// (factor 0–4, part).
    Health(usize, Part),
    Net(NetInput),
    Capacity(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    Gauge,
    Num,
    Den,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum NetInput {
    Latency,
    PacketsSent,
    PacketsReceived,
    BytesSent,
    BytesReceived,
    TunnelUp,
}

impl Input {
    fn is_counter(self) -> bool {
        matches!(
            self,
            Input::SlaTotal(_)
                | Input::SlaGood(_)
                | Input::SlaBad(_)
                | Input::SlaBucket(_)
                | Input::SlaCount(_)
                | Input::Health(_, Part::Num | Part::Den)
        )
    }
}

/// Selectors indexed by metric name and then by one of their equality matchers, so a sample
/// costs a lookup per label rather than a match per selector (10,000 SLAs on one counter
/// distinguished by a `service="..."` matcher stay cheap).
#[derive(Debug, Default)]
struct Index {
    by_name: FastMap<String, NameIndex>,
    unnamed: Vec<(Selector, Input)>,
}

#[derive(Debug, Default)]
struct NameIndex {
    /// label name → label value → selectors with that equality matcher.
    exact: FastMap<String, FastMap<String, Vec<(Selector, Input)>>>,
    /// Selectors without an equality matcher.
    rest: Vec<(Selector, Input)>,
}

impl Index {
    fn add(&mut self, s: Selector, input: Input) {
        let Some(n) = s.name() else {
            self.unnamed.push((s, input));
            return;
        };
        let ni = self.by_name.entry(n.to_string()).or_default();
        match s.first_equality().map(|(k, v)| (k.to_string(), v.to_string())) {
            Some((k, v)) => ni.exact.entry(k).or_default().entry(v).or_default().push((s, input)),
            None => ni.rest.push((s, input)),
        }
    }

    fn lookup(&self, s: &Sample, out: &mut Vec<Input>) {
        let mut push = |list: &[(Selector, Input)]| {
            out.extend(list.iter().filter(|(sel, _)| sel.matches(s)).map(|(_, i)| *i));
        };
        if let Some(ni) = self.by_name.get(s.name()) {
            if !ni.exact.is_empty() {
                for (k, v) in s.labels.iter() {
                    if let Some(list) = ni.exact.get(&**k).and_then(|vals| vals.get(&**v)) {
                        push(list);
                    }
                }
            }
            push(&ni.rest);
        }
        push(&self.unnamed);
    }
}

/// Per-minute sums of one SLA group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct SlaAcc {
    total: f64,
    good: f64,
    bad: f64,
    up_good: f64,
    up_total: f64,
    count: f64,
    /// (bucket bound, increase) for bounds ≤ the threshold.
    buckets: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SlaGroup {
    tracker: SlaTracker,
    pending: BTreeMap<u64, SlaAcc>,
    /// Next minute to close (throughput fills empty minutes from here).
    next_minute: Option<u64>,
    /// The burn-rate alert firing, and since when.
    #[serde(default)]
    alert: Option<(BurnAlert, EventTime)>,
}

/// Per-minute sums of one health factor of one region: (gauge sum, gauge count, numerator,
/// denominator).
type FactorAcc = [f64; 4];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RegionHealth {
    tracker: HealthTracker,
    pending: BTreeMap<u64, [FactorAcc; 5]>,
    /// Last value of each factor and the minute it was measured.
    last: [Option<(f64, u64)>; 5],
    last_data_minute: u64,
    /// The last health published as a change.
    published: Option<Health>,
    current: Option<Health>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pair {
    telemetry: PairTelemetry,
    last_data_minute: u64,
    /// Hop latencies this minute: minute → (count, sum ms, max ms).
    hops: BTreeMap<u64, (u64, f64, f64)>,
    last_hops: Option<(f64, f64)>,
    /// Latest packets sent and received not yet paired.
    packet_cell: (Option<f64>, Option<f64>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CapacityKey {
    tracker: CapacityTracker,
    forecast: Option<Forecast>,
    last_data_minute: u64,
}

/// The operator's state, serde data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DerivedState {
    /// Per SLA (by index in the config): region → group.
    sla: Vec<BTreeMap<String, SlaGroup>>,
    health: BTreeMap<String, RegionHealth>,
    /// "region\u{1f}peer" → pair.
    pairs: BTreeMap<String, Pair>,
    /// Per resource: region → history.
    capacity: Vec<BTreeMap<String, CapacityKey>>,
    /// Last value of each counter series, by series hash.
    counters: FastMap<u64, f64>,
    /// The [`crate::prom::SERIES_HASH_VERSION`] `counters` are keyed by (0: before it was kept).
    #[serde(default)]
    series_hash_version: u32,
    /// Minutes before this are closed.
    closed_minute: u64,
    /// The earliest minute seen before any was closed.
    earliest: Option<u64>,
    /// Counts of what was not used.
    stats: DerivedStats,
    /// The SLA names and resources `sla` and `capacity` are aligned with, so a snapshot
    /// restores into a configuration whose lists were reordered, grown or shrunk.
    sla_names: Vec<String>,
    resource_names: Vec<String>,
}

/// What the operator could not use, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DerivedStats {
    /// Samples for minutes already closed.
    pub late_samples: u64,
    /// Samples not used because a bound on groups was reached.
    pub dropped_groups: u64,
    /// Counter samples not used because `max_counter_series` was reached.
    pub dropped_counter_series: u64,
}

/// An SLA report with its identity, published on `dwcp.sla`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlaRecord {
    /// The SLA's name.
    pub sla: String,
    /// Kind.
    pub kind: SlaKind,
    /// Region or `global`.
    pub region: String,
    /// Target.
    pub target: f64,
    /// Rolling period start, ns.
    pub period_start: EventTime,
    /// Report time (end of the last closed minute), ns.
    pub period_end: EventTime,
    /// The figures.
    pub report: SlaReport,
}

/// A change of a region's health, published on `dwcp.health`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthChange {
    /// Region.
    pub region: String,
    /// Time, ns.
    pub time: EventTime,
    /// The new health.
    pub health: Health,
}

/// One region pair's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairView {
    /// Region.
    pub region: String,
    /// Peer region.
    pub peer_region: String,
    /// Network figures.
    pub report: PairReport,
    /// Mean and max hop latency from traces in the last minute that had hops, ms.
    pub hop_latency_ms: Option<(f64, f64)>,
}

/// One resource's forecast in one region.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityView {
    /// Resource.
    pub resource: String,
    /// Region.
    pub region: String,
    /// Hours of history.
    pub history_hours: usize,
    /// The forecast, once 48 hours are known.
    pub forecast: Option<Forecast>,
}

/// The current figures, for the demo summary and the API.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DerivedView {
    /// Latest SLA reports.
    pub sla: Vec<SlaRecord>,
    /// Latest health per region.
    pub health: Vec<(String, Health)>,
    /// Pairs.
    pub network: Vec<PairView>,
    /// Capacity.
    pub capacity: Vec<CapacityView>,
    /// Bottlenecks, most severe first.
    pub bottlenecks: Vec<Bottleneck>,
}

/// What closing minutes produced.
#[derive(Debug, Default)]
pub struct DerivedOutput {
    /// Series for remote-write.
    pub samples: Vec<Sample>,
    /// SLA reports (at report intervals).
    pub sla: Vec<SlaRecord>,
    /// Health changes.
    pub health: Vec<HealthChange>,
    /// SLA burn-rate alerts firing and resolved.
    pub alerts: Vec<AlertTransition>,
}

/// The operator.
#[derive(Debug)]
pub struct DerivedOperator {
    config: DerivedConfig,
    index: Index,
    state: DerivedState,
}

const FACTORS: [&str; 5] = ["availability", "utilization", "latency", "error_rate", "consensus"];

impl DerivedOperator {
    /// Builds the operator, checking the configuration.
    ///
    /// # Errors
    /// The first invalid field, with its path relative to this configuration.
    pub fn new(config: DerivedConfig) -> Result<Self, SpecError> {
        let mut index = Index::default();
        let mut names = std::collections::HashSet::new();
        if config.report_interval_ms == 0 || !config.report_interval_ms.is_multiple_of(60_000) {
            return Err(err(
                "report_interval_ms",
                "must be a positive multiple of 60000 (a minute)",
            ));
        }
        for (i, s) in config.sla.iter().enumerate() {
            let f = |name: &str| format!("sla[{i}].{name}");
            if !names.insert(s.name.clone()) {
                return Err(err(f("name"), format!("duplicate SLA name {:?}", s.name)));
            }
            if !(s.target > 0.0 && s.target < 1.0) {
                return Err(err(f("target"), "must be between 0 and 1 exclusive, e.g. 0.9995"));
            }
            if s.period_days == 0 {
                return Err(err(f("period_days"), "must be at least 1"));
            }
            let need = |field: &str, v: &Option<String>| -> Result<Selector, SpecError> {
                let text = v
                    .as_deref()
                    .ok_or_else(|| err(f(field), format!("required for a {:?} SLA", s.kind)))?;
                sel(&f(field), text)
            };
            match s.kind {
                SlaKind::Availability => {
                    if let Some(up) = &s.up {
                        if s.total.is_some() || s.good.is_some() || s.bad.is_some() {
                            return Err(err(f("up"), "use either up or total with good or bad, not both"));
                        }
                        index.add(sel(&f("up"), up)?, Input::SlaUp(i));
                    } else {
                        index.add(need("total", &s.total)?, Input::SlaTotal(i));
                        match (&s.good, &s.bad) {
                            (Some(g), None) => index.add(sel(&f("good"), g)?, Input::SlaGood(i)),
                            (None, Some(b)) => index.add(sel(&f("bad"), b)?, Input::SlaBad(i)),
                            _ => return Err(err(f("good"), "an availability SLA needs exactly one of good and bad")),
                        }
                    }
                }
                SlaKind::Latency => {
                    let h = need("histogram", &s.histogram)?;
                    if !s.threshold.is_some_and(f64::is_finite) {
                        return Err(err(
                            f("threshold"),
                            "required for a latency SLA, in the histogram's unit",
                        ));
                    }
                    index.add(h.with_suffix("_bucket"), Input::SlaBucket(i));
                    index.add(h.with_suffix("_count"), Input::SlaCount(i));
                }
                SlaKind::Throughput => {
                    index.add(need("total", &s.total)?, Input::SlaTotal(i));
                    if !s.min_rate.is_some_and(|r| r.is_finite() && r >= 0.0) {
                        return Err(err(f("min_rate"), "required for a throughput SLA, requests per second"));
                    }
                }
            }
        }
        if let Some(h) = &config.health {
            let specs = [&h.availability, &h.utilization, &h.latency, &h.error_rate, &h.consensus];
            for (k, spec) in specs.iter().enumerate() {
                let Some(spec) = spec else { continue };
                let f = |name: &str| format!("health.{}.{name}", FACTORS[k]);
                let mut n = 0;
                if let Some(g) = &spec.gauge {
                    index.add(sel(&f("gauge"), g)?, Input::Health(k, Part::Gauge));
                    n += 1;
                }
                if let Some(r) = &spec.ratio {
                    index.add(sel(&f("ratio.numerator"), &r.numerator)?, Input::Health(k, Part::Num));
                    index.add(
                        sel(&f("ratio.denominator"), &r.denominator)?,
                        Input::Health(k, Part::Den),
                    );
                    n += 1;
                }
                if let Some(hm) = &spec.histogram_mean {
                    let s = sel(&f("histogram_mean"), hm)?;
                    index.add(s.with_suffix("_sum"), Input::Health(k, Part::Num));
                    index.add(s.with_suffix("_count"), Input::Health(k, Part::Den));
                    n += 1;
                }
                if n != 1 {
                    return Err(err(
                        format!("health.{}", FACTORS[k]),
                        "needs exactly one of gauge, ratio and histogram_mean",
                    ));
                }
            }
        }
        if let Some(n) = &config.network {
            let inputs = [
                ("latency", &n.latency, NetInput::Latency),
                ("packets_sent", &n.packets_sent, NetInput::PacketsSent),
                ("packets_received", &n.packets_received, NetInput::PacketsReceived),
                ("bytes_sent", &n.bytes_sent, NetInput::BytesSent),
                ("bytes_received", &n.bytes_received, NetInput::BytesReceived),
                ("tunnel_up", &n.tunnel_up, NetInput::TunnelUp),
            ];
            for (field, v, input) in inputs {
                if let Some(t) = v {
                    index.add(sel(&format!("network.{field}"), t)?, Input::Net(input));
                }
            }
        }
        let mut resources = std::collections::HashSet::new();
        for (i, c) in config.capacity.iter().enumerate() {
            let f = |name: &str| format!("capacity[{i}].{name}");
            if !resources.insert(c.resource.clone()) {
                return Err(err(f("resource"), format!("duplicate resource {:?}", c.resource)));
            }
            if !(c.capacity > 0.0 && c.capacity.is_finite()) {
                return Err(err(f("capacity"), "must be positive"));
            }
            if !(c.target_utilization > 0.0 && c.target_utilization <= 1.0) {
                return Err(err(f("target_utilization"), "must be in (0, 1]"));
            }
            index.add(sel(&f("series"), &c.series)?, Input::Capacity(i));
        }
        let state = DerivedState {
            sla: vec![BTreeMap::new(); config.sla.len()],
            capacity: vec![BTreeMap::new(); config.capacity.len()],
            ..DerivedState::default()
        };
        Ok(DerivedOperator { config, index, state })
    }

    /// The metric names its selectors read, sorted, and whether some selector names no metric
    /// (matches by labels or a name pattern only).
    pub fn read_names(&self) -> (Vec<String>, bool) {
        let mut names: Vec<String> = self.index.by_name.keys().cloned().collect();
        names.sort();
        (names, !self.index.unnamed.is_empty())
    }

    /// What was not used so far.
    pub fn stats(&self) -> DerivedStats {
        self.state.stats
    }

    /// The state to checkpoint.
    pub fn snapshot(&self) -> DerivedState {
        let mut s = self.state.clone();
        s.series_hash_version = crate::prom::SERIES_HASH_VERSION;
        s.sla_names = self.config.sla.iter().map(|x| x.name.clone()).collect();
        s.resource_names = self.config.capacity.iter().map(|x| x.resource.clone()).collect();
        s
    }

    /// Replaces the state with a checkpoint. SLAs and resources are matched by name: ones no
    /// longer configured are dropped, new ones start empty. An SLA whose kind or target changed
    /// keeps its counts under the new definition.
    pub fn restore(&mut self, mut state: DerivedState) {
        if state.series_hash_version != crate::prom::SERIES_HASH_VERSION {
            // Keyed by another build's series hash: no sample would find its last value, and
            // the stale keys would hold places under `max_counter_series`. Each counter's next
            // sample starts it again (its increase since the checkpoint is not counted).
            state.counters.clear();
        }
        let mut sla: BTreeMap<String, BTreeMap<String, SlaGroup>> = std::mem::take(&mut state.sla_names)
            .into_iter()
            .zip(std::mem::take(&mut state.sla))
            .collect();
        state.sla = self
            .config
            .sla
            .iter()
            .map(|spec| {
                let mut groups = sla.remove(&spec.name).unwrap_or_default();
                for g in groups.values_mut() {
                    g.tracker.reconfigure(SlaConfig {
                        name: spec.name.clone(),
                        kind: spec.kind,
                        target: spec.target,
                        period_days: spec.period_days,
                    });
                }
                groups
            })
            .collect();
        let mut cap: BTreeMap<String, BTreeMap<String, CapacityKey>> = std::mem::take(&mut state.resource_names)
            .into_iter()
            .zip(std::mem::take(&mut state.capacity))
            .collect();
        state.capacity = self
            .config
            .capacity
            .iter()
            .map(|spec| cap.remove(&spec.resource).unwrap_or_default())
            .collect();
        self.state = state;
    }

    /// Reads the samples of converted and aggregated series.
    pub fn process(&mut self, samples: &[Sample]) {
        let mut inputs: Vec<Input> = Vec::new();
        for s in samples {
            if !s.value.is_finite() || s.timestamp_ms < 0 {
                continue;
            }
            inputs.clear();
            self.index.lookup(s, &mut inputs);
            if inputs.is_empty() {
                continue;
            }
            #[allow(clippy::cast_sign_loss)]
            let t = s.timestamp_ms as u64 * 1_000_000;
            let minute = t / MINUTE;
            if minute < self.state.closed_minute {
                self.state.stats.late_samples += 1;
                continue;
            }
            if self.state.closed_minute == 0 {
                self.state.earliest = Some(self.state.earliest.map_or(minute, |e| e.min(minute)));
            }
            let increase = if inputs.iter().any(|i| i.is_counter()) {
                match self.increase(s) {
                    Some(v) => v,
                    None => {
                        // First sample of the counter: only gauges can use it.
                        inputs.retain(|i| !i.is_counter());
                        0.0
                    }
                }
            } else {
                0.0
            };
            let region = s.label("region").unwrap_or("unknown");
            for &input in &inputs {
                self.feed(input, s, t, minute, region, increase);
            }
        }
    }

    /// The increase of a counter series since its last sample; `None` for its first.
    fn increase(&mut self, s: &Sample) -> Option<f64> {
        let h = s.series_hash();
        let counters = &mut self.state.counters;
        match counters.get_mut(&h) {
            Some(last) => {
                let inc = if s.value >= *last { s.value - *last } else { s.value };
                *last = s.value;
                Some(inc)
            }
            None => {
                if counters.len() >= self.config.max_counter_series {
                    self.state.stats.dropped_counter_series += 1;
                } else {
                    counters.insert(h, s.value);
                }
                None
            }
        }
    }

    fn feed(&mut self, input: Input, s: &Sample, t: EventTime, minute: u64, region: &str, inc: f64) {
        match input {
            Input::SlaTotal(i)
            | Input::SlaGood(i)
            | Input::SlaBad(i)
            | Input::SlaUp(i)
            | Input::SlaBucket(i)
            | Input::SlaCount(i) => {
                let spec = &self.config.sla[i];
                let le = if let Input::SlaBucket(_) = input {
                    let le = s.label("le").and_then(parse_le);
                    match le {
                        Some(le) if le <= spec.threshold.unwrap_or(f64::NEG_INFINITY) => Some(le),
                        _ => return,
                    }
                } else {
                    None
                };
                let regions: &[&str] = if spec.per_region { &[region, GLOBAL] } else { &[GLOBAL] };
                for r in regions {
                    let Some(group) = self.sla_group(i, r, minute) else {
                        continue;
                    };
                    let acc = group.pending.entry(minute).or_default();
                    match input {
                        Input::SlaTotal(_) => acc.total += inc,
                        Input::SlaGood(_) => acc.good += inc,
                        Input::SlaBad(_) => acc.bad += inc,
                        Input::SlaUp(_) => {
                            acc.up_total += 1.0;
                            if s.value >= 1.0 {
                                acc.up_good += 1.0;
                            }
                        }
                        Input::SlaCount(_) => acc.count += inc,
                        Input::SlaBucket(_) => {
                            let le = le.unwrap_or(f64::NEG_INFINITY);
                            match acc.buckets.iter_mut().find(|(b, _)| *b == le) {
                                Some(b) => b.1 += inc,
                                None => acc.buckets.push((le, inc)),
                            }
                        }
                        _ => {}
                    }
                }
            }
            Input::Health(k, part) => {
                let Some(rh) = self.region_health(region) else { return };
                rh.last_data_minute = rh.last_data_minute.max(minute);
                let acc = &mut rh.pending.entry(minute).or_insert([[0.0; 4]; 5])[k];
                match part {
                    Part::Gauge => {
                        acc[0] += s.value;
                        acc[1] += 1.0;
                    }
                    Part::Num => acc[2] += inc,
                    Part::Den => acc[3] += inc,
                }
            }
            Input::Net(n) => {
                let Some(spec) = self.config.network.clone() else {
                    return;
                };
                let peer = s.label(&spec.peer_label).unwrap_or("unknown");
                let Some(pair) = self.pair(region, peer, &spec.thresholds) else {
                    return;
                };
                pair.last_data_minute = pair.last_data_minute.max(minute);
                match n {
                    NetInput::Latency => pair.telemetry.transit(s.value * spec.latency_scale_ms * 1e6),
                    NetInput::PacketsSent | NetInput::PacketsReceived => {
                        // Sent and received are two series; each pairs with the other's latest.
                        if n == NetInput::PacketsSent {
                            pair.packet_cell.0 = Some(s.value);
                        } else {
                            pair.packet_cell.1 = Some(s.value);
                        }
                        if let (Some(sent), Some(received)) = pair.packet_cell {
                            pair.telemetry.packets(sent, received);
                            pair.packet_cell = (None, None);
                        }
                    }
                    NetInput::BytesSent => pair.telemetry.byte_counter(t, 0, s.value),
                    NetInput::BytesReceived => pair.telemetry.byte_counter(t, 1, s.value),
                    NetInput::TunnelUp => pair.telemetry.tunnel(s.value >= 1.0),
                }
            }
            Input::Capacity(i) => {
                let max_hours = self.config.capacity[i].max_hours;
                let max = self.config.max_groups;
                let map = &mut self.state.capacity[i];
                if !map.contains_key(region) && map.len() >= max {
                    self.state.stats.dropped_groups += 1;
                    return;
                }
                let k = map.entry(region.to_string()).or_insert_with(|| CapacityKey {
                    tracker: CapacityTracker::new(max_hours),
                    forecast: None,
                    last_data_minute: minute,
                });
                k.last_data_minute = k.last_data_minute.max(minute);
                k.tracker.observe(t, s.value);
            }
        }
    }

    fn sla_group(&mut self, i: usize, region: &str, minute: u64) -> Option<&mut SlaGroup> {
        let max = self.config.max_groups;
        let map = &mut self.state.sla[i];
        if !map.contains_key(region) {
            if map.len() >= max {
                self.state.stats.dropped_groups += 1;
                return None;
            }
            let spec = &self.config.sla[i];
            map.insert(
                region.to_string(),
                SlaGroup {
                    tracker: SlaTracker::new(SlaConfig {
                        name: spec.name.clone(),
                        kind: spec.kind,
                        target: spec.target,
                        period_days: spec.period_days,
                    }),
                    pending: BTreeMap::new(),
                    next_minute: Some(minute),
                    alert: None,
                },
            );
        }
        map.get_mut(region)
    }

    fn region_health(&mut self, region: &str) -> Option<&mut RegionHealth> {
        let scoring = self.config.health.as_ref()?.scoring.clone();
        let max = self.config.max_groups;
        let map = &mut self.state.health;
        if !map.contains_key(region) {
            if map.len() >= max {
                self.state.stats.dropped_groups += 1;
                return None;
            }
            map.insert(
                region.to_string(),
                RegionHealth {
                    tracker: HealthTracker::new(scoring),
                    pending: BTreeMap::new(),
                    last: [None; 5],
                    last_data_minute: 0,
                    published: None,
                    current: None,
                },
            );
        }
        map.get_mut(region)
    }

    fn pair(&mut self, region: &str, peer: &str, thresholds: &NetworkConfig) -> Option<&mut Pair> {
        let key = pair_key(region, peer);
        let max = self.config.max_groups;
        let map = &mut self.state.pairs;
        if !map.contains_key(&key) {
            if map.len() >= max {
                self.state.stats.dropped_groups += 1;
                return None;
            }
            map.insert(
                key.clone(),
                Pair {
                    telemetry: PairTelemetry::new(*thresholds),
                    last_data_minute: 0,
                    hops: BTreeMap::new(),
                    last_hops: None,
                    packet_cell: (None, None),
                },
            );
        }
        map.get_mut(&key)
    }

    /// A cross-region hop of a stitched trace: `from` called `to`, ending at `t`. Traces are
    /// decided after their decision wait, so a hop whose minute has closed counts in the first
    /// open minute: hop latency is reported for the minute its trace was decided in.
    #[allow(clippy::cast_precision_loss)]
    pub fn hop(&mut self, from: &str, to: &str, latency_ns: u64, t: EventTime) {
        let Some(spec) = self.config.network.clone() else {
            return;
        };
        let minute = (t / MINUTE).max(self.state.closed_minute);
        if self.state.closed_minute == 0 {
            self.state.earliest = Some(self.state.earliest.map_or(minute, |e| e.min(minute)));
        }
        let Some(pair) = self.pair(from, to, &spec.thresholds) else {
            return;
        };
        pair.last_data_minute = pair.last_data_minute.max(minute);
        let ms = latency_ns as f64 / 1e6;
        let e = pair.hops.entry(minute).or_insert((0, 0.0, 0.0));
        e.0 += 1;
        e.1 += ms;
        e.2 = e.2.max(ms);
    }

    /// Event time reached `watermark`: closes the minutes before it.
    pub fn on_watermark(&mut self, watermark: EventTime, out: &mut DerivedOutput) {
        let closed = watermark / MINUTE;
        if closed <= self.state.closed_minute {
            return;
        }
        let from = if self.state.closed_minute == 0 {
            self.state.earliest.unwrap_or(closed.saturating_sub(1))
        } else {
            self.state.closed_minute
        };
        // Close minute by minute so each closing minute's figures are emitted at its end; a
        // jump of more than a day (a replay after a pause) emits only the last day's minutes.
        let from = from.max(closed.saturating_sub(24 * 60));
        if from >= closed {
            // Event time has not passed the first minute with data yet. Nothing is closed, so a
            // later watermark starts from that minute whatever steps event time took to get
            // there (the minute before it has no data to report).
            return;
        }
        for m in from..closed {
            self.close_minute(m, out);
        }
        self.state.closed_minute = closed;
        // The key plan routes rules reading these names to where this operator runs.
        debug_assert!(
            out.samples.iter().all(|s| OUTPUT_NAMES.contains(&s.name())),
            "an output missing from OUTPUT_NAMES"
        );
    }

    /// Closes minute `m`: feeds the trackers and emits what is due at its end.
    #[allow(clippy::too_many_lines)]
    fn close_minute(&mut self, m: u64, out: &mut DerivedOutput) {
        let end = (m + 1) * MINUTE;
        let end_ms = i64::try_from(end / 1_000_000).unwrap_or(i64::MAX);
        let report_every = self.config.report_interval_ms / 60_000;
        let report_due = (m + 1).is_multiple_of(report_every.max(1));
        // SLAs.
        for (i, spec) in self.config.sla.iter().enumerate() {
            for (region, g) in &mut self.state.sla[i] {
                let first = g.next_minute.unwrap_or(m);
                for mm in first..=m {
                    let acc = g.pending.remove(&mm);
                    if let Some((good, total)) = minute_counts(spec, acc.as_ref()) {
                        g.tracker.observe(mm * MINUTE, good, total);
                    }
                }
                g.next_minute = Some(m + 1);
                g.tracker.on_watermark(end);
                let report = g.tracker.report();
                burn_alerts(spec, region, &report, &mut g.alert, end, &mut out.alerts);
                if report_due {
                    sla_samples(spec, region, &report, end_ms, &mut out.samples);
                    out.sla.push(SlaRecord {
                        sla: spec.name.clone(),
                        kind: spec.kind,
                        region: region.clone(),
                        target: spec.target,
                        period_start: end.saturating_sub(u64::from(spec.period_days) * 86_400_000_000_000),
                        period_end: end,
                        report,
                    });
                }
            }
        }
        // Health.
        if let Some(spec) = &self.config.health {
            let specs = [
                &spec.availability,
                &spec.utilization,
                &spec.latency,
                &spec.error_rate,
                &spec.consensus,
            ];
            let expire = self.config.expire_minutes;
            self.state.health.retain(|_, rh| rh.last_data_minute + expire > m);
            for (region, rh) in &mut self.state.health {
                let acc = rh.pending.remove(&m);
                let mut values = [f64::NAN; 5];
                for k in 0..5 {
                    let Some(fs) = specs[k] else { continue };
                    let raw = acc.as_ref().and_then(|a| factor_value(fs, &a[k]));
                    if let Some(v) = raw {
                        rh.last[k] = Some((v, m));
                    }
                    values[k] = match rh.last[k] {
                        Some((v, at)) if at + spec.carry_minutes > m => v,
                        _ => f64::NAN,
                    };
                }
                if values.iter().all(|v| v.is_nan()) {
                    continue;
                }
                let h = rh.tracker.update(
                    end,
                    HealthInputs {
                        availability_pct: values[0],
                        utilization_pct: values[1],
                        latency_ms: values[2],
                        error_rate_pct: values[3],
                        consensus_pct: values[4],
                    },
                );
                health_samples(region, &h, end_ms, &mut out.samples);
                if is_change(rh.published.as_ref(), &h, spec.change_points) {
                    out.health.push(HealthChange {
                        region: region.clone(),
                        time: end,
                        health: h.clone(),
                    });
                    rh.published = Some(h.clone());
                }
                rh.current = Some(h);
            }
            // Minutes left behind by late closing (none normally).
            for rh in self.state.health.values_mut() {
                rh.pending.retain(|k, _| *k > m);
            }
        }
        // Network.
        if self.config.network.is_some() {
            let expire = self.config.expire_minutes;
            self.state.pairs.retain(|_, p| p.last_data_minute + expire > m);
            for (key, p) in &mut self.state.pairs {
                let (region, peer) = split_pair(key);
                if let Some((n, sum, max)) = p.hops.remove(&m) {
                    #[allow(clippy::cast_precision_loss)]
                    let mean = sum / n as f64;
                    p.last_hops = Some((mean, max));
                    let l = [("region", region), ("peer_region", peer)];
                    out.samples.push(sample(
                        "dwcp_cross_region_hop_latency_milliseconds",
                        &l,
                        &[("stat", "mean")],
                        mean,
                        end_ms,
                    ));
                    out.samples.push(sample(
                        "dwcp_cross_region_hop_latency_milliseconds",
                        &l,
                        &[("stat", "max")],
                        max,
                        end_ms,
                    ));
                }
                p.hops.retain(|k, _| *k > m);
                network_samples(region, peer, &p.telemetry.report(), end_ms, &mut out.samples);
            }
        }
        // Capacity: forecasts when an hour closes.
        if (m + 1).is_multiple_of(HOUR_MINUTES) && !self.config.capacity.is_empty() {
            let mut bottlenecks = Vec::new();
            for (i, spec) in self.config.capacity.iter().enumerate() {
                for (region, k) in &mut self.state.capacity[i] {
                    k.forecast = k.tracker.forecast(spec.capacity, spec.nodes, spec.target_utilization);
                    let l = [("resource", spec.resource.as_str()), ("region", region.as_str())];
                    out.samples.push(sample(
                        "dwcp_capacity_history_hours",
                        &l,
                        &[],
                        #[allow(clippy::cast_precision_loss)]
                        {
                            k.tracker.hours() as f64
                        },
                        end_ms,
                    ));
                    let Some(f) = &k.forecast else { continue };
                    for (d, v) in f.at_days {
                        let h = format!("{d}d");
                        out.samples
                            .push(sample("dwcp_capacity_forecast", &l, &[("horizon", &h)], v, end_ms));
                    }
                    if let Some(d) = f.days_to_capacity {
                        out.samples
                            .push(sample("dwcp_capacity_days_to_exhaustion", &l, &[], d, end_ms));
                    }
                    out.samples.push(sample(
                        "dwcp_capacity_nodes_needed",
                        &l,
                        &[],
                        f64::from(f.nodes_needed),
                        end_ms,
                    ));
                    bottlenecks.push(Bottleneck {
                        resource: format!("{}\u{1f}{region}", spec.resource),
                        days_to_capacity: f.days_to_capacity,
                        utilization_at_90d: f.at_days[2].1 / spec.capacity,
                    });
                }
            }
            for (rank, b) in rank_bottlenecks(bottlenecks).iter().enumerate() {
                let (resource, region) = split_pair(&b.resource);
                #[allow(clippy::cast_precision_loss)]
                let r = (rank + 1) as f64;
                out.samples.push(sample(
                    "dwcp_capacity_bottleneck_rank",
                    &[("resource", resource), ("region", region)],
                    &[],
                    r,
                    end_ms,
                ));
            }
        }
    }

    /// The current figures.
    pub fn view(&self) -> DerivedView {
        let mut v = DerivedView::default();
        let now = self.state.closed_minute * MINUTE;
        for (i, spec) in self.config.sla.iter().enumerate() {
            for (region, g) in &self.state.sla[i] {
                v.sla.push(SlaRecord {
                    sla: spec.name.clone(),
                    kind: spec.kind,
                    region: region.clone(),
                    target: spec.target,
                    period_start: now.saturating_sub(u64::from(spec.period_days) * 86_400_000_000_000),
                    period_end: now,
                    report: g.tracker.report(),
                });
            }
        }
        for (region, rh) in &self.state.health {
            if let Some(h) = &rh.current {
                v.health.push((region.clone(), h.clone()));
            }
        }
        for (key, p) in &self.state.pairs {
            let (region, peer) = split_pair(key);
            v.network.push(PairView {
                region: region.to_string(),
                peer_region: peer.to_string(),
                report: p.telemetry.report(),
                hop_latency_ms: p.last_hops,
            });
        }
        let mut bottlenecks = Vec::new();
        for (i, spec) in self.config.capacity.iter().enumerate() {
            for (region, k) in &self.state.capacity[i] {
                v.capacity.push(CapacityView {
                    resource: spec.resource.clone(),
                    region: region.clone(),
                    history_hours: k.tracker.hours(),
                    forecast: k.forecast.clone(),
                });
                if let Some(f) = &k.forecast {
                    bottlenecks.push(Bottleneck {
                        resource: format!("{}/{region}", spec.resource),
                        days_to_capacity: f.days_to_capacity,
                        utilization_at_90d: f.at_days[2].1 / spec.capacity,
                    });
                }
            }
        }
        v.bottlenecks = rank_bottlenecks(bottlenecks);
        v
    }

    /// Open state: SLA groups, regions, pairs and capacity keys.
    pub fn groups(&self) -> usize {
        self.state.sla.iter().map(BTreeMap::len).sum::<usize>()
            + self.state.health.len()
            + self.state.pairs.len()
            + self.state.capacity.iter().map(BTreeMap::len).sum::<usize>()
    }
}

/// The alert name of SLA burn-rate alerts.
pub const BURN_ALERT_NAME: &str = "SLAErrorBudgetBurn";

/// Fires, resolves or swaps the burn-rate alert of one SLA group after a closed minute: the
/// SRE workbook's page (critical) and ticket (warning) conditions, one alert instance per
/// severity, no `for` (the short window of each pair already makes it reset fast).
fn burn_alerts(
    spec: &SlaSpec,
    region: &str,
    report: &SlaReport,
    current: &mut Option<(BurnAlert, EventTime)>,
    end: EventTime,
    out: &mut Vec<AlertTransition>,
) {
    let now = report.alert;
    if now == current.map(|(a, _)| a) {
        return;
    }
    let burn = |w: &str| report.burn_rates.iter().find(|(k, _)| k == w).map_or(0.0, |(_, v)| *v);
    let transition = |a: BurnAlert, state: AlertState, since: EventTime| {
        let (severity, expr, value) = match a {
            BurnAlert::Page => (
                "critical",
                "burn_rate(1h) > 14.4 and burn_rate(5m) > 14.4 or burn_rate(6h) > 6 and burn_rate(30m) > 6",
                burn("1h").max(burn("6h")),
            ),
            BurnAlert::Ticket => ("warning", "burn_rate(3d) > 1 and burn_rate(6h) > 1", burn("3d")),
        };
        let labels: BTreeMap<String, String> = [
            ("alertname", BURN_ALERT_NAME),
            ("sla", spec.name.as_str()),
            ("kind", kind_str(spec.kind)),
            ("region", region),
            ("severity", severity),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let annotations: BTreeMap<String, String> = [
            (
                "summary".to_string(),
                format!("SLA {} ({region}) is burning its error budget {value:.1}× too fast", spec.name),
            ),
            (
                "description".to_string(),
                format!(
                    "burn rates 5m {:.2}, 30m {:.2}, 1h {:.2}, 6h {:.2}, 3d {:.2}; target {}; compliance {:.5}; budget remaining {:.1} %",
                    burn("5m"),
                    burn("30m"),
                    burn("1h"),
                    burn("6h"),
                    burn("3d"),
                    spec.target,
                    report.compliance,
                    report.budget_remaining * 100.0
                ),
            ),
        ]
        .into();
        AlertTransition {
            fingerprint: fingerprint(&labels),
            state,
            labels,
            annotations,
            value,
            active_since: Some(since),
            event_time: end,
            group: format!("sla:{}", spec.name),
            expr: expr.to_string(),
        }
    };
    if let Some((was, since)) = current.take() {
        out.push(transition(was, AlertState::Resolved, since));
    }
    if let Some(a) = now {
        out.push(transition(a, AlertState::Firing, end));
        *current = Some((a, end));
    }
}

fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}

/// Good and total of one closed minute of an SLA, `None` when the minute says nothing.
fn minute_counts(spec: &SlaSpec, acc: Option<&SlaAcc>) -> Option<(f64, f64)> {
    match spec.kind {
        SlaKind::Throughput => {
            let total = acc.map_or(0.0, |a| a.total);
            let good = if total / 60.0 >= spec.min_rate.unwrap_or(0.0) {
                1.0
            } else {
                0.0
            };
            Some((good, 1.0))
        }
        SlaKind::Availability => {
            let a = acc?;
            if spec.up.is_some() {
                (a.up_total > 0.0).then_some((a.up_good, a.up_total))
            } else if spec.bad.is_some() {
                (a.total > 0.0).then(|| ((a.total - a.bad).max(0.0), a.total))
            } else {
                (a.total > 0.0).then(|| (a.good.min(a.total), a.total))
            }
        }
        SlaKind::Latency => {
            let a = acc?;
            if a.count <= 0.0 {
                return None;
            }
            let good = a.buckets.iter().max_by(|x, y| x.0.total_cmp(&y.0)).map_or(0.0, |b| b.1);
            Some((good.min(a.count), a.count))
        }
    }
}

fn factor_value(spec: &FactorSpec, acc: &FactorAcc) -> Option<f64> {
    let raw = if spec.gauge.is_some() {
        (acc[1] > 0.0).then(|| acc[0] / acc[1])
    } else {
        (acc[3] > 0.0).then(|| acc[2] / acc[3])
    }?;
    Some(spec.offset + spec.scale * raw)
}

fn is_change(published: Option<&Health>, h: &Health, points: f64) -> bool {
    let Some(p) = published else { return true };
    if p.healthy != h.healthy || p.trend != h.trend || (p.score - h.score).abs() >= points {
        return true;
    }
    let status = |hh: &Health, name: &str| -> Option<ComponentStatus> {
        hh.components.iter().find(|c| c.name == name).map(|c| c.status)
    };
    FACTORS.iter().any(|f| status(p, f) != status(h, f))
}

fn pair_key(region: &str, peer: &str) -> String {
    format!("{region}\u{1f}{peer}")
}

fn split_pair(key: &str) -> (&str, &str) {
    key.split_once('\u{1f}').unwrap_or((key, ""))
}

fn sample(name: &str, labels: &[(&str, &str)], extra: &[(&str, &str)], value: f64, t_ms: i64) -> Sample {
    let l = labels_of(
        std::iter::once(("__name__", name))
            .chain(labels.iter().copied())
            .chain(extra.iter().copied()),
    );
    Sample::new(l, value, t_ms)
}

fn kind_str(k: SlaKind) -> &'static str {
    match k {
        SlaKind::Availability => "availability",
        SlaKind::Latency => "latency",
        SlaKind::Throughput => "throughput",
    }
}

fn sla_samples(spec: &SlaSpec, region: &str, r: &SlaReport, t_ms: i64, out: &mut Vec<Sample>) {
    let l = [
        ("sla", spec.name.as_str()),
        ("kind", kind_str(spec.kind)),
        ("region", region),
    ];
    out.push(sample("dwcp_sla_compliance_ratio", &l, &[], r.compliance, t_ms));
    out.push(sample(
        "dwcp_sla_month_compliance_ratio",
        &l,
        &[],
        r.month_compliance,
        t_ms,
    ));
    out.push(sample("dwcp_sla_target_ratio", &l, &[], spec.target, t_ms));
    out.push(sample(
        "dwcp_error_budget_remaining_ratio",
        &l,
        &[],
        r.budget_remaining,
        t_ms,
    ));
    out.push(sample(
        "dwcp_error_budget_consumed_ratio",
        &l,
        &[],
        r.budget_consumed,
        t_ms,
    ));
    out.push(sample(
        "dwcp_error_budget_remaining_seconds",
        &l,
        &[],
        r.budget_remaining_seconds,
        t_ms,
    ));
    for (w, v) in &r.burn_rates {
        out.push(sample("dwcp_sla_burn_rate", &l, &[("window", w)], *v, t_ms));
    }
    let alert = match r.alert {
        None => 0.0,
        Some(BurnAlert::Ticket) => 1.0,
        Some(BurnAlert::Page) => 2.0,
    };
    out.push(sample("dwcp_sla_burn_alert", &l, &[], alert, t_ms));
}

fn health_samples(region: &str, h: &Health, t_ms: i64, out: &mut Vec<Sample>) {
    let l = [("region", region)];
    out.push(sample("dwcp_region_health_score", &l, &[], h.score, t_ms));
    out.push(sample(
        "dwcp_region_healthy",
        &l,
        &[],
        if h.healthy { 1.0 } else { 0.0 },
        t_ms,
    ));
    let trend = match h.trend {
        Trend::Improving => 1.0,
        Trend::Stable => 0.0,
        Trend::Degrading => -1.0,
    };
    out.push(sample("dwcp_region_health_trend", &l, &[], trend, t_ms));
    for c in &h.components {
        out.push(sample(
            "dwcp_region_health_factor_score",
            &l,
            &[("factor", &c.name)],
            c.score,
            t_ms,
        ));
    }
}

fn network_samples(region: &str, peer: &str, r: &PairReport, t_ms: i64, out: &mut Vec<Sample>) {
    let l = [("region", region), ("peer_region", peer)];
    out.push(sample("dwcp_network_jitter_milliseconds", &l, &[], r.jitter_ms, t_ms));
    out.push(sample("dwcp_network_latency_milliseconds", &l, &[], r.latency_ms, t_ms));
    out.push(sample("dwcp_network_packet_loss_ratio", &l, &[], r.loss, t_ms));
    out.push(sample(
        "dwcp_network_sent_bytes_per_second",
        &l,
        &[],
        r.sent_bytes_per_second,
        t_ms,
    ));
    out.push(sample(
        "dwcp_network_received_bytes_per_second",
        &l,
        &[],
        r.received_bytes_per_second,
        t_ms,
    ));
    if let Some(u) = r.utilization {
        out.push(sample("dwcp_network_utilization_ratio", &l, &[], u, t_ms));
    }
    out.push(sample("dwcp_tunnel_status", &l, &[], r.status.gauge(), t_ms));
    #[allow(clippy::cast_precision_loss)]
    out.push(sample("dwcp_tunnel_flaps", &l, &[], r.flaps as f64, t_ms));
}

#[cfg(test)]
mod tests;
