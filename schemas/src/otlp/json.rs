//! OTLP/JSON, as the OTLP specification defines it and the Collector's `otlp_json` encoding writes it.
//!
//! The rules, from the specification's "JSON Protobuf Encoding": field names in lowerCamelCase
//! (the original snake_case names are accepted too, as the protobuf JSON mapping requires of
//! parsers); trace and span ids as hex strings, not base64; enums as integers; 64-bit integers as
//! decimal strings or plain numbers; doubles as numbers or the strings `NaN`, `Infinity` and
//! `-Infinity`; `bytesValue` as base64; unknown fields ignored.
//!
//! The JSON is read into mirror structs and turned into the prost messages, so both encodings
//! share one conversion into the model.

use std::fmt;

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1 as pc;
use opentelemetry_proto::tonic::logs::v1 as pl;
use opentelemetry_proto::tonic::metrics::v1 as pm;
use opentelemetry_proto::tonic::resource::v1 as pr;
use opentelemetry_proto::tonic::trace::v1 as pt;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

// ---------- scalar helpers ----------

struct IntVisitor<T>(std::marker::PhantomData<T>);

macro_rules! int_visitor {
    ($t:ty, $name:literal) => {
        impl<'de> Visitor<'de> for IntVisitor<$t> {
            type Value = $t;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(concat!("a ", $name, " as a number or a decimal string"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<$t, E> {
                <$t>::try_from(v).map_err(|_| E::custom(concat!("out of range for ", $name)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<$t, E> {
                <$t>::try_from(v).map_err(|_| E::custom(concat!("out of range for ", $name)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<$t, E> {
                // The protobuf JSON mapping allows integral values written as floats (`1e3`).
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_precision_loss,
                    clippy::cast_sign_loss
                )]
                if v.fract() == 0.0 && v >= <$t>::MIN as f64 && v <= <$t>::MAX as f64 {
                    Ok(v as $t)
                } else {
                    Err(E::custom(concat!("not a valid ", $name)))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<$t, E> {
                v.trim()
                    .parse::<$t>()
                    .map_err(|_| E::custom(format!(concat!("`{}` is not a valid ", $name), v)))
            }
        }
    };
}

int_visitor!(u64, "uint64");
int_visitor!(i64, "int64");
int_visitor!(u32, "uint32");
int_visitor!(i32, "int32");

fn int<'de, D: Deserializer<'de>, T>(d: D) -> Result<T, D::Error>
where
    IntVisitor<T>: Visitor<'de, Value = T>,
{
    d.deserialize_any(IntVisitor(std::marker::PhantomData))
}

#[derive(Default)]
struct Int<T>(T);
impl<'de, T> Deserialize<'de> for Int<T>
where
    IntVisitor<T>: Visitor<'de, Value = T>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int(d).map(Int)
    }
}

struct F64Visitor;
impl Visitor<'_> for F64Visitor {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, or one of the strings NaN, Infinity, -Infinity")
    }
    #[allow(clippy::cast_precision_loss)]
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    #[allow(clippy::cast_precision_loss)]
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        match v {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other
                .parse()
                .map_err(|_| E::custom(format!("`{other}` is not a valid double"))),
        }
    }
}

#[derive(Default)]
struct F64(f64);
impl<'de> Deserialize<'de> for F64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(F64Visitor).map(F64)
    }
}

fn u64_<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    int(d)
}
fn i32_<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    int(d)
}
fn u32_<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int(d)
}
fn f64_<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_any(F64Visitor)
}
fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(Option::<F64>::deserialize(d)?.map(|v| v.0))
}
fn vec_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    Ok(Vec::<Int<u64>>::deserialize(d)?.into_iter().map(|v| v.0).collect())
}
fn vec_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<F64>::deserialize(d)?.into_iter().map(|v| v.0).collect())
}
fn hex_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    hex::decode(s.as_ref()).map_err(|e| de::Error::custom(format!("id `{s}` is not hex: {e}")))
}
fn base64_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    base64::engine::general_purpose::STANDARD
        .decode(s.as_ref())
        .map_err(|e| de::Error::custom(format!("bytesValue is not base64: {e}")))
}

// ---------- common ----------

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct AnyValue {
    string_value: Option<String>,
    #[serde(deserialize_with = "opt_bool")]
    bool_value: Option<bool>,
    #[serde(deserialize_with = "opt_i64")]
    int_value: Option<i64>,
    #[serde(deserialize_with = "opt_f64")]
    double_value: Option<f64>,
    array_value: Option<ArrayValue>,
    kvlist_value: Option<KvList>,
    #[serde(deserialize_with = "opt_base64")]
    bytes_value: Option<Vec<u8>>,
}

fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Option::<bool>::deserialize(d)
}
fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(Option::<Int<i64>>::deserialize(d)?.map(|v| v.0))
}
fn opt_base64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    #[derive(Deserialize)]
    struct B(#[serde(deserialize_with = "base64_bytes")] Vec<u8>);
    Ok(Option::<B>::deserialize(d)?.map(|b| b.0))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ArrayValue {
    values: Vec<AnyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KvList {
    values: Vec<KeyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KeyValue {
    key: String,
    value: Option<AnyValue>,
}

impl From<AnyValue> for pc::AnyValue {
    fn from(v: AnyValue) -> Self {
        use pc::any_value::Value;
        let value = if let Some(s) = v.string_value {
            Some(Value::StringValue(s))
        } else if let Some(b) = v.bool_value {
            Some(Value::BoolValue(b))
        } else if let Some(i) = v.int_value {
            Some(Value::IntValue(i))
        } else if let Some(d) = v.double_value {
            Some(Value::DoubleValue(d))
        } else if let Some(a) = v.array_value {
            Some(Value::ArrayValue(pc::ArrayValue {
                values: a.values.into_iter().map(Into::into).collect(),
            }))
        } else if let Some(l) = v.kvlist_value {
            Some(Value::KvlistValue(pc::KeyValueList { values: kvs(l.values) }))
        } else {
            v.bytes_value.map(Value::BytesValue)
        };
        pc::AnyValue { value }
    }
}

fn kvs(v: Vec<KeyValue>) -> Vec<pc::KeyValue> {
    v.into_iter()
        .map(|kv| pc::KeyValue {
            key: kv.key,
            value: kv.value.map(Into::into),
            key_strindex: 0,
        })
        .collect()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Resource {
    attributes: Vec<KeyValue>,
}

impl From<Resource> for pr::Resource {
    fn from(r: Resource) -> Self {
        pr::Resource {
            attributes: kvs(r.attributes),
            ..Default::default()
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Scope {
    name: String,
    version: String,
    attributes: Vec<KeyValue>,
}

impl From<Scope> for pc::InstrumentationScope {
    fn from(s: Scope) -> Self {
        pc::InstrumentationScope {
            name: s.name,
            version: s.version,
            attributes: kvs(s.attributes),
            ..Default::default()
        }
    }
}

// ---------- metrics ----------

/// `MetricsData` / `ExportMetricsServiceRequest` in OTLP/JSON.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct MetricsData {
    #[serde(alias = "resource_metrics")]
    resource_metrics: Vec<ResourceMetrics>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ResourceMetrics {
    resource: Option<Resource>,
    #[serde(alias = "scope_metrics")]
    scope_metrics: Vec<ScopeMetrics>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ScopeMetrics {
    scope: Option<Scope>,
    metrics: Vec<Metric>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Metric {
    name: String,
    description: String,
    unit: String,
    gauge: Option<Gauge>,
    sum: Option<Sum>,
    histogram: Option<Histogram>,
    #[serde(alias = "exponential_histogram")]
    exponential_histogram: Option<ExpHistogram>,
    summary: Option<Summary>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Gauge {
    #[serde(alias = "data_points")]
    data_points: Vec<NumberPoint>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Sum {
    #[serde(alias = "data_points")]
    data_points: Vec<NumberPoint>,
    #[serde(alias = "aggregation_temporality", deserialize_with = "i32_")]
    aggregation_temporality: i32,
    #[serde(alias = "is_monotonic")]
    is_monotonic: bool,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Histogram {
    #[serde(alias = "data_points")]
    data_points: Vec<HistogramPoint>,
    #[serde(alias = "aggregation_temporality", deserialize_with = "i32_")]
    aggregation_temporality: i32,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ExpHistogram {
    #[serde(alias = "data_points")]
    data_points: Vec<ExpHistogramPoint>,
    #[serde(alias = "aggregation_temporality", deserialize_with = "i32_")]
    aggregation_temporality: i32,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Summary {
    #[serde(alias = "data_points")]
    data_points: Vec<SummaryPoint>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct NumberPoint {
    attributes: Vec<KeyValue>,
    #[serde(alias = "start_time_unix_nano", deserialize_with = "u64_")]
    start_time_unix_nano: u64,
    #[serde(alias = "time_unix_nano", deserialize_with = "u64_")]
    time_unix_nano: u64,
    #[serde(alias = "as_int", deserialize_with = "opt_i64")]
    as_int: Option<i64>,
    #[serde(alias = "as_double", deserialize_with = "opt_f64")]
    as_double: Option<f64>,
    #[serde(deserialize_with = "u32_")]
    flags: u32,
}

impl From<NumberPoint> for pm::NumberDataPoint {
    fn from(p: NumberPoint) -> Self {
        use pm::number_data_point::Value;
        pm::NumberDataPoint {
            attributes: kvs(p.attributes),
            start_time_unix_nano: p.start_time_unix_nano,
            time_unix_nano: p.time_unix_nano,
            value: p.as_int.map(Value::AsInt).or(p.as_double.map(Value::AsDouble)),
            flags: p.flags,
            exemplars: Vec::new(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct HistogramPoint {
    attributes: Vec<KeyValue>,
    #[serde(alias = "start_time_unix_nano", deserialize_with = "u64_")]
    start_time_unix_nano: u64,
    #[serde(alias = "time_unix_nano", deserialize_with = "u64_")]
    time_unix_nano: u64,
    #[serde(deserialize_with = "u64_")]
    count: u64,
    #[serde(deserialize_with = "opt_f64")]
    sum: Option<f64>,
    #[serde(alias = "bucket_counts", deserialize_with = "vec_u64")]
    bucket_counts: Vec<u64>,
    #[serde(alias = "explicit_bounds", deserialize_with = "vec_f64")]
    explicit_bounds: Vec<f64>,
    #[serde(deserialize_with = "u32_")]
    flags: u32,
    #[serde(deserialize_with = "opt_f64")]
    min: Option<f64>,
    #[serde(deserialize_with = "opt_f64")]
    max: Option<f64>,
}

impl From<HistogramPoint> for pm::HistogramDataPoint {
    fn from(p: HistogramPoint) -> Self {
        pm::HistogramDataPoint {
            attributes: kvs(p.attributes),
            start_time_unix_nano: p.start_time_unix_nano,
            time_unix_nano: p.time_unix_nano,
            count: p.count,
            sum: p.sum,
            bucket_counts: p.bucket_counts,
            explicit_bounds: p.explicit_bounds,
            exemplars: Vec::new(),
            flags: p.flags,
            min: p.min,
            max: p.max,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Buckets {
    #[serde(deserialize_with = "i32_")]
    offset: i32,
    #[serde(alias = "bucket_counts", deserialize_with = "vec_u64")]
    bucket_counts: Vec<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ExpHistogramPoint {
    attributes: Vec<KeyValue>,
    #[serde(alias = "start_time_unix_nano", deserialize_with = "u64_")]
    start_time_unix_nano: u64,
    #[serde(alias = "time_unix_nano", deserialize_with = "u64_")]
    time_unix_nano: u64,
    #[serde(deserialize_with = "u64_")]
    count: u64,
    #[serde(deserialize_with = "opt_f64")]
    sum: Option<f64>,
    #[serde(deserialize_with = "i32_")]
    scale: i32,
    #[serde(alias = "zero_count", deserialize_with = "u64_")]
    zero_count: u64,
    positive: Option<Buckets>,
    negative: Option<Buckets>,
    #[serde(deserialize_with = "u32_")]
    flags: u32,
    #[serde(deserialize_with = "opt_f64")]
    min: Option<f64>,
    #[serde(deserialize_with = "opt_f64")]
    max: Option<f64>,
    #[serde(alias = "zero_threshold", deserialize_with = "f64_")]
    zero_threshold: f64,
}

impl From<ExpHistogramPoint> for pm::ExponentialHistogramDataPoint {
    fn from(p: ExpHistogramPoint) -> Self {
        let b = |b: Option<Buckets>| {
            b.map(|b| pm::exponential_histogram_data_point::Buckets {
                offset: b.offset,
                bucket_counts: b.bucket_counts,
            })
        };
        pm::ExponentialHistogramDataPoint {
            attributes: kvs(p.attributes),
            start_time_unix_nano: p.start_time_unix_nano,
            time_unix_nano: p.time_unix_nano,
            count: p.count,
            sum: p.sum,
            scale: p.scale,
            zero_count: p.zero_count,
            positive: b(p.positive),
            negative: b(p.negative),
            flags: p.flags,
            exemplars: Vec::new(),
            min: p.min,
            max: p.max,
            zero_threshold: p.zero_threshold,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Quantile {
    #[serde(deserialize_with = "f64_")]
    quantile: f64,
    #[serde(deserialize_with = "f64_")]
    value: f64,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct SummaryPoint {
    attributes: Vec<KeyValue>,
    #[serde(alias = "start_time_unix_nano", deserialize_with = "u64_")]
    start_time_unix_nano: u64,
    #[serde(alias = "time_unix_nano", deserialize_with = "u64_")]
    time_unix_nano: u64,
    #[serde(deserialize_with = "u64_")]
    count: u64,
    #[serde(deserialize_with = "f64_")]
    sum: f64,
    #[serde(alias = "quantile_values")]
    quantile_values: Vec<Quantile>,
    #[serde(deserialize_with = "u32_")]
    flags: u32,
}

impl From<SummaryPoint> for pm::SummaryDataPoint {
    fn from(p: SummaryPoint) -> Self {
        pm::SummaryDataPoint {
            attributes: kvs(p.attributes),
            start_time_unix_nano: p.start_time_unix_nano,
            time_unix_nano: p.time_unix_nano,
            count: p.count,
            sum: p.sum,
            quantile_values: p
                .quantile_values
                .into_iter()
                .map(|q| pm::summary_data_point::ValueAtQuantile {
                    quantile: q.quantile,
                    value: q.value,
                })
                .collect(),
            flags: p.flags,
        }
    }
}

fn conv<A, B: From<A>>(v: Vec<A>) -> Vec<B> {
    v.into_iter().map(Into::into).collect()
}

impl From<Metric> for pm::Metric {
    fn from(m: Metric) -> Self {
        use pm::metric::Data;
        let data = if let Some(g) = m.gauge {
            Some(Data::Gauge(pm::Gauge {
                data_points: conv(g.data_points),
            }))
        } else if let Some(s) = m.sum {
            Some(Data::Sum(pm::Sum {
                data_points: conv(s.data_points),
                aggregation_temporality: s.aggregation_temporality,
                is_monotonic: s.is_monotonic,
            }))
        } else if let Some(h) = m.histogram {
            Some(Data::Histogram(pm::Histogram {
                data_points: conv(h.data_points),
                aggregation_temporality: h.aggregation_temporality,
            }))
        } else if let Some(h) = m.exponential_histogram {
            Some(Data::ExponentialHistogram(pm::ExponentialHistogram {
                data_points: conv(h.data_points),
                aggregation_temporality: h.aggregation_temporality,
            }))
        } else {
            m.summary.map(|s| {
                Data::Summary(pm::Summary {
                    data_points: conv(s.data_points),
                })
            })
        };
        pm::Metric {
            name: m.name,
            description: m.description,
            unit: m.unit,
            metadata: Vec::new(),
            data,
        }
    }
}

impl From<MetricsData> for pm::MetricsData {
    fn from(d: MetricsData) -> Self {
        pm::MetricsData {
            resource_metrics: d
                .resource_metrics
                .into_iter()
                .map(|rm| pm::ResourceMetrics {
                    resource: rm.resource.map(Into::into),
                    scope_metrics: rm
                        .scope_metrics
                        .into_iter()
                        .map(|sm| pm::ScopeMetrics {
                            scope: sm.scope.map(Into::into),
                            metrics: conv(sm.metrics),
                            schema_url: String::new(),
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
        }
    }
}

// ---------- traces ----------

/// `TracesData` / `ExportTraceServiceRequest` in OTLP/JSON.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct TracesData {
    #[serde(alias = "resource_spans")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ResourceSpans {
    resource: Option<Resource>,
    #[serde(alias = "scope_spans")]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ScopeSpans {
    scope: Option<Scope>,
    spans: Vec<Span>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Span {
    #[serde(alias = "trace_id", deserialize_with = "hex_bytes")]
    trace_id: Vec<u8>,
    #[serde(alias = "span_id", deserialize_with = "hex_bytes")]
    span_id: Vec<u8>,
    #[serde(alias = "trace_state")]
    trace_state: String,
    #[serde(alias = "parent_span_id", deserialize_with = "hex_bytes")]
    parent_span_id: Vec<u8>,
    #[serde(deserialize_with = "u32_")]
    flags: u32,
    name: String,
    #[serde(deserialize_with = "i32_")]
    kind: i32,
    #[serde(alias = "start_time_unix_nano", deserialize_with = "u64_")]
    start_time_unix_nano: u64,
    #[serde(alias = "end_time_unix_nano", deserialize_with = "u64_")]
    end_time_unix_nano: u64,
    attributes: Vec<KeyValue>,
    events: Vec<Event>,
    links: Vec<Link>,
    status: Option<Status>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Event {
    #[serde(alias = "time_unix_nano", deserialize_with = "u64_")]
    time_unix_nano: u64,
    name: String,
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Link {
    #[serde(alias = "trace_id", deserialize_with = "hex_bytes")]
    trace_id: Vec<u8>,
    #[serde(alias = "span_id", deserialize_with = "hex_bytes")]
    span_id: Vec<u8>,
    #[serde(alias = "trace_state")]
    trace_state: String,
    attributes: Vec<KeyValue>,
    #[serde(deserialize_with = "u32_")]
    flags: u32,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Status {
    message: String,
    #[serde(deserialize_with = "i32_")]
    code: i32,
}

impl From<Span> for pt::Span {
    fn from(s: Span) -> Self {
        pt::Span {
            trace_id: s.trace_id,
            span_id: s.span_id,
            trace_state: s.trace_state,
            parent_span_id: s.parent_span_id,
            flags: s.flags,
            name: s.name,
            kind: s.kind,
            start_time_unix_nano: s.start_time_unix_nano,
            end_time_unix_nano: s.end_time_unix_nano,
            attributes: kvs(s.attributes),
            dropped_attributes_count: 0,
            events: s
                .events
                .into_iter()
                .map(|e| pt::span::Event {
                    time_unix_nano: e.time_unix_nano,
                    name: e.name,
                    attributes: kvs(e.attributes),
                    dropped_attributes_count: 0,
                })
                .collect(),
            dropped_events_count: 0,
            links: s
                .links
                .into_iter()
                .map(|l| pt::span::Link {
                    trace_id: l.trace_id,
                    span_id: l.span_id,
                    trace_state: l.trace_state,
                    attributes: kvs(l.attributes),
                    dropped_attributes_count: 0,
                    flags: l.flags,
                })
                .collect(),
            dropped_links_count: 0,
            status: s.status.map(|st| pt::Status {
                message: st.message,
                code: st.code,
            }),
        }
    }
}

impl From<TracesData> for pt::TracesData {
    fn from(d: TracesData) -> Self {
        pt::TracesData {
            resource_spans: d
                .resource_spans
                .into_iter()
                .map(|rs| pt::ResourceSpans {
                    resource: rs.resource.map(Into::into),
                    scope_spans: rs
                        .scope_spans
                        .into_iter()
                        .map(|ss| pt::ScopeSpans {
                            scope: ss.scope.map(Into::into),
                            spans: conv(ss.spans),
                            schema_url: String::new(),
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
        }
    }
}

// ---------- logs ----------

/// `LogsData` / `ExportLogsServiceRequest` in OTLP/JSON.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct LogsData {
    #[serde(alias = "resource_logs")]
    resource_logs: Vec<ResourceLogs>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ResourceLogs {
    resource: Option<Resource>,
    #[serde(alias = "scope_logs")]
    scope_logs: Vec<ScopeLogs>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ScopeLogs {
    scope: Option<Scope>,
    #[serde(alias = "log_records")]
    log_records: Vec<LogRecord>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct LogRecord {
    #[serde(alias = "time_unix_nano", deserialize_with = "u64_")]
    time_unix_nano: u64,
    #[serde(alias = "observed_time_unix_nano", deserialize_with = "u64_")]
    observed_time_unix_nano: u64,
    #[serde(alias = "severity_number", deserialize_with = "i32_")]
    severity_number: i32,
    #[serde(alias = "severity_text")]
    severity_text: String,
    body: Option<AnyValue>,
    attributes: Vec<KeyValue>,
    #[serde(deserialize_with = "u32_")]
    flags: u32,
    #[serde(alias = "trace_id", deserialize_with = "hex_bytes")]
    trace_id: Vec<u8>,
    #[serde(alias = "span_id", deserialize_with = "hex_bytes")]
    span_id: Vec<u8>,
    #[serde(alias = "event_name")]
    event_name: String,
}

impl From<LogRecord> for pl::LogRecord {
    fn from(r: LogRecord) -> Self {
        pl::LogRecord {
            time_unix_nano: r.time_unix_nano,
            observed_time_unix_nano: r.observed_time_unix_nano,
            severity_number: r.severity_number,
            severity_text: r.severity_text,
            body: r.body.map(Into::into),
            attributes: kvs(r.attributes),
            dropped_attributes_count: 0,
            flags: r.flags,
            trace_id: r.trace_id,
            span_id: r.span_id,
            event_name: r.event_name,
        }
    }
}

impl From<LogsData> for pl::LogsData {
    fn from(d: LogsData) -> Self {
        pl::LogsData {
            resource_logs: d
                .resource_logs
                .into_iter()
                .map(|rl| pl::ResourceLogs {
                    resource: rl.resource.map(Into::into),
                    scope_logs: rl
                        .scope_logs
                        .into_iter()
                        .map(|sl| pl::ScopeLogs {
                            scope: sl.scope.map(Into::into),
                            log_records: conv(sl.log_records),
                            schema_url: String::new(),
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
        }
    }
}
