//! The internal data model every operator works on.
//!
//! One OTLP message fans out into many records: every metric data point, span and log record
//! becomes one [`MetricPoint`], [`Span`] or [`LogRecord`]. The resource and scope a record came
//! with are shared behind an [`Arc`], so fanning out costs one pointer per record, not a copy of
//! the resource's attributes.
//!
//! Every record carries its `region`: the resource attribute `cloud.region`, else the region
//! configured for the source topic, else the region Kafka header, else [`UNKNOWN_REGION`].

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The region given to records that carry none, from no source.
pub const UNKNOWN_REGION: &str = "unknown";

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    /// Metric data points.
    Metrics,
    /// Spans.
    Traces,
    /// Log records.
    Logs,
}

impl Signal {
    /// All signals, in a fixed order.
    pub const ALL: [Signal; 3] = [Signal::Metrics, Signal::Traces, Signal::Logs];

    /// The lowercase name used in config, labels and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Traces => "traces",
            Signal::Logs => "logs",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Signal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "metrics" => Ok(Signal::Metrics),
            "traces" | "spans" => Ok(Signal::Traces),
            "logs" => Ok(Signal::Logs),
            other => Err(format!("unknown signal `{other}`, expected metrics, traces or logs")),
        }
    }
}

/// An OTLP `AnyValue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AnyValue {
    /// A string.
    String(String),
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A double; NaN and infinities are kept as they came.
    Double(f64),
    /// Raw bytes (shown as an array of numbers in JSON).
    Bytes(Vec<u8>),
    /// An array of values.
    Array(Vec<AnyValue>),
    /// A list of key-value pairs.
    KvList(Vec<KeyValue>),
    /// An empty value (the OTLP `AnyValue` with no field set).
    Empty,
}

impl AnyValue {
    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AnyValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value rendered as text, as Prometheus labels and log documents show it.
    pub fn to_text(&self) -> String {
        match self {
            AnyValue::String(s) => s.clone(),
            AnyValue::Bool(b) => b.to_string(),
            AnyValue::Int(i) => i.to_string(),
            AnyValue::Double(d) => d.to_string(),
            AnyValue::Bytes(b) => hex::encode(b),
            AnyValue::Empty => String::new(),
            other => serde_json::to_string(other).unwrap_or_default(),
        }
    }
}

/// One attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The attribute's key.
    pub key: String,
    /// The attribute's value.
    pub value: AnyValue,
}

/// An ordered list of attributes, as OTLP carries them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Attributes(pub Vec<KeyValue>);

impl Attributes {
    /// The value of the first attribute named `key`.
    pub fn get(&self, key: &str) -> Option<&AnyValue> {
        self.0.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
    }

    /// The string value of the attribute named `key`.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(AnyValue::as_str)
    }

    /// The number of attributes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The entity that produced the records: OTLP `Resource`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// Resource attributes (`service.name`, `cloud.region`, ...).
    pub attributes: Attributes,
}

impl Resource {
    /// `service.name`, if set.
    pub fn service_name(&self) -> Option<&str> {
        self.attributes.get_str("service.name")
    }
}

/// The instrumentation scope: OTLP `InstrumentationScope`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scope {
    /// Scope name.
    pub name: String,
    /// Scope version.
    pub version: String,
    /// Scope attributes.
    pub attributes: Attributes,
}

/// Where a record came from, shared by every record of one resource and scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    /// The record's region (see the module docs for where it comes from).
    pub region: Arc<str>,
    /// The resource.
    pub resource: Arc<Resource>,
    /// The instrumentation scope.
    pub scope: Arc<Scope>,
}

/// OTLP aggregation temporality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Temporality {
    /// Unspecified (invalid for sums and histograms, kept so it can be reported).
    Unspecified,
    /// Each point covers the interval since the previous point.
    Delta,
    /// Each point covers the interval since the series started.
    Cumulative,
}

/// A number as OTLP carries it: integer or double.
///
/// In JSON, NaN and the infinities are written as the strings `NaN`, `+Inf` and `-Inf` (as
/// Prometheus writes them), since JSON numbers cannot hold them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// `as_int`.
    Int(i64),
    /// `as_double`.
    Double(f64),
}

impl Serialize for Number {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Number::Int(i) => s.serialize_i64(i),
            Number::Double(d) if d.is_finite() => s.serialize_f64(d),
            Number::Double(d) if d.is_nan() => s.serialize_str("NaN"),
            Number::Double(d) if d > 0.0 => s.serialize_str("+Inf"),
            Number::Double(_) => s.serialize_str("-Inf"),
        }
    }
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<'a> {
            Int(i64),
            Double(f64),
            Str(&'a str),
        }
        match Raw::deserialize(d)? {
            Raw::Int(i) => Ok(Number::Int(i)),
            Raw::Double(f) => Ok(Number::Double(f)),
            Raw::Str("NaN") => Ok(Number::Double(f64::NAN)),
            Raw::Str("+Inf" | "Inf") => Ok(Number::Double(f64::INFINITY)),
            Raw::Str("-Inf") => Ok(Number::Double(f64::NEG_INFINITY)),
            Raw::Str(other) => Err(serde::de::Error::custom(format!("`{other}` is not a number"))),
        }
    }
}

impl Number {
    /// The value as a double, as Prometheus stores it.
    pub fn as_f64(self) -> f64 {
        match self {
            // Precision loss above 2^53 is what Prometheus does too.
            #[allow(clippy::cast_precision_loss)]
            Number::Int(i) => i as f64,
            Number::Double(d) => d,
        }
    }
}

/// The buckets of one side of an exponential histogram.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExpBuckets {
    /// Index of the first bucket.
    pub offset: i32,
    /// Counts of consecutive buckets from `offset`.
    pub bucket_counts: Vec<u64>,
}

/// The value of one metric data point, by OTLP metric type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PointValue {
    /// A gauge.
    Gauge {
        /// The value.
        value: Number,
    },
    /// A sum (counter or up-down counter).
    Sum {
        /// The value.
        value: Number,
        /// Delta or cumulative.
        temporality: Temporality,
        /// Whether the sum only goes up (a counter).
        monotonic: bool,
    },
    /// An explicit-bucket histogram.
    Histogram {
        /// Number of observations.
        count: u64,
        /// Sum of observations, if recorded.
        sum: Option<f64>,
        /// Smallest observation, if recorded.
        min: Option<f64>,
        /// Largest observation, if recorded.
        max: Option<f64>,
        /// Upper bounds of the buckets (exclusive of the implicit +Inf bucket).
        bounds: Vec<f64>,
        /// Per-bucket counts, not cumulative; one more than `bounds`.
        bucket_counts: Vec<u64>,
        /// Delta or cumulative.
        temporality: Temporality,
    },
    /// An exponential (base-2) histogram.
    ExponentialHistogram {
        /// Number of observations.
        count: u64,
        /// Sum of observations, if recorded.
        sum: Option<f64>,
        /// Smallest observation, if recorded.
        min: Option<f64>,
        /// Largest observation, if recorded.
        max: Option<f64>,
        /// Resolution: the base is 2^(2^-scale).
        scale: i32,
        /// Observations that fell into the zero bucket.
        zero_count: u64,
        /// Width of the zero bucket.
        zero_threshold: f64,
        /// Positive buckets.
        positive: ExpBuckets,
        /// Negative buckets.
        negative: ExpBuckets,
        /// Delta or cumulative.
        temporality: Temporality,
    },
    /// A summary with precomputed quantiles.
    Summary {
        /// Number of observations.
        count: u64,
        /// Sum of observations.
        sum: f64,
        /// `(quantile, value)` pairs.
        quantiles: Vec<(f64, f64)>,
    },
}

impl PointValue {
    /// The type's name, as in OTLP.
    pub fn kind(&self) -> &'static str {
        match self {
            PointValue::Gauge { .. } => "gauge",
            PointValue::Sum { .. } => "sum",
            PointValue::Histogram { .. } => "histogram",
            PointValue::ExponentialHistogram { .. } => "exponential_histogram",
            PointValue::Summary { .. } => "summary",
        }
    }
}

/// Metric identity fields shared by all points of one OTLP `Metric`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricDescriptor {
    /// The OTLP metric name (`dwcp.latency`), not yet normalized for Prometheus.
    pub name: String,
    /// Description.
    pub description: String,
    /// UCUM unit (`ms`, `By`, `{request}`).
    pub unit: String,
}

/// One metric data point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// Region, resource and scope.
    pub origin: Origin,
    /// Name, description and unit, shared by the points of one metric.
    pub metric: Arc<MetricDescriptor>,
    /// The point's own attributes.
    pub attributes: Attributes,
    /// Start of the interval the point covers (0 when unset).
    pub start_time_unix_nano: u64,
    /// The point's timestamp.
    pub time_unix_nano: u64,
    /// The value.
    pub value: PointValue,
    /// OTLP data point flags (bit 0: no recorded value).
    pub flags: u32,
}

/// OTLP span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    /// Unspecified.
    Unspecified,
    /// Internal operation.
    Internal,
    /// Server side of a remote call.
    Server,
    /// Client side of a remote call.
    Client,
    /// Producer of a message.
    Producer,
    /// Consumer of a message.
    Consumer,
}

impl SpanKind {
    /// From the OTLP enum number; unknown numbers become `Unspecified`.
    pub fn from_i32(v: i32) -> Self {
        match v {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }
}

/// OTLP span status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusCode {
    /// Unset.
    Unset,
    /// Ok.
    Ok,
    /// Error.
    Error,
}

impl StatusCode {
    /// From the OTLP enum number; unknown numbers become `Unset`.
    pub fn from_i32(v: i32) -> Self {
        match v {
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }
}

/// A 16-byte trace id, shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id, shown as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

macro_rules! hex_id {
    ($t:ident, $n:expr) => {
        impl $t {
            /// Whether every byte is zero (the OTLP "absent" id).
            pub fn is_zero(&self) -> bool {
                self.0.iter().all(|b| *b == 0)
            }

            /// From bytes; `None` unless there are exactly the right number of them.
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                <[u8; $n]>::try_from(b).ok().map($t)
            }

            /// From lowercase or uppercase hex.
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut out = [0u8; $n];
                hex::decode_to_slice(s, &mut out).ok()?;
                Some($t(out))
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $t::from_hex(&s)
                    .ok_or_else(|| serde::de::Error::custom(concat!("expected ", stringify!($n), " hex-encoded bytes")))
            }
        }
    };
}

hex_id!(TraceId, 16);
hex_id!(SpanId, 8);

/// A span event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanEvent {
    /// Timestamp.
    pub time_unix_nano: u64,
    /// Event name.
    pub name: String,
    /// Event attributes.
    pub attributes: Attributes,
}

/// A span link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanLink {
    /// Linked trace.
    pub trace_id: TraceId,
    /// Linked span.
    pub span_id: SpanId,
    /// Link attributes.
    pub attributes: Attributes,
}

/// One span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// Region, resource and scope.
    pub origin: Origin,
    /// Trace id.
    pub trace_id: TraceId,
    /// Span id.
    pub span_id: SpanId,
    /// Parent span id; `None` for a root span.
    pub parent_span_id: Option<SpanId>,
    /// W3C trace state.
    pub trace_state: String,
    /// Operation name.
    pub name: String,
    /// Span kind.
    pub kind: SpanKind,
    /// Start time.
    pub start_time_unix_nano: u64,
    /// End time.
    pub end_time_unix_nano: u64,
    /// Attributes.
    pub attributes: Attributes,
    /// Events.
    pub events: Vec<SpanEvent>,
    /// Links.
    pub links: Vec<SpanLink>,
    /// Status code.
    pub status_code: StatusCode,
    /// Status message.
    pub status_message: String,
}

impl Span {
    /// End minus start, zero when the end precedes the start.
    pub fn duration_nanos(&self) -> u64 {
        self.end_time_unix_nano.saturating_sub(self.start_time_unix_nano)
    }
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Region, resource and scope.
    pub origin: Origin,
    /// Time of the event (0 when unknown).
    pub time_unix_nano: u64,
    /// Time the record was observed by the collection system.
    pub observed_time_unix_nano: u64,
    /// OTLP severity number (1-24, 0 unspecified).
    pub severity_number: i32,
    /// Severity text as the source wrote it.
    pub severity_text: String,
    /// Body.
    pub body: AnyValue,
    /// Attributes.
    pub attributes: Attributes,
    /// Correlated trace, if any.
    pub trace_id: Option<TraceId>,
    /// Correlated span, if any.
    pub span_id: Option<SpanId>,
    /// Flags.
    pub flags: u32,
    /// Event name (OTLP 1.5+), empty when unset.
    pub event_name: String,
}

impl LogRecord {
    /// The event timestamp, falling back to the observed time as OTLP recommends.
    pub fn timestamp(&self) -> u64 {
        if self.time_unix_nano != 0 {
            self.time_unix_nano
        } else {
            self.observed_time_unix_nano
        }
    }
}

/// The records decoded from one message, all of one signal.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Records {
    /// Metric points.
    Metrics(Vec<MetricPoint>),
    /// Spans.
    Traces(Vec<Span>),
    /// Log records.
    Logs(Vec<LogRecord>),
}

impl Records {
    /// Number of records.
    pub fn len(&self) -> usize {
        match self {
            Records::Metrics(v) => v.len(),
            Records::Traces(v) => v.len(),
            Records::Logs(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The signal.
    pub fn signal(&self) -> Signal {
        match self {
            Records::Metrics(_) => Signal::Metrics,
            Records::Traces(_) => Signal::Traces,
            Records::Logs(_) => Signal::Logs,
        }
    }

    /// The region of each record, in order.
    pub fn regions(&self) -> Box<dyn Iterator<Item = &Arc<str>> + '_> {
        match self {
            Records::Metrics(v) => Box::new(v.iter().map(|r| &r.origin.region)),
            Records::Traces(v) => Box::new(v.iter().map(|r| &r.origin.region)),
            Records::Logs(v) => Box::new(v.iter().map(|r| &r.origin.region)),
        }
    }
}
