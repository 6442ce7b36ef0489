//! From the prost-generated OTLP messages to the internal model.
//!
//! The conversion takes the messages by value and moves their strings and vectors into the
//! model, so decoding allocates little beyond what prost already did.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1 as pc;
use opentelemetry_proto::tonic::logs::v1 as pl;
use opentelemetry_proto::tonic::metrics::v1 as pm;
use opentelemetry_proto::tonic::resource::v1 as pr;
use opentelemetry_proto::tonic::trace::v1 as pt;

use super::{DecodeError, RegionContext};
use crate::model::{
    AnyValue, Attributes, ExpBuckets, KeyValue, LogRecord, MetricDescriptor, MetricPoint, Number, Origin, PointValue,
    Resource, Scope, Span, SpanEvent, SpanId, SpanKind, SpanLink, StatusCode, Temporality, TraceId,
};

/// Nesting depth past which an `AnyValue` is refused. prost stops at 100 levels of messages,
/// and every `AnyValue` level is two messages deep, so valid protobuf input never reaches it; it
/// guards the JSON path.
const MAX_ANY_VALUE_DEPTH: usize = 64;

pub(crate) fn any_value(v: pc::AnyValue, depth: usize) -> Result<AnyValue, DecodeError> {
    use pc::any_value::Value;
    if depth > MAX_ANY_VALUE_DEPTH {
        return Err(DecodeError::Invalid(format!(
            "attribute value nested deeper than {MAX_ANY_VALUE_DEPTH} levels"
        )));
    }
    Ok(match v.value {
        None => AnyValue::Empty,
        Some(Value::StringValue(s)) => AnyValue::String(s),
        Some(Value::BoolValue(b)) => AnyValue::Bool(b),
        Some(Value::IntValue(i)) => AnyValue::Int(i),
        Some(Value::DoubleValue(d)) => AnyValue::Double(d),
        Some(Value::BytesValue(b)) => AnyValue::Bytes(b),
        Some(Value::ArrayValue(a)) => AnyValue::Array(
            a.values
                .into_iter()
                .map(|v| any_value(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Some(Value::KvlistValue(l)) => AnyValue::KvList(key_values(l.values, depth + 1)?),
        Some(Value::StringValueStrindex(_)) => {
            return Err(DecodeError::Invalid(
                "string_value_strindex is only valid in profiles, not in this signal".into(),
            ))
        }
    })
}

fn key_values(kvs: Vec<pc::KeyValue>, depth: usize) -> Result<Vec<KeyValue>, DecodeError> {
    kvs.into_iter()
        .map(|kv| {
            Ok(KeyValue {
                key: kv.key,
                value: match kv.value {
                    Some(v) => any_value(v, depth)?,
                    None => AnyValue::Empty,
                },
            })
        })
        .collect()
}

fn attributes(kvs: Vec<pc::KeyValue>) -> Result<Attributes, DecodeError> {
    key_values(kvs, 0).map(Attributes)
}

/// Resolves the region once per resource and builds the shared [`Origin`] parts.
struct OriginBuilder {
    region: Arc<str>,
    resource: Arc<Resource>,
}

impl OriginBuilder {
    fn new(
        resource: Option<pr::Resource>,
        ctx: &RegionContext,
        unknown: &mut usize,
        count: usize,
    ) -> Result<Self, DecodeError> {
        let resource = Resource {
            attributes: attributes(resource.map(|r| r.attributes).unwrap_or_default())?,
        };
        let region = match resource.attributes.get_str("cloud.region") {
            Some(r) if !r.is_empty() => Arc::from(r),
            _ => match &ctx.fallback {
                Some(r) => r.clone(),
                None => {
                    *unknown += count;
                    ctx.unknown.clone()
                }
            },
        };
        Ok(OriginBuilder {
            region,
            resource: Arc::new(resource),
        })
    }

    fn scope(&self, scope: Option<pc::InstrumentationScope>) -> Result<Origin, DecodeError> {
        let scope = match scope {
            Some(s) => Scope {
                name: s.name,
                version: s.version,
                attributes: attributes(s.attributes)?,
            },
            None => Scope::default(),
        };
        Ok(Origin {
            region: self.region.clone(),
            resource: self.resource.clone(),
            scope: Arc::new(scope),
        })
    }
}

fn temporality(v: i32) -> Temporality {
    match v {
        1 => Temporality::Delta,
        2 => Temporality::Cumulative,
        _ => Temporality::Unspecified,
    }
}

fn number(v: Option<pm::number_data_point::Value>) -> Number {
    match v {
        Some(pm::number_data_point::Value::AsInt(i)) => Number::Int(i),
        Some(pm::number_data_point::Value::AsDouble(d)) => Number::Double(d),
        // A point with no value: OTLP allows it with the no-recorded-value flag.
        None => Number::Double(f64::NAN),
    }
}

fn metric_points(m: pm::Metric, origin: &Origin, out: &mut Vec<MetricPoint>) -> Result<(), DecodeError> {
    let desc = Arc::new(MetricDescriptor {
        name: m.name,
        description: m.description,
        unit: m.unit,
    });
    let Some(data) = m.data else {
        // A metric with no data carries no points; nothing to emit.
        return Ok(());
    };
    let point = |attrs, start, time, flags, value| -> Result<MetricPoint, DecodeError> {
        Ok(MetricPoint {
            origin: origin.clone(),
            metric: desc.clone(),
            attributes: attributes(attrs)?,
            start_time_unix_nano: start,
            time_unix_nano: time,
            value,
            flags,
        })
    };
    match data {
        pm::metric::Data::Gauge(g) => {
            for p in g.data_points {
                out.push(point(
                    p.attributes,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    p.flags,
                    PointValue::Gauge { value: number(p.value) },
                )?);
            }
        }
        pm::metric::Data::Sum(s) => {
            let t = temporality(s.aggregation_temporality);
            for p in s.data_points {
                out.push(point(
                    p.attributes,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    p.flags,
                    PointValue::Sum {
                        value: number(p.value),
                        temporality: t,
                        monotonic: s.is_monotonic,
                    },
                )?);
            }
        }
        pm::metric::Data::Histogram(h) => {
            let t = temporality(h.aggregation_temporality);
            for p in h.data_points {
                if !p.bucket_counts.is_empty() && p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
                    return Err(DecodeError::Invalid(format!(
                        "histogram `{}` has {} bucket counts for {} bounds (expected bounds + 1)",
                        desc.name,
                        p.bucket_counts.len(),
                        p.explicit_bounds.len()
                    )));
                }
                out.push(point(
                    p.attributes,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    p.flags,
                    PointValue::Histogram {
                        count: p.count,
                        sum: p.sum,
                        min: p.min,
                        max: p.max,
                        bounds: p.explicit_bounds,
                        bucket_counts: p.bucket_counts,
                        temporality: t,
                    },
                )?);
            }
        }
        pm::metric::Data::ExponentialHistogram(h) => {
            let t = temporality(h.aggregation_temporality);
            let buckets = |b: Option<pm::exponential_histogram_data_point::Buckets>| {
                b.map(|b| ExpBuckets {
                    offset: b.offset,
                    bucket_counts: b.bucket_counts,
                })
                .unwrap_or_default()
            };
            for p in h.data_points {
                out.push(point(
                    p.attributes,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    p.flags,
                    PointValue::ExponentialHistogram {
                        count: p.count,
                        sum: p.sum,
                        min: p.min,
                        max: p.max,
                        scale: p.scale,
                        zero_count: p.zero_count,
                        zero_threshold: p.zero_threshold,
                        positive: buckets(p.positive),
                        negative: buckets(p.negative),
                        temporality: t,
                    },
                )?);
            }
        }
        pm::metric::Data::Summary(s) => {
            for p in s.data_points {
                out.push(point(
                    p.attributes,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    p.flags,
                    PointValue::Summary {
                        count: p.count,
                        sum: p.sum,
                        quantiles: p.quantile_values.into_iter().map(|q| (q.quantile, q.value)).collect(),
                    },
                )?);
            }
        }
    }
    Ok(())
}

pub(crate) fn metrics(
    data: pm::MetricsData,
    ctx: &RegionContext,
    unknown: &mut usize,
) -> Result<Vec<MetricPoint>, DecodeError> {
    let mut out = Vec::new();
    for rm in data.resource_metrics {
        let n = rm
            .scope_metrics
            .iter()
            .flat_map(|s| &s.metrics)
            .map(data_point_count)
            .sum();
        let ob = OriginBuilder::new(rm.resource, ctx, unknown, n)?;
        for sm in rm.scope_metrics {
            let origin = ob.scope(sm.scope)?;
            for m in sm.metrics {
                metric_points(m, &origin, &mut out)?;
            }
        }
    }
    Ok(out)
}

fn data_point_count(m: &pm::Metric) -> usize {
    match &m.data {
        None => 0,
        Some(pm::metric::Data::Gauge(g)) => g.data_points.len(),
        Some(pm::metric::Data::Sum(s)) => s.data_points.len(),
        Some(pm::metric::Data::Histogram(h)) => h.data_points.len(),
        Some(pm::metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(pm::metric::Data::Summary(s)) => s.data_points.len(),
    }
}

fn trace_id(b: &[u8], what: &str) -> Result<TraceId, DecodeError> {
    TraceId::from_slice(b).ok_or_else(|| DecodeError::Invalid(format!("{what} has {} bytes, expected 16", b.len())))
}

fn span_id(b: &[u8], what: &str) -> Result<SpanId, DecodeError> {
    SpanId::from_slice(b).ok_or_else(|| DecodeError::Invalid(format!("{what} has {} bytes, expected 8", b.len())))
}

fn optional_span_id(b: &[u8], what: &str) -> Result<Option<SpanId>, DecodeError> {
    if b.is_empty() {
        return Ok(None);
    }
    let id = span_id(b, what)?;
    Ok((!id.is_zero()).then_some(id))
}

fn span(s: pt::Span, origin: &Origin) -> Result<Span, DecodeError> {
    let tid = trace_id(&s.trace_id, "span trace_id")?;
    if tid.is_zero() {
        return Err(DecodeError::Invalid("span trace_id is all zeroes".into()));
    }
    let sid = span_id(&s.span_id, "span span_id")?;
    let (status_code, status_message) = match s.status {
        Some(st) => (StatusCode::from_i32(st.code), st.message),
        None => (StatusCode::Unset, String::new()),
    };
    Ok(Span {
        origin: origin.clone(),
        trace_id: tid,
        span_id: sid,
        parent_span_id: optional_span_id(&s.parent_span_id, "span parent_span_id")?,
        trace_state: s.trace_state,
        name: s.name,
        kind: SpanKind::from_i32(s.kind),
        start_time_unix_nano: s.start_time_unix_nano,
        end_time_unix_nano: s.end_time_unix_nano,
        attributes: attributes(s.attributes)?,
        events: s
            .events
            .into_iter()
            .map(|e| {
                Ok(SpanEvent {
                    time_unix_nano: e.time_unix_nano,
                    name: e.name,
                    attributes: attributes(e.attributes)?,
                })
            })
            .collect::<Result<_, DecodeError>>()?,
        links: s
            .links
            .into_iter()
            .map(|l| {
                Ok(SpanLink {
                    trace_id: trace_id(&l.trace_id, "span link trace_id")?,
                    span_id: span_id(&l.span_id, "span link span_id")?,
                    attributes: attributes(l.attributes)?,
                })
            })
            .collect::<Result<_, DecodeError>>()?,
        status_code,
        status_message,
    })
}

pub(crate) fn traces(data: pt::TracesData, ctx: &RegionContext, unknown: &mut usize) -> Result<Vec<Span>, DecodeError> {
    let mut out = Vec::new();
    for rs in data.resource_spans {
        let n = rs.scope_spans.iter().map(|s| s.spans.len()).sum();
        let ob = OriginBuilder::new(rs.resource, ctx, unknown, n)?;
        for ss in rs.scope_spans {
            let origin = ob.scope(ss.scope)?;
            out.reserve(ss.spans.len());
            for s in ss.spans {
                out.push(span(s, &origin)?);
            }
        }
    }
    Ok(out)
}

fn log_record(r: pl::LogRecord, origin: &Origin) -> Result<LogRecord, DecodeError> {
    let trace_id = if r.trace_id.is_empty() {
        None
    } else {
        Some(trace_id(&r.trace_id, "log record trace_id")?).filter(|t| !t.is_zero())
    };
    Ok(LogRecord {
        origin: origin.clone(),
        time_unix_nano: r.time_unix_nano,
        observed_time_unix_nano: r.observed_time_unix_nano,
        severity_number: r.severity_number,
        severity_text: r.severity_text,
        body: match r.body {
            Some(b) => any_value(b, 0)?,
            None => AnyValue::Empty,
        },
        attributes: attributes(r.attributes)?,
        trace_id,
        span_id: optional_span_id(&r.span_id, "log record span_id")?,
        flags: r.flags,
        event_name: r.event_name,
    })
}

pub(crate) fn logs(
    data: pl::LogsData,
    ctx: &RegionContext,
    unknown: &mut usize,
) -> Result<Vec<LogRecord>, DecodeError> {
    let mut out = Vec::new();
    for rl in data.resource_logs {
        let n = rl.scope_logs.iter().map(|s| s.log_records.len()).sum();
        let ob = OriginBuilder::new(rl.resource, ctx, unknown, n)?;
        for sl in rl.scope_logs {
            let origin = ob.scope(sl.scope)?;
            out.reserve(sl.log_records.len());
            for r in sl.log_records {
                out.push(log_record(r, &origin)?);
            }
        }
    }
    Ok(out)
}
