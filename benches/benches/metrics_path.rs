//! The metrics path on one core, stage by stage, in data points per second: decode, OTLP to
//! Prometheus conversion, cardinality guard, cross-region aggregation, remote-write encoding
//! (protobuf + snappy), an endpoint's relabeling; and all of them together.
//!
//! cargo bench -p dwcp-benches --bench metrics_path

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dwcp_benches::{aggregation_rules, metrics_message};
use dwcp_operators::aggregate::AggregateOperator;
use dwcp_operators::cardinality::{CardinalityConfig, CardinalityGuard};
use dwcp_operators::prom::{PromConfig, PromConverter};
use dwcp_schemas::{decode, Encoding, Records, RegionContext, Signal};
use std::hint::black_box;

fn points() -> (Vec<u8>, Vec<dwcp_schemas::model::MetricPoint>) {
    let (bytes, _) = metrics_message(60, 20);
    let Records::Metrics(p) = decode(Signal::Metrics, Encoding::OtlpProto, &bytes, &RegionContext::default())
        .expect("decodes")
        .records
    else {
        unreachable!("metrics")
    };
    (bytes, p)
}

fn bench(c: &mut Criterion) {
    let (bytes, pts) = points();
    let n = pts.len() as u64;
    let mut g = c.benchmark_group("metrics_path");
    g.throughput(Throughput::Elements(n));

    g.bench_function("convert", |b| {
        let mut conv = PromConverter::new(PromConfig::default());
        let mut out = Vec::new();
        b.iter(|| {
            out.clear();
            conv.convert(black_box(&pts), &mut out);
        })
    });

    let mut samples = Vec::new();
    PromConverter::new(PromConfig::default()).convert(&pts, &mut samples);
    let samples_per_point = samples.len() as f64 / n as f64;
    g.bench_function("guard", |b| {
        let mut guard = CardinalityGuard::new(CardinalityConfig::default());
        b.iter(|| {
            let mut s = samples.clone();
            guard.admit(black_box(&mut s));
            s
        })
    });

    g.bench_function("aggregate", |b| {
        let mut agg = AggregateOperator::new(aggregation_rules());
        let mut shifted = pts.clone();
        let mut t = 0u64;
        let mut out = Vec::new();
        b.iter(|| {
            // Every iteration one second later, so windows close and emit as in production.
            t += 1_000_000_000;
            for p in &mut shifted {
                p.time_unix_nano = 1_795_000_000_000_000_000 + t;
            }
            agg.process(black_box(&shifted));
            out.clear();
            agg.on_watermark(1_795_000_000_000_000_000 + t, &mut out);
        })
    });

    g.bench_function("encode_remote_write", |b| {
        b.iter(|| dwcp_sinks::prometheus::remote_write::encode(black_box(&samples)).map(|v| v.len()))
    });

    // An endpoint's `write_relabel_configs` keeping only the rollups, over the converted
    // samples (all dropped): the literal-prefix shortcut, and the same test through the regex
    // engine (a regex the shortcut does not take, `dwcp:.+`, matches the same names here).
    for (name, regex) in [("relabel_keep_prefix", "dwcp:.*"), ("relabel_keep_regex", "dwcp:.+")] {
        let step = dwcp_sinks::prometheus::remote_write::RelabelConfig {
            source_labels: Some(vec!["__name__".into()]),
            regex: Some(regex.into()),
            action: dwcp_sinks::prometheus::remote_write::RelabelAction::Keep,
            ..Default::default()
        }
        .compile()
        .expect("valid");
        let steps = [step];
        g.bench_function(name, |b| {
            b.iter(|| {
                samples
                    .iter()
                    .filter(|s| {
                        !matches!(
                            dwcp_sinks::prometheus::remote_write::relabel(&steps, black_box(&s.labels)),
                            dwcp_sinks::prometheus::remote_write::Relabeled::Dropped
                        )
                    })
                    .count()
            })
        });
    }

    g.bench_function("all_stages", |b| {
        let mut conv = PromConverter::new(PromConfig::default());
        let mut guard = CardinalityGuard::new(CardinalityConfig::default());
        let mut agg = AggregateOperator::new(aggregation_rules());
        let mut t = 0u64;
        let mut out = Vec::new();
        b.iter(|| {
            t += 1_000_000_000;
            let Ok(d) = decode(
                Signal::Metrics,
                Encoding::OtlpProto,
                black_box(&bytes),
                &RegionContext::default(),
            ) else {
                return 0;
            };
            let Records::Metrics(mut p) = d.records else { return 0 };
            for x in &mut p {
                x.time_unix_nano = 1_795_000_000_000_000_000 + t;
            }
            let mut s = Vec::new();
            conv.convert(&p, &mut s);
            guard.admit(&mut s);
            agg.process(&p);
            out.clear();
            agg.on_watermark(1_795_000_000_000_000_000 + t, &mut out);
            dwcp_sinks::prometheus::remote_write::encode(&s)
                .map(|v| v.len())
                .unwrap_or(0)
        })
    });
    g.finish();
    eprintln!("samples per point in this workload: {samples_per_point:.2}");
}

criterion_group!(benches, bench);
criterion_main!(benches);
