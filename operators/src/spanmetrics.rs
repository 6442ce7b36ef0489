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
//! Every key's cumulative values are emitted each `flush_interval_ms` of event time, stamped
//! with the flush time. Keys are bounded by `max_keys`; spans of further keys are counted in
//! [`SpanMetrics::dropped`].

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

type Key = (Arc<str>, String, SpanKind, StatusCode, Arc<str>);

#[derive(Debug, Clone)]
struct Totals {
    calls: u64,
    buckets: Vec<u64>,
    sum_ms: f64,
    start: EventTime,
}

/// The operator.
#[derive(Debug)]
pub struct SpanMetrics {
    config: SpanMetricsConfig,
    totals: BTreeMap<Key, Totals>,
    next_flush: EventTime,
    dropped: u64,
    calls_desc: Arc<MetricDescriptor>,
    duration_desc: Arc<MetricDescriptor>,
    scope: Arc<Scope>,
    resources: BTreeMap<Arc<str>, Arc<Resource>>,
}

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

impl SpanMetrics {
    /// A new operator.
    pub fn new(config: SpanMetricsConfig) -> Self {
        SpanMetrics {
            config,
            totals: BTreeMap::new(),
            next_flush: 0,
            dropped: 0,
            calls_desc: Arc::new(MetricDescriptor {
                name: "traces.span.metrics.calls".into(),
                description: "Span calls, before sampling".into(),
                unit: "{call}".into(),
            }),
            duration_desc: Arc::new(MetricDescriptor {
                name: "traces.span.metrics.duration".into(),
                description: "Span duration, before sampling".into(),
                unit: "ms".into(),
            }),
            scope: Arc::new(Scope {
                name: "spanmetricsconnector".into(),
                version: String::new(),
                attributes: Attributes::default(),
            }),
            resources: BTreeMap::new(),
        }
    }

    /// Spans not counted because `max_keys` was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Keys tracked (state size).
    pub fn keys(&self) -> usize {
        self.totals.len()
    }

    /// Counts spans.
    pub fn process(&mut self, spans: &[Span]) {
        if !self.config.enabled {
            return;
        }
        for s in spans {
            // The service and its namespace, as `namespace\0name`, so `job` comes out as elsewhere.
            let res = &s.origin.resource.attributes;
            let name = res.get_str("service.name").unwrap_or("unknown_service");
            let service: Arc<str> = Arc::from(format!("{}\0{name}", res.get_str("service.namespace").unwrap_or("")));
            let key: Key = (service, s.name.clone(), s.kind, s.status_code, s.origin.region.clone());
            let n = self.config.buckets_ms.len() + 1;
            let len = self.totals.len();
            let t = match self.totals.get_mut(&key) {
                Some(t) => t,
                None if len >= self.config.max_keys => {
                    self.dropped += 1;
                    continue;
                }
                None => self.totals.entry(key).or_insert(Totals {
                    calls: 0,
                    buckets: vec![0; n],
                    sum_ms: 0.0,
                    start: s.end_time_unix_nano,
                }),
            };
            #[allow(clippy::cast_precision_loss)]
            let ms = s.duration_nanos() as f64 / 1e6;
            t.calls += 1;
            t.sum_ms += ms;
            let i = self.config.buckets_ms.iter().position(|b| ms <= *b).unwrap_or(n - 1);
            t.buckets[i] += 1;
        }
    }

    /// Emits every key's totals when the watermark crosses a flush boundary.
    pub fn on_watermark(&mut self, watermark: EventTime, out: &mut Vec<MetricPoint>) {
        let interval = self.config.flush_interval_ms.max(1) * 1_000_000;
        if self.next_flush == 0 {
            self.next_flush = watermark - watermark % interval + interval;
            return;
        }
        if watermark < self.next_flush || watermark == EventTime::MAX {
            return;
        }
        let at = watermark - watermark % interval;
        self.next_flush = at + interval;
        self.flush(at, out);
    }

    /// Emits every key's totals stamped `at`.
    pub fn flush(&mut self, at: EventTime, out: &mut Vec<MetricPoint>) {
        for ((service, name, kind, status, region), t) in &self.totals {
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
            let origin = Origin {
                region: region.clone(),
                resource,
                scope: self.scope.clone(),
            };
            let attributes = Attributes(vec![
                KeyValue {
                    key: "span.name".into(),
                    value: dwcp_schemas::model::AnyValue::String(name.clone()),
                },
                KeyValue {
                    key: "span.kind".into(),
                    value: dwcp_schemas::model::AnyValue::String(kind_name(*kind).into()),
                },
                KeyValue {
                    key: "status.code".into(),
                    value: dwcp_schemas::model::AnyValue::String(status_name(*status).into()),
                },
            ]);
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
            out.push(MetricPoint {
                origin,
                metric: self.duration_desc.clone(),
                attributes,
                start_time_unix_nano: t.start,
                time_unix_nano: at,
                value: PointValue::Histogram {
                    count: t.calls,
                    sum: Some(t.sum_ms),
                    min: None,
                    max: None,
                    bounds: self.config.buckets_ms.clone(),
                    bucket_counts: t.buckets.clone(),
                    temporality: Temporality::Cumulative,
                },
                flags: 0,
            });
        }
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
}
