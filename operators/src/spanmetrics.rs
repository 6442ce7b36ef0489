//! Span metrics before sampling: calls, errors and a duration histogram per service, span name,
//! span kind, status and region, in the shape of the Collector's spanmetrics connector, so RED
//! metrics stay exact whatever tail sampling keeps.
//!
//! Output, as OTLP metric points for the metrics path (so the usual Prometheus conversion
//! applies): `traces.span.metrics.calls` (cumulative monotonic sum → `traces_span_metrics_calls_total`)
//! and `traces.span.metrics.duration` (cumulative histogram in ms, the connector's default
//! buckets → `traces_span_metrics_duration_milliseconds_bucket`), with attributes `span.name`,
//! `span.kind` (`SPAN_KIND_SERVER`, ...) and `status.code` (`STATUS_CODE_ERROR`, ...), the
//! service as the resource's `service.name` (so `job`), and the span's region. Errors are the
//! calls with `status_code="STATUS_CODE_ERROR"`. The resource keeps `service.namespace`, so `job`
//! is `namespace/name` as for every other series.
//!
//! Every key's cumulative values are emitted at each `flush_interval_ms` boundary of event time
//! the watermark passes, stamped with the boundary, and hold exactly the spans that ended before
//! it (a span ending later waits for its boundary; one arriving after its boundary was emitted
//! is late and counts from the next one). So the values depend on the spans, not on how they
//! were batched or which worker saw them first: with several workers, each re-keying worker
//! sends per input message one delta point per key and boundary ([`SpanMetrics::markers`],
//! named [`MARKER`]) and the worker owning their partition merges them
//! ([`SpanMetrics::merge_markers`]) into the same totals one worker would count. Durations are
//! summed in integer nanoseconds, so the sums do not depend on the order either. Keys are
//! bounded by `max_keys`; spans of further keys are counted in [`SpanMetrics::dropped`].

use std::collections::BTreeMap;
use std::sync::Arc;

use dwcp_schemas::model::{
    Attributes, KeyValue, MetricDescriptor, MetricPoint, Number, Origin, PointValue, Resource, Scope, Span, SpanKind,
    StatusCode, Temporality,
};
use serde::{Deserialize, Serialize};

use crate::EventTime;

/// The connector's default duration buckets, in milliseconds.
pub const DEFAULT_BUCKETS_MS: [f64; 16] = [
    2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0, 10000.0, 15000.0,
];

/// The name of the delta points the re-keying stage sends for the keyed stage to merge: one per
/// key and boundary of an input message's spans, a histogram whose sum is in nanoseconds.
pub const MARKER: &str = "dwcp.internal.span_metrics";

/// Boundaries emitted at most in one watermark step; a longer jump (a long idle input) emits
/// the last boundary only, with every span before it.
const MAX_FLUSHES_AT_ONCE: u64 = 1000;

/// Configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanMetricsConfig {
    /// Emit span metrics at all.
    pub enabled: bool,
    /// Duration bucket bounds, ms.
    pub buckets_ms: Vec<f64>,
    /// Event time between emissions, ms.
    pub flush_interval_ms: u64,
    /// Distinct (service, name, kind, status, region) keys at most.
    pub max_keys: usize,
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        SpanMetricsConfig {
            enabled: true,
            buckets_ms: DEFAULT_BUCKETS_MS.to_vec(),
            flush_interval_ms: 10_000,
            max_keys: 10_000,
        }
    }
}

/// (service as `namespace\0name`, span name, kind, status, region).
type Key = (Arc<str>, String, SpanKind, StatusCode, Arc<str>);

/// Counts of one key: calls, calls per duration bucket, summed duration and earliest span end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Totals {
    calls: u64,
    buckets: Vec<u64>,
    sum_ns: u64,
    start: EventTime,
}

impl Totals {
    fn empty(buckets: usize) -> Self {
        Totals {
            calls: 0,
            buckets: vec![0; buckets],
            sum_ns: 0,
            start: EventTime::MAX,
        }
    }

    fn add(&mut self, other: &Totals) {
        self.calls = self.calls.saturating_add(other.calls);
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a = a.saturating_add(*b);
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.start = self.start.min(other.start);
    }
}

/// The operator's state, as a changelog keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpanMetricsState {
    totals: Vec<(Key, Totals)>,
    pending: Vec<(EventTime, Vec<(Key, Totals)>)>,
    next_flush: EventTime,
    last_flushed: EventTime,
    dropped: u64,
}

/// The operator.
#[derive(Debug)]
pub struct SpanMetrics {
    config: SpanMetricsConfig,
    /// Every key's counts as of the last boundary emitted (a key whose spans all wait for a
    /// later boundary has no calls yet and is not emitted).
    totals: BTreeMap<Key, Totals>,
    /// Per boundary not emitted yet: the counts of the spans that end before it.
    pending: BTreeMap<EventTime, BTreeMap<Key, Totals>>,
    /// The next boundary to emit; 0 before the first span.
    next_flush: EventTime,
    /// The last boundary emitted; 0 before the first.
    last_flushed: EventTime,
    dropped: u64,
    /// Spans whose boundary is later are not counted (0: no limit); see `set_horizon`.
    horizon: EventTime,
    calls_desc: Arc<MetricDescriptor>,
    duration_desc: Arc<MetricDescriptor>,
    marker_desc: Arc<MetricDescriptor>,
    scope: Arc<Scope>,
    resources: BTreeMap<Arc<str>, Arc<Resource>>,
}

const KINDS: [SpanKind; 6] = [
    SpanKind::Unspecified,
    SpanKind::Internal,
    SpanKind::Server,
    SpanKind::Client,
    SpanKind::Producer,
    SpanKind::Consumer,
];

const STATUSES: [StatusCode; 3] = [StatusCode::Unset, StatusCode::Ok, StatusCode::Error];

fn kind_name(k: SpanKind) -> &'static str {
    match k {
        SpanKind::Unspecified => "SPAN_KIND_UNSPECIFIED",
        SpanKind::Internal => "SPAN_KIND_INTERNAL",
        SpanKind::Server => "SPAN_KIND_SERVER",
        SpanKind::Client => "SPAN_KIND_CLIENT",
        SpanKind::Producer => "SPAN_KIND_PRODUCER",
        SpanKind::Consumer => "SPAN_KIND_CONSUMER",
    }
}

fn status_name(s: StatusCode) -> &'static str {
    match s {
        StatusCode::Unset => "STATUS_CODE_UNSET",
        StatusCode::Ok => "STATUS_CODE_OK",
        StatusCode::Error => "STATUS_CODE_ERROR",
    }
}

/// The service of a resource, as a key holds it: `namespace\0name`.
fn service_of(resource: &Resource) -> Arc<str> {
    let res = &resource.attributes;
    let name = res.get_str("service.name").unwrap_or("unknown_service");
    Arc::from(format!("{}\0{name}", res.get_str("service.namespace").unwrap_or("")))
}

impl SpanMetrics {
    /// A new operator.
    pub fn new(config: SpanMetricsConfig) -> Self {
        let desc = |name: &str, description: &str, unit: &str| {
            Arc::new(MetricDescriptor {
                name: name.into(),
                description: description.into(),
                unit: unit.into(),
            })
        };
        SpanMetrics {
            config,
            totals: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_flush: 0,
            last_flushed: 0,
            dropped: 0,
            horizon: 0,
            calls_desc: desc("traces.span.metrics.calls", "Span calls, before sampling", "{call}"),
            duration_desc: desc("traces.span.metrics.duration", "Span duration, before sampling", "ms"),
            marker_desc: desc(MARKER, "Span counts of one input message, for the keyed stage", "ns"),
            scope: Arc::new(Scope {
                name: "spanmetricsconnector".into(),
                version: String::new(),
                attributes: Attributes::default(),
            }),
            resources: BTreeMap::new(),
        }
    }

    /// Spans ending after `latest` (the wall clock plus the allowed future skew) are counted as
    /// dropped from now on: a bad clock's spans would otherwise wait in memory, and in every
    /// checkpoint, until event time got there.
    pub fn set_horizon(&mut self, latest: EventTime) {
        self.horizon = self.boundary(latest);
    }

    /// The configuration.
    pub fn config(&self) -> &SpanMetricsConfig {
        &self.config
    }

    /// Spans not counted because `max_keys` was reached or because they end past the horizon.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Keys tracked (state size).
    pub fn keys(&self) -> usize {
        self.totals.len()
    }

    fn interval(&self) -> EventTime {
        self.config.flush_interval_ms.max(1) * 1_000_000
    }

    /// The first boundary a span ending at `end` is counted at.
    fn boundary(&self, end: EventTime) -> EventTime {
        let interval = self.interval();
        (end - end % interval).saturating_add(interval)
    }

    fn key(s: &Span) -> Key {
        (
            service_of(&s.origin.resource),
            s.name.clone(),
            s.kind,
            s.status_code,
            s.origin.region.clone(),
        )
    }

    /// One span's counts.
    fn one(&self, s: &Span) -> Totals {
        let n = self.config.buckets_ms.len() + 1;
        let mut t = Totals::empty(n);
        let nanos = s.duration_nanos();
        #[allow(clippy::cast_precision_loss)]
        let ms = nanos as f64 / 1e6;
        t.calls = 1;
        t.sum_ns = nanos;
        t.start = s.end_time_unix_nano;
        let i = self.config.buckets_ms.iter().position(|b| ms <= *b).unwrap_or(n - 1);
        t.buckets[i] = 1;
        t
    }

    /// Adds counts of spans ending before `boundary`.
    fn add(&mut self, key: Key, boundary: EventTime, t: &Totals) {
        if self.horizon != 0 && boundary > self.horizon {
            self.dropped = self.dropped.saturating_add(t.calls);
            return;
        }
        if !self.totals.contains_key(&key) {
            if self.totals.len() >= self.config.max_keys {
                self.dropped = self.dropped.saturating_add(t.calls);
                return;
            }
            let n = self.config.buckets_ms.len() + 1;
            self.totals.insert(key.clone(), Totals::empty(n));
        }
        if self.last_flushed != 0 && boundary <= self.last_flushed {
            // Late: its boundary is out; it counts from the next one.
            if let Some(total) = self.totals.get_mut(&key) {
                total.add(t);
            }
            return;
        }
        let n = self.config.buckets_ms.len() + 1;
        self.pending
            .entry(boundary)
            .or_default()
            .entry(key)
            .or_insert_with(|| Totals::empty(n))
            .add(t);
        if self.last_flushed == 0 {
            self.next_flush = if self.next_flush == 0 {
                boundary
            } else {
                self.next_flush.min(boundary)
            };
        }
    }

    /// Counts spans.
    pub fn process(&mut self, spans: &[Span]) {
        if !self.config.enabled {
            return;
        }
        for s in spans {
            let t = self.one(s);
            self.add(Self::key(s), self.boundary(s.end_time_unix_nano), &t);
        }
    }

    /// The counts of `spans` as delta points named [`MARKER`], one per key and boundary, for the
    /// keyed stage's [`SpanMetrics::merge_markers`]: a histogram with this operator's bounds,
    /// its sum in nanoseconds, its start the earliest span end and its time the latest. The
    /// operator's own state does not change.
    pub fn markers(&mut self, spans: &[Span]) -> Vec<MetricPoint> {
        if !self.config.enabled {
            return Vec::new();
        }
        let mut groups: BTreeMap<(EventTime, Key), (Totals, EventTime)> = BTreeMap::new();
        let n = self.config.buckets_ms.len() + 1;
        for s in spans {
            let t = self.one(s);
            let (group, latest) = groups
                .entry((self.boundary(s.end_time_unix_nano), Self::key(s)))
                .or_insert_with(|| (Totals::empty(n), 0));
            group.add(&t);
            *latest = (*latest).max(s.end_time_unix_nano);
        }
        let mut out = Vec::with_capacity(groups.len());
        for ((_, (service, name, kind, status, region)), (t, latest)) in groups {
            #[allow(clippy::cast_precision_loss)]
            let sum = t.sum_ns as f64;
            out.push(MetricPoint {
                origin: self.origin(&service, &region),
                metric: self.marker_desc.clone(),
                attributes: Self::attributes(&name, kind, status),
                start_time_unix_nano: t.start,
                time_unix_nano: latest,
                value: PointValue::Histogram {
                    count: t.calls,
                    sum: Some(sum),
                    min: None,
                    max: None,
                    bounds: self.config.buckets_ms.clone(),
                    bucket_counts: t.buckets,
                    temporality: Temporality::Delta,
                },
                flags: 0,
            });
        }
        out
    }

    /// Adds the counts of marker points (see [`SpanMetrics::markers`]); returns how many points
    /// were not markers of this configuration (other bounds, another shape), not counted.
    pub fn merge_markers(&mut self, points: &[MetricPoint]) -> usize {
        let mut refused = 0;
        for p in points {
            let PointValue::Histogram {
                count,
                sum,
                bounds,
                bucket_counts,
                ..
            } = &p.value
            else {
                refused += 1;
                continue;
            };
            let kind = KINDS
                .into_iter()
                .find(|k| p.attributes.get_str("span.kind") == Some(kind_name(*k)));
            let status = STATUSES
                .into_iter()
                .find(|s| p.attributes.get_str("status.code") == Some(status_name(*s)));
            let consistent = bucket_counts.len() == bounds.len() + 1
                && bucket_counts.iter().fold(0u64, |a, b| a.saturating_add(*b)) == *count;
            let (Some(kind), Some(status), Some(name), true, true, true) = (
                kind,
                status,
                p.attributes.get_str("span.name"),
                p.metric.name == MARKER,
                *bounds == self.config.buckets_ms,
                consistent,
            ) else {
                refused += 1;
                continue;
            };
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let t = Totals {
                calls: *count,
                buckets: bucket_counts.clone(),
                sum_ns: sum.unwrap_or(0.0) as u64,
                start: p.start_time_unix_nano,
            };
            let key = (
                service_of(&p.origin.resource),
                name.to_string(),
                kind,
                status,
                p.origin.region.clone(),
            );
            self.add(key, self.boundary(p.time_unix_nano), &t);
        }
        refused
    }

    /// Emits every boundary the watermark has passed since the last one emitted.
    pub fn on_watermark(&mut self, watermark: EventTime, out: &mut Vec<MetricPoint>) {
        if self.next_flush == 0 || watermark < self.next_flush || watermark == EventTime::MAX {
            return;
        }
        let interval = self.interval();
        if (watermark - self.next_flush) / interval > MAX_FLUSHES_AT_ONCE {
            self.next_flush = watermark - watermark % interval;
        }
        // `flush` moves `next_flush` on (saturating: a watermark below the maximum ends this).
        while self.next_flush <= watermark {
            self.flush(self.next_flush, out);
        }
    }

    /// Emits every key's totals stamped `at`, with the spans that end before `at`.
    pub fn flush(&mut self, at: EventTime, out: &mut Vec<MetricPoint>) {
        let later = self.pending.split_off(&at.saturating_add(1));
        let n = self.config.buckets_ms.len() + 1;
        for (_, counts) in std::mem::replace(&mut self.pending, later) {
            for (key, t) in counts {
                self.totals.entry(key).or_insert_with(|| Totals::empty(n)).add(&t);
            }
        }
        self.last_flushed = at;
        self.next_flush = at.saturating_add(self.interval());
        let totals = std::mem::take(&mut self.totals);
        for ((service, name, kind, status, region), t) in totals.iter().filter(|(_, t)| t.calls > 0) {
            let origin = self.origin(service, region);
            let attributes = Self::attributes(name, *kind, *status);
            #[allow(clippy::cast_possible_wrap)]
            let calls = t.calls as i64;
            out.push(MetricPoint {
                origin: origin.clone(),
                metric: self.calls_desc.clone(),
                attributes: attributes.clone(),
                start_time_unix_nano: t.start,
                time_unix_nano: at,
                value: PointValue::Sum {
                    value: Number::Int(calls),
                    temporality: Temporality::Cumulative,
                    monotonic: true,
                },
                flags: 0,
            });
            #[allow(clippy::cast_precision_loss)]
            let sum_ms = t.sum_ns as f64 / 1e6;
            out.push(MetricPoint {
                origin,
                metric: self.duration_desc.clone(),
                attributes,
                start_time_unix_nano: t.start,
                time_unix_nano: at,
                value: PointValue::Histogram {
                    count: t.calls,
                    sum: Some(sum_ms),
                    min: None,
                    max: None,
                    bounds: self.config.buckets_ms.clone(),
                    bucket_counts: t.buckets.clone(),
                    temporality: Temporality::Cumulative,
                },
                flags: 0,
            });
        }
        self.totals = totals;
    }

    /// The state, for a changelog.
    pub fn snapshot(&self) -> SpanMetricsState {
        SpanMetricsState {
            totals: self.totals.iter().map(|(k, t)| (k.clone(), t.clone())).collect(),
            pending: self
                .pending
                .iter()
                .map(|(b, m)| (*b, m.iter().map(|(k, t)| (k.clone(), t.clone())).collect()))
                .collect(),
            next_flush: self.next_flush,
            last_flushed: self.last_flushed,
            dropped: self.dropped,
        }
    }

    /// Takes over a state from [`SpanMetrics::snapshot`].
    pub fn restore(&mut self, state: SpanMetricsState) {
        self.totals = state.totals.into_iter().collect();
        self.pending = state
            .pending
            .into_iter()
            .map(|(b, m)| (b, m.into_iter().collect()))
            .collect();
        self.next_flush = state.next_flush;
        self.last_flushed = state.last_flushed;
        self.dropped = state.dropped;
    }

    /// The origin of a key's points: its region, a resource with its service, this scope.
    fn origin(&mut self, service: &Arc<str>, region: &Arc<str>) -> Origin {
        if self.resources.len() >= self.config.max_keys.max(1) && !self.resources.contains_key(service) {
            // The re-keying stage sees every service, not only the ones counted: start over.
            self.resources.clear();
        }
        let resource = self
            .resources
            .entry(service.clone())
            .or_insert_with(|| {
                let (ns, name) = service.split_once('\0').unwrap_or(("", service));
                let mut attributes = vec![KeyValue {
                    key: "service.name".into(),
                    value: dwcp_schemas::model::AnyValue::String(name.to_string()),
                }];
                if !ns.is_empty() {
                    attributes.push(KeyValue {
                        key: "service.namespace".into(),
                        value: dwcp_schemas::model::AnyValue::String(ns.to_string()),
                    });
                }
                Arc::new(Resource {
                    attributes: Attributes(attributes),
                })
            })
            .clone();
        Origin {
            region: region.clone(),
            resource,
            scope: self.scope.clone(),
        }
    }

    fn attributes(name: &str, kind: SpanKind, status: StatusCode) -> Attributes {
        let text = |key: &str, value: &str| KeyValue {
            key: key.into(),
            value: dwcp_schemas::model::AnyValue::String(value.to_string()),
        };
        Attributes(vec![
            text("span.name", name),
            text("span.kind", kind_name(kind)),
            text("status.code", status_name(status)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwcp_schemas::model::{SpanId, TraceId};

    const MS: u64 = 1_000_000;

    fn span(service: &str, name: &str, region: &str, dur_ms: u64, error: bool) -> Span {
        Span {
            origin: Origin {
                region: region.into(),
                resource: Arc::new(Resource {
                    attributes: Attributes(vec![KeyValue {
                        key: "service.name".into(),
                        value: dwcp_schemas::model::AnyValue::String(service.into()),
                    }]),
                }),
                scope: Arc::new(Scope::default()),
            },
            trace_id: TraceId([1; 16]),
            span_id: SpanId([1; 8]),
            parent_span_id: None,
            trace_state: String::new(),
            name: name.into(),
            kind: SpanKind::Server,
            start_time_unix_nano: 1_000 * MS,
            end_time_unix_nano: (1_000 + dur_ms) * MS,
            attributes: Attributes::default(),
            events: vec![],
            links: vec![],
            status_code: if error { StatusCode::Error } else { StatusCode::Unset },
            status_message: String::new(),
        }
    }

    #[test]
    fn calls_errors_and_duration_buckets_per_key() {
        let mut m = SpanMetrics::new(SpanMetricsConfig::default());
        m.process(&[
            span("gw", "replicate", "eu", 3, false),
            span("gw", "replicate", "eu", 45, false),
            span("gw", "replicate", "eu", 5000, true),
            span("gw", "replicate", "us", 1, false),
        ]);
        let mut out = vec![];
        m.flush(20_000 * MS, &mut out);
        assert_eq!(out.len(), 6, "three keys, calls and duration each");
        let calls = |region: &str, status: &str| {
            out.iter()
                .filter(|p| p.metric.name == "traces.span.metrics.calls" && &*p.origin.region == region)
                .filter(|p| p.attributes.get_str("status.code") == Some(status))
                .map(|p| match p.value {
                    PointValue::Sum {
                        value: Number::Int(n), ..
                    } => n,
                    _ => panic!("a sum"),
                })
                .sum::<i64>()
        };
        assert_eq!(calls("eu", "STATUS_CODE_UNSET"), 2);
        assert_eq!(calls("eu", "STATUS_CODE_ERROR"), 1);
        assert_eq!(calls("us", "STATUS_CODE_UNSET"), 1);
        let h = out
            .iter()
            .find(|p| {
                p.metric.name == "traces.span.metrics.duration"
                    && &*p.origin.region == "eu"
                    && p.attributes.get_str("status.code") == Some("STATUS_CODE_UNSET")
            })
            .expect("histogram");
        match &h.value {
            PointValue::Histogram {
                count,
                sum,
                bucket_counts,
                ..
            } => {
                assert_eq!(*count, 2);
                assert_eq!(*sum, Some(48.0));
                // 3 ms in (2, 4], 45 ms in (10, 50].
                assert_eq!(bucket_counts[1], 1);
                assert_eq!(bucket_counts[5], 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(h.origin.resource.service_name(), Some("gw"));
        assert_eq!(h.attributes.get_str("span.kind"), Some("SPAN_KIND_SERVER"));
    }

    #[test]
    fn keys_are_bounded() {
        let mut m = SpanMetrics::new(SpanMetricsConfig {
            max_keys: 2,
            ..Default::default()
        });
        let spans: Vec<Span> = (0..5).map(|i| span("gw", &format!("op{i}"), "eu", 1, false)).collect();
        m.process(&spans);
        assert_eq!(m.keys(), 2);
        assert_eq!(m.dropped(), 3);
    }

    /// A span of `service` ending at `end_ms`, lasting `dur_ms`.
    fn ending(service: &str, name: &str, region: &str, end_ms: u64, dur_ms: u64, error: bool) -> Span {
        let mut s = span(service, name, region, dur_ms, error);
        s.end_time_unix_nano = end_ms * MS;
        s.start_time_unix_nano = (end_ms - dur_ms) * MS;
        s
    }

    fn calls_at(out: &[MetricPoint], at_ms: u64) -> Vec<(String, i64)> {
        out.iter()
            .filter(|p| p.metric.name == "traces.span.metrics.calls" && p.time_unix_nano == at_ms * MS)
            .map(|p| match p.value {
                PointValue::Sum {
                    value: Number::Int(n), ..
                } => (p.attributes.get_str("span.name").unwrap_or("").to_string(), n),
                _ => panic!("a sum"),
            })
            .collect()
    }

    #[test]
    fn each_boundary_passed_is_emitted_with_the_spans_that_ended_before_it() {
        let mut m = SpanMetrics::new(SpanMetricsConfig::default());
        // Read in another order than they ended: each still counts at its own boundary.
        m.process(&[
            ending("gw", "a", "eu", 25_000, 5, false),
            ending("gw", "a", "eu", 5_000, 5, false),
            ending("gw", "a", "eu", 15_000, 5, false),
        ]);
        let mut out = vec![];
        m.on_watermark(9_999 * MS, &mut out);
        assert!(out.is_empty(), "no boundary passed");
        m.on_watermark(12_000 * MS, &mut out);
        assert_eq!(calls_at(&out, 10_000), [("a".to_string(), 1)]);
        m.on_watermark(31_000 * MS, &mut out);
        assert_eq!(calls_at(&out, 20_000), [("a".to_string(), 2)]);
        assert_eq!(calls_at(&out, 30_000), [("a".to_string(), 3)]);
        // Late (its boundary, 10 s, is out): counted from the next one.
        m.process(&[ending("gw", "a", "eu", 7_000, 5, false)]);
        m.on_watermark(40_000 * MS, &mut out);
        assert_eq!(calls_at(&out, 40_000), [("a".to_string(), 4)]);
    }

    /// What several workers compute: each input message's spans become marker points (through
    /// OTLP protobuf, as in the internal topic), merged by another operator in another order.
    #[test]
    fn markers_merged_in_any_order_give_what_the_spans_give() {
        let spans: Vec<Span> = (0..60u64)
            .map(|i| {
                ending(
                    ["gw", "store"][(i % 2) as usize],
                    ["replicate", "ack", "vote"][(i % 3) as usize],
                    ["eu", "us"][(i % 5 % 2) as usize],
                    1_000 + i * 700,
                    1 + (i * 37) % 3_000,
                    i % 7 == 0,
                )
            })
            .collect();
        let messages: Vec<&[Span]> = spans.chunks(13).collect();
        let mut one = SpanMetrics::new(SpanMetricsConfig::default());
        let mut merged = SpanMetrics::new(SpanMetricsConfig::default());
        let mut rekeying = SpanMetrics::new(SpanMetricsConfig::default());
        let mut markers = Vec::new();
        for m in &messages {
            one.process(m);
            for p in rekeying.markers(m) {
                let bytes = dwcp_schemas::otlp::encode_metrics([&p]);
                let ctx = dwcp_schemas::otlp::RegionContext::new(Some(p.origin.region.clone()));
                let decoded = dwcp_schemas::otlp::decode(
                    dwcp_schemas::Signal::Metrics,
                    dwcp_schemas::otlp::Encoding::OtlpProto,
                    &bytes,
                    &ctx,
                )
                .expect("decodes");
                let dwcp_schemas::Records::Metrics(points) = decoded.records else {
                    panic!("metrics")
                };
                markers.extend(points);
            }
        }
        assert!(
            markers.len() < spans.len(),
            "a marker per key and boundary of a message"
        );
        markers.reverse();
        assert_eq!(merged.merge_markers(&markers), 0);
        let (mut a, mut b) = (vec![], vec![]);
        for wm in [20_000, 20_500, 47_000] {
            one.on_watermark(wm * MS, &mut a);
            merged.on_watermark(wm * MS, &mut b);
        }
        assert!(a.len() > 20, "{}", a.len());
        assert_eq!(a, b);
        assert_eq!(one.snapshot(), merged.snapshot());
        // A restored copy goes on as the original.
        let mut restored = SpanMetrics::new(SpanMetricsConfig::default());
        restored.restore(serde_json::from_slice(&serde_json::to_vec(&merged.snapshot()).expect("json")).expect("back"));
        let (mut c, mut d) = (vec![], vec![]);
        merged.on_watermark(60_000 * MS, &mut c);
        restored.on_watermark(60_000 * MS, &mut d);
        assert!(!c.is_empty());
        assert_eq!(c, d);
    }

    #[test]
    fn hostile_times_and_markers_are_refused_or_counted_and_never_panic() {
        let mut m = SpanMetrics::new(SpanMetricsConfig::default());
        let mut far = ending("gw", "a", "eu", 5_000, 5, false);
        far.end_time_unix_nano = EventTime::MAX - 1;
        far.start_time_unix_nano = 0;
        m.process(&[far.clone(), ending("gw", "a", "eu", 5_000, 5, false)]);
        let mut out = vec![];
        m.on_watermark(EventTime::MAX - 1, &mut out);
        assert_eq!(
            calls_at(&out, 10_000).len(),
            0,
            "a jump of more than 1,000 boundaries emits the last"
        );
        assert!(!out.is_empty());
        // With a horizon (the wall clock plus the allowed skew), the far span is dropped.
        let mut m = SpanMetrics::new(SpanMetricsConfig::default());
        m.set_horizon(60_000 * MS);
        m.process(&[far, ending("gw", "a", "eu", 5_000, 5, false)]);
        assert_eq!(m.dropped(), 1);
        // A marker whose count is not its buckets' sum, or of other bounds, is refused.
        let mut rekeying = SpanMetrics::new(SpanMetricsConfig::default());
        let mut markers = rekeying.markers(&[ending("gw", "a", "eu", 5_000, 5, false)]);
        assert_eq!(markers.len(), 1);
        let mut other_bounds = markers[0].clone();
        if let PointValue::Histogram { count, .. } = &mut markers[0].value {
            *count += 1;
        }
        if let PointValue::Histogram {
            bounds, bucket_counts, ..
        } = &mut other_bounds.value
        {
            bounds.pop();
            bucket_counts.pop();
        }
        let mut merged = SpanMetrics::new(SpanMetricsConfig::default());
        assert_eq!(merged.merge_markers(&[markers[0].clone(), other_bounds]), 2);
        assert_eq!(merged.keys(), 0);
    }
}
