//! End-to-end tests against the real components of deploy/local/stack.sh. One binary, as
//! ripgrep does; each test skips (and says so) when the stack's variables are not set.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dwcp_tests::{
    committed, consume_all, create_topics, fixtures_dir, kafka, manifest, metric_sum, produce, producer, read_lines,
    unique, Worker,
};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

/// Metric data points per metrics fixture file: one per instrument the manifest names
/// (dwcp.requests, dwcp.latency, dwcp.errors, dwcp.active_connections, dwcp.cpu.usage,
/// dwcp.migration.duration).
fn points_per_metrics_file(file: &serde_json::Value) -> u64 {
    let instruments: BTreeSet<&str> = file
        .as_object()
        .expect("object")
        .keys()
        .filter(|k| k.starts_with("dwcp."))
        .map(|k| k.trim_end_matches(".values").trim_end_matches(".bounds"))
        .collect();
    instruments.len() as u64
}

/// The fixtures produced to the three topics (proto) and to three JSON topics, keyed three ways;
/// a worker consumes them all, counts them in /metrics, writes them to its file sink, sends one
/// corrupted message to the dead-letter topic with its reason, and commits every offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_are_consumed_counted_and_dead_letters_carry_the_reason() {
    let Some(brokers) = kafka() else { return };
    let m = manifest();
    let id = unique("fx");
    let t = |s: &str| format!("{id}.{s}");
    let (metrics, spans, logs) = (t("otlp_metrics"), t("otlp_spans"), t("otlp_logs"));
    let (metrics_json, spans_json, logs_json) = (t("json_metrics"), t("json_spans"), t("json_logs"));
    let dlq = t("dlq");
    let all = [&metrics, &spans, &logs, &metrics_json, &spans_json, &logs_json, &dlq];
    create_topics(&brokers, &all.iter().map(|s| s.as_str()).collect::<Vec<_>>(), 3).await;

    let p = producer(&brokers);
    let dir = fixtures_dir();
    let mut want = BTreeMap::<&str, u64>::new();
    for (signal, key) in [("metrics", "metrics"), ("traces", "traces"), ("logs", "logs")] {
        for f in m[key]["files"].as_array().expect("files") {
            let name = f["file"].as_str().expect("file");
            let n = match signal {
                "metrics" => points_per_metrics_file(f),
                "traces" => f["spans"].as_u64().expect("spans"),
                _ => f["records"].as_u64().expect("records"),
            };
            *want.entry(signal).or_default() += 2 * n; // proto and json
            let pb = std::fs::read(dir.join(format!("{name}.pb"))).expect("pb");
            let js = std::fs::read(dir.join(format!("{name}.json"))).expect("json");
            let (pt, jt) = match signal {
                "metrics" => (&metrics, &metrics_json),
                "traces" => (&spans, &spans_json),
                _ => (&logs, &logs_json),
            };
            // Keyed three ways, as the exporter may: by trace id, by resource (hash), unkeyed.
            let key: Option<Vec<u8>> = match signal {
                "traces" => Some(
                    m["traces"]["traces"][0]["trace_id"]
                        .as_str()
                        .expect("id")
                        .as_bytes()
                        .to_vec(),
                ),
                "metrics" => Some(format!("resource-{}", f["region"].as_str().expect("region")).into_bytes()),
                _ => None,
            };
            produce(&p, pt, key.as_deref(), &pb, None, None).await;
            produce(&p, jt, None, &js, None, None).await;
        }
    }
    // A corrupted message: truncated protobuf, with a header of its own to keep.
    let good = std::fs::read(dir.join("metrics-cumulative-us-west-1.pb")).expect("pb");
    let bad = &good[..good.len() / 2];
    let h = OwnedHeaders::new().insert(Header {
        key: "agent",
        value: Some("collector-7"),
    });
    let (bad_partition, bad_offset) = produce(&p, &metrics, Some(b"k"), bad, Some(h), None).await;

    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("records.jsonl");
    let topic = |name: &str, signal: &str, enc: &str| {
        format!("    - {{name: \"{name}\", signal: {signal}, encoding: {enc}}}\n")
    };
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  commit_interval_ms: 200\n  topics:\n{}{}{}{}{}{}\
         dead_letter:\n  topic: \"{dlq}\"\nsinks:\n  file:\n    path: \"{}\"\n",
        topic(&metrics, "metrics", "otlp_proto"),
        topic(&spans, "traces", "otlp_proto"),
        topic(&logs, "logs", "otlp_proto"),
        topic(&metrics_json, "metrics", "otlp_json"),
        topic(&spans_json, "traces", "otlp_json"),
        topic(&logs_json, "logs", "otlp_json"),
        out.display()
    );
    let mut w = Worker::start(work.path(), "worker", &yaml);
    let total: u64 = want.values().sum();
    w.wait_for("dwcp_source_records_total", &[], total as f64, Duration::from_secs(60))
        .await;
    w.wait_for("dwcp_dead_letter_messages_total", &[], 1.0, Duration::from_secs(30))
        .await;
    let text = w.metrics().await;
    for (signal, n) in &want {
        assert_eq!(
            metric_sum(&text, "dwcp_source_records_total", &[("signal", signal)]),
            *n as f64,
            "{signal}"
        );
    }
    assert_eq!(
        metric_sum(
            &text,
            "dwcp_decode_errors_total",
            &[("topic", &metrics), ("kind", "protobuf")]
        ),
        1.0
    );
    assert_eq!(metric_sum(&text, "dwcp_records_unknown_region_total", &[]), 0.0);
    assert_eq!(metric_sum(&text, "dwcp_source_messages_total", &[]), 2.0 * 12.0 + 1.0);

    // The dead letter: the payload unchanged, the reason and the source in headers.
    let dead = consume_all(&brokers, &dlq, 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.payload(), Some(bad));
    assert_eq!(d.key(), Some(&b"k"[..]));
    let headers: BTreeMap<String, String> = d
        .headers()
        .expect("headers")
        .iter()
        .map(|h| {
            (
                h.key.to_string(),
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    assert!(headers["dwcp.error"].starts_with("invalid otlp_proto:"), "{headers:?}");
    assert_eq!(headers["dwcp.source.topic"], metrics);
    assert_eq!(headers["dwcp.source.partition"], bad_partition.to_string());
    assert_eq!(headers["dwcp.source.offset"], bad_offset.to_string());
    assert_eq!(headers["dwcp.signal"], "metrics");
    assert_eq!(headers["agent"], "collector-7");

    // A clean stop drains the sink and commits every offset: each partition's committed offset
    // equals the number of messages in it.
    assert!(w.stop(), "clean exit; log:\n{}", w.log_text());
    let lines = read_lines(&out);
    assert_eq!(lines.len() as u64, total);
    let trace_ids: BTreeSet<&str> = lines.iter().filter_map(|l| l["trace_id"].as_str()).collect();
    for tr in m["traces"]["traces"].as_array().expect("traces") {
        assert!(trace_ids.contains(tr["trace_id"].as_str().expect("id")));
    }
    let regions: BTreeSet<&str> = lines.iter().filter_map(|l| l["origin"]["region"].as_str()).collect();
    assert_eq!(regions, ["eu-west-1", "us-east-1", "us-west-1"].into_iter().collect());
    let committed_total: i64 = [&metrics, &spans, &logs, &metrics_json, &spans_json, &logs_json]
        .iter()
        .map(|t| committed(&brokers, &id, t, 3).iter().sum::<i64>())
        .sum();
    assert_eq!(committed_total, 2 * 12 + 1);
}

fn gauge_message(seq: u64, region: Option<&str>) -> Vec<u8> {
    // OTLP/JSON keeps the test independent of the decoder under test's protobuf path.
    let resource = match region {
        Some(r) => format!(r#"{{"attributes":[{{"key":"cloud.region","value":{{"stringValue":"{r}"}}}}]}}"#),
        None => r#"{"attributes":[]}"#.to_string(),
    };
    format!(
        r#"{{"resourceMetrics":[{{"resource":{resource},"scopeMetrics":[{{"metrics":[{{"name":"seq","gauge":{{"dataPoints":[
            {{"timeUnixNano":"{}","asInt":"{seq}"}}]}}}}]}}]}}]}}"#,
        1_795_000_000_000_000_000u64 + seq * 1_000_000
    )
    .into_bytes()
}

/// A worker killed with SIGKILL mid-stream and started again resumes from the committed offsets:
/// it reads exactly the messages after them, and every record reaches the sink at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_resumes_from_committed_offsets_with_nothing_lost() {
    let Some(brokers) = kafka() else { return };
    let id = unique("kill");
    let topic = format!("{id}.metrics");
    create_topics(&brokers, &[&topic, &format!("{id}.dlq")], 3).await;
    let p = producer(&brokers);
    let total = 600u64;
    for seq in 0..total / 2 {
        produce(
            &p,
            &topic,
            None,
            &gauge_message(seq, Some("us-east-1")),
            None,
            Some((seq % 3) as i32),
        )
        .await;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("records.jsonl");
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  commit_interval_ms: 100\n  topics:\n    - {{name: \"{topic}\", signal: metrics, encoding: otlp_json}}\n\
         dead_letter:\n  topic: \"{id}.dlq\"\nsinks:\n  file:\n    path: \"{}\"\n",
        out.display()
    );
    let mut w = Worker::start(work.path(), "first", &yaml);
    w.wait_for("dwcp_source_records_total", &[], 100.0, Duration::from_secs(60))
        .await;
    // Wait until commits have happened, then kill without any chance to drain.
    w.wait_for(
        "dwcp_offset_commits_total",
        &[("result", "requested")],
        3.0,
        Duration::from_secs(30),
    )
    .await;
    w.kill9();
    let done_before = committed(&brokers, &id, &topic, 3).iter().sum::<i64>();
    assert!(done_before > 0, "some offsets were committed before the kill");

    for seq in total / 2..total {
        produce(
            &p,
            &topic,
            None,
            &gauge_message(seq, Some("us-east-1")),
            None,
            Some((seq % 3) as i32),
        )
        .await;
    }
    let mut w2 = Worker::start(work.path(), "second", &yaml);
    let want = total as f64 - done_before as f64;
    w2.wait_for("dwcp_source_messages_total", &[], want, Duration::from_secs(60))
        .await;
    // Exactly the messages after the committed offsets are read again: no rewind to the start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(metric_sum(&w2.metrics().await, "dwcp_source_messages_total", &[]), want);
    assert!(w2.stop(), "clean exit; log:\n{}", w2.log_text());

    let lines = read_lines(&out);
    let seqs: BTreeSet<u64> = lines.iter().filter_map(|l| l["value"]["value"].as_u64()).collect();
    let missing: Vec<u64> = (0..total).filter(|s| !seqs.contains(s)).collect();
    assert!(missing.is_empty(), "lost after kill -9: {missing:?}");
    assert_eq!(committed(&brokers, &id, &topic, 3).iter().sum::<i64>(), total as i64);
}

/// The region comes from the resource, else the topic's configured region, else the Kafka
/// header; a record with none is tagged `unknown` and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_falls_back_from_resource_to_topic_to_header_to_unknown() {
    let Some(brokers) = kafka() else { return };
    let id = unique("region");
    let (plain, pinned) = (format!("{id}.plain"), format!("{id}.pinned"));
    create_topics(&brokers, &[&plain, &pinned, &format!("{id}.dlq")], 1).await;
    let p = producer(&brokers);
    let hdr = || {
        OwnedHeaders::new().insert(Header {
            key: "cloud.region",
            value: Some("from-header"),
        })
    };
    produce(
        &p,
        &plain,
        None,
        &gauge_message(1, Some("from-resource")),
        Some(hdr()),
        None,
    )
    .await;
    produce(&p, &plain, None, &gauge_message(2, None), Some(hdr()), None).await;
    produce(&p, &plain, None, &gauge_message(3, None), None, None).await;
    produce(&p, &pinned, None, &gauge_message(4, None), Some(hdr()), None).await;

    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("records.jsonl");
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  topics:\n    - {{name: \"{plain}\", signal: metrics, encoding: otlp_json}}\n\
         \x20   - {{name: \"^{id}\\\\.pin.*\", signal: metrics, encoding: otlp_json, region: from-topic}}\n\
         dead_letter:\n  topic: \"{id}.dlq\"\nsinks:\n  file:\n    path: \"{}\"\n",
        out.display()
    );
    let mut w = Worker::start(work.path(), "worker", &yaml);
    w.wait_for("dwcp_source_records_total", &[], 4.0, Duration::from_secs(60))
        .await;
    let text = w.metrics().await;
    assert_eq!(
        metric_sum(&text, "dwcp_records_unknown_region_total", &[("signal", "metrics")]),
        1.0
    );
    assert!(w.stop());
    let by_seq: BTreeMap<u64, String> = read_lines(&out)
        .iter()
        .map(|l| {
            (
                l["value"]["value"].as_u64().expect("seq"),
                l["origin"]["region"].as_str().expect("region").to_string(),
            )
        })
        .collect();
    assert_eq!(by_seq[&1], "from-resource");
    assert_eq!(by_seq[&2], "from-header");
    assert_eq!(by_seq[&3], "unknown");
    assert_eq!(by_seq[&4], "from-topic");
}
