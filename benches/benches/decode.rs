//! Decoding OTLP into the internal model, beside a plain prost decode of the same bytes (the
//! ceiling: prost alone, no conversion). Throughput in data points or spans per second, one core.
//!
//! cargo bench -p dwcp-benches --bench decode

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dwcp_benches::{metrics_json, metrics_message, traces_message};
use dwcp_schemas::{decode, Encoding, RegionContext, Signal};
use opentelemetry_proto::tonic::metrics::v1::MetricsData;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message as _;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let ctx = RegionContext::default();

    let (bytes, n) = metrics_message(60, 20);
    let mut g = c.benchmark_group("metrics_proto");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("prost_only", |b| {
        b.iter(|| MetricsData::decode(black_box(&bytes[..])).map(drop))
    });
    g.bench_function("model", |b| {
        b.iter_batched(
            || (),
            |()| decode(Signal::Metrics, Encoding::OtlpProto, black_box(&bytes), &ctx).map(drop),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let (bytes, n) = traces_message(1000);
    let mut g = c.benchmark_group("traces_proto");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("prost_only", |b| {
        b.iter(|| TracesData::decode(black_box(&bytes[..])).map(drop))
    });
    g.bench_function("model", |b| {
        b.iter(|| decode(Signal::Traces, Encoding::OtlpProto, black_box(&bytes), &ctx).map(drop))
    });
    g.finish();

    let (json, n) = metrics_json(60, 20);
    let mut g = c.benchmark_group("metrics_json");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("model", |b| {
        b.iter(|| decode(Signal::Metrics, Encoding::OtlpJson, black_box(&json), &ctx).map(drop))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
