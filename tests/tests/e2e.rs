//! End-to-end tests against the real components of deploy/local/stack.sh. One binary, as
//! ripgrep does; each test skips (and says so) when the stack's variables are not set.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dwcp_tests::{
    committed, consume_all, create_topics, fixtures_dir, kafka, manifest, metric_sum, produce, producer, read_lines,
    unique, Worker,
};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

#[path = "e2e/scale_out.rs"]
mod scale_out;

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

/// Prometheus' histogram_quantile, written again here from its definition, independently of
/// the operator: rank q·total found in the cumulative buckets, interpolated linearly inside.
fn reference_quantile(q: f64, bounds: &[f64], values: &[f64]) -> f64 {
    let mut cum: Vec<f64> = bounds
        .iter()
        .map(|b| values.iter().filter(|v| *v <= b).count() as f64)
        .collect();
    cum.push(values.len() as f64);
    let rank = q * values.len() as f64;
    let i = cum.iter().position(|c| *c >= rank).expect("a bucket");
    if i == bounds.len() {
        return bounds[bounds.len() - 1];
    }
    let (lo, below) = if i == 0 {
        (0.0, 0.0)
    } else {
        (bounds[i - 1], cum[i - 1])
    };
    lo + (bounds[i] - lo) * (rank - below) / (cum[i] - below)
}

/// The numbers of a manifest entry's array field (`dwcp.latency.values`, `dwcp.latency.bounds`).
fn manifest_numbers(f: &serde_json::Value, field: &str) -> Vec<f64> {
    f[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} in the manifest"))
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect()
}

/// The global p95 of the manifest's latency values over every file, as a histogram over their
/// common bounds gives it.
fn manifest_global_p95(files: &[&serde_json::Value]) -> f64 {
    let all: Vec<f64> = files
        .iter()
        .flat_map(|f| manifest_numbers(f, "dwcp.latency.values"))
        .collect();
    reference_quantile(0.95, &manifest_numbers(files[0], "dwcp.latency.bounds"), &all)
}

/// The newest `timeUnixNano` in an OTLP/JSON fixture, read straight from the JSON.
fn fixture_time_secs(file: &str) -> f64 {
    let text = std::fs::read_to_string(fixtures_dir().join(format!("{file}.json"))).expect("fixture");
    let mut newest = 0u64;
    for part in text.split("\"timeUnixNano\"").skip(1) {
        let digits: String = part
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(char::is_ascii_digit)
            .collect();
        newest = newest.max(digits.parse().unwrap_or(0));
    }
    newest as f64 / 1e9
}

/// Produces the cumulative metric fixtures to a new topic `<id>.otlp_metrics` (with `<id>.dlq`):
/// the topic, the manifest's entries of those files, and the newest fixture time (s).
async fn produce_metric_fixtures<'m>(
    brokers: &str,
    id: &str,
    m: &'m serde_json::Value,
) -> (String, Vec<&'m serde_json::Value>, f64) {
    let topic = format!("{id}.otlp_metrics");
    create_topics(brokers, &[&topic, &format!("{id}.dlq")], 3).await;
    let files: Vec<&serde_json::Value> = m["metrics"]["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter(|f| f["temporality"] == "cumulative")
        .collect();
    let p = producer(brokers);
    let mut t = 0.0f64;
    for f in &files {
        let name = f["file"].as_str().expect("file");
        t = t.max(fixture_time_secs(name));
        let pb = std::fs::read(fixtures_dir().join(format!("{name}.pb"))).expect("pb");
        produce(&p, &topic, Some(name.as_bytes()), &pb, None, None).await;
    }
    (topic, files, t)
}

/// A worker's configuration for the metric fixtures on `topic`: 2 s aggregation windows over
/// latency, requests and CPU, and `endpoints` (YAML list items) as its remote-write sinks.
fn fixtures_worker_yaml(brokers: &str, id: &str, topic: &str, endpoints: &str) -> String {
    format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  topics:\n    - {{name: \"{topic}\", signal: metrics}}\n\
         dead_letter:\n  topic: \"{id}.dlq\"\n\
         operators:\n  idle_timeout_ms: 500\n  allowed_lateness_ms: 0\n  aggregation:\n    window_ms: 2000\n    rules:\n\
         \x20     - {{metric: dwcp.latency}}\n      - {{metric: dwcp.requests}}\n      - {{metric: dwcp.cpu.usage, record: \"dwcp:cpu\"}}\n\
         sinks:\n  prometheus_remote_write:\n{endpoints}"
    )
}

/// The cumulative metric fixtures of three regions through the whole path (Kafka, decode,
/// conversion, aggregation, remote-write) into a real Prometheus and a real VictoriaMetrics,
/// queried back over their HTTP APIs: every series and value as the manifest implies, and the
/// global p95 across regions equal to the one computed here and to Prometheus' own
/// histogram_quantile over the same buckets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_fixtures_reach_prometheus_and_victoriametrics_with_exact_values() {
    let Some(brokers) = kafka() else { return };
    let Ok(vm) = std::env::var("DWCP_TEST_VICTORIAMETRICS") else {
        eprintln!("skipped: DWCP_TEST_VICTORIAMETRICS not set");
        return;
    };
    let m = manifest();
    let id = unique("prom");
    let (topic, files, t) = produce_metric_fixtures(&brokers, &id, &m).await;
    let work = tempfile::tempdir().expect("tempdir");
    let prom = dwcp_tests::PrometheusServer::start(&work.path().join("prom")).await;
    let yaml = fixtures_worker_yaml(
        &brokers,
        &id,
        &topic,
        &format!(
            "    - {{url: \"{}\", batch_wait_ms: 100}}\n    - {{url: \"{vm}/api/v1/write\", batch_wait_ms: 100}}\n",
            prom.write_url()
        ),
    );
    let mut w = Worker::start(work.path(), "worker", &yaml);
    let at = t + 5.0;

    for base in [prom.url(), vm.clone()] {
        let got = dwcp_tests::wait_query(&base, "dwcp:latency:p95:2s", at, 4, Duration::from_secs(60)).await;
        assert_eq!(
            got.len(),
            4,
            "{base}: three regions and global; worker log:\n{}",
            w.log_text()
        );
        for f in &files {
            let region = f["region"].as_str().expect("region");
            let sel = |metric: &str| {
                format!("{metric}{{region=\"{region}\",job=\"dwcp/dwcp-gateway\",operation=\"migration\"}}")
            };
            let one = |rows: Vec<(BTreeMap<String, String>, f64)>, what: &str| -> (BTreeMap<String, String>, f64) {
                assert_eq!(rows.len(), 1, "{base} {region} {what}: {rows:?}");
                rows.into_iter().next().expect("a row")
            };
            let (labels, v) = one(
                dwcp_tests::instant_query(&base, &sel("dwcp_requests_total"), at).await,
                "requests",
            );
            assert_eq!(v, f["dwcp.requests"].as_f64().expect("requests"));
            assert_eq!(labels["instance"], format!("dwcp-gateway-{region}-0"));
            assert_eq!(labels["otel_scope_name"], "dwcp.fixture");
            assert_eq!(labels["otel_scope_version"], "1.0");
            let (_, v) = one(
                dwcp_tests::instant_query(&base, &sel("dwcp_errors_total"), at).await,
                "errors",
            );
            assert_eq!(v, f["dwcp.errors"].as_f64().expect("errors"));
            let (_, v) = one(
                dwcp_tests::instant_query(&base, &format!("dwcp_active_connections{{region=\"{region}\"}}"), at).await,
                "connections",
            );
            assert_eq!(v, f["dwcp.active_connections"].as_f64().expect("connections"));
            let (_, v) = one(
                dwcp_tests::instant_query(&base, &format!("dwcp_cpu_usage_percent{{region=\"{region}\"}}"), at).await,
                "cpu",
            );
            assert_eq!(v, f["dwcp.cpu.usage"].as_f64().expect("cpu"));

            let values = manifest_numbers(f, "dwcp.latency.values");
            let bounds = manifest_numbers(f, "dwcp.latency.bounds");
            let buckets = dwcp_tests::instant_query(&base, &sel("dwcp_latency_milliseconds_bucket"), at).await;
            assert_eq!(buckets.len(), bounds.len() + 1, "{base} {region}");
            for (labels, v) in &buckets {
                let le = &labels["le"];
                let want = if le == "+Inf" {
                    values.len()
                } else {
                    let b: f64 = le.parse().expect("le");
                    values.iter().filter(|x| **x <= b).count()
                };
                assert_eq!(*v, want as f64, "{base} {region} le={le}");
            }
            let (_, v) = one(
                dwcp_tests::instant_query(&base, &sel("dwcp_latency_milliseconds_count"), at).await,
                "count",
            );
            assert_eq!(v, values.len() as f64);
            let (_, v) = one(
                dwcp_tests::instant_query(&base, &sel("dwcp_latency_milliseconds_sum"), at).await,
                "sum",
            );
            assert_eq!(v, values.iter().sum::<f64>());
            let mig = f["dwcp.migration.duration.values"].as_array().expect("mig");
            let (_, v) = one(
                dwcp_tests::instant_query(
                    &base,
                    &format!("dwcp_migration_duration_seconds_count{{region=\"{region}\"}}"),
                    at,
                )
                .await,
                "migration count",
            );
            assert_eq!(v, mig.len() as f64);
            let (labels, _) = one(
                dwcp_tests::instant_query(&base, &format!("target_info{{region=\"{region}\"}}"), at).await,
                "target_info",
            );
            assert_eq!(labels["cloud_provider"], "aws");
            assert_eq!(labels["deployment_environment"], "fixture");
            assert_eq!(labels["job"], "dwcp/dwcp-gateway");
        }

        // The global p95 across regions, computed here from the manifest's raw values.
        let bounds = manifest_numbers(files[0], "dwcp.latency.bounds");
        let want = manifest_global_p95(&files);
        let got = dwcp_tests::instant_query(&base, "dwcp:latency:p95:2s{region=\"global\"}", at).await;
        assert_eq!(got.len(), 1);
        assert!(
            (got[0].1 - want).abs() < 1e-9,
            "{base}: global p95 {} vs {want}",
            got[0].1
        );
        for f in &files {
            let region = f["region"].as_str().expect("region");
            let values = manifest_numbers(f, "dwcp.latency.values");
            let got =
                dwcp_tests::instant_query(&base, &format!("dwcp:latency:p95:2s{{region=\"{region}\"}}"), at).await;
            assert!(
                (got[0].1 - reference_quantile(0.95, &bounds, &values)).abs() < 1e-9,
                "{base} {region}"
            );
        }
        // Requests: 5 per region from their start times, over a 2 s window.
        let got = dwcp_tests::instant_query(&base, "dwcp:requests:rate:2s{region=\"global\"}", at).await;
        let total: f64 = files
            .iter()
            .map(|f| f["dwcp.requests"].as_f64().expect("requests"))
            .sum();
        assert_eq!(got[0].1, total / 2.0);
        let got = dwcp_tests::instant_query(&base, "dwcp:cpu:max:2s{region=\"global\"}", at).await;
        let max = files
            .iter()
            .map(|f| f["dwcp.cpu.usage"].as_f64().expect("cpu"))
            .fold(f64::MIN, f64::max);
        assert_eq!(got[0].1, max);
    }
    // And Prometheus' own histogram_quantile over the raw buckets agrees with the operator.
    let own = dwcp_tests::instant_query(
        &prom.url(),
        "histogram_quantile(0.95, sum by (le) (dwcp_latency_milliseconds_bucket))",
        at,
    )
    .await;
    let ours = dwcp_tests::instant_query(&prom.url(), "dwcp:latency:p95:2s{region=\"global\"}", at).await;
    assert!(
        (own[0].1 - ours[0].1).abs() < 1e-9,
        "prometheus {} vs ours {}",
        own[0].1,
        ours[0].1
    );
    let text = w.metrics().await;
    assert_eq!(
        metric_sum(&text, "dwcp_remote_write_samples_total", &[("result", "dropped")]),
        0.0
    );
    assert!(w.stop());
}

/// Two endpoints, as a regional and a global store: VictoriaMetrics gets every series, a real
/// Prometheus only what its `write_relabel_configs` keep (the `dwcp:` rollups), with a label
/// added. Prometheus then holds no other series, the rollups carry the label and the values the
/// manifest implies, and every sample the global endpoint did not send is counted as
/// `relabel_dropped`: what it sent plus what it dropped equals what the regional one sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_endpoint_gets_only_the_rollups_its_relabeling_keeps() {
    let Some(brokers) = kafka() else { return };
    let Ok(vm) = std::env::var("DWCP_TEST_VICTORIAMETRICS") else {
        eprintln!("skipped: DWCP_TEST_VICTORIAMETRICS not set");
        return;
    };
    let m = manifest();
    let id = unique("relabel");
    let (topic, files, t) = produce_metric_fixtures(&brokers, &id, &m).await;
    let work = tempfile::tempdir().expect("tempdir");
    let prom = dwcp_tests::PrometheusServer::start(&work.path().join("prom")).await;
    let yaml = fixtures_worker_yaml(
        &brokers,
        &id,
        &topic,
        &format!(
            "    - {{name: regional, url: \"{vm}/api/v1/write\", batch_wait_ms: 100}}\n\
             \x20   - name: global\n      url: \"{}\"\n      batch_wait_ms: 100\n      write_relabel_configs:\n\
             \x20       - {{source_labels: [__name__], regex: \"dwcp:.*\", action: keep}}\n\
             \x20       - {{target_label: store, replacement: global}}\n",
            prom.write_url()
        ),
    );
    let mut w = Worker::start(work.path(), "worker", &yaml);
    let at = t + 5.0;
    let base = prom.url();
    let got = dwcp_tests::wait_query(&base, "dwcp:latency:p95:2s", at, 4, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 4, "three regions and global; worker log:\n{}", w.log_text());
    assert!(got.iter().all(|(l, _)| l["store"] == "global"), "{got:?}");
    // Nothing but the rollups, though the regional store has the raw series of this run.
    let other = dwcp_tests::instant_query(&base, "{__name__=~\".+\", __name__!~\"dwcp:.*\"}", at).await;
    assert!(other.is_empty(), "{other:?}");
    let raw = dwcp_tests::wait_query(
        &vm,
        "dwcp_requests_total{job=\"dwcp/dwcp-gateway\",operation=\"migration\"}",
        at,
        files.len(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        raw.len(),
        files.len(),
        "the regional store has every region's raw series"
    );

    let want = manifest_global_p95(&files);
    let p95 = dwcp_tests::instant_query(&base, "dwcp:latency:p95:2s{region=\"global\",store=\"global\"}", at).await;
    assert_eq!(p95.len(), 1);
    assert!((p95[0].1 - want).abs() < 1e-9, "global p95 {} vs {want}", p95[0].1);
    let total: f64 = files
        .iter()
        .map(|f| f["dwcp.requests"].as_f64().expect("requests"))
        .sum();
    let rate = dwcp_tests::wait_query(
        &base,
        "dwcp:requests:rate:2s{region=\"global\"}",
        at,
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(rate[0].1, total / 2.0);

    // Every sample the global endpoint was handed is sent or counted: poll until the counts
    // settle (batches in flight).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = None;
    loop {
        let text = w.metrics().await;
        let get = |endpoint: &str, result: &str| {
            metric_sum(
                &text,
                "dwcp_remote_write_samples_total",
                &[("endpoint", endpoint), ("result", result)],
            )
        };
        let now = (
            get("regional", "sent"),
            get("global", "sent"),
            get("global", "relabel_dropped"),
        );
        if now.0 == now.1 + now.2 && last == Some(now) {
            assert!(now.2 > 0.0 && now.1 > 0.0, "{now:?}");
            assert_eq!(get("regional", "relabel_dropped"), 0.0);
            assert_eq!(get("global", "dropped"), 0.0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "regional sent, global sent, global relabel_dropped: {now:?}"
        );
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(w.stop());
}

/// A real Prometheus stopped for 30 s mid-stream and restarted: the sink retries, holds its
/// acks (so the source pauses instead of dropping), and after catch-up every sample is there,
/// none rejected as out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_outage_of_30s_loses_nothing_and_reorders_nothing() {
    let Some(brokers) = kafka() else { return };
    let id = unique("outage");
    let topic = format!("{id}.metrics");
    create_topics(&brokers, &[&topic, &format!("{id}.dlq")], 3).await;
    let work = tempfile::tempdir().expect("tempdir");
    let mut prom = dwcp_tests::PrometheusServer::start(&work.path().join("prom")).await;
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  commit_interval_ms: 200\n  topics:\n    - {{name: \"{topic}\", signal: metrics, encoding: otlp_json}}\n\
         dead_letter:\n  topic: \"{id}.dlq\"\noperators:\n  prometheus:\n    target_info: false\n\
         sinks:\n  prometheus_remote_write:\n    - {{url: \"{}\", batch_wait_ms: 100, shards: 2, max_backoff_ms: 2000, queue_capacity: 4}}\n",
        prom.write_url()
    );
    let mut w = Worker::start(work.path(), "worker", &yaml);
    let p = producer(&brokers);
    let total = 400u64;
    let producing = {
        let topic = topic.clone();
        tokio::spawn(async move {
            for seq in 0..total {
                // Three series (one per partition), each in timestamp order.
                produce(
                    &p,
                    &topic,
                    None,
                    &gauge_message(seq, Some(&format!("r{}", seq % 3))),
                    None,
                    Some((seq % 3) as i32),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    prom.stop();
    tokio::time::sleep(Duration::from_secs(30)).await;
    prom.restart().await;
    producing.await.expect("producer");
    let at = 1_795_000_000.0 + total as f64 / 1000.0 + 1.0;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut count = 0.0;
    while std::time::Instant::now() < deadline {
        let r = dwcp_tests::instant_query(&prom.url(), "sum(count_over_time(seq[1h]))", at).await;
        count = r.first().map_or(0.0, |x| x.1);
        if count >= total as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = w.metrics().await;
    assert_eq!(
        count,
        total as f64,
        "samples in Prometheus after the outage\nworker:\n{}\nprometheus:\n{}",
        w.log_text(),
        prom.log()
    );
    assert!(
        metric_sum(&text, "dwcp_remote_write_retries_total", &[]) > 0.0,
        "the outage was seen"
    );
    assert_eq!(
        metric_sum(&text, "dwcp_remote_write_samples_total", &[("result", "dropped")]),
        0.0,
        "nothing rejected"
    );
    // Every value is where its sequence number says.
    let r = dwcp_tests::instant_query(&prom.url(), "sum(sum_over_time(seq[1h]))", at).await;
    assert_eq!(r[0].1, (0..total).sum::<u64>() as f64);
    assert!(w.stop());
}

/// Hostile input through a real broker: the worker dead-letters what cannot be decoded (with
/// the reason), takes what is valid however odd (NaN and ±Inf, timestamps of 0 and of the year
/// 2300, 10,000 resource attributes, a 10 MB message), and keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_dead_lettered_or_accepted_and_the_worker_survives() {
    let Some(brokers) = kafka() else { return };
    let id = unique("hostile");
    let (proto, json, dlq) = (format!("{id}.proto"), format!("{id}.json"), format!("{id}.dlq"));
    create_topics(&brokers, &[&proto, &json, &dlq], 1).await;
    let p = producer(&brokers);
    let good = std::fs::read(fixtures_dir().join("metrics-cumulative-us-west-1.pb")).expect("pb");
    // Undecodable: empty, garbage (wire type 7 does not exist), truncated, invalid UTF-8.
    produce(&p, &proto, None, b"", None, None).await;
    produce(&p, &proto, None, &[0x0f, 0xff, 0xff, 0xff, 0x07], None, None).await;
    produce(&p, &proto, None, &good[..good.len() - 7], None, None).await;
    produce(&p, &json, None, b"{\"resourceMetrics\":[{\"resource\":{\"attributes\":[{\"key\":\"a\",\"value\":{\"stringValue\":\"\xff\xfe\"}}]}}]}", None, None).await;
    // Valid, however odd.
    let gauge = |points: &str, attrs: &str| {
        format!(
            r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{attrs}]}},"scopeMetrics":[{{"metrics":[{{"name":"odd","gauge":{{"dataPoints":[{points}]}}}}]}}]}}]}}"#
        )
    };
    let odd = gauge(
        r#"{"timeUnixNano":"0","asDouble":"NaN"},{"timeUnixNano":"10413792000000000000","asDouble":"Infinity"},{"timeUnixNano":"1795000000000000000","asDouble":"-Infinity"}"#,
        r#"{"key":"cloud.region","value":{"stringValue":"eu-west-1"}}"#,
    );
    produce(&p, &json, None, odd.as_bytes(), None, None).await;
    let many: Vec<String> = (0..10_000)
        .map(|i| format!(r#"{{"key":"k{i}","value":{{"intValue":"{i}"}}}}"#))
        .collect();
    let wide = gauge(r#"{"timeUnixNano":"1795000000000000000","asInt":"1"}"#, &many.join(","));
    produce(&p, &json, None, wide.as_bytes(), None, None).await;
    let point = r#"{"timeUnixNano":"1795000000000000000","asDouble":1.5,"attributes":[{"key":"pad","value":{"stringValue":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}]}"#;
    let n_big = 10 * 1024 * 1024 / point.len() + 1;
    let big = gauge(
        &vec![point; n_big].join(","),
        r#"{"key":"cloud.region","value":{"stringValue":"us-east-1"}}"#,
    );
    assert!(big.len() > 10 * 1024 * 1024);
    produce(&p, &json, None, big.as_bytes(), None, None).await;

    let work = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  topics:\n    - {{name: \"{proto}\", signal: metrics}}\n\
         \x20   - {{name: \"{json}\", signal: metrics, encoding: otlp_json}}\ndead_letter:\n  topic: \"{dlq}\"\n"
    );
    let mut w = Worker::start(work.path(), "worker", &yaml);
    let want_records = 3.0 + 1.0 + n_big as f64;
    w.wait_for("dwcp_source_records_total", &[], want_records, Duration::from_secs(90))
        .await;
    w.wait_for("dwcp_dead_letter_messages_total", &[], 4.0, Duration::from_secs(30))
        .await;
    let text = w.metrics().await;
    assert_eq!(metric_sum(&text, "dwcp_source_records_total", &[]), want_records);
    assert_eq!(metric_sum(&text, "dwcp_decode_errors_total", &[("kind", "empty")]), 1.0);
    assert_eq!(
        metric_sum(&text, "dwcp_decode_errors_total", &[("kind", "protobuf")]),
        2.0
    );
    assert_eq!(metric_sum(&text, "dwcp_decode_errors_total", &[("kind", "json")]), 1.0);
    // The 10,000-attribute resource has no cloud.region and no fallback: tagged unknown, counted.
    assert_eq!(metric_sum(&text, "dwcp_records_unknown_region_total", &[]), 1.0);
    // The zero and year-2300 timestamps did not move the watermark.
    assert_eq!(
        metric_sum(&text, "dwcp_watermark_ignored_timestamps_total", &[]),
        0.0 + 2.0
    );
    let dead = consume_all(&brokers, &dlq, 4, Duration::from_secs(30));
    let reasons: Vec<String> = dead
        .iter()
        .map(|m| {
            m.headers()
                .and_then(|h| h.iter().find(|h| h.key == "dwcp.error").and_then(|h| h.value))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        })
        .collect();
    // The two source topics are consumed side by side: their dead letters interleave in any
    // order, each topic's in its own.
    let of = |prefix: &str| reasons.iter().filter(|r| r.starts_with(prefix)).count();
    assert_eq!(
        (of("empty message"), of("invalid otlp_proto:"), of("invalid otlp_json:")),
        (1, 2, 1),
        "{reasons:?}"
    );
    let proto_order: Vec<&String> = reasons
        .iter()
        .filter(|r| !r.starts_with("invalid otlp_json:"))
        .collect();
    assert_eq!(proto_order[0], "empty message", "{reasons:?}");
    let health = reqwest::get(format!("http://127.0.0.1:{}/healthz", w.port))
        .await
        .expect("healthz");
    assert!(health.status().is_success());
    assert!(w.stop(), "clean exit; log:\n{}", w.log_text());
}

/// The trace fixtures of three regions: stitched into the manifest's three traces (counted in
/// /metrics), and span metrics before sampling into a real Prometheus, even with a policy that
/// keeps only errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_stitched_and_red_metrics_reach_prometheus_whatever_sampling_keeps() {
    let Some(brokers) = kafka() else { return };
    let m = manifest();
    let id = unique("spans");
    let topic = format!("{id}.spans");
    create_topics(&brokers, &[&topic, &format!("{id}.dlq")], 3).await;
    let p = producer(&brokers);
    let mut t = 0.0f64;
    // Out of order: the last region first.
    for f in m["traces"]["files"].as_array().expect("files").iter().rev() {
        let name = f["file"].as_str().expect("file");
        let pb = std::fs::read(fixtures_dir().join(format!("{name}.pb"))).expect("pb");
        let text = std::fs::read_to_string(fixtures_dir().join(format!("{name}.json"))).expect("json");
        for part in text.split("\"endTimeUnixNano\"").skip(1) {
            let digits: String = part
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            t = t.max(digits.parse::<f64>().unwrap_or(0.0) / 1e9);
        }
        produce(&p, &topic, None, &pb, None, None).await;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let prom = dwcp_tests::PrometheusServer::start(&work.path().join("prom")).await;
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  topics:\n    - {{name: \"{topic}\", signal: traces}}\n\
         dead_letter:\n  topic: \"{id}.dlq\"\n\
         operators:\n  idle_timeout_ms: 500\n  allowed_lateness_ms: 0\n  traces:\n    decision_wait_ms: 1000\n    policies:\n      - {{type: status_code, status_codes: [ERROR]}}\n\
         \x20 span_metrics:\n    flush_interval_ms: 1000\n  prometheus:\n    target_info: false\n\
         sinks:\n  prometheus_remote_write:\n    - {{url: \"{}\", batch_wait_ms: 100}}\n",
        prom.write_url()
    );
    let mut w = Worker::start(work.path(), "worker", &yaml);
    w.wait_for("dwcp_traces_decided_total", &[], 3.0, Duration::from_secs(60))
        .await;
    let text = w.metrics().await;
    assert_eq!(
        metric_sum(&text, "dwcp_traces_decided_total", &[("decision", "sampled")]),
        1.0,
        "only the error trace"
    );
    assert_eq!(
        metric_sum(&text, "dwcp_traces_decided_total", &[("decision", "not_sampled")]),
        2.0
    );
    assert_eq!(metric_sum(&text, "dwcp_traces_evicted_early_total", &[]), 0.0);

    let at = t + 3.0;
    let total: u64 = m["traces"]["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["spans"].as_u64().expect("spans"))
        .sum();
    let got = dwcp_tests::wait_query(
        &prom.url(),
        "traces_span_metrics_calls_total",
        at,
        7,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        got.iter().map(|r| r.1).sum::<f64>(),
        total as f64,
        "every span counted, sampled or not: {got:?}"
    );
    let err = dwcp_tests::instant_query(
        &prom.url(),
        "traces_span_metrics_calls_total{span_name=\"consensus-round\",status_code=\"STATUS_CODE_ERROR\",region=\"us-east-1\",job=\"dwcp/dwcp-migrator\"}",
        at,
    )
    .await;
    assert_eq!(err.len(), 1, "{err:?}");
    assert_eq!(err[0].1, 1.0);
    let slow = dwcp_tests::instant_query(
        &prom.url(),
        "traces_span_metrics_duration_milliseconds_bucket{span_name=\"bulk-transfer\",le=\"100\"}",
        at,
    )
    .await;
    assert_eq!(slow[0].1, 0.0, "the slow transfer took 120 ms or more");
    let count = dwcp_tests::instant_query(
        &prom.url(),
        "traces_span_metrics_duration_milliseconds_count{span_name=\"bulk-transfer\"}",
        at,
    )
    .await;
    assert_eq!(count[0].1, 1.0);
    assert!(w.stop());
}

async fn os_search(base: &str, index: &str, query: serde_json::Value) -> Vec<serde_json::Value> {
    let r: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/{index}/_search"))
        .json(&serde_json::json!({"query": query, "size": 100}))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    r["hits"]["hits"].as_array().cloned().unwrap_or_default()
}

/// Logs and sampled traces of the fixtures into an OpenSearch-API store (osmem-server): found
/// again with bool, term and range queries, spans in Jaeger's format; a log whose body conflicts
/// with the mapping goes to the dead-letter topic with the store's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_traces_reach_the_store_and_mapping_conflicts_are_dead_lettered() {
    let Some(brokers) = kafka() else { return };
    let Ok(os) = std::env::var("DWCP_TEST_OPENSEARCH") else {
        eprintln!("skipped: DWCP_TEST_OPENSEARCH not set");
        return;
    };
    let m = manifest();
    let id = unique("es");
    let (logs, spans, dlq) = (format!("{id}.logs"), format!("{id}.spans"), format!("{id}.dlq"));
    create_topics(&brokers, &[&logs, &spans, &dlq], 1).await;
    let p = producer(&brokers);
    for f in m["logs"]["files"].as_array().expect("files") {
        let name = f["file"].as_str().expect("file");
        produce(
            &p,
            &logs,
            None,
            &std::fs::read(fixtures_dir().join(format!("{name}.json"))).expect("json"),
            None,
            None,
        )
        .await;
    }
    for f in m["traces"]["files"].as_array().expect("files") {
        let name = f["file"].as_str().expect("file");
        produce(
            &p,
            &spans,
            None,
            &std::fs::read(fixtures_dir().join(format!("{name}.pb"))).expect("pb"),
            None,
            None,
        )
        .await;
    }
    // A body that is an object, against the text mapping of `body`: a mapping conflict.
    let conflict =
        br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"cloud.region","value":{"stringValue":"eu-west-1"}}]},
        "scopeLogs":[{"logRecords":[{"timeUnixNano":"1795481820000000000","severityNumber":9,
        "body":{"kvlistValue":{"values":[{"key":"a","value":{"intValue":"1"}}]}}}]}]}]}"#;
    produce(&p, &logs, None, conflict, None, None).await;

    let prefix = id.replace('.', "-").to_lowercase();
    let work = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  topics:\n    - {{name: \"{logs}\", signal: logs, encoding: otlp_json}}\n\
         \x20   - {{name: \"{spans}\", signal: traces}}\ndead_letter:\n  topic: \"{dlq}\"\n\
         operators:\n  idle_timeout_ms: 500\n  allowed_lateness_ms: 0\n  traces:\n    decision_wait_ms: 1000\n\
         sinks:\n  elasticsearch:\n    url: \"{os}\"\n    batch_wait_ms: 200\n    logs_index_prefix: \"{prefix}-logs\"\n    spans_index_prefix: \"{prefix}-span\"\n"
    );
    let mut w = Worker::start(work.path(), "worker", &yaml);
    let log_total: u64 = m["logs"]["files"]
        .as_array()
        .expect("f")
        .iter()
        .map(|f| f["records"].as_u64().expect("n"))
        .sum();
    let span_total: u64 = m["traces"]["files"]
        .as_array()
        .expect("f")
        .iter()
        .map(|f| f["spans"].as_u64().expect("n"))
        .sum();
    w.wait_for(
        "dwcp_elasticsearch_documents_total",
        &[("result", "stored")],
        (log_total + span_total) as f64,
        Duration::from_secs(60),
    )
    .await;
    w.wait_for(
        "dwcp_dead_letter_messages_total",
        &[("topic", "elasticsearch")],
        1.0,
        Duration::from_secs(30),
    )
    .await;

    let li = format!("{prefix}-logs-*");
    let all = os_search(&os, &li, serde_json::json!({"match_all": {}})).await;
    assert_eq!(all.len() as u64, log_total);
    // bool + term + range: the ERROR records of us-east-1 in the fixture's day.
    let q = serde_json::json!({"bool": {"filter": [
        {"term": {"region": "us-east-1"}},
        {"range": {"severity_number": {"gte": 17}}},
        {"range": {"@timestamp": {"gte": "2026-11-24T00:00:00Z", "lt": "2026-11-25T00:00:00Z"}}}
    ]}});
    let errors = os_search(&os, &li, q).await;
    assert_eq!(errors.len(), 1);
    let tid = m["logs"]["files"]
        .as_array()
        .expect("f")
        .iter()
        .find(|f| f["region"] == "us-east-1")
        .expect("east")["trace_id_of_first_two"]
        .clone();
    assert_eq!(errors[0]["_source"]["trace_id"], tid);
    // The dashboards' log panels, queried as Grafana's Elasticsearch datasource sends them
    // (Lucene through query_string, the panel's time range in epoch_millis): the fixtures' errors.
    let want_errors: u64 = m["logs"]["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["errors"].as_u64().expect("errors"))
        .sum();
    let mut log_panels = 0;
    for board in dwcp_pipeline::grafana::boards() {
        for panel in &board.panels {
            for q in &panel.queries {
                let dwcp_pipeline::grafana::Query::Logs { query } = q else {
                    continue;
                };
                log_panels += 1;
                let grafana_query = serde_json::json!({"bool": {"filter": [
                    {"range": {"@timestamp": {"gte": 1_795_478_400_000_i64, "lte": 1_795_564_800_000_i64, "format": "epoch_millis"}}},
                    {"query_string": {"analyze_wildcard": true, "query": query}}
                ]}});
                let hits = os_search(&os, &li, grafana_query).await;
                assert_eq!(
                    hits.len() as u64,
                    want_errors,
                    "{} / {}: {query}",
                    board.uid,
                    panel.title
                );
            }
        }
    }
    assert!(log_panels >= 1);
    // The logs of one trace.
    let of_trace = os_search(&os, &li, serde_json::json!({"term": {"trace_id": tid}})).await;
    assert_eq!(of_trace.len(), 2);

    let si = format!("{prefix}-span-*");
    for t in m["traces"]["traces"].as_array().expect("traces") {
        let hits = os_search(&os, &si, serde_json::json!({"term": {"traceID": t["trace_id"]}})).await;
        assert_eq!(
            hits.len() as u64,
            t["spans"].as_u64().expect("n"),
            "trace {}",
            t["trace_id"]
        );
        let names: BTreeSet<&str> = hits
            .iter()
            .map(|h| h["_source"]["operationName"].as_str().expect("op"))
            .collect();
        let want: BTreeSet<&str> = t["span_names"]
            .as_array()
            .expect("names")
            .iter()
            .map(|v| v.as_str().expect("s"))
            .collect();
        assert_eq!(names, want);
    }
    let slow = os_search(&os, &si, serde_json::json!({"range": {"duration": {"gte": 120_000}}})).await;
    assert!(slow.iter().any(|h| h["_source"]["operationName"] == "bulk-transfer"));

    // The queries the monitoring API exposes.
    let q = dwcp_sinks::elasticsearch::EsQuery::new(&os, &format!("{prefix}-logs"), &format!("{prefix}-span"));
    let ids = |name: &str| -> String {
        m["traces"]["traces"]
            .as_array()
            .expect("t")
            .iter()
            .find(|t| t["name"] == name)
            .expect("trace")["trace_id"]
            .as_str()
            .expect("id")
            .to_string()
    };
    let (migration, error, slow) = (
        ids("cross-region-migration"),
        ids("consensus-error"),
        ids("slow-transfer"),
    );
    let spans_of = q.trace(&migration).await.expect("trace");
    assert_eq!(spans_of.len(), 5);
    assert!(spans_of
        .windows(2)
        .all(|w| w[0]["startTime"].as_u64() <= w[1]["startTime"].as_u64()));
    use dwcp_sinks::elasticsearch::{LogQuery, TraceQuery};
    let set = |v: Vec<String>| v.into_iter().collect::<BTreeSet<String>>();
    let eu = set(q
        .traces(&TraceQuery {
            region: Some("eu-west-1".into()),
            ..Default::default()
        })
        .await
        .expect("q"));
    assert_eq!(eu, [migration.clone(), slow.clone()].into_iter().collect());
    let errs = q
        .traces(&TraceQuery {
            error: Some(true),
            ..Default::default()
        })
        .await
        .expect("q");
    assert_eq!(errs, vec![error.clone()]);
    let long = set(q
        .traces(&TraceQuery {
            min_duration_ms: Some(120),
            ..Default::default()
        })
        .await
        .expect("q"));
    assert!(long.contains(&slow) && !long.contains(&error), "{long:?}");
    let day = TraceQuery {
        start_ms: Some(1_795_478_400_000),
        end_ms: Some(1_795_564_800_000),
        ..Default::default()
    };
    assert_eq!(q.traces(&day).await.expect("q").len(), 3);
    let past = TraceQuery {
        start_ms: Some(0),
        end_ms: Some(1_000_000),
        ..Default::default()
    };
    assert!(q.traces(&past).await.expect("q").is_empty());
    let errors_all = q
        .logs(&LogQuery {
            min_severity: Some(17),
            ..Default::default()
        })
        .await
        .expect("q");
    assert_eq!(errors_all.len(), 3, "one ERROR record per region");
    let east = q
        .logs(&LogQuery {
            min_severity: Some(17),
            region: Some("us-east-1".into()),
            ..Default::default()
        })
        .await
        .expect("q");
    assert_eq!(east.len(), 1);
    let one = q
        .logs(&LogQuery {
            limit: Some(1),
            ..Default::default()
        })
        .await
        .expect("q");
    assert_eq!(one.len(), 1);
    let found = q
        .logs(&LogQuery {
            search: Some("failed".into()),
            ..Default::default()
        })
        .await
        .expect("q");
    assert!(
        !found.is_empty()
            && found
                .iter()
                .all(|d| d["body"].as_str().unwrap_or_default().to_lowercase().contains("failed"))
    );
    let tid_s = tid.as_str().expect("tid").to_string();
    assert_eq!(q.logs_of_trace(&tid_s).await.expect("q").len(), 2);

    // The same through the worker's monitoring API.
    let api = format!("http://127.0.0.1:{}", w.port);
    let (status, v) = api_get(&api, &format!("/api/v1/traces/{migration}"), &[], None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["spans"].as_array().map(Vec::len), Some(5));
    let ids_of = |v: &serde_json::Value| -> BTreeSet<String> {
        v["data"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let (_, v) = api_get(&api, "/api/v1/traces", &[("region", "eu-west-1".into())], None).await;
    assert_eq!(ids_of(&v), [migration.clone(), slow.clone()].into_iter().collect());
    let (_, v) = api_get(&api, "/api/v1/traces", &[("error", "true".into())], None).await;
    assert_eq!(ids_of(&v), [error.clone()].into_iter().collect());
    let (_, v) = api_get(
        &api,
        "/api/v1/traces",
        &[("start", "2026-11-24T00:00:00Z".into()), ("end", "1795564800".into())],
        None,
    )
    .await;
    assert_eq!(ids_of(&v).len(), 3, "{v}");
    let (_, v) = api_get(
        &api,
        "/api/v1/logs",
        &[("min_severity", "17".into()), ("region", "us-east-1".into())],
        None,
    )
    .await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1), "{v}");
    let (_, v) = api_get(&api, &format!("/api/v1/traces/{tid_s}/logs"), &[], None).await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2), "{v}");
    let (status, v) = api_get(&api, "/api/v1/traces/0123456789abcdef0123456789abcdef", &[], None).await;
    assert_eq!((status, v["errorType"].as_str()), (404, Some("not_found")));
    let (status, _) = api_get(&api, "/api/v1/traces", &[("error", "maybe".into())], None).await;
    assert_eq!(status, 400);

    let dead = consume_all(&brokers, &dlq, 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1);
    let reason = dead[0]
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == "dwcp.error").and_then(|h| h.value))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    assert!(reason.starts_with("400 mapper_parsing_exception"), "{reason}");
    let doc: serde_json::Value = serde_json::from_slice(dead[0].payload().expect("payload")).expect("the document");
    assert_eq!(doc["body"]["a"], 1);
    assert!(w.stop());
}

/// The store frozen (SIGSTOP) for 10 s mid-stream and resumed: requests time out and are
/// retried, the queue holds, and afterwards every log record is stored exactly once (the
/// deterministic ids make a retried batch overwrite, not duplicate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_loses_nothing_and_duplicates_nothing() {
    let Some(brokers) = kafka() else { return };
    let Ok(bin) = std::env::var("DWCP_TEST_OSMEM_BIN") else {
        eprintln!("skipped: DWCP_TEST_OSMEM_BIN not set");
        return;
    };
    let port = dwcp_tests::free_port();
    let mut store = std::process::Command::new(&bin)
        .args(["-addr", &format!("127.0.0.1:{port}"), "-no-stdin-watch", "-no-ja"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("osmem-server");
    let os = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reqwest::get(&os).await.is_err() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = unique("esout");
    let topic = format!("{id}.logs");
    create_topics(&brokers, &[&topic, &format!("{id}.dlq")], 3).await;
    let work = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  topics:\n    - {{name: \"{topic}\", signal: logs, encoding: otlp_json}}\n\
         dead_letter:\n  topic: \"{id}.dlq\"\n\
         sinks:\n  elasticsearch:\n    url: \"{os}\"\n    batch_wait_ms: 100\n    timeout_ms: 1500\n    max_backoff_ms: 1000\n    queue_capacity: 4\n"
    );
    let mut w = Worker::start(work.path(), "worker", &yaml);
    let p = producer(&brokers);
    let total = 300u64;
    let pid = store.id().to_string();
    let producing = tokio::spawn({
        let topic = topic.clone();
        async move {
            for i in 0..total {
                let msg = format!(
                    r#"{{"resourceLogs":[{{"resource":{{"attributes":[{{"key":"cloud.region","value":{{"stringValue":"us-east-1"}}}}]}},
                    "scopeLogs":[{{"logRecords":[{{"timeUnixNano":"{}","severityNumber":9,"body":{{"stringValue":"record {i}"}}}}]}}]}}]}}"#,
                    1_795_481_820_000_000_000u64 + i * 1_000_000
                );
                produce(&p, &topic, None, msg.as_bytes(), None, Some((i % 3) as i32)).await;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("kill -STOP");
    tokio::time::sleep(Duration::from_secs(10)).await;
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .expect("kill -CONT");
    producing.await.expect("producer");
    w.wait_for(
        "dwcp_elasticsearch_documents_total",
        &[("result", "stored")],
        total as f64,
        Duration::from_secs(90),
    )
    .await;
    let text = w.metrics().await;
    assert!(
        metric_sum(&text, "dwcp_elasticsearch_retries_total", &[]) > 0.0,
        "the outage was seen"
    );
    assert_eq!(
        metric_sum(&text, "dwcp_elasticsearch_documents_total", &[("result", "rejected")]),
        0.0
    );
    let r: serde_json::Value = reqwest::Client::new()
        .post(format!("{os}/dwcp-logs-*/_search"))
        .json(&serde_json::json!({"query": {"match_all": {}}, "size": 1000}))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    let hits = r["hits"]["hits"].as_array().cloned().unwrap_or_default();
    let bodies: BTreeSet<String> = hits
        .iter()
        .map(|h| h["_source"]["body"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(hits.len() as u64, total, "no duplicates");
    assert_eq!(bodies.len() as u64, total, "nothing lost");
    assert!(w.stop());
    let _ = store.kill();
    let _ = store.wait();
}

/// OTLP/JSON of one region's request and error counters (cumulative) at `t_s` seconds, and a
/// `tick` gauge that only moves event time.
fn counters_message(region: &str, t_s: u64, requests: u64, errors: u64) -> Vec<u8> {
    let t = t_s * 1_000_000_000;
    let sum = |name: &str, v: u64| {
        format!(
            r#"{{"name":"{name}","unit":"{{request}}","sum":{{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{{"startTimeUnixNano":"1","timeUnixNano":"{t}","asInt":"{v}"}}]}}}}"#
        )
    };
    format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"cloud.region","value":{{"stringValue":"{region}"}}}}]}},"scopeMetrics":[{{"metrics":[{},{},{{"name":"tick","gauge":{{"dataPoints":[{{"timeUnixNano":"{t}","asInt":"1"}}]}}}}]}}]}}]}}"#,
        sum("http.requests", requests),
        sum("http.errors", errors)
    )
    .into_bytes()
}

/// The Avro records of a derived topic, decoded with the `.avsc` shipped in schemas/avro
/// (single-object encoding: 2 marker bytes and the 8-byte Rabin fingerprint, then the datum).
fn decode_avro(
    messages: &[rdkafka::message::OwnedMessage],
    avsc: &str,
) -> Vec<BTreeMap<String, apache_avro::types::Value>> {
    let text = std::fs::read_to_string(format!("{}/../schemas/avro/{avsc}", env!("CARGO_MANIFEST_DIR"))).expect("avsc");
    let schema = apache_avro::Schema::parse_str(&text).expect("schema");
    let fp = schema.fingerprint::<apache_avro::rabin::Rabin>();
    messages
        .iter()
        .map(|m| {
            let bytes = m.payload().expect("payload");
            assert_eq!(&bytes[..2], &[0xC3, 0x01], "single-object marker");
            assert_eq!(&bytes[2..10], &fp.bytes[..8], "fingerprint of {avsc}");
            let v = apache_avro::from_avro_datum(&schema, &mut &bytes[10..], None).expect("datum");
            match v {
                apache_avro::types::Value::Record(fields) => fields.into_iter().collect(),
                other => panic!("not a record: {other:?}"),
            }
        })
        .collect()
}

fn avro_f64(v: &apache_avro::types::Value) -> f64 {
    match v {
        apache_avro::types::Value::Double(d) => *d,
        other => panic!("not a double: {other:?}"),
    }
}

fn avro_str(v: &apache_avro::types::Value) -> String {
    match v {
        apache_avro::types::Value::String(s) | apache_avro::types::Value::Enum(_, s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

fn avro_ms(v: &apache_avro::types::Value) -> i64 {
    match v {
        apache_avro::types::Value::TimestampMillis(t) | apache_avro::types::Value::Long(t) => *t,
        apache_avro::types::Value::Union(_, v) => avro_ms(v),
        other => panic!("not a timestamp: {other:?}"),
    }
}

/// SLA accounting and region health through the whole path: counters from Kafka, SLA reports
/// and health changes on their topics as Avro, the SLA series in a real Prometheus. Halfway the
/// worker stops and starts again: it restores its snapshot and continues the counts, so the
/// final compliance covers both halves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sla_and_health_reach_kafka_as_avro_and_prometheus_and_survive_a_restart() {
    let Some(brokers) = kafka() else { return };
    let id = unique("sla");
    let topic = format!("{id}.metrics");
    let (sla_topic, health_topic, alerts_topic) = (format!("{id}.sla"), format!("{id}.health"), format!("{id}.alerts"));
    create_topics(
        &brokers,
        &[&topic, &format!("{id}.dlq"), &sla_topic, &health_topic, &alerts_topic],
        1,
    )
    .await;
    let alertmanager = std::env::var("DWCP_TEST_ALERTMANAGER").expect("the stack's Alertmanager");
    let work = tempfile::tempdir().expect("tempdir");
    let prom = dwcp_tests::PrometheusServer::start(&work.path().join("prom")).await;
    let now_s = dwcp_tests::now_s();
    let t0 = now_s / 60 * 60 - 15 * 60;
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  commit_interval_ms: 200\n  topics:\n    - {{name: \"{topic}\", signal: metrics, encoding: otlp_json}}\n\
         dead_letter:\n  topic: \"{id}.dlq\"\n\
         operators:\n  idle_timeout_ms: 600000\n  state_dir: \"{}\"\n  prometheus:\n    target_info: false\n\
         \x20 sla:\n    - {{name: \"{id}\", kind: availability, target: 0.99, total: http_requests_total, bad: http_errors_total}}\n\
         \x20 health:\n    error_rate: {{ratio: {{numerator: http_errors_total, denominator: http_requests_total}}, scale: 100}}\n\
         derived_topics:\n  sla: \"{sla_topic}\"\n  health: \"{health_topic}\"\n  alerts: \"{alerts_topic}\"\n\
         sinks:\n  prometheus_remote_write:\n    - {{url: \"{}\", batch_wait_ms: 100}}\n  alertmanager:\n    - {{url: \"{alertmanager}\"}}\n",
        work.path().join("state").display(),
        prom.write_url()
    );
    let p = producer(&brokers);
    // Every 10 s, 10 requests per region; region a fails 1 in 10 in the first half, none after.
    let mut counts = BTreeMap::from([("a", (0u64, 0u64)), ("b", (0, 0))]);
    let mut send = |range: std::ops::Range<u64>| {
        let mut msgs = Vec::new();
        for t in range.step_by(10) {
            for (region, (req, err)) in &mut counts {
                if t > 0 {
                    *req += 10;
                    if *region == "a" && t < 300 {
                        *err += 1;
                    }
                }
                msgs.push(counters_message(region, t0 + t, *req, *err));
            }
        }
        msgs
    };
    for m in send(0..300) {
        produce(&p, &topic, None, &m, None, Some(0)).await;
    }
    let mut w = Worker::start(work.path(), "first", &yaml);
    // The newest sample (290 s) moves the watermark to 288 s: minutes 0-3 close, three groups
    // (a, b, global) report each.
    w.wait_for(
        "dwcp_derived_records_total",
        &[("topic", sla_topic.as_str()), ("result", "published")],
        12.0,
        Duration::from_secs(120),
    )
    .await;
    assert!(w.stop(), "clean stop; log:\n{}", w.log_text());
    assert!(
        work.path().join("state/derived.json").exists(),
        "snapshot written at stop"
    );

    let mut second_half = send(300..600);
    // A sample at 605 s moves the watermark past the end of minute 9.
    second_half.push(counters_message("b", t0 + 605, 600, 0));
    for m in second_half {
        produce(&p, &topic, None, &m, None, Some(0)).await;
    }
    let mut w = Worker::start(work.path(), "second", &yaml);
    assert!(
        w.log_text().is_empty() || !w.log_text().contains("not a snapshot"),
        "snapshot readable"
    );
    w.wait_for(
        "dwcp_derived_records_total",
        &[("topic", sla_topic.as_str()), ("result", "published")],
        18.0,
        Duration::from_secs(120),
    )
    .await;
    assert!(
        w.log_text().contains("derived state restored from snapshot"),
        "{}",
        w.log_text()
    );

    // Region a: 59 increments of 10 requests over both halves (the base sample at 0 s is the
    // only one not counted, the restart continues each counter), 29 failed in the first half.
    let want_a = (590.0 - 29.0) / 590.0;
    let want_global = (1180.0 - 29.0) / 1180.0;
    let records = decode_avro(
        &consume_all(&brokers, &sla_topic, 30, Duration::from_secs(60)),
        "sla_report.avsc",
    );
    assert_eq!(records.len(), 30, "10 minutes × 3 groups");
    let end_ms = i64::try_from((t0 + 600) * 1000).expect("ms");
    let last = |region: &str| {
        records
            .iter()
            .find(|r| avro_str(&r["region"]) == region && avro_ms(&r["period_end"]) == end_ms)
            .unwrap_or_else(|| panic!("a report for {region} at minute 10"))
    };
    assert!((avro_f64(&last("a")["compliance"]) - want_a).abs() < 1e-9);
    assert!((avro_f64(&last("global")["compliance"]) - want_global).abs() < 1e-9);
    assert_eq!(avro_f64(&last("b")["compliance"]), 1.0);
    assert_eq!(avro_str(&last("a")["kind"]), "availability");
    assert_eq!(last("a")["compliant"], apache_avro::types::Value::Boolean(false));
    // Budget: 1 % allowed; a consumed (29 / 590) / 0.01.
    let consumed = avro_f64(&last("a")["error_budget_consumed"]);
    assert!((consumed - 29.0 / 590.0 / 0.01).abs() < 1e-6, "{consumed}");
    // One violation: minutes 0-4 (below 99 %), closed at the start of minute 5.
    match &last("a")["violations"] {
        apache_avro::types::Value::Array(v) => {
            assert_eq!(v.len(), 1, "{v:?}");
        }
        other => panic!("violations: {other:?}"),
    }
    // Keys are deterministic: sla/region/period end.
    let keys: BTreeSet<String> = consume_all(&brokers, &sla_topic, 30, Duration::from_secs(30))
        .iter()
        .filter_map(|m| m.key().map(|k| String::from_utf8_lossy(k).into_owned()))
        .collect();
    assert!(keys.contains(&format!("{id}/a/{end_ms}")), "{keys:?}");

    // The same figures in Prometheus, at the report's time.
    let q = format!(r#"dwcp_sla_compliance_ratio{{sla="{id}",kind="availability"}}"#);
    let q = q.as_str();
    let got = dwcp_tests::wait_query(&prom.url(), q, (t0 + 600) as f64, 3, Duration::from_secs(30)).await;
    let by_region: BTreeMap<String, f64> = got.iter().map(|(l, v)| (l["region"].clone(), *v)).collect();
    assert!((by_region["a"] - want_a).abs() < 1e-9, "{by_region:?}");
    assert!((by_region["global"] - want_global).abs() < 1e-9);
    assert_eq!(by_region["b"], 1.0);
    let burn = dwcp_tests::instant_query(
        &prom.url(),
        r#"dwcp_sla_burn_rate{region="a",window="5m"}"#,
        (t0 + 300) as f64,
    )
    .await;
    // Over minutes 0-4 (the 5m window ending at 300 s): 29 bad of 290, burn (29/290) / 0.01.
    assert!((burn[0].1 - 10.0).abs() < 1e-9, "{burn:?}");

    // Health: region a unhealthy while 10 % failed, healthy again after; b healthy throughout.
    let health = decode_avro(
        &consume_all(&brokers, &health_topic, 3, Duration::from_secs(60)),
        "region_health.avsc",
    );
    let a: Vec<bool> = health
        .iter()
        .filter(|r| avro_str(&r["region"]) == "a")
        .map(|r| r["healthy"] == apache_avro::types::Value::Boolean(true))
        .collect();
    assert_eq!(a.first(), Some(&false), "{health:?}");
    assert_eq!(a.last(), Some(&true), "{health:?}");

    // Burn-rate alerts (budget 1 %). Region a burns 10× in the first half: 6h and 30m above 6×,
    // a page from the first minute. The clean second half brings the whole-history burn to
    // 29 / (290 + 60 (m − 4)) / 1 % after minute m: 5.47 < 6 first after minute 8, so the page
    // resolves at 540 s and a ticket (3d and 6h above 1×) takes its place. Global burns 5×: a
    // ticket from the first minute. Region b: nothing.
    let alerts = decode_avro(
        &consume_all(&brokers, &alerts_topic, 4, Duration::from_secs(60)),
        "alert.avsc",
    );
    let seen: Vec<(String, String, String, i64)> = alerts
        .iter()
        .map(|r| {
            let labels = match &r["labels"] {
                apache_avro::types::Value::Map(m) => m.clone(),
                other => panic!("labels: {other:?}"),
            };
            (
                avro_str(&labels["region"]),
                avro_str(&labels["severity"]),
                avro_str(&r["state"]),
                avro_ms(&r["event_time"]) / 1000 - i64::try_from(t0).expect("t0"),
            )
        })
        .collect();
    let want: Vec<(String, String, String, i64)> = [
        ("a", "critical", "firing", 60),
        ("global", "warning", "firing", 60),
        ("a", "critical", "resolved", 540),
        ("a", "warning", "firing", 540),
    ]
    .iter()
    .map(|(r, s, st, t)| (r.to_string(), s.to_string(), st.to_string(), *t))
    .collect();
    assert_eq!(seen, want);
    assert!(alerts.iter().all(|r| avro_str(&r["alertname"]) == "SLAErrorBudgetBurn"));

    // The real Alertmanager holds the two firing tickets (the resolved page is gone), with the
    // fingerprints the alerts topic carries.
    let am_alerts: Vec<serde_json::Value> = {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let v = dwcp_tests::alertmanager_alerts(&alertmanager, &format!("sla=\"{id}\"")).await;
            if v.len() == 2 || std::time::Instant::now() > deadline {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let mut got: Vec<(String, String, String)> = am_alerts
        .iter()
        .map(|a| {
            (
                a["labels"]["region"].as_str().unwrap_or_default().to_string(),
                a["labels"]["severity"].as_str().unwrap_or_default().to_string(),
                a["fingerprint"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    got.sort();
    let fp = |region: &str, severity: &str| {
        alerts
            .iter()
            .find(|r| {
                let seen_region = match &r["labels"] {
                    apache_avro::types::Value::Map(m) => (avro_str(&m["region"]), avro_str(&m["severity"])),
                    _ => (String::new(), String::new()),
                };
                seen_region == (region.to_string(), severity.to_string())
            })
            .map(|r| avro_str(&r["fingerprint"]))
            .unwrap_or_default()
    };
    assert_eq!(
        got,
        vec![
            ("a".to_string(), "warning".to_string(), fp("a", "warning")),
            ("global".to_string(), "warning".to_string(), fp("global", "warning")),
        ],
        "{am_alerts:?}"
    );
    let a_warning = am_alerts.iter().find(|a| a["labels"]["region"] == "a").expect("a");
    let starts = a_warning["startsAt"].as_str().expect("startsAt");
    assert!(
        starts.starts_with(&dwcp_sinks::alertmanager::rfc3339((t0 + 540) * 1_000_000_000)[..19]),
        "{starts}"
    );
    assert!(w.stop());
}

/// OTLP/JSON of one region's latency histogram (bounds 50 and 250 ms), cumulative counts.
fn latency_message(region: &str, t_s: u64, counts: [u64; 3]) -> Vec<u8> {
    let t = t_s * 1_000_000_000;
    let total: u64 = counts.iter().sum();
    format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"cloud.region","value":{{"stringValue":"{region}"}}}},{{"key":"service.name","value":{{"stringValue":"gw"}}}}]}},"scopeMetrics":[{{"metrics":[{{"name":"dwcp.latency","unit":"ms","histogram":{{"aggregationTemporality":2,"dataPoints":[{{"startTimeUnixNano":"1","timeUnixNano":"{t}","count":"{total}","sum":{},"bucketCounts":["{}","{}","{}"],"explicitBounds":[50,250]}}]}}}}]}}]}}]}}"#,
        counts[0] * 20 + counts[2] * 400,
        counts[0],
        counts[1],
        counts[2]
    )
    .into_bytes()
}

/// The design's HighLatency rule (deploy/rules/dwcp.rules.yml) on event time: us-east-1 sends
/// every request above 250 ms from 600 s to 1080 s. With 15 s samples, one slow increment among
/// the 19 of a 5-minute window is already above 5 %, so p95 jumps to the 250 ms bound at
/// 600 s: pending then, firing 5 minutes later at 900 s, resolved at 1365 s when the window's
/// first sample is the last slow one (Prometheus 3 windows exclude their left end). The
/// alerts topic carries the three transitions (Avro, alert.avsc) and a real Alertmanager
/// delivers the firing and the resolved notification to a webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_latency_fires_at_the_right_time_and_reaches_a_webhook_through_alertmanager() {
    let Some(brokers) = kafka() else { return };
    let id = unique("rules");
    let topic = format!("{id}.metrics");
    let alerts_topic = format!("{id}.alerts");
    create_topics(&brokers, &[&topic, &format!("{id}.dlq"), &alerts_topic], 1).await;
    let work = tempfile::tempdir().expect("tempdir");
    let hook = dwcp_tests::WebhookReceiver::start().await;
    let am = dwcp_tests::AlertmanagerServer::start(&work.path().join("am"), &hook.url).await;
    let rules = format!("{}/../deploy/rules/dwcp.rules.yml", env!("CARGO_MANIFEST_DIR"));
    let now_s = dwcp_tests::now_s();
    let t0 = now_s / 60 * 60 - 40 * 60;
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  commit_interval_ms: 200\n  topics:\n    - {{name: \"{topic}\", signal: metrics, encoding: otlp_json}}\n\
         dead_letter:\n  topic: \"{id}.dlq\"\noperators:\n  idle_timeout_ms: 600000\n\
         rules:\n  files: [\"{rules}\"]\n\
         derived_topics:\n  alerts: \"{alerts_topic}\"\n\
         sinks:\n  alertmanager:\n    - {{url: \"{}\"}}\n",
        am.url()
    );
    let p = producer(&brokers);
    let mut counts = BTreeMap::from([("us-east-1", [0u64; 3]), ("us-west-1", [0u64; 3])]);
    let mut send = |range: std::ops::RangeInclusive<u64>| {
        let mut msgs = Vec::new();
        for t in range.step_by(15) {
            for (region, c) in &mut counts {
                if t > 0 {
                    let slow = *region == "us-east-1" && (600..=1080).contains(&t);
                    c[if slow { 2 } else { 0 }] += 100;
                }
                msgs.push(latency_message(region, t0 + t, *c));
            }
        }
        msgs
    };
    for m in send(0..=960) {
        produce(&p, &topic, None, &m, None, Some(0)).await;
    }
    let mut w = Worker::start(work.path(), "worker", &yaml);
    let firing_hook = |bodies: &[serde_json::Value], status: &str| {
        bodies.iter().any(|b| {
            b["alerts"].as_array().is_some_and(|a| {
                a.iter().any(|x| {
                    x["labels"]["alertname"] == "HighLatency"
                        && x["labels"]["region"] == "us-east-1"
                        && x["status"] == status
                })
            })
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while !firing_hook(&hook.bodies(), "firing") {
        assert!(
            std::time::Instant::now() < deadline,
            "no firing notification; worker log:\n{}\nalertmanager:\n{}",
            w.log_text(),
            am.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // What the dashboards' Alertmanager alert-list panel shows (Grafana's Alertmanager
    // datasource reads /api/v2/alerts): the firing alert with its region and severity.
    // (Active alerts are listed by default, as the panel asks for them.)
    let listed = dwcp_tests::alertmanager_alerts(&am.url(), "alertname=\"HighLatency\"").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["labels"]["region"], "us-east-1");
    assert_eq!(listed[0]["labels"]["severity"], "warning");
    assert_eq!(listed[0]["status"]["state"], "active");
    for m in send(975..=2100) {
        produce(&p, &topic, None, &m, None, Some(0)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !firing_hook(&hook.bodies(), "resolved") {
        assert!(
            std::time::Instant::now() < deadline,
            "no resolved notification; worker log:\n{}",
            w.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let records = decode_avro(
        &consume_all(&brokers, &alerts_topic, 20, Duration::from_secs(20)),
        "alert.avsc",
    );
    let high: Vec<(String, i64, f64)> = records
        .iter()
        .filter(|r| avro_str(&r["alertname"]) == "HighLatency")
        .map(|r| {
            let region = match &r["labels"] {
                apache_avro::types::Value::Map(m) => avro_str(&m["region"]),
                _ => String::new(),
            };
            assert_eq!(region, "us-east-1");
            (
                avro_str(&r["state"]),
                avro_ms(&r["event_time"]) / 1000 - i64::try_from(t0).expect("t0"),
                avro_f64(&r["value"]),
            )
        })
        .collect();
    let states: Vec<(&str, i64)> = high.iter().map(|(s, t, _)| (s.as_str(), *t)).collect();
    assert_eq!(
        states,
        [("pending", 600), ("firing", 900), ("resolved", 1365)],
        "{high:?}"
    );
    // The value is the p95: the 250 ms bound while any slow request is in the window.
    assert_eq!(high[1].2, 250.0);
    assert!(
        metric_sum(
            &w.metrics().await,
            "dwcp_alertmanager_alerts_total",
            &[("result", "posted")]
        ) >= 2.0
    );
    assert!(w.stop());
}

/// OTLP/JSON of a round-trip gauge (ms) of one region at `t_s`.
fn rtt_message(t_s: u64, value: f64) -> Vec<u8> {
    let t = t_s * 1_000_000_000;
    format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"cloud.region","value":{{"stringValue":"eu-west-1"}}}}]}},"scopeMetrics":[{{"metrics":[{{"name":"dwcp.network.rtt","unit":"ms","gauge":{{"dataPoints":[{{"timeUnixNano":"{t}","asDouble":{value},"attributes":[{{"key":"peer_region","value":{{"stringValue":"us-east-1"}}}}]}}]}}}}]}}]}}]}}"#
    )
    .into_bytes()
}

/// Anomaly detection through the whole path: a round-trip series with one spike at point 300;
/// the score reaches Prometheus as `dwcp_anomaly_score` (quiet before, above the threshold at
/// the spike) and the episode is published on the anomalies topic when it opens and when 150
/// quiet points have closed it, one key, decoding with anomaly.avsc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anomaly_episode_reaches_kafka_as_avro_and_its_score_prometheus() {
    let Some(brokers) = kafka() else { return };
    let id = unique("anomaly");
    let topic = format!("{id}.metrics");
    let anomalies = format!("{id}.anomalies");
    create_topics(&brokers, &[&topic, &format!("{id}.dlq"), &anomalies], 1).await;
    let work = tempfile::tempdir().expect("tempdir");
    let prom = dwcp_tests::PrometheusServer::start(&work.path().join("prom")).await;
    let now_s = dwcp_tests::now_s();
    // 500 points 5 s apart: 41 minutes, inside the hour Prometheus accepts behind its newest sample.
    let t0 = now_s / 60 * 60 - 60 * 60;
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  commit_interval_ms: 200\n  topics:\n    - {{name: \"{topic}\", signal: metrics, encoding: otlp_json}}\n\
         dead_letter:\n  topic: \"{id}.dlq\"\noperators:\n  prometheus:\n    target_info: false\n  anomaly:\n    series: [dwcp_network_rtt_milliseconds]\n\
         derived_topics:\n  anomalies: \"{anomalies}\"\n\
         sinks:\n  prometheus_remote_write:\n    - {{url: \"{}\", batch_wait_ms: 100}}\n",
        prom.write_url()
    );
    let p = producer(&brokers);
    for i in 0..500u64 {
        let season = 10.0 * (2.0 * std::f64::consts::PI * i as f64 / 100.0).sin();
        let noise = ((i * 7) % 13) as f64 / 13.0 - 0.5;
        let v = 50.0 + season + noise + if i == 300 { 200.0 } else { 0.0 };
        produce(&p, &topic, None, &rtt_message(t0 + i * 5, v), None, Some(0)).await;
    }
    let mut w = Worker::start(work.path(), "worker", &yaml);
    w.wait_for("dwcp_anomaly_episodes_total", &[], 1.0, Duration::from_secs(120))
        .await;
    let messages = consume_all(&brokers, &anomalies, 2, Duration::from_secs(60));
    let records = decode_avro(&messages, "anomaly.avsc");
    // The episode is published when it opens (no end time yet) and when it ends, under one key
    // (a compacted topic keeps the final one).
    assert_eq!(records.len(), 2, "opened and ended: {records:?}");
    let keys: Vec<Option<&[u8]>> = messages.iter().map(rdkafka::Message::key).collect();
    assert_eq!(keys[0], keys[1]);
    assert_eq!(
        keys[0].map(|k| String::from_utf8_lossy(k).into_owned()),
        Some(format!(
            "dwcp_network_rtt_milliseconds{{peer_region=\"us-east-1\",region=\"eu-west-1\"}}/{}",
            (t0 + 1500) * 1000
        ))
    );
    let t0_ms = i64::try_from(t0 * 1000).expect("ms");
    let opened = &records[0];
    assert_eq!(
        opened["end_time"],
        apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null))
    );
    assert_eq!(avro_ms(&opened["start_time"]) - t0_ms, 1_500_000);
    let r = &records[1];
    assert!(avro_ms(&r["end_time"]) - t0_ms >= 1_500_000, "{r:?}");
    assert_eq!(avro_ms(&r["start_time"]) - t0_ms, 1_500_000);
    assert_eq!(avro_ms(&r["peak_time"]) - t0_ms, 1_500_000);
    assert_eq!(avro_str(&r["metric"]), "dwcp_network_rtt_milliseconds");
    assert_eq!(avro_str(&r["region"]), "eu-west-1");
    assert!(avro_f64(&r["value"]) > 200.0);
    assert!(avro_f64(&r["band_upper"]) < avro_f64(&r["value"]));
    assert!(avro_f64(&r["score"]) >= 0.375);
    match &r["detectors"] {
        apache_avro::types::Value::Array(d) => assert!(d.iter().any(|x| avro_str(x) == "three_sigma"), "{d:?}"),
        other => panic!("detectors: {other:?}"),
    }
    // The score in Prometheus: quiet a minute before the spike, above the threshold at it.
    let q = r#"dwcp_anomaly_score{metric="dwcp_network_rtt_milliseconds"}"#;
    let at = |s: u64| (t0 + s) as f64;
    let spike = dwcp_tests::wait_query(&prom.url(), q, at(1500), 1, Duration::from_secs(30)).await;
    assert!(
        spike.first().is_some_and(|x| x.1 >= 0.375),
        "{spike:?}\nworker log:\n{}\nworker metrics:\n{}\nprometheus:\n{}",
        w.log_text()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n"),
        w.metrics()
            .await
            .lines()
            .filter(|l| l.contains("samples") || l.contains("anomaly") || l.contains("remote"))
            .collect::<Vec<_>>()
            .join("\n"),
        prom.log()
    );
    let before = dwcp_tests::instant_query(&prom.url(), q, at(1440)).await;
    assert!(before.first().is_some_and(|x| x.1 < 0.375), "{before:?}");
    assert!(w.stop());
}

/// GETs `base` + `path` with `params` (and a bearer key): status and JSON body.
async fn api_get(base: &str, path: &str, params: &[(&str, String)], key: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new().get(format!("{base}{path}")).query(params);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.expect("request sent");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// A Prometheus API answer with its result (or data list) sorted, so two servers' answers
/// compare whatever order each lists series in.
fn normalized(mut v: serde_json::Value) -> serde_json::Value {
    let key = |x: &serde_json::Value| x.get("metric").unwrap_or(x).to_string();
    let data = v.get_mut("data");
    if let Some(list) = data.and_then(|d| if d.is_array() { Some(d) } else { d.get_mut("result") }) {
        if let Some(list) = list.as_array_mut() {
            list.sort_by_key(key);
        }
    }
    v
}

/// The worker's PromQL API against a real Prometheus fed the same samples: the metric fixtures
/// (with the aggregation operator's rollups) through the pipeline, remote-written to
/// Prometheus and kept in the worker's window. Instant queries, range queries, series, labels
/// and label values answer with the same shape and the same values. Then the keys: none is a
/// 401, the wrong scope a 403, and /openapi.json is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_promql_as_prometheus_does() {
    let Some(brokers) = kafka() else { return };
    let m = manifest();
    let id = unique("api");
    let (topic, _, t) = produce_metric_fixtures(&brokers, &id, &m).await;
    let work = tempfile::tempdir().expect("tempdir");
    let prom = dwcp_tests::PrometheusServer::start(&work.path().join("prom")).await;
    let (metrics_key, traces_key) = ("k-metrics-5b1f0c2e9a", "k-traces-77d0e1a4c3");
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  topics:\n    - {{name: \"{topic}\", signal: metrics}}\n\
         dead_letter:\n  topic: \"{id}.dlq\"\n\
         operators:\n  idle_timeout_ms: 500\n  allowed_lateness_ms: 0\n  aggregation:\n    window_ms: 2000\n    rules:\n\
         \x20     - {{metric: dwcp.latency}}\n      - {{metric: dwcp.requests}}\n\
         rules:\n  prometheus_version: 2\n\
         api:\n  keys:\n    - {{name: grafana, key: {metrics_key}, scopes: [metrics]}}\n    - {{name: support, key: {traces_key}, scopes: [traces]}}\n\
         sinks:\n  prometheus_remote_write:\n    - {{url: \"{}\", batch_wait_ms: 100}}\n",
        prom.write_url()
    );
    let w = Worker::start(work.path(), "worker", &yaml);
    let api = format!("http://127.0.0.1:{}", w.port);
    let at = t + 5.0;
    let got = dwcp_tests::wait_query(&prom.url(), "dwcp:latency:p95:2s", at, 4, Duration::from_secs(240)).await;
    assert_eq!(got.len(), 4, "worker log:\n{}", w.log_text());
    let key = Some(metrics_key);
    let time = format!("{at}");
    let instant = [
        "dwcp_requests_total",
        "sum by (region) (dwcp_requests_total)",
        "histogram_quantile(0.95, sum by (le) (dwcp_latency_milliseconds_bucket))",
        "histogram_quantile(0.5, sum by (region, le) (dwcp_latency_milliseconds_bucket))",
        "dwcp:latency:p95:2s",
        "count by (__name__) ({job=\"dwcp/dwcp-gateway\"})",
        "topk(2, dwcp_cpu_usage_percent)",
        "dwcp_active_connections > 3",
        "dwcp_active_connections > bool 3",
        "label_replace(dwcp_cpu_usage_percent, \"r\", \"$1\", \"region\", \"us-(.*)\")",
        "absent(nonexistent_metric)",
        "scalar(sum(dwcp_errors_total))",
        "dwcp_requests_total[5m]",
        "time()",
        "sum(rate(dwcp_requests_total[5m]))",
        "quantile_over_time(0.5, dwcp_cpu_usage_percent[10m])",
        "max_over_time(dwcp:latency:p95:2s[1m])",
        "dwcp_cpu_usage_percent / on (region) group_left dwcp_active_connections",
        "avg without (instance, operation) (dwcp_latency_milliseconds_sum / dwcp_latency_milliseconds_count)",
    ];
    // The worker's window fills as the rollups close; wait for the last one there too.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = api_get(
            &api,
            "/api/v1/query",
            &[("query", "dwcp:latency:p95:2s".into()), ("time", time.clone())],
            key,
        )
        .await;
        if v["data"]["result"].as_array().map_or(0, Vec::len) == 4 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for q in instant {
        let params = [("query", q.to_string()), ("time", time.clone())];
        let (_, theirs) = api_get(&prom.url(), "/api/v1/query", &params, None).await;
        let (status, ours) = api_get(&api, "/api/v1/query", &params, key).await;
        assert_eq!(status, 200, "{q}: {ours}");
        assert_eq!(normalized(ours), normalized(theirs), "instant {q}");
    }
    let range = [
        ("sum by (region) (dwcp_requests_total)", "15"),
        ("dwcp:latency:p95:2s", "2s"),
        (
            "histogram_quantile(0.95, sum by (le) (dwcp_latency_milliseconds_bucket))",
            "30",
        ),
    ];
    for (q, step) in range {
        let params = [
            ("query", q.to_string()),
            ("start", format!("{}", at - 120.0)),
            ("end", time.clone()),
            ("step", step.to_string()),
        ];
        let (_, theirs) = api_get(&prom.url(), "/api/v1/query_range", &params, None).await;
        let (status, ours) = api_get(&api, "/api/v1/query_range", &params, key).await;
        assert_eq!(status, 200, "{q}: {ours}");
        assert_eq!(normalized(ours), normalized(theirs), "range {q}");
    }
    for (path, params) in [
        ("/api/v1/series", vec![("match[]", "dwcp_requests_total".to_string())]),
        (
            "/api/v1/series",
            vec![("match[]", "{__name__=~\"dwcp:.*\", region=\"global\"}".to_string())],
        ),
        ("/api/v1/labels", vec![]),
        ("/api/v1/label/region/values", vec![]),
        (
            "/api/v1/label/__name__/values",
            vec![("match[]", "{job=\"dwcp/dwcp-gateway\"}".to_string())],
        ),
    ] {
        let (_, theirs) = api_get(&prom.url(), path, &params, None).await;
        let (status, ours) = api_get(&api, path, &params, key).await;
        assert_eq!(status, 200, "{path}: {ours}");
        assert_eq!(normalized(ours), normalized(theirs), "{path} {params:?}");
    }
    // SQL over the retained rollups: each region's latest p95 is the one Prometheus holds.
    let (status, v) = api_get(
        &api,
        "/api/v1/sql",
        &[(
            "query",
            "SELECT region, last_value(value ORDER BY time) AS p95, count(*) AS windows FROM rollups \
             WHERE metric = 'dwcp:latency:p95:2s' GROUP BY region ORDER BY region"
                .to_string(),
        )],
        key,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let mut from_prometheus = dwcp_tests::instant_query(&prom.url(), "dwcp:latency:p95:2s", at).await;
    from_prometheus.sort_by(|a, b| a.0["region"].cmp(&b.0["region"]));
    let rows = v["data"]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), from_prometheus.len(), "{v}");
    for (row, (labels, value)) in rows.iter().zip(&from_prometheus) {
        assert_eq!(row[0].as_str(), Some(labels["region"].as_str()));
        assert_eq!(row[1].as_f64(), Some(*value), "{}", labels["region"]);
    }
    // Errors in Prometheus's shape.
    let (status, ours) = api_get(&api, "/api/v1/query", &[("query", "sum(".into())], key).await;
    let (their_status, theirs) = api_get(&prom.url(), "/api/v1/query", &[("query", "sum(".into())], None).await;
    assert_eq!(
        (status, &ours["status"], &ours["errorType"]),
        (their_status, &theirs["status"], &theirs["errorType"])
    );
    // Keys.
    let q = [("query", "1".to_string())];
    let (status, body) = api_get(&api, "/api/v1/query", &q, None).await;
    assert_eq!((status, body["errorType"].as_str()), (401, Some("unauthorized")));
    let (status, body) = api_get(&api, "/api/v1/query", &q, Some(traces_key)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("API key `support` lacks the `metrics` scope"))
    );
    let (status, _) = api_get(&api, "/api/v1/traces", &[], key).await;
    assert_eq!(status, 403);
    let (status, body) = api_get(&api, "/api/v1/traces", &[], Some(traces_key)).await;
    assert_eq!(status, 503, "no store configured, but the key passed: {body}");
    let (status, doc) = api_get(&api, "/openapi.json", &[], None).await;
    assert_eq!((status, doc["openapi"].as_str()), (200, Some("3.1.0")));
    assert!(doc["paths"]["/api/v1/query_range"]["post"].is_object());
    assert!(!w.log_text().contains(metrics_key), "a key was logged");
    let text = w.metrics().await;
    assert!(metric_sum(&text, "dwcp_api_requests_total", &[("code", "401")]) >= 1.0);
    assert_eq!(metric_sum(&text, "dwcp_api_samples_dropped_total", &[]), 0.0);
}

/// Every panel query of every generated dashboard returns data from a real Prometheus fed by
/// the demo (its three regions and incident script: a latency spike, an error burst, a dark
/// region) through `--remote-write`; so does the Regional board's region variable. While it
/// runs, the demo's own worker answers a panel query on its API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_query_returns_data_from_prometheus_fed_by_the_demo() {
    if kafka().is_none() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let prom = dwcp_tests::PrometheusServer::start(&work.path().join("prom")).await;
    let port = dwcp_tests::free_port();
    let log = work.path().join("demo.log");
    let mut demo = std::process::Command::new(dwcp_tests::binary())
        .args(["demo", "--plain", "--duration-secs", "100", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--remote-write")
        .arg(prom.write_url())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("demo");
    tokio::time::sleep(Duration::from_secs(90)).await;
    let api = format!("http://127.0.0.1:{port}");
    let (status, v) = api_get(
        &api,
        "/api/v1/query",
        &[("query", "sum by (region) (rate(dwcp_requests_total[1m]))".into())],
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["result"].as_array().map(Vec::len), Some(3), "{v}");
    let (status, v) = api_get(&api, "/api/v1/sla", &[], None).await;
    assert_eq!(status, 200);
    assert!(
        v["data"].as_array().is_some_and(|a| !a.is_empty()),
        "SLA reports after a minute: {v}"
    );
    let exit = demo.wait().expect("demo exits");
    let summary = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(exit.success(), "demo:\n{summary}");
    assert!(
        summary.contains(&format!("API: http://127.0.0.1:{port}/api/v1/query")) && summary.contains("/openapi.json"),
        "{summary}"
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let (_, regions) = api_get(
        &prom.url(),
        "/api/v1/label/region/values",
        &[("match[]", "dwcp_requests_total".into())],
        None,
    )
    .await;
    assert_eq!(
        regions["data"],
        serde_json::json!(["eu-west-1", "us-east-1", "us-west-1"])
    );
    let mut empty = Vec::new();
    let mut queries = 0;
    for b in dwcp_pipeline::grafana::boards() {
        for p in &b.panels {
            for q in &p.queries {
                let dwcp_pipeline::grafana::Query::Prom { expr, .. } = q else {
                    continue;
                };
                let expr = dwcp_pipeline::grafana::concrete(expr, "us-east-1");
                queries += 1;
                if dwcp_tests::instant_query(&prom.url(), &expr, now).await.is_empty() {
                    empty.push(format!("{} / {}: {expr}", b.uid, p.title));
                }
            }
        }
    }
    assert!(queries >= 35, "{queries} queries");
    assert!(
        empty.is_empty(),
        "queries without data:\n{}\ndemo:\n{summary}",
        empty.join("\n")
    );
}
