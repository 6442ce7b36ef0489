//! Documents: log records and Jaeger spans, their indices and deterministic ids.

use std::hash::Hasher as _;

use dwcp_operators::prom::StableHasher;
use dwcp_schemas::model::{AnyValue, Attributes, LogRecord, Span, SpanKind, StatusCode};
use serde_json::{json, Map, Value};

/// One document for `_bulk`.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Target index.
    pub index: String,
    /// Deterministic `_id`.
    pub id: String,
    /// The JSON source.
    pub source: Vec<u8>,
}

/// RFC 3339 with milliseconds, UTC, from Unix nanoseconds.
pub fn rfc3339(nanos: u64) -> String {
    #[allow(clippy::cast_possible_wrap)]
    let secs = (nanos / 1_000_000_000) as i64;
    let ms = (nanos / 1_000_000) % 1000;
    let (y, mo, d) = dwcp_operators::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// The daily index for a timestamp: `prefix-YYYY.MM.DD` (`sep` `.`) or `prefix-YYYY-MM-DD`.
pub fn index_for(prefix: &str, nanos: u64, sep: char) -> String {
    #[allow(clippy::cast_possible_wrap)]
    let (y, m, d) = dwcp_operators::civil_from_days((nanos / 1_000_000_000 / 86_400) as i64);
    format!("{prefix}-{y:04}{sep}{m:02}{sep}{d:02}")
}

fn any_json(v: &AnyValue) -> Value {
    match v {
        AnyValue::String(s) => Value::String(s.clone()),
        AnyValue::Bool(b) => Value::Bool(*b),
        AnyValue::Int(i) => json!(i),
        AnyValue::Double(d) if d.is_finite() => json!(d),
        AnyValue::Double(d) => Value::String(d.to_string()),
        AnyValue::Bytes(b) => Value::String(hex::encode(b)),
        AnyValue::Array(a) => Value::Array(a.iter().map(any_json).collect()),
        AnyValue::KvList(l) => Value::Object(l.iter().map(|kv| (kv.key.clone(), any_json(&kv.value))).collect()),
        AnyValue::Empty => Value::Null,
    }
}

fn attrs_json(a: &Attributes) -> Value {
    // Dotted keys stay flat strings: `service.name` as one field, as the OTel ES exporter's
    // "raw" mapping does, so a resource with 10,000 attributes cannot explode the mapping depth.
    Value::Object(
        a.0.iter()
            .map(|kv| (kv.key.clone(), any_json(&kv.value)))
            .collect::<Map<_, _>>(),
    )
}

fn id_of(parts: &[&[u8]]) -> String {
    let mut a = StableHasher::default();
    let mut b = StableHasher::default();
    b.write_u64(0x9e37_79b9_7f4a_7c15);
    for p in parts {
        a.write(p);
        a.write_u64(p.len() as u64);
        b.write(p);
        b.write_u64(p.len() as u64);
    }
    format!("{:016x}{:016x}", a.finish(), b.finish())
}

/// A log record as a document in `<prefix>-YYYY.MM.DD`.
pub fn log_document(r: &LogRecord, prefix: &str) -> Document {
    let ts = r.timestamp();
    let source = json!({
        "@timestamp": rfc3339(ts),
        "observed_timestamp": rfc3339(r.observed_time_unix_nano),
        "severity_number": r.severity_number,
        "severity_text": r.severity_text,
        "body": any_json(&r.body),
        "service": r.origin.resource.service_name().unwrap_or_default(),
        "region": &*r.origin.region,
        "resource": attrs_json(&r.origin.resource.attributes),
        "scope": {"name": r.origin.scope.name, "version": r.origin.scope.version},
        "attributes": attrs_json(&r.attributes),
        "trace_id": r.trace_id.map(|t| t.to_string()),
        "span_id": r.span_id.map(|s| s.to_string()),
        "event_name": r.event_name,
    });
    let bytes = serde_json::to_vec(&source).unwrap_or_default();
    Document {
        index: index_for(prefix, ts, '.'),
        id: id_of(&[&bytes]),
        source: bytes,
    }
}

fn tag(key: &str, v: &AnyValue) -> Value {
    let (t, value) = match v {
        AnyValue::Bool(b) => ("bool", json!(b)),
        AnyValue::Int(i) => ("int64", json!(i)),
        AnyValue::Double(d) if d.is_finite() => ("float64", json!(d)),
        AnyValue::Bytes(b) => ("binary", json!(hex::encode(b))),
        other => (
            "string",
            Value::String(match other {
                AnyValue::String(s) => s.clone(),
                o => o.to_text(),
            }),
        ),
    };
    json!({"key": key, "type": t, "value": value})
}

/// A span in Jaeger's Elasticsearch span format, in `<prefix>-YYYY-MM-DD`.
pub fn jaeger_span(s: &Span, prefix: &str) -> Document {
    let mut tags: Vec<Value> = s.attributes.0.iter().map(|kv| tag(&kv.key, &kv.value)).collect();
    let kind = match s.kind {
        SpanKind::Server => Some("server"),
        SpanKind::Client => Some("client"),
        SpanKind::Producer => Some("producer"),
        SpanKind::Consumer => Some("consumer"),
        SpanKind::Internal => Some("internal"),
        SpanKind::Unspecified => None,
    };
    if let Some(k) = kind {
        tags.push(json!({"key": "span.kind", "type": "string", "value": k}));
    }
    match s.status_code {
        StatusCode::Error => {
            tags.push(json!({"key": "error", "type": "bool", "value": true}));
            tags.push(json!({"key": "otel.status_code", "type": "string", "value": "ERROR"}));
        }
        StatusCode::Ok => tags.push(json!({"key": "otel.status_code", "type": "string", "value": "OK"})),
        StatusCode::Unset => {}
    }
    if !s.status_message.is_empty() {
        tags.push(json!({"key": "otel.status_description", "type": "string", "value": s.status_message}));
    }
    tags.push(json!({"key": "cloud.region", "type": "string", "value": &*s.origin.region}));
    let mut references: Vec<Value> = Vec::new();
    if let Some(p) = s.parent_span_id {
        references.push(json!({"refType": "CHILD_OF", "traceID": s.trace_id.to_string(), "spanID": p.to_string()}));
    }
    for l in &s.links {
        references.push(
            json!({"refType": "FOLLOWS_FROM", "traceID": l.trace_id.to_string(), "spanID": l.span_id.to_string()}),
        );
    }
    let logs: Vec<Value> = s
        .events
        .iter()
        .map(|e| {
            let mut fields = vec![json!({"key": "event", "type": "string", "value": e.name})];
            fields.extend(e.attributes.0.iter().map(|kv| tag(&kv.key, &kv.value)));
            json!({"timestamp": e.time_unix_nano / 1000, "fields": fields})
        })
        .collect();
    let process_tags: Vec<Value> = s
        .origin
        .resource
        .attributes
        .0
        .iter()
        .filter(|kv| kv.key != "service.name")
        .map(|kv| tag(&kv.key, &kv.value))
        .collect();
    let start_us = s.start_time_unix_nano / 1000;
    let source = json!({
        "traceID": s.trace_id.to_string(),
        "spanID": s.span_id.to_string(),
        "flags": 1,
        "operationName": s.name,
        "references": references,
        "startTime": start_us,
        "startTimeMillis": start_us / 1000,
        "duration": s.duration_nanos() / 1000,
        "tags": tags,
        "logs": logs,
        "process": {
            "serviceName": s.origin.resource.service_name().unwrap_or("unknown_service"),
            "tags": process_tags,
        },
        // dwcp extensions, ignored by Jaeger's reader: plain fields for region and error
        // queries without nested queries over the tags.
        "region": &*s.origin.region,
        "error": s.status_code == StatusCode::Error,
    });
    let bytes = serde_json::to_vec(&source).unwrap_or_default();
    let id = id_of(&[&s.trace_id.0, &s.span_id.0, &s.start_time_unix_nano.to_le_bytes()]);
    Document {
        index: index_for(prefix, s.start_time_unix_nano, '-'),
        id,
        source: bytes,
    }
}

/// The index templates: logs and Jaeger spans (the fields Jaeger queries as keywords, tags
/// nested as Jaeger's own template has them).
pub fn templates(logs_prefix: &str, spans_prefix: &str) -> Vec<(String, Value)> {
    let kv_nested = json!({"type": "nested", "dynamic": false, "properties": {
        "key": {"type": "keyword"}, "type": {"type": "keyword"}, "value": {"type": "keyword"}}});
    vec![
        (
            format!("{logs_prefix}-template"),
            json!({
                "index_patterns": [format!("{logs_prefix}-*")],
                "template": {"mappings": {"properties": {
                    "@timestamp": {"type": "date"},
                    "observed_timestamp": {"type": "date"},
                    "severity_number": {"type": "integer"},
                    "severity_text": {"type": "keyword"},
                    "service": {"type": "keyword"},
                    "region": {"type": "keyword"},
                    "trace_id": {"type": "keyword"},
                    "span_id": {"type": "keyword"},
                    "event_name": {"type": "keyword"},
                    "body": {"type": "text"}
                }}}
            }),
        ),
        (
            format!("{spans_prefix}-template"),
            json!({
                "index_patterns": [format!("{spans_prefix}-*")],
                "template": {"mappings": {"properties": {
                    "traceID": {"type": "keyword"},
                    "spanID": {"type": "keyword"},
                    "operationName": {"type": "keyword"},
                    "startTime": {"type": "long"},
                    "startTimeMillis": {"type": "date", "format": "epoch_millis"},
                    "duration": {"type": "long"},
                    "flags": {"type": "integer"},
                    "region": {"type": "keyword"},
                    "error": {"type": "boolean"},
                    "references": {"type": "nested", "dynamic": false, "properties": {
                        "refType": {"type": "keyword"}, "traceID": {"type": "keyword"}, "spanID": {"type": "keyword"}}},
                    "tags": kv_nested,
                    "process": {"properties": {"serviceName": {"type": "keyword"}, "tags": kv_nested}},
                    "logs": {"type": "nested", "dynamic": false, "properties": {
                        "timestamp": {"type": "long"}, "fields": kv_nested}}
                }}}
            }),
        ),
    ]
}
