//! Trace stitching and tail sampling on one core, in spans per second; then memory per span in
//! flight (resident memory before and after buffering 1,000,000 spans), and the delay from a
//! trace's last span to its decision measured in event time. Also span metrics: counting
//! spans, and with repartitioning making and merging the per-message markers.
//!
//! cargo bench -p dwcp-benches --bench traces

use std::sync::Arc;

use dwcp_benches::rss_kib;

use criterion::{BatchSize, Criterion, Throughput};
use dwcp_operators::spanmetrics::{SpanMetrics, SpanMetricsConfig};
use dwcp_operators::traces::{Policy, TraceConfig, TraceOperator, TraceOutput};
use dwcp_schemas::model::{
    AnyValue, Attributes, KeyValue, Origin, Resource, Scope, Span, SpanId, SpanKind, StatusCode, TraceId,
};

const MS: u64 = 1_000_000;

fn spans(traces: u64, per_trace: u64, t0: u64) -> Vec<Span> {
    let regions: [Arc<str>; 3] = ["us-west-1".into(), "us-east-1".into(), "eu-west-1".into()];
    let resource = Arc::new(Resource {
        attributes: Attributes(vec![
            KeyValue {
                key: "service.name".into(),
                value: AnyValue::String("dwcp-gateway".into()),
            },
            KeyValue {
                key: "service.namespace".into(),
                value: AnyValue::String("dwcp".into()),
            },
        ]),
    });
    let scope = Arc::new(Scope::default());
    let mut out = Vec::with_capacity((traces * per_trace) as usize);
    for t in 0..traces {
        let mut tid = [0u8; 16];
        tid[..8].copy_from_slice(&(t + 1).to_be_bytes());
        for i in 0..per_trace {
            out.push(Span {
                origin: Origin {
                    region: regions[(i % 3) as usize].clone(),
                    resource: resource.clone(),
                    scope: scope.clone(),
                },
                trace_id: TraceId(tid),
                span_id: SpanId((i + 1).to_be_bytes()),
                parent_span_id: if i == 0 { None } else { Some(SpanId(i.to_be_bytes())) },
                trace_state: String::new(),
                name: "replicate".into(),
                kind: if i % 2 == 0 { SpanKind::Server } else { SpanKind::Client },
                start_time_unix_nano: t0 + i * MS,
                end_time_unix_nano: t0 + (i + 5) * MS,
                attributes: Attributes(vec![KeyValue {
                    key: "peer.region".into(),
                    value: AnyValue::String("eu-west-1".into()),
                }]),
                events: vec![],
                links: vec![],
                status_code: if t % 100 == 0 {
                    StatusCode::Error
                } else {
                    StatusCode::Unset
                },
                status_message: String::new(),
            });
        }
    }
    out
}

fn policies() -> Vec<Policy> {
    vec![
        Policy::Probabilistic {
            sampling_percentage: 1.0,
            hash_salt: String::new(),
        },
        Policy::StatusCode {
            status_codes: vec!["ERROR".into()],
        },
        Policy::Latency {
            threshold_ms: 500,
            upper_threshold_ms: None,
        },
    ]
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(4));
    let t0 = 1_795_000_000_000 * MS;
    let input = spans(10_000, 5, t0);
    let mut g = c.benchmark_group("traces");
    g.throughput(Throughput::Elements(input.len() as u64));
    g.bench_function("stitch_and_sample_50k_spans", |b| {
        b.iter_batched(
            || {
                TraceOperator::new(TraceConfig {
                    policies: policies(),
                    ..Default::default()
                })
            },
            |mut op| {
                let mut out = Vec::new();
                op.process(&input, t0, &mut out);
                op.on_watermark(t0 + 20_000 * MS, &mut out);
                out.len()
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    // Span metrics: one worker counting spans; with repartitioning, the re-keying stage making
    // the markers of messages of 100 spans, and the keyed stage merging them.
    let mut g = c.benchmark_group("span_metrics");
    g.throughput(Throughput::Elements(input.len() as u64));
    let config = SpanMetricsConfig::default();
    g.bench_function("count_50k_spans", |b| {
        b.iter_batched(
            || SpanMetrics::new(config.clone()),
            |mut op| {
                op.process(&input);
                let mut out = Vec::new();
                op.on_watermark(t0 + 20_000 * MS, &mut out);
                out.len()
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("markers_of_50k_spans_in_messages_of_100", |b| {
        let mut op = SpanMetrics::new(config.clone());
        b.iter(|| input.chunks(100).map(|m| op.markers(m).len()).sum::<usize>())
    });
    let mut rekeying = SpanMetrics::new(config.clone());
    let markers: Vec<_> = input.chunks(100).flat_map(|m| rekeying.markers(m)).collect();
    println!(
        "span_metrics: {} spans in messages of 100 make {} markers ({:.1} spans a marker)",
        input.len(),
        markers.len(),
        input.len() as f64 / markers.len() as f64
    );
    g.bench_function("merge_markers_of_50k_spans", |b| {
        b.iter_batched(
            || SpanMetrics::new(config.clone()),
            |mut op| op.merge_markers(&markers),
            BatchSize::LargeInput,
        )
    });
    g.finish();

    // Memory per span in flight: 200,000 traces of 5 spans buffered, none decided.
    let big = spans(200_000, 5, t0);
    let n = big.len();
    let before = rss_kib();
    let mut op = TraceOperator::new(TraceConfig {
        max_traces: 1_000_000,
        max_bytes: usize::MAX / 2,
        ..Default::default()
    });
    let mut out = Vec::new();
    op.process(&big, t0, &mut out);
    let after = rss_kib();
    drop(big);
    println!(
        "traces: {} spans in flight in {} traces: RSS +{} MiB, {:.0} bytes per span in flight (estimate the operator bounds on: {:.0})",
        n,
        op.traces_in_flight(),
        (after - before) / 1024,
        (after - before) as f64 * 1024.0 / n as f64,
        op.bytes_in_flight() as f64 / n as f64
    );
    // Decision delay: decisions come at the first watermark at or past last span + decision_wait;
    // with the 500 ms tick of the pipeline, a trace is decided within decision_wait + 0.5 s.
    let mut decided_at = Vec::new();
    for step in 0..30u64 {
        let wm = t0 + 9 * MS * 1000 + step * 100 * MS;
        let before = out.len();
        op.on_watermark(wm, &mut out);
        if out.len() > before {
            decided_at.push(wm);
        }
    }
    let newest = t0 + 9 * MS; // the newest span ends at t0 + 9 ms
    let delays: Vec<f64> = decided_at.iter().map(|d| (*d - newest) as f64 / 1e9).collect();
    println!(
        "traces: last span to decision in event time, 100 ms watermark steps: first {:.2} s, last {:.2} s (decision_wait 10 s); decided {}",
        delays.first().copied().unwrap_or(f64::NAN),
        delays.last().copied().unwrap_or(f64::NAN),
        out.iter().filter(|o| matches!(o, TraceOutput::Trace(_))).count()
    );
    c.final_summary();
}
