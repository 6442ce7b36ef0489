//! Checkpoint cost and restore time of partition state through a changelog topic on Tansu: the
//! state of each operator that moves with its partition is snapshotted, serialized, written in
//! chunks (`Changelog::write`), read back from the topic (`Changelog::read`), parsed and
//! restored; each step timed, and scaled to a GiB of state. The anomaly operator holds
//! DWCP_BENCH_SERIES series (default 20,000) past learning; the cross-region aggregation
//! 120,000 groups in open windows; the delta-to-cumulative conversion 40,000 delta series
//! (sums and 9-bucket histograms); the SLA operator 500 SLAs with 6 hours of minutes.
//!
//! eval "$(deploy/local/stack.sh env)"; cargo bench -p dwcp-benches --bench changelog

use std::time::Instant;

use dwcp_operators::aggregate::{AggregateOperator, AggregateState};
use dwcp_operators::anomaly::operator::{AnomalyOperator, AnomalyState};
use dwcp_operators::derived::{DerivedConfig, DerivedOperator, DerivedOutput, DerivedState};
use dwcp_operators::prom::{labels_of, DeltaPartState, PromConfig, PromConverter, Sample};
use dwcp_schemas::model::{PointValue, Temporality};
use dwcp_schemas::{decode, Encoding, Records, RegionContext, Signal};
use dwcp_tests::unique;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let Ok(brokers) = std::env::var("DWCP_TEST_KAFKA") else {
        eprintln!("skipped: DWCP_TEST_KAFKA not set (deploy/local/stack.sh up)");
        return;
    };
    let series: usize = std::env::var("DWCP_BENCH_SERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let id = unique("bench-changelog");
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n\
         operators:\n  span_metrics: {{enabled: false}}\n  prometheus: {{target_info: false}}\n  anomaly:\n    series: [bench]\n\
         repartition:\n  enabled: true\n  changelog_prefix: \"{id}.state.\"\n"
    );
    let config = dwcp_pipeline::config::parse(&yaml, std::path::Path::new("bench.yaml"), &[]).expect("config");
    // Every changelog opened first: a topic just created makes its first write wait for its
    // metadata, which is not the checkpoint's cost.
    let mut changelogs = Vec::new();
    for operator in ["anomaly", "aggregate", "delta", "derived"] {
        let cl = dwcp_pipeline::changelog::Changelog::open(&config, None, operator)
            .await
            .expect("changelog");
        cl.write(1, 1, b"warm-up").await.expect("warm-up write");
        changelogs.push(cl);
    }
    let mut op = AnomalyOperator::new(config.config.operators.anomaly.clone()).expect("operator");
    let labels: Vec<Vec<dwcp_operators::prom::Label>> = (0..series)
        .map(|i| labels_of([("__name__", "bench".to_string()), ("i", i.to_string())]))
        .collect();
    let (mut scores, mut episodes) = (Vec::new(), Vec::new());
    for k in 0..150i64 {
        let batch: Vec<Sample> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| Sample::new(l.clone(), 100.0 + (k as f64 * 0.1 + i as f64).sin() * 10.0, k * 60_000))
            .collect();
        op.process(&batch, &mut scores, &mut episodes);
        scores.clear();
        episodes.clear();
    }

    let anomaly = config.config.operators.anomaly.clone();
    let snapshot = || serde_json::to_vec(&op.snapshot()).expect("serialize");
    measure(&changelogs[0], "anomaly", series, "series", snapshot, |b| {
        let parsed: AnomalyState = serde_json::from_slice(b).expect("parse");
        let mut restored = AnomalyOperator::new(anomaly.clone()).expect("operator");
        restored.restore(parsed);
        assert_eq!(restored.tracked(), series);
    })
    .await;

    // Cross-region aggregation: 60 metrics (gauges, cumulative sums, histograms) × 2,000
    // series each, one open 10 s window, every rule's default aggregations.
    let rules = dwcp_benches::aggregation_rules;
    let rss_before = dwcp_benches::rss_kib();
    let mut agg = AggregateOperator::new(rules());
    for k in 0..100 {
        agg.process(&points_at(1_795_000_000_000_000_000, k * 20));
    }
    let groups = agg.snapshot().groups();
    println!(
        "aggregate: {groups} groups in open windows take {} MiB in memory",
        dwcp_benches::rss_kib().saturating_sub(rss_before) / 1024
    );
    let snapshot = || serde_json::to_vec(&agg.snapshot()).expect("serialize");
    measure(&changelogs[1], "aggregate", groups, "groups", snapshot, |b| {
        let parsed: AggregateState = serde_json::from_slice(b).expect("parse");
        let mut restored = AggregateOperator::new(rules());
        restored.restore(parsed);
        assert_eq!(restored.snapshot().groups(), groups);
    })
    .await;

    // Delta-to-cumulative totals: the same message with its sums and histograms as deltas.
    let mut converter = PromConverter::new(PromConfig::default());
    let mut out = Vec::new();
    for k in 0..100 {
        let mut pts = points_at(1_795_000_000_000_000_000, k * 20);
        for p in &mut pts {
            match &mut p.value {
                PointValue::Sum { temporality, .. } | PointValue::Histogram { temporality, .. } => {
                    *temporality = Temporality::Delta;
                }
                _ => {}
            }
        }
        converter.convert_from(&pts, Some(0), &mut out);
        out.clear();
    }
    let delta_series = converter.snapshot_partition(0).series();
    let snapshot = || serde_json::to_vec(&converter.snapshot_partition(0)).expect("serialize");
    measure(&changelogs[2], "delta", delta_series, "series", snapshot, |b| {
        let parsed: DeltaPartState = serde_json::from_slice(b).expect("parse");
        let mut restored = PromConverter::new(PromConfig::default());
        restored.restore_partition(0, parsed);
        assert_eq!(restored.delta_series(), delta_series);
    })
    .await;

    // SLAs: 500 availability SLAs over their own counters, 6 hours of minutes each.
    let derived_config = DerivedConfig {
        sla: (0..500)
            .map(|i| {
                serde_json::from_value(serde_json::json!({
                    "name": format!("s{i}"),
                    "kind": "availability",
                    "target": 0.999,
                    "total": format!("bench_total{{i=\"{i}\"}}"),
                    "bad": format!("bench_bad{{i=\"{i}\"}}"),
                    "per_region": false,
                }))
                .expect("SLA")
            })
            .collect(),
        ..Default::default()
    };
    let mut derived = DerivedOperator::new(derived_config.clone()).expect("operator");
    let sla_labels: Vec<[Vec<dwcp_operators::prom::Label>; 2]> = (0..500)
        .map(|i| {
            [
                labels_of([
                    ("__name__", "bench_total".to_string()),
                    ("i", i.to_string()),
                    ("region", "r".to_string()),
                ]),
                labels_of([
                    ("__name__", "bench_bad".to_string()),
                    ("i", i.to_string()),
                    ("region", "r".to_string()),
                ]),
            ]
        })
        .collect();
    let mut dout = DerivedOutput::default();
    for minute in 0..360i64 {
        let t = 1_795_000_000_000 + minute * 60_000;
        let batch: Vec<Sample> = sla_labels
            .iter()
            .flat_map(|[total, bad]| {
                #[allow(clippy::cast_precision_loss)]
                let m = minute as f64;
                [
                    Sample::new(total.clone(), 1000.0 * m, t),
                    Sample::new(bad.clone(), (m / 7.0).floor(), t),
                ]
            })
            .collect();
        derived.process(&batch);
        #[allow(clippy::cast_sign_loss)]
        derived.on_watermark((t as u64 + 1) * 1_000_000, &mut dout);
        dout = DerivedOutput::default();
    }
    let slas = derived.groups();
    let snapshot = || serde_json::to_vec(&derived.snapshot()).expect("serialize");
    measure(&changelogs[3], "derived (SLA)", slas, "SLA groups", snapshot, |b| {
        let parsed: DerivedState = serde_json::from_slice(b).expect("parse");
        let mut restored = DerivedOperator::new(derived_config.clone()).expect("operator");
        restored.restore(parsed);
        assert_eq!(restored.groups(), slas);
    })
    .await;
}

/// The benches' 60-metric message (20 points each) at `time_ns`, its peers offset by `peers`,
/// decoded.
fn points_at(time_ns: u64, peers: usize) -> Vec<dwcp_schemas::model::MetricPoint> {
    let bytes = dwcp_benches::metrics_message_at(60, 20, time_ns, peers);
    match decode(Signal::Metrics, Encoding::OtlpProto, &bytes, &RegionContext::default())
        .expect("decodes")
        .records
    {
        Records::Metrics(p) => p,
        _ => unreachable!("metrics"),
    }
}

/// Snapshots and serializes (`snapshot`), writes the bytes to partition 0 of `changelog`,
/// reads them back and hands them to `restore`; prints each step's time and the cost per GiB.
async fn measure(
    changelog: &dwcp_pipeline::changelog::Changelog,
    name: &str,
    units: usize,
    unit: &str,
    snapshot: impl FnOnce() -> Vec<u8>,
    restore: impl FnOnce(&[u8]),
) {
    let t = Instant::now();
    let bytes = snapshot();
    let serialize = t.elapsed();
    let t = Instant::now();
    changelog.write(0, 1, &bytes).await.expect("write");
    let write = t.elapsed();
    let t = Instant::now();
    let (generation, back) = changelog.read(0).await.expect("read").expect("a checkpoint");
    let read = t.elapsed();
    let t = Instant::now();
    restore(&back);
    let restore = t.elapsed();
    assert_eq!(generation, 1);
    assert_eq!(back.len(), bytes.len());
    let mib = bytes.len() as f64 / 1_048_576.0;
    let per_gib = |d: std::time::Duration| d.as_secs_f64() * 1024.0 / mib;
    println!(
        "changelog {name}: {units} {unit}, {mib:.1} MiB of state ({} B each), {} chunks\n  \
         checkpoint: snapshot+serialize {:.2} s, write to Tansu {:.2} s  => {:.1} s/GiB\n  \
         restore: read back {:.2} s, parse+restore {:.2} s  => {:.1} s/GiB",
        bytes.len() / units.max(1),
        bytes.len().div_ceil(dwcp_pipeline::changelog::CHUNK_BYTES),
        serialize.as_secs_f64(),
        write.as_secs_f64(),
        per_gib(serialize + write),
        read.as_secs_f64(),
        restore.as_secs_f64(),
        per_gib(read + restore),
    );
}
