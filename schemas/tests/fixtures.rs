//! Every fixture in ../shared/fixtures/otlp, in both encodings, decodes to exactly what its
//! manifest.json says.

use std::collections::BTreeSet;
use std::path::PathBuf;

use dwcp_schemas::model::{LogRecord, MetricPoint, Number, PointValue, Records, Span, StatusCode, Temporality};
use dwcp_schemas::{decode, Encoding, RegionContext, Signal};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("DWCP_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/otlp"),
    }
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(fixtures_dir().join("manifest.json")).expect("manifest.json readable");
    serde_json::from_str(&text).expect("manifest.json is JSON")
}

fn load(file: &str, signal: Signal, enc: Encoding) -> Records {
    let ext = match enc {
        Encoding::OtlpProto => "pb",
        Encoding::OtlpJson => "json",
    };
    let bytes = std::fs::read(fixtures_dir().join(format!("{file}.{ext}"))).expect("fixture readable");
    let d = decode(signal, enc, &bytes, &RegionContext::default()).unwrap_or_else(|e| panic!("{file}.{ext}: {e}"));
    assert_eq!(d.unknown_region, 0, "{file}: every fixture resource has cloud.region");
    d.records
}

const ENCODINGS: [Encoding; 2] = [Encoding::OtlpProto, Encoding::OtlpJson];

#[test]
fn both_encodings_decode_to_the_same_records() {
    let m = manifest();
    for (signal, key) in [
        (Signal::Metrics, "metrics"),
        (Signal::Traces, "traces"),
        (Signal::Logs, "logs"),
    ] {
        for f in m[key]["files"].as_array().expect("files") {
            let file = f["file"].as_str().expect("file");
            assert_eq!(
                load(file, signal, Encoding::OtlpProto),
                load(file, signal, Encoding::OtlpJson),
                "{file}: proto and json differ"
            );
        }
    }
}

#[test]
fn traces_match_the_manifest() {
    let m = manifest();
    for enc in ENCODINGS {
        let mut all: Vec<Span> = Vec::new();
        for f in m["traces"]["files"].as_array().expect("files") {
            let Records::Traces(spans) = load(f["file"].as_str().expect("file"), Signal::Traces, enc) else {
                panic!("traces")
            };
            assert_eq!(spans.len() as u64, f["spans"].as_u64().expect("spans"));
            for s in &spans {
                assert_eq!(&*s.origin.region, f["region"].as_str().expect("region"));
            }
            all.extend(spans);
        }
        for t in m["traces"]["traces"].as_array().expect("traces") {
            let id = t["trace_id"].as_str().expect("trace_id");
            let spans: Vec<&Span> = all.iter().filter(|s| s.trace_id.to_string() == id).collect();
            assert_eq!(spans.len() as u64, t["spans"].as_u64().expect("spans"), "trace {id}");
            let names: BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
            let want: BTreeSet<&str> = t["span_names"]
                .as_array()
                .expect("names")
                .iter()
                .map(|v| v.as_str().expect("name"))
                .collect();
            assert_eq!(names, want, "trace {id}");
            let regions: BTreeSet<&str> = spans.iter().map(|s| &*s.origin.region).collect();
            let want: BTreeSet<&str> = t["regions"]
                .as_array()
                .expect("regions")
                .iter()
                .map(|v| v.as_str().expect("region"))
                .collect();
            assert_eq!(regions, want, "trace {id}");
            let error = spans.iter().any(|s| s.status_code == StatusCode::Error);
            assert_eq!(error, t["error"].as_bool().expect("error"), "trace {id}");
            if let Some(min_ms) = t["min_duration_ms"].as_u64() {
                let longest = spans.iter().map(|s| s.duration_nanos()).max().expect("a span");
                assert!(longest >= min_ms * 1_000_000, "trace {id}: {longest} ns");
            }
            // Exactly one root, and every parent link points at a span of the same trace.
            let roots = spans.iter().filter(|s| s.parent_span_id.is_none()).count();
            assert_eq!(roots, 1, "trace {id}");
            for s in &spans {
                if let Some(p) = s.parent_span_id {
                    assert!(spans.iter().any(|o| o.span_id == p), "trace {id}: parent {p} missing");
                }
            }
        }
    }
}

fn points<'a>(ps: &'a [MetricPoint], name: &str) -> Vec<&'a MetricPoint> {
    ps.iter().filter(|p| p.metric.name == name).collect()
}

fn number(p: &MetricPoint) -> f64 {
    match p.value {
        PointValue::Gauge { value } | PointValue::Sum { value, .. } => value.as_f64(),
        ref other => panic!("not a number: {other:?}"),
    }
}

#[test]
fn metrics_match_the_manifest() {
    let m = manifest();
    for enc in ENCODINGS {
        for f in m["metrics"]["files"].as_array().expect("files") {
            let file = f["file"].as_str().expect("file");
            let Records::Metrics(ps) = load(file, Signal::Metrics, enc) else {
                panic!("metrics")
            };
            let want_t = match f["temporality"].as_str().expect("temporality") {
                "delta" => Temporality::Delta,
                _ => Temporality::Cumulative,
            };
            for p in &ps {
                assert_eq!(&*p.origin.region, f["region"].as_str().expect("region"), "{file}");
                assert_eq!(p.origin.resource.service_name(), Some("dwcp-gateway"));
            }

            let req = points(&ps, "dwcp.requests");
            assert_eq!(req.len(), 1, "{file}");
            assert_eq!(number(req[0]), f["dwcp.requests"].as_f64().expect("requests"));
            assert!(matches!(req[0].value,
                PointValue::Sum { value: Number::Int(_), temporality, monotonic: true } if temporality == want_t));
            assert_eq!(req[0].metric.unit, "{request}");
            assert_eq!(req[0].attributes.get_str("operation"), Some("migration"));

            let err = points(&ps, "dwcp.errors");
            assert_eq!(number(err[0]), f["dwcp.errors"].as_f64().expect("errors"), "{file}");

            let conns = points(&ps, "dwcp.active_connections");
            assert_eq!(number(conns[0]), f["dwcp.active_connections"].as_f64().expect("conns"));
            assert!(matches!(conns[0].value, PointValue::Sum { monotonic: false, .. }));

            let cpu = points(&ps, "dwcp.cpu.usage");
            assert_eq!(number(cpu[0]), f["dwcp.cpu.usage"].as_f64().expect("cpu"), "{file}");
            assert!(matches!(cpu[0].value, PointValue::Gauge { .. }));

            // The explicit-bucket histogram, recomputed from the raw values behind it.
            let values: Vec<f64> = f["dwcp.latency.values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|v| v.as_f64().expect("f64"))
                .collect();
            let bounds: Vec<f64> = f["dwcp.latency.bounds"]
                .as_array()
                .expect("bounds")
                .iter()
                .map(|v| v.as_f64().expect("f64"))
                .collect();
            let mut want_counts = vec![0u64; bounds.len() + 1];
            for v in &values {
                // OTLP buckets are upper-inclusive: (bounds[i-1], bounds[i]].
                let i = bounds.iter().position(|b| v <= b).unwrap_or(bounds.len());
                want_counts[i] += 1;
            }
            let lat = points(&ps, "dwcp.latency");
            assert_eq!(lat.len(), 1);
            match &lat[0].value {
                PointValue::Histogram {
                    count,
                    sum,
                    min,
                    max,
                    bounds: b,
                    bucket_counts,
                    temporality,
                } => {
                    assert_eq!(*count, values.len() as u64);
                    assert_eq!(*sum, Some(values.iter().sum::<f64>()));
                    assert_eq!(*min, values.iter().copied().reduce(f64::min));
                    assert_eq!(*max, values.iter().copied().reduce(f64::max));
                    assert_eq!(b, &bounds);
                    assert_eq!(bucket_counts, &want_counts, "{file}");
                    assert_eq!(*temporality, want_t);
                }
                other => panic!("{file}: dwcp.latency is {other:?}"),
            }
            assert_eq!(lat[0].metric.unit, "ms");

            // The exponential histogram: count, sum, and each value in its bucket.
            let mig: Vec<f64> = f["dwcp.migration.duration.values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|v| v.as_f64().expect("f64"))
                .collect();
            let p = points(&ps, "dwcp.migration.duration");
            match &p[0].value {
                PointValue::ExponentialHistogram {
                    count,
                    sum,
                    scale,
                    positive,
                    zero_count,
                    ..
                } => {
                    assert_eq!(*count, mig.len() as u64);
                    assert_eq!(*sum, Some(mig.iter().sum::<f64>()));
                    assert_eq!(*zero_count, 0);
                    let base = 2f64.powf(2f64.powi(-scale));
                    let mut got = Vec::new();
                    for (i, c) in positive.bucket_counts.iter().enumerate() {
                        for _ in 0..*c {
                            got.push(positive.offset + i as i32);
                        }
                    }
                    // Bucket index i holds (base^i, base^(i+1)].
                    let want: Vec<i32> = mig.iter().map(|v| (v.ln() / base.ln()).ceil() as i32 - 1).collect();
                    assert_eq!(got, want, "{file}");
                }
                other => panic!("{file}: dwcp.migration.duration is {other:?}"),
            }
        }
    }
}

#[test]
fn logs_match_the_manifest() {
    let m = manifest();
    for enc in ENCODINGS {
        for f in m["logs"]["files"].as_array().expect("files") {
            let file = f["file"].as_str().expect("file");
            let Records::Logs(rs) = load(file, Signal::Logs, enc) else {
                panic!("logs")
            };
            assert_eq!(rs.len() as u64, f["records"].as_u64().expect("records"), "{file}");
            let errors = rs.iter().filter(|r| (17..=20).contains(&r.severity_number)).count();
            let warnings = rs.iter().filter(|r| (13..=16).contains(&r.severity_number)).count();
            assert_eq!(errors as u64, f["errors"].as_u64().expect("errors"));
            assert_eq!(warnings as u64, f["warnings"].as_u64().expect("warnings"));
            let tid = f["trace_id_of_first_two"].as_str().expect("trace id");
            let ids: Vec<Option<String>> = rs
                .iter()
                .map(|r: &LogRecord| r.trace_id.map(|t| t.to_string()))
                .collect();
            assert_eq!(ids[0].as_deref(), Some(tid));
            assert_eq!(ids[1].as_deref(), Some(tid));
            assert_eq!(ids[2], None);
            assert!(rs
                .iter()
                .all(|r| &*r.origin.region == f["region"].as_str().expect("region")));
            assert!(rs.iter().all(|r| r.timestamp() > 0));
        }
    }
}

/// The repartitioning stage writes decoded records back as OTLP protobuf; decoding that gives
/// back the same records, for every metric and trace fixture.
#[test]
fn encoding_decoded_records_gives_them_back() {
    let files: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".pb").map(str::to_string))
        .collect();
    let mut checked = 0;
    for file in files {
        let signal = if file.starts_with("metrics") {
            Signal::Metrics
        } else if file.starts_with("traces") {
            Signal::Traces
        } else {
            continue;
        };
        let records = load(&file, signal, Encoding::OtlpProto);
        let bytes = match &records {
            Records::Metrics(p) => dwcp_schemas::otlp::encode_metrics(p),
            Records::Traces(s) => dwcp_schemas::otlp::encode_spans(s),
            Records::Logs(_) => unreachable!("only metrics and traces are re-encoded"),
        };
        let back = decode(signal, Encoding::OtlpProto, &bytes, &RegionContext::default())
            .unwrap_or_else(|e| panic!("{file} re-encoded: {e}"))
            .records;
        assert_eq!(back, records, "{file}");
        assert!(!records.is_empty(), "{file}");
        checked += 1;
    }
    assert_eq!(
        checked, 9,
        "three regions of cumulative metrics, delta metrics and traces"
    );
}
