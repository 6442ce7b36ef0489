//! Alert latency through the whole pipeline: from producing the sample that crosses a rule's
//! threshold to the alert's record on the alerts topic, with a real broker (Tansu) and the
//! release worker. A ticker series (a sample every 100 ms, event time = wall time) keeps the
//! watermark moving, as a live deployment's other series do; `allowed_lateness_ms` is 0 and the
//! rule group's interval 1 s, so the crossing sample is evaluated at the next 1-second boundary
//! once data past it has arrived, then shipped at the next 500 ms router tick.
//!
//!
//! Then the same for anomaly episodes: ten `rtt` series, a point each every 100 ms, learn for 20
//! points; a spike of one of them is produced and the time until its episode's opening record
//! (`end_time` null) is consumed from the anomalies topic is measured.
//!
//! eval "$(deploy/local/stack.sh env)"; cargo build --release -p dwcp-monitor
//! cargo bench -p dwcp-benches --bench alert_latency

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dwcp_schemas::avro::{DerivedKind, SingleObjectCodec};
use dwcp_tests::{create_topics, metric_sum, reader, unique, Worker};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn gauge(name: &str, id: &str, value: f64) -> Vec<u8> {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"cloud.region","value":{{"stringValue":"r"}}}}]}},"scopeMetrics":[{{"metrics":[{{"name":"{name}","gauge":{{"dataPoints":[{{"timeUnixNano":"{t}","asDouble":{value},"attributes":[{{"key":"id","value":{{"stringValue":"{id}"}}}}]}}]}}}}]}}]}}]}}"#
    )
    .into_bytes()
}

/// Produces `payload` to `topic`, then polls `consumer` until a record `wanted` accepts (its key
/// and decoded value): the milliseconds between, or `None` after 30 s.
async fn latency(
    producer: &FutureProducer,
    topic: &str,
    payload: &[u8],
    consumer: &BaseConsumer,
    wanted: impl Fn(&[u8], &str) -> bool,
    codec: &SingleObjectCodec,
) -> Option<f64> {
    let sent = Instant::now();
    producer
        .send(
            FutureRecord::<(), [u8]>::to(topic).payload(payload),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(5)) else {
            continue;
        };
        let text = format!("{:?}", codec.decode(m.payload().unwrap_or_default()));
        if wanted(m.key().unwrap_or_default(), &text) {
            return Some(sent.elapsed().as_secs_f64() * 1000.0);
        }
    }
    None
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let Ok(brokers) = std::env::var("DWCP_TEST_KAFKA") else {
        eprintln!("skipped: DWCP_TEST_KAFKA not set (deploy/local/stack.sh up)");
        return;
    };
    let id = unique("alertlat");
    let (topic, alerts, anomalies) = (
        format!("{id}.metrics"),
        format!("{id}.alerts"),
        format!("{id}.anomalies"),
    );
    create_topics(&brokers, &[&topic, &alerts, &anomalies, &format!("{id}.dlq")], 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: lat\n    interval: 1s\n    rules:\n      - alert: Hot\n        expr: temp > 90\n",
    )
    .expect("rules");
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  commit_interval_ms: 200\n  consumer_options: {{fetch.wait.max.ms: \"10\"}}\n  topics:\n    - {{name: \"{topic}\", signal: metrics, encoding: otlp_json}}\n\
         dead_letter:\n  topic: \"{id}.dlq\"\noperators:\n  allowed_lateness_ms: 0\n  idle_timeout_ms: 600000\n\
         \x20 anomaly:\n    series: [rtt]\n    detectors: {{learning_points: 20, episode_gap: 5}}\n\
         rules:\n  files: [\"{}\"]\nderived_topics:\n  alerts: \"{alerts}\"\n  anomalies: \"{anomalies}\"\n",
        rules.display()
    );
    let w = Worker::start(dir.path(), "worker", &yaml);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let p = producer.clone();
    let t = topic.clone();
    let ticker = tokio::spawn(async move {
        for i in 0u64.. {
            let payload = gauge("tick", "t", 1.0);
            let _ = p
                .send(
                    FutureRecord::<(), [u8]>::to(&t).payload(&payload),
                    Duration::from_secs(5),
                )
                .await;
            // The anomaly series: 50 with a small sawtooth.
            #[allow(clippy::cast_precision_loss)]
            for k in 0..10 {
                let payload = gauge("rtt", &format!("r{k}"), 50.0 + ((i + k) % 7) as f64 * 0.1);
                let _ = p
                    .send(
                        FutureRecord::<(), [u8]>::to(&t).payload(&payload),
                        Duration::from_secs(5),
                    )
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    w.wait_for("dwcp_source_messages_total", &[], 20.0, Duration::from_secs(180))
        .await;
    let consumer = reader(&brokers, &alerts);
    let codec = SingleObjectCodec::for_kind(DerivedKind::Alert).expect("codec");
    let mut latencies = Vec::new();
    for k in 0..20 {
        let key = format!("\"k{k}\"");
        let firing = |_: &[u8], text: &str| text.contains(&key) && text.contains("\"firing\"");
        let payload = gauge("temp", &format!("k{k}"), 95.0);
        latencies.extend(latency(&producer, &topic, &payload, &consumer, firing, &codec).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Anomalies: a spike on one rtt series at a time (each has learned by now); the episode's
    // opening record has no end time.
    let consumer = reader(&brokers, &anomalies);
    let codec = SingleObjectCodec::for_kind(DerivedKind::Anomaly).expect("codec");
    let mut anomaly_latencies = Vec::new();
    for k in 0..10 {
        // Only an episode that starts at the spike (the key ends in its start, ms).
        let spike_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
            - 5;
        let series = format!("id=\"r{k}\"");
        let opened = |key: &[u8], text: &str| {
            let key = String::from_utf8_lossy(key);
            let start: u128 = key.rsplit('/').next().and_then(|s| s.parse().ok()).unwrap_or(0);
            key.contains(&series) && start >= spike_ms && text.contains("\"end_time\", Union(0, Null)")
        };
        let payload = gauge("rtt", &format!("r{k}"), 500.0);
        anomaly_latencies.extend(latency(&producer, &topic, &payload, &consumer, opened, &codec).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ticker.abort();
    anomaly_latencies.sort_by(f64::total_cmp);
    let n = anomaly_latencies.len();
    assert!(n > 0, "no anomaly arrived; worker log:\n{}", w.log_text());
    println!(
        "spike produced → episode opening record consumed, {n} episodes: min {:.0} ms, median {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        anomaly_latencies[0],
        anomaly_latencies[n / 2],
        anomaly_latencies[(n * 95 / 100).min(n - 1)],
        anomaly_latencies[n - 1],
    );
    latencies.sort_by(f64::total_cmp);
    let n = latencies.len();
    assert!(n > 0, "no alert arrived; worker log:\n{}", w.log_text());
    println!(
        "crossing sample produced → alert record consumed, {n} alerts: min {:.0} ms, median {:.0} ms, p95 {:.0} ms, max {:.0} ms; rule evaluations {}",
        latencies[0],
        latencies[n / 2],
        latencies[(n * 95 / 100).min(n - 1)],
        latencies[n - 1],
        metric_sum(&w.metrics().await, "dwcp_rule_evaluations_total", &[])
    );
}
