use super::*;
use crate::model::{AnyValue, Number, PointValue};
use opentelemetry_proto::tonic::common::v1 as pc;
use opentelemetry_proto::tonic::metrics::v1 as pm;
use opentelemetry_proto::tonic::resource::v1 as pr;
use opentelemetry_proto::tonic::trace::v1 as pt;

fn kv(k: &str, v: &str) -> pc::KeyValue {
    pc::KeyValue {
        key: k.into(),
        value: Some(pc::AnyValue {
            value: Some(pc::any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn gauge_message(attrs: Vec<pc::KeyValue>, values: &[f64], time: u64) -> Vec<u8> {
    pm::MetricsData {
        resource_metrics: vec![pm::ResourceMetrics {
            resource: Some(pr::Resource {
                attributes: attrs,
                ..Default::default()
            }),
            scope_metrics: vec![pm::ScopeMetrics {
                scope: None,
                metrics: vec![pm::Metric {
                    name: "g".into(),
                    data: Some(pm::metric::Data::Gauge(pm::Gauge {
                        data_points: values
                            .iter()
                            .map(|v| pm::NumberDataPoint {
                                time_unix_nano: time,
                                value: Some(pm::number_data_point::Value::AsDouble(*v)),
                                ..Default::default()
                            })
                            .collect(),
                    })),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

fn ctx() -> RegionContext {
    RegionContext::default()
}

#[test]
fn empty_message_is_an_error() {
    for s in Signal::ALL {
        for e in [Encoding::OtlpProto, Encoding::OtlpJson] {
            assert!(matches!(decode(s, e, b"", &ctx()), Err(DecodeError::Empty)));
        }
    }
}

#[test]
fn truncated_protobuf_is_an_error() {
    let bytes = gauge_message(vec![kv("cloud.region", "r1")], &[1.0, 2.0], 5);
    for cut in [1, bytes.len() / 2, bytes.len() - 1] {
        let err = decode(Signal::Metrics, Encoding::OtlpProto, &bytes[..cut], &ctx()).expect_err("truncated");
        assert_eq!(err.kind(), "protobuf", "cut at {cut}: {err}");
    }
}

#[test]
fn random_bytes_never_panic() {
    // A fixed xorshift stream: deterministic, no rand dependency.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for len in 1..300 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x & 0xff) as u8
            })
            .collect();
        for s in Signal::ALL {
            for e in [Encoding::OtlpProto, Encoding::OtlpJson] {
                let _ = decode(s, e, &bytes, &ctx());
            }
        }
    }
}

#[test]
fn invalid_utf8_in_a_string_field_is_an_error() {
    let mut bytes = gauge_message(vec![kv("cloud.region", "zzzz")], &[1.0], 5);
    let pos = bytes.windows(4).position(|w| w == b"zzzz").expect("marker present");
    bytes[pos] = 0xff;
    let err = decode(Signal::Metrics, Encoding::OtlpProto, &bytes, &ctx()).expect_err("bad utf-8");
    assert!(err.to_string().contains("UTF-8"), "{err}");
    let json = b"{\"resourceMetrics\":[{\"resource\":{\"attributes\":[{\"key\":\"a\",\"value\":{\"stringValue\":\"\xff\"}}]}}]}";
    assert_eq!(
        decode(Signal::Metrics, Encoding::OtlpJson, json, &ctx())
            .expect_err("bad utf-8")
            .kind(),
        "json"
    );
}

#[test]
fn nan_and_infinities_are_kept() {
    let bytes = gauge_message(vec![], &[f64::NAN, f64::INFINITY, f64::NEG_INFINITY], 0);
    let d = decode(Signal::Metrics, Encoding::OtlpProto, &bytes, &ctx()).expect("decodes");
    let Records::Metrics(points) = d.records else {
        panic!("metrics")
    };
    let vals: Vec<f64> = points
        .iter()
        .map(|p| match p.value {
            PointValue::Gauge {
                value: Number::Double(v),
            } => v,
            ref other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert!(vals[0].is_nan());
    assert_eq!(vals[1], f64::INFINITY);
    assert_eq!(vals[2], f64::NEG_INFINITY);

    let json = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[
        {"asDouble":"NaN","timeUnixNano":"0"},{"asDouble":"Infinity"},{"asDouble":"-Infinity"},{"asInt":"-7"}]}}]}]}]}"#;
    let d = decode(Signal::Metrics, Encoding::OtlpJson, json, &ctx()).expect("decodes");
    let Records::Metrics(points) = d.records else {
        panic!("metrics")
    };
    assert_eq!(points.len(), 4);
    assert!(matches!(points[0].value, PointValue::Gauge { value: Number::Double(v) } if v.is_nan()));
    assert!(matches!(points[2].value, PointValue::Gauge { value: Number::Double(v) } if v == f64::NEG_INFINITY));
    assert!(matches!(points[3].value, PointValue::Gauge { value: Number::Int(-7) }));
}

#[test]
fn timestamps_zero_and_year_2300_pass_through() {
    // 2300-01-01T00:00:00Z in nanoseconds still fits a u64.
    let y2300: u64 = 10_413_792_000 * 1_000_000_000;
    for t in [0, y2300] {
        let bytes = gauge_message(vec![], &[1.0], t);
        let d = decode(Signal::Metrics, Encoding::OtlpProto, &bytes, &ctx()).expect("decodes");
        let Records::Metrics(p) = d.records else {
            panic!("metrics")
        };
        assert_eq!(p[0].time_unix_nano, t);
    }
}

#[test]
fn ten_thousand_resource_attributes() {
    let mut attrs: Vec<_> = (0..10_000).map(|i| kv(&format!("k{i}"), "v")).collect();
    attrs.push(kv("cloud.region", "eu-west-1"));
    let bytes = gauge_message(attrs, &[1.0, 2.0], 1);
    let d = decode(Signal::Metrics, Encoding::OtlpProto, &bytes, &ctx()).expect("decodes");
    let Records::Metrics(p) = d.records else {
        panic!("metrics")
    };
    assert_eq!(p.len(), 2);
    assert_eq!(&*p[0].origin.region, "eu-west-1");
    assert_eq!(p[0].origin.resource.attributes.len(), 10_001);
    // Shared, not copied, between the points of one resource.
    assert!(std::sync::Arc::ptr_eq(&p[0].origin.resource, &p[1].origin.resource));
}

#[test]
fn a_ten_megabyte_message_decodes() {
    let values = vec![1.5; 10 * 1024 * 1024 / 11];
    let bytes = gauge_message(vec![], &values, 1);
    assert!(bytes.len() > 10_000_000);
    let d = decode(Signal::Metrics, Encoding::OtlpProto, &bytes, &ctx()).expect("decodes");
    assert_eq!(d.records.len(), values.len());
}

#[test]
fn region_precedence_resource_then_fallback_then_unknown() {
    let with = gauge_message(vec![kv("cloud.region", "us-west-1")], &[1.0], 1);
    let without = gauge_message(vec![kv("service.name", "x")], &[1.0, 2.0], 1);
    let topic = RegionContext::new(Some("from-topic".into()));

    let d = decode(Signal::Metrics, Encoding::OtlpProto, &with, &topic).expect("ok");
    assert_eq!(d.records.regions().next().map(|r| &**r), Some("us-west-1"));
    let d = decode(Signal::Metrics, Encoding::OtlpProto, &without, &topic).expect("ok");
    assert_eq!(d.records.regions().next().map(|r| &**r), Some("from-topic"));
    assert_eq!(d.unknown_region, 0);
    let d = decode(Signal::Metrics, Encoding::OtlpProto, &without, &ctx()).expect("ok");
    assert_eq!(d.records.regions().next().map(|r| &**r), Some("unknown"));
    assert_eq!(d.unknown_region, 2);
}

#[test]
fn span_with_a_short_trace_id_is_invalid() {
    let bytes = pt::TracesData {
        resource_spans: vec![pt::ResourceSpans {
            resource: None,
            scope_spans: vec![pt::ScopeSpans {
                scope: None,
                spans: vec![pt::Span {
                    trace_id: vec![1; 15],
                    span_id: vec![2; 8],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec();
    let err = decode(Signal::Traces, Encoding::OtlpProto, &bytes, &ctx()).expect_err("invalid id");
    assert_eq!(err.to_string(), "invalid OTLP: span trace_id has 15 bytes, expected 16");
}

#[test]
fn json_snake_case_names_and_numeric_strings_are_accepted() {
    let json =
        br#"{"resource_spans":[{"resource":{"attributes":[{"key":"cloud.region","value":{"stringValue":"ap-1"}}]},
      "scope_spans":[{"spans":[{"trace_id":"0102030405060708090a0b0c0d0e0f10","span_id":"0102030405060708",
      "parent_span_id":"","name":"op","kind":2,"start_time_unix_nano":100,"end_time_unix_nano":"250",
      "status":{"code":2,"message":"boom"},"unknownField":{"ignored":true},
      "attributes":[{"key":"b","value":{"bytesValue":"AQI="}},{"key":"n","value":{"intValue":42}},
                    {"key":"l","value":{"arrayValue":{"values":[{"boolValue":true},{"doubleValue":1.5}]}}}]}]}]}]}"#;
    let d = decode(Signal::Traces, Encoding::OtlpJson, json, &ctx()).expect("decodes");
    let Records::Traces(spans) = d.records else {
        panic!("traces")
    };
    let s = &spans[0];
    assert_eq!(s.trace_id.to_string(), "0102030405060708090a0b0c0d0e0f10");
    assert_eq!(s.parent_span_id, None);
    assert_eq!(s.duration_nanos(), 150);
    assert_eq!(s.status_code, crate::model::StatusCode::Error);
    assert_eq!(s.attributes.get("b"), Some(&AnyValue::Bytes(vec![1, 2])));
    assert_eq!(s.attributes.get("n"), Some(&AnyValue::Int(42)));
    assert_eq!(
        s.attributes.get("l"),
        Some(&AnyValue::Array(vec![AnyValue::Bool(true), AnyValue::Double(1.5)]))
    );
    assert_eq!(&*s.origin.region, "ap-1");
}

#[test]
fn deeply_nested_json_values_are_refused_not_overflowed() {
    let mut v = String::from(r#"{"stringValue":"x"}"#);
    for _ in 0..120 {
        v = format!(r#"{{"arrayValue":{{"values":[{v}]}}}}"#);
    }
    let json = format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{v}}}]}}]}}]}}"#);
    assert!(decode(Signal::Logs, Encoding::OtlpJson, json.as_bytes(), &ctx()).is_err());
}

mod encode {
    use std::sync::Arc;

    use super::super::{decode, encode_metrics, encode_spans, Encoding, RegionContext};
    use crate::model::{
        AnyValue, Attributes, ExpBuckets, KeyValue, MetricDescriptor, MetricPoint, Number, Origin, PointValue, Records,
        Resource, Scope, Signal, Span, SpanEvent, SpanId, SpanKind, SpanLink, StatusCode, Temporality, TraceId,
    };

    fn attrs(pairs: &[(&str, AnyValue)]) -> Attributes {
        Attributes(
            pairs
                .iter()
                .map(|(k, v)| KeyValue {
                    key: (*k).into(),
                    value: v.clone(),
                })
                .collect(),
        )
    }

    fn origins() -> [Origin; 3] {
        let region: Arc<str> = Arc::from("r1");
        let res = |name: &str| {
            Arc::new(Resource {
                attributes: attrs(&[("service.name", AnyValue::String(name.into()))]),
            })
        };
        let (a, b) = (res("a"), res("b"));
        let s1 = Arc::new(Scope {
            name: "lib".into(),
            version: "1.2".into(),
            attributes: attrs(&[("k", AnyValue::Int(3))]),
        });
        let s2 = Arc::new(Scope::default());
        [
            Origin {
                region: region.clone(),
                resource: a.clone(),
                scope: s1,
            },
            Origin {
                region: region.clone(),
                resource: a,
                scope: s2.clone(),
            },
            Origin {
                region,
                resource: b,
                scope: s2,
            },
        ]
    }

    fn point(origin: &Origin, name: &str, value: PointValue, t: u64) -> MetricPoint {
        MetricPoint {
            origin: origin.clone(),
            metric: Arc::new(MetricDescriptor {
                name: name.into(),
                description: "d".into(),
                unit: "ms".into(),
            }),
            attributes: attrs(&[
                ("s", AnyValue::String("x".into())),
                ("b", AnyValue::Bool(true)),
                ("f", AnyValue::Double(1.5)),
                ("y", AnyValue::Bytes(vec![1, 2])),
                ("a", AnyValue::Array(vec![AnyValue::Int(1), AnyValue::Empty])),
                (
                    "kv",
                    AnyValue::KvList(vec![KeyValue {
                        key: "in".into(),
                        value: AnyValue::String("v".into()),
                    }]),
                ),
            ]),
            start_time_unix_nano: t - 10,
            time_unix_nano: t,
            value,
            flags: 0,
        }
    }

    #[test]
    fn every_point_kind_and_origin_comes_back_with_the_fallback_region() {
        let [o1, o2, o3] = origins();
        let hist = |t| PointValue::Histogram {
            count: 3,
            sum: Some(6.0),
            min: None,
            max: Some(4.0),
            bounds: vec![1.0, 5.0],
            bucket_counts: vec![1, 2, 0],
            temporality: t,
        };
        let points = vec![
            point(&o1, "g", PointValue::Gauge { value: Number::Int(-4) }, 100),
            point(
                &o1,
                "g",
                PointValue::Gauge {
                    value: Number::Double(2.5),
                },
                200,
            ),
            point(
                &o1,
                "s",
                PointValue::Sum {
                    value: Number::Double(7.0),
                    temporality: Temporality::Delta,
                    monotonic: true,
                },
                100,
            ),
            // Same name, other temporality: a new metric entry.
            point(
                &o1,
                "s",
                PointValue::Sum {
                    value: Number::Int(7),
                    temporality: Temporality::Cumulative,
                    monotonic: false,
                },
                100,
            ),
            point(&o2, "h", hist(Temporality::Cumulative), 100),
            point(&o2, "h", hist(Temporality::Delta), 100),
            point(
                &o3,
                "e",
                PointValue::ExponentialHistogram {
                    count: 5,
                    sum: None,
                    min: Some(0.5),
                    max: Some(9.0),
                    scale: -2,
                    zero_count: 1,
                    zero_threshold: 0.001,
                    positive: ExpBuckets {
                        offset: -1,
                        bucket_counts: vec![1, 2],
                    },
                    negative: ExpBuckets {
                        offset: 0,
                        bucket_counts: vec![1],
                    },
                    temporality: Temporality::Cumulative,
                },
                100,
            ),
            point(
                &o3,
                "q",
                PointValue::Summary {
                    count: 4,
                    sum: 10.0,
                    quantiles: vec![(0.5, 2.0), (0.99, 4.0)],
                },
                100,
            ),
            // Back to the first origin after another: a new resource entry.
            point(&o1, "g", PointValue::Gauge { value: Number::Int(1) }, 300),
        ];
        let bytes = encode_metrics(&points);
        let ctx = RegionContext::new(Some(Arc::from("r1")));
        let back = decode(Signal::Metrics, Encoding::OtlpProto, &bytes, &ctx).expect("decodes");
        assert_eq!(back.records, Records::Metrics(points));
        assert_eq!(back.unknown_region, 0);
    }

    #[test]
    fn spans_come_back_whole() {
        let [o1, _, o3] = origins();
        let span = |origin: &Origin, id: u8, parent: Option<SpanId>| Span {
            origin: origin.clone(),
            trace_id: TraceId([7; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: parent,
            trace_state: "k=v".into(),
            name: format!("op{id}"),
            kind: SpanKind::Consumer,
            start_time_unix_nano: 5,
            end_time_unix_nano: 9,
            attributes: attrs(&[("http.route", AnyValue::String("/x".into()))]),
            events: vec![SpanEvent {
                time_unix_nano: 6,
                name: "ev".into(),
                attributes: Attributes::default(),
            }],
            links: vec![SpanLink {
                trace_id: TraceId([8; 16]),
                span_id: SpanId([9; 8]),
                attributes: attrs(&[("l", AnyValue::Bool(false))]),
            }],
            status_code: if id == 1 { StatusCode::Error } else { StatusCode::Unset },
            status_message: if id == 1 { "boom".into() } else { String::new() },
        };
        let spans = vec![span(&o1, 1, None), span(&o3, 2, Some(SpanId([1; 8])))];
        let bytes = encode_spans(&spans);
        let ctx = RegionContext::new(Some(Arc::from("r1")));
        let back = decode(Signal::Traces, Encoding::OtlpProto, &bytes, &ctx).expect("decodes");
        assert_eq!(back.records, Records::Traces(spans));
    }
}
