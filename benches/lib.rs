//! Workload generators shared by the benchmarks: OTLP messages shaped like what a regional
//! Collector sends (a resource with a dozen attributes, metrics with a few point attributes).

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

fn resource() -> pr::Resource {
    let mut attributes = vec![
        kv("service.name", "dwcp-gateway"),
        kv("service.namespace", "dwcp"),
        kv("service.instance.id", "dwcp-gateway-us-east-1-7"),
        kv("cloud.region", "us-east-1"),
        kv("cloud.provider", "aws"),
        kv("host.name", "ip-10-0-3-17"),
        kv("k8s.pod.name", "dwcp-gateway-7d9f8c-abcde"),
        kv("k8s.namespace.name", "dwcp"),
    ];
    attributes.extend((0..4).map(|i| kv(&format!("label.{i}"), "value")));
    pr::Resource {
        attributes,
        ..Default::default()
    }
}

/// Like [`metrics_message`], with point timestamps at `time_ns` and the `peer` attribute offset
/// by `peer_offset`, so successive messages can carry new series or new samples of old ones.
pub fn metrics_message_at(metrics: usize, points: usize, time_ns: u64, peer_offset: usize) -> Vec<u8> {
    let (bytes, _) = metrics_message(metrics, points);
    let mut msg = <pm::MetricsData as prost::Message>::decode(bytes.as_slice()).unwrap_or_default();
    for rm in &mut msg.resource_metrics {
        for sm in &mut rm.scope_metrics {
            for m in &mut sm.metrics {
                let set = |attrs: &mut Vec<pc::KeyValue>, t: &mut u64| {
                    *t = time_ns;
                    for kv in attrs.iter_mut() {
                        if kv.key == "peer" {
                            if let Some(pc::AnyValue {
                                value: Some(pc::any_value::Value::StringValue(s)),
                            }) = &mut kv.value
                            {
                                let n: usize = s.trim_start_matches("peer-").parse().unwrap_or(0);
                                *s = format!("peer-{}", n + peer_offset);
                            }
                        }
                    }
                };
                match &mut m.data {
                    Some(pm::metric::Data::Gauge(g)) => g
                        .data_points
                        .iter_mut()
                        .for_each(|p| set(&mut p.attributes, &mut p.time_unix_nano)),
                    Some(pm::metric::Data::Sum(g)) => g
                        .data_points
                        .iter_mut()
                        .for_each(|p| set(&mut p.attributes, &mut p.time_unix_nano)),
                    Some(pm::metric::Data::Histogram(g)) => g
                        .data_points
                        .iter_mut()
                        .for_each(|p| set(&mut p.attributes, &mut p.time_unix_nano)),
                    _ => {}
                }
            }
        }
    }
    prost::Message::encode_to_vec(&msg)
}

/// One MetricsData with `metrics` metrics of `points` points each, a third each gauges,
/// cumulative sums and 9-bucket histograms. Returns the bytes and the number of data points.
pub fn metrics_message(metrics: usize, points: usize) -> (Vec<u8>, usize) {
    let mut ms = Vec::new();
    for m in 0..metrics {
        let attrs = |p: usize| {
            vec![
                kv("operation", "replicate"),
                kv("peer", &format!("peer-{p}")),
                kv("status", "ok"),
            ]
        };
        let data = match m % 3 {
            0 => pm::metric::Data::Gauge(pm::Gauge {
                data_points: (0..points)
                    .map(|p| pm::NumberDataPoint {
                        attributes: attrs(p),
                        time_unix_nano: 1_795_000_000_000_000_000,
                        value: Some(pm::number_data_point::Value::AsDouble(p as f64 * 1.5)),
                        ..Default::default()
                    })
                    .collect(),
            }),
            1 => pm::metric::Data::Sum(pm::Sum {
                data_points: (0..points)
                    .map(|p| pm::NumberDataPoint {
                        attributes: attrs(p),
                        start_time_unix_nano: 1_794_000_000_000_000_000,
                        time_unix_nano: 1_795_000_000_000_000_000,
                        value: Some(pm::number_data_point::Value::AsInt(p as i64 * 100)),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: 2,
                is_monotonic: true,
            }),
            _ => pm::metric::Data::Histogram(pm::Histogram {
                data_points: (0..points)
                    .map(|p| pm::HistogramDataPoint {
                        attributes: attrs(p),
                        start_time_unix_nano: 1_794_000_000_000_000_000,
                        time_unix_nano: 1_795_000_000_000_000_000,
                        count: 90,
                        sum: Some(1234.5),
                        bucket_counts: vec![10; 9],
                        explicit_bounds: vec![5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0],
                        min: Some(1.0),
                        max: Some(900.0),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: 2,
            }),
        };
        ms.push(pm::Metric {
            name: format!("dwcp.metric.{m}"),
            unit: "ms".into(),
            data: Some(data),
            ..Default::default()
        });
    }
    let msg = pm::MetricsData {
        resource_metrics: vec![pm::ResourceMetrics {
            resource: Some(resource()),
            scope_metrics: vec![pm::ScopeMetrics {
                scope: Some(pc::InstrumentationScope {
                    name: "dwcp".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                metrics: ms,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    (prost::Message::encode_to_vec(&msg), metrics * points)
}

/// One TracesData with `n` spans of 4 attributes and one event every 4th span.
pub fn traces_message(n: usize) -> (Vec<u8>, usize) {
    let spans = (0..n)
        .map(|i| pt::Span {
            trace_id: (0..16).map(|b| (b as u8).wrapping_mul(i as u8 | 1)).collect(),
            span_id: (0..8).map(|b| (b as u8).wrapping_add(i as u8)).collect(),
            parent_span_id: if i % 5 == 0 { vec![] } else { vec![1; 8] },
            name: "replicate eu-west-1".into(),
            kind: 3,
            start_time_unix_nano: 1_795_000_000_000_000_000,
            end_time_unix_nano: 1_795_000_000_020_000_000,
            attributes: vec![
                kv("rpc.system", "dwcp"),
                kv("net.peer.name", "gw.eu-west-1"),
                kv("dwcp.message.type", "snapshot"),
                kv("dwcp.vm.id", "vm-42"),
            ],
            events: if i % 4 == 0 {
                vec![pt::span::Event {
                    time_unix_nano: 1,
                    name: "retry".into(),
                    ..Default::default()
                }]
            } else {
                vec![]
            },
            status: Some(pt::Status {
                code: 0,
                message: String::new(),
            }),
            ..Default::default()
        })
        .collect();
    let msg = pt::TracesData {
        resource_spans: vec![pt::ResourceSpans {
            resource: Some(resource()),
            scope_spans: vec![pt::ScopeSpans {
                scope: None,
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    (prost::Message::encode_to_vec(&msg), n)
}

/// The same message in OTLP/JSON, produced by re-encoding the decoded model's source: the
/// generator writes JSON directly so the benchmark does not depend on a JSON encoder under test.
pub fn metrics_json(metrics: usize, points: usize) -> (Vec<u8>, usize) {
    use serde_json::json;
    let attrs = |p: usize| {
        json!([
            {"key": "operation", "value": {"stringValue": "replicate"}},
            {"key": "peer", "value": {"stringValue": format!("peer-{p}")}},
            {"key": "status", "value": {"stringValue": "ok"}}
        ])
    };
    let ms: Vec<serde_json::Value> = (0..metrics)
        .map(|m| {
            let pts: Vec<serde_json::Value> = (0..points)
                .map(|p| match m % 3 {
                    0 => json!({"attributes": attrs(p), "timeUnixNano": "1795000000000000000", "asDouble": p as f64 * 1.5}),
                    1 => json!({"attributes": attrs(p), "startTimeUnixNano": "1794000000000000000",
                                "timeUnixNano": "1795000000000000000", "asInt": (p * 100).to_string()}),
                    _ => json!({"attributes": attrs(p), "startTimeUnixNano": "1794000000000000000",
                                "timeUnixNano": "1795000000000000000", "count": "90", "sum": 1234.5,
                                "bucketCounts": ["10","10","10","10","10","10","10","10","10"],
                                "explicitBounds": [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0],
                                "min": 1.0, "max": 900.0}),
                })
                .collect();
            let name = format!("dwcp.metric.{m}");
            match m % 3 {
                0 => json!({"name": name, "unit": "ms", "gauge": {"dataPoints": pts}}),
                1 => json!({"name": name, "unit": "ms", "sum": {"dataPoints": pts, "aggregationTemporality": 2, "isMonotonic": true}}),
                _ => json!({"name": name, "unit": "ms", "histogram": {"dataPoints": pts, "aggregationTemporality": 2}}),
            }
        })
        .collect();
    let msg = json!({"resourceMetrics": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "dwcp-gateway"}},
            {"key": "cloud.region", "value": {"stringValue": "us-east-1"}}
        ]},
        "scopeMetrics": [{"scope": {"name": "dwcp", "version": "1.0"}, "metrics": ms}]
    }]});
    (serde_json::to_vec(&msg).unwrap_or_default(), metrics * points)
}

/// This process's resident memory, KiB (from /proc/self/status; 0 where unavailable).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// One cross-region aggregation rule (default aggregations) per metric of [`metrics_message`]
/// (`dwcp.metric.0` … `dwcp.metric.59`).
pub fn aggregation_rules() -> dwcp_operators::aggregate::AggregationConfig {
    dwcp_operators::aggregate::AggregationConfig {
        rules: (0..60)
            .map(|m| dwcp_operators::aggregate::AggregationRule {
                metric: format!("dwcp.metric.{m}"),
                record: None,
                aggregations: None,
            })
            .collect(),
        ..Default::default()
    }
}
