//! Checkpoint cost and restore time of partition state through a changelog topic on Tansu:
//! an anomaly operator holding DWCP_BENCH_SERIES series (default 20,000) past learning is
//! snapshotted, serialized, written in chunks (`Changelog::write`), read back from the topic
//! (`Changelog::read`), parsed and restored; each step timed, and scaled to a GiB of state.
//!
//! eval "$(deploy/local/stack.sh env)"; cargo bench -p dwcp-benches --bench changelog

use std::time::Instant;

use dwcp_operators::anomaly::operator::{AnomalyOperator, AnomalyState};
use dwcp_operators::prom::{labels_of, Sample};
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
    let changelog = dwcp_pipeline::changelog::Changelog::open(&config, "anomaly")
        .await
        .expect("changelog");
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

    let t = Instant::now();
    let state = op.snapshot();
    let bytes = serde_json::to_vec(&state).expect("serialize");
    let serialize = t.elapsed();
    let t = Instant::now();
    changelog.write(0, 1, &bytes).await.expect("write");
    let write = t.elapsed();
    let t = Instant::now();
    let (generation, back) = changelog.read(0).await.expect("read").expect("a checkpoint");
    let read = t.elapsed();
    let t = Instant::now();
    let parsed: AnomalyState = serde_json::from_slice(&back).expect("parse");
    let mut restored = AnomalyOperator::new(config.config.operators.anomaly.clone()).expect("operator");
    restored.restore(parsed);
    let restore = t.elapsed();
    assert_eq!(generation, 1);
    assert_eq!(back.len(), bytes.len());
    assert_eq!(restored.tracked(), series);

    let mib = bytes.len() as f64 / 1_048_576.0;
    let per_gib = |d: std::time::Duration| d.as_secs_f64() * 1024.0 / mib;
    println!(
        "changelog: {series} series, {mib:.1} MiB of state ({} B/series), {} chunks\n  \
         checkpoint: snapshot+serialize {:.2} s, write to Tansu {:.2} s  => {:.1} s/GiB\n  \
         restore: read back {:.2} s, parse+restore {:.2} s  => {:.1} s/GiB",
        bytes.len() / series,
        bytes.len().div_ceil(dwcp_pipeline::changelog::CHUNK_BYTES),
        serialize.as_secs_f64(),
        write.as_secs_f64(),
        per_gib(serialize + write),
        read.as_secs_f64(),
        restore.as_secs_f64(),
        per_gib(read + restore),
    );
}
