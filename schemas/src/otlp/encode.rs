//! From the internal model back to OTLP protobuf: what the repartitioning stage writes to the
//! internal topics, so the keyed stage reads them with the same decoder as the input.
//!
//! Lossless for everything the model holds: decoding the output gives back equal records
//! (the region aside, which travels beside the message; see [`encode_metrics`]). Consecutive
//! records that share their resource, scope (and, for metrics, descriptor and kind) are written
//! under one `ResourceMetrics` / `ScopeMetrics` / `Metric`, as the Collector groups them.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1 as pc;
use opentelemetry_proto::tonic::metrics::v1 as pm;
use opentelemetry_proto::tonic::resource::v1 as pr;
use opentelemetry_proto::tonic::trace::v1 as pt;
use prost::Message as _;

use crate::model::{
    AnyValue, Attributes, MetricPoint, Number, Origin, PointValue, Resource, Scope, Span, SpanKind, StatusCode,
    Temporality,
};

fn any_value(v: &AnyValue) -> pc::AnyValue {
    use pc::any_value::Value;
    pc::AnyValue {
        value: match v {
            AnyValue::Empty => None,
            AnyValue::String(s) => Some(Value::StringValue(s.clone())),
            AnyValue::Bool(b) => Some(Value::BoolValue(*b)),
            AnyValue::Int(i) => Some(Value::IntValue(*i)),
            AnyValue::Double(d) => Some(Value::DoubleValue(*d)),
            AnyValue::Bytes(b) => Some(Value::BytesValue(b.clone())),
            AnyValue::Array(a) => Some(Value::ArrayValue(pc::ArrayValue {
                values: a.iter().map(any_value).collect(),
            })),
            AnyValue::KvList(l) => Some(Value::KvlistValue(pc::KeyValueList { values: key_values(l) })),
        },
    }
}

fn key_values(kvs: &[crate::model::KeyValue]) -> Vec<pc::KeyValue> {
    kvs.iter()
        .map(|kv| pc::KeyValue {
            key: kv.key.clone(),
            value: Some(any_value(&kv.value)),
            ..Default::default()
        })
        .collect()
}

fn attributes(a: &Attributes) -> Vec<pc::KeyValue> {
    key_values(&a.0)
}

fn resource(r: &Resource) -> pr::Resource {
    pr::Resource {
        attributes: attributes(&r.attributes),
        ..Default::default()
    }
}

fn scope(s: &Scope) -> pc::InstrumentationScope {
    pc::InstrumentationScope {
        name: s.name.clone(),
        version: s.version.clone(),
        attributes: attributes(&s.attributes),
        ..Default::default()
    }
}

fn temporality(t: Temporality) -> i32 {
    match t {
        Temporality::Unspecified => 0,
        Temporality::Delta => 1,
        Temporality::Cumulative => 2,
    }
}

fn number(n: Number) -> pm::number_data_point::Value {
    match n {
        Number::Int(i) => pm::number_data_point::Value::AsInt(i),
        Number::Double(d) => pm::number_data_point::Value::AsDouble(d),
    }
}

/// Whether two records came under the same resource and scope (shared `Arc`s, or equal).
fn same_origin(a: &Origin, b: &Origin) -> bool {
    (Arc::ptr_eq(&a.resource, &b.resource) || a.resource == b.resource)
        && (Arc::ptr_eq(&a.scope, &b.scope) || a.scope == b.scope)
}

/// Appends `item` under its resource and scope, opening new ones when the origin changes.
fn scoped<'a, R, S>(
    out: &mut Vec<R>,
    last: &mut Option<&'a Origin>,
    origin: &'a Origin,
    new_resource: impl FnOnce() -> R,
    new_scope: impl FnOnce() -> S,
    scopes: impl Fn(&mut R) -> &mut Vec<S>,
) -> bool {
    let fresh = !last.is_some_and(|l| same_origin(l, origin));
    if fresh {
        let same_resource =
            last.is_some_and(|l| Arc::ptr_eq(&l.resource, &origin.resource) || l.resource == origin.resource);
        if !same_resource || out.is_empty() {
            out.push(new_resource());
        }
        if let Some(r) = out.last_mut() {
            scopes(r).push(new_scope());
        }
        *last = Some(origin);
    }
    fresh
}

fn data(v: &PointValue) -> pm::metric::Data {
    match v {
        PointValue::Gauge { .. } => pm::metric::Data::Gauge(pm::Gauge::default()),
        PointValue::Sum {
            temporality: t,
            monotonic,
            ..
        } => pm::metric::Data::Sum(pm::Sum {
            data_points: Vec::new(),
            aggregation_temporality: temporality(*t),
            is_monotonic: *monotonic,
        }),
        PointValue::Histogram { temporality: t, .. } => pm::metric::Data::Histogram(pm::Histogram {
            data_points: Vec::new(),
            aggregation_temporality: temporality(*t),
        }),
        PointValue::ExponentialHistogram { temporality: t, .. } => {
            pm::metric::Data::ExponentialHistogram(pm::ExponentialHistogram {
                data_points: Vec::new(),
                aggregation_temporality: temporality(*t),
            })
        }
        PointValue::Summary { .. } => pm::metric::Data::Summary(pm::Summary::default()),
    }
}

/// Whether `p` can join `data` (same kind, temporality and monotonicity).
fn fits(data: &pm::metric::Data, v: &PointValue) -> bool {
    match (data, v) {
        (pm::metric::Data::Gauge(_), PointValue::Gauge { .. })
        | (pm::metric::Data::Summary(_), PointValue::Summary { .. }) => true,
        (
            pm::metric::Data::Sum(s),
            PointValue::Sum {
                temporality: t,
                monotonic,
                ..
            },
        ) => s.aggregation_temporality == temporality(*t) && s.is_monotonic == *monotonic,
        (pm::metric::Data::Histogram(h), PointValue::Histogram { temporality: t, .. }) => {
            h.aggregation_temporality == temporality(*t)
        }
        (pm::metric::Data::ExponentialHistogram(h), PointValue::ExponentialHistogram { temporality: t, .. }) => {
            h.aggregation_temporality == temporality(*t)
        }
        _ => false,
    }
}

fn push_point(data: &mut pm::metric::Data, p: &MetricPoint) {
    let attributes = attributes(&p.attributes);
    let (start, time, flags) = (p.start_time_unix_nano, p.time_unix_nano, p.flags);
    match (data, &p.value) {
        (pm::metric::Data::Gauge(g), PointValue::Gauge { value }) => g.data_points.push(pm::NumberDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: time,
            flags,
            value: Some(number(*value)),
            ..Default::default()
        }),
        (pm::metric::Data::Sum(s), PointValue::Sum { value, .. }) => s.data_points.push(pm::NumberDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: time,
            flags,
            value: Some(number(*value)),
            ..Default::default()
        }),
        (
            pm::metric::Data::Histogram(h),
            PointValue::Histogram {
                count,
                sum,
                min,
                max,
                bounds,
                bucket_counts,
                ..
            },
        ) => h.data_points.push(pm::HistogramDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: time,
            count: *count,
            sum: *sum,
            bucket_counts: bucket_counts.clone(),
            explicit_bounds: bounds.clone(),
            flags,
            min: *min,
            max: *max,
            ..Default::default()
        }),
        (
            pm::metric::Data::ExponentialHistogram(h),
            PointValue::ExponentialHistogram {
                count,
                sum,
                min,
                max,
                scale,
                zero_count,
                zero_threshold,
                positive,
                negative,
                ..
            },
        ) => {
            let buckets = |b: &crate::model::ExpBuckets| pm::exponential_histogram_data_point::Buckets {
                offset: b.offset,
                bucket_counts: b.bucket_counts.clone(),
            };
            h.data_points.push(pm::ExponentialHistogramDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: time,
                count: *count,
                sum: *sum,
                scale: *scale,
                zero_count: *zero_count,
                positive: Some(buckets(positive)),
                negative: Some(buckets(negative)),
                flags,
                min: *min,
                max: *max,
                zero_threshold: *zero_threshold,
                ..Default::default()
            });
        }
        (pm::metric::Data::Summary(s), PointValue::Summary { count, sum, quantiles }) => {
            s.data_points.push(pm::SummaryDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: time,
                count: *count,
                sum: *sum,
                quantile_values: quantiles
                    .iter()
                    .map(|&(quantile, value)| pm::summary_data_point::ValueAtQuantile { quantile, value })
                    .collect(),
                flags,
            });
        }
        // `fits` chose the data for this point's kind.
        _ => {}
    }
}

/// One `MetricsData` holding `points`, in their order. The points' region is not written (a
/// resource without `cloud.region` must stay without it): the caller sends it beside the
/// message, and the points of one message should share it.
pub fn encode_metrics<'a>(points: impl IntoIterator<Item = &'a MetricPoint>) -> Vec<u8> {
    let mut out: Vec<pm::ResourceMetrics> = Vec::new();
    let mut last: Option<&Origin> = None;
    let mut last_metric: Option<&Arc<crate::model::MetricDescriptor>> = None;
    for p in points {
        let fresh = scoped(
            &mut out,
            &mut last,
            &p.origin,
            || pm::ResourceMetrics {
                resource: Some(resource(&p.origin.resource)),
                ..Default::default()
            },
            || pm::ScopeMetrics {
                scope: Some(scope(&p.origin.scope)),
                ..Default::default()
            },
            |r| &mut r.scope_metrics,
        );
        let Some(sm) = out.last_mut().and_then(|r| r.scope_metrics.last_mut()) else {
            continue;
        };
        let same_metric = !fresh
            && last_metric.is_some_and(|m| Arc::ptr_eq(m, &p.metric) || **m == *p.metric)
            && sm
                .metrics
                .last()
                .and_then(|m| m.data.as_ref())
                .is_some_and(|d| fits(d, &p.value));
        if !same_metric {
            sm.metrics.push(pm::Metric {
                name: p.metric.name.clone(),
                description: p.metric.description.clone(),
                unit: p.metric.unit.clone(),
                data: Some(data(&p.value)),
                ..Default::default()
            });
            last_metric = Some(&p.metric);
        }
        if let Some(d) = sm.metrics.last_mut().and_then(|m| m.data.as_mut()) {
            push_point(d, p);
        }
    }
    pm::MetricsData { resource_metrics: out }.encode_to_vec()
}

fn span_kind(k: SpanKind) -> i32 {
    k as i32
}

fn status_code(c: StatusCode) -> i32 {
    c as i32
}

/// One `TracesData` holding `spans`, in their order; the region travels beside it, as for
/// [`encode_metrics`].
pub fn encode_spans<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Vec<u8> {
    let mut out: Vec<pt::ResourceSpans> = Vec::new();
    let mut last: Option<&Origin> = None;
    for s in spans {
        scoped(
            &mut out,
            &mut last,
            &s.origin,
            || pt::ResourceSpans {
                resource: Some(resource(&s.origin.resource)),
                ..Default::default()
            },
            || pt::ScopeSpans {
                scope: Some(scope(&s.origin.scope)),
                ..Default::default()
            },
            |r| &mut r.scope_spans,
        );
        let Some(ss) = out.last_mut().and_then(|r| r.scope_spans.last_mut()) else {
            continue;
        };
        ss.spans.push(pt::Span {
            trace_id: s.trace_id.0.to_vec(),
            span_id: s.span_id.0.to_vec(),
            trace_state: s.trace_state.clone(),
            parent_span_id: s.parent_span_id.map(|p| p.0.to_vec()).unwrap_or_default(),
            name: s.name.clone(),
            kind: span_kind(s.kind),
            start_time_unix_nano: s.start_time_unix_nano,
            end_time_unix_nano: s.end_time_unix_nano,
            attributes: attributes(&s.attributes),
            events: s
                .events
                .iter()
                .map(|e| pt::span::Event {
                    time_unix_nano: e.time_unix_nano,
                    name: e.name.clone(),
                    attributes: attributes(&e.attributes),
                    dropped_attributes_count: 0,
                })
                .collect(),
            links: s
                .links
                .iter()
                .map(|l| pt::span::Link {
                    trace_id: l.trace_id.0.to_vec(),
                    span_id: l.span_id.0.to_vec(),
                    attributes: attributes(&l.attributes),
                    ..Default::default()
                })
                .collect(),
            status: Some(pt::Status {
                message: s.status_message.clone(),
                code: status_code(s.status_code),
            }),
            ..Default::default()
        });
    }
    pt::TracesData { resource_spans: out }.encode_to_vec()
}
