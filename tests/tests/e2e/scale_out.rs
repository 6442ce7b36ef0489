//! Several workers in one consumer group, with repartitioning (issue 9).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dwcp_tests::{
    consume_all, create_topics, kafka, metric_sum, produce, producer, unique, wait_groups_settled, GroupLeader,
    PrometheusServer, WebhookReceiver, Worker,
};

use super::decode_avro;

const REGIONS: [&str; 3] = ["us-east-1", "us-west-1", "eu-west-1"];

/// These tests run one at a time (other tests still run beside them): each starts two or three
/// workers, most kill one and wait for Tansu to notice, and two at once on this 2-core machine
/// stretch every timing. (The partitions Tansu once never handed over after a kill were those
/// of a group whose leader was the killed worker: see `GroupLeader`.)
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Gauges each region sends beside its latency histogram; each has one spike, at its own step.
const GAUGES: [&str; 6] = [
    "dwcp.queue.a",
    "dwcp.queue.b",
    "dwcp.queue.c",
    "dwcp.queue.d",
    "dwcp.queue.e",
    "dwcp.queue.f",
];

/// OTLP/JSON of one region at step `i` (15 s apart from `t0`): the cumulative latency histogram
/// (every request slow in us-east-1 from step 40 to 72) and the gauges.
fn message(region: &str, ri: usize, t0: u64, i: u64, counts: [u64; 3]) -> Vec<u8> {
    let t = (t0 + i * 15) * 1_000_000_000;
    let total: u64 = counts.iter().sum();
    let gauges: Vec<String> = GAUGES
        .iter()
        .enumerate()
        .map(|(gi, name)| {
            let season = 5.0 * ((i as f64 + gi as f64) / 8.0).sin();
            let noise = (((i * 7 + gi as u64 * 3 + ri as u64) % 11) as f64) / 11.0;
            let spike = if i == 110 + gi as u64 * 5 && ri == gi % 3 {
                80.0
            } else {
                0.0
            };
            let v = 20.0 + season + noise + spike;
            format!(r#"{{"name":"{name}","gauge":{{"dataPoints":[{{"timeUnixNano":"{t}","asDouble":{v}}}]}}}}"#)
        })
        .collect();
    format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"cloud.region","value":{{"stringValue":"{region}"}}}},{{"key":"service.name","value":{{"stringValue":"gw"}}}}]}},"scopeMetrics":[{{"metrics":[{{"name":"dwcp.latency","unit":"ms","histogram":{{"aggregationTemporality":2,"dataPoints":[{{"startTimeUnixNano":"1","timeUnixNano":"{t}","count":"{total}","sum":{},"bucketCounts":["{}","{}","{}"],"explicitBounds":[50,250]}}]}}}},{}]}}]}}]}}"#,
        counts[0] * 20 + counts[2] * 400,
        counts[0],
        counts[1],
        counts[2],
        gauges.join(",")
    )
    .into_bytes()
}

/// OTLP/JSON of one region's spans at step `i`: three services' spans, one ending at the step's
/// time, the others up to 10.5 s before it (so a step's spans straddle 10 s span-metrics boundaries), with
/// durations from 1 ms to 3 s and some errors. Also the number of span-metrics markers the
/// re-keying stage makes of it: one per (service, name, status, 10 s boundary).
fn spans_message(region: &str, ri: usize, t0: u64, i: u64) -> (Vec<u8>, usize) {
    let t_ms = (t0 + i * 15) * 1000;
    let mut markers = std::collections::BTreeSet::new();
    let resources: Vec<String> = ["gw", "store", "consensus"]
        .iter()
        .enumerate()
        .map(|(si, service)| {
            let spans: Vec<String> = (0..2u64)
                .map(|k| {
                    let n = i * 6 + si as u64 * 2 + k;
                    // The first ends at the step's time, as the metric points: each input's
                    // event time ends where the others' does. (One worker's event time waits
                    // for every input; with repartitioning the series partitions wait for the
                    // metric inputs only: inputs ending apart would close different windows.)
                    let end_ms = if si == 0 && k == 0 {
                        t_ms
                    } else {
                        t_ms - (n * 337) % 1000 - 9_500 * ((n + ri as u64) % 2)
                    };
                    let dur_ms = 1 + (n * 7919 + ri as u64 * 31) % 3000;
                    let error = (n + ri as u64).is_multiple_of(13);
                    let name = ["replicate", "ack"][k as usize];
                    markers.insert((*service, name, error, end_ms - end_ms % 10_000));
                    format!(
                        r#"{{"traceId":"{:032x}","spanId":"{:016x}","name":"{name}","kind":2,"startTimeUnixNano":"{}","endTimeUnixNano":"{}","status":{{"code":{}}}}}"#,
                        ((ri as u128) << 64) | (u128::from(n) + 1),
                        n + 1,
                        (end_ms - dur_ms) * 1_000_000,
                        end_ms * 1_000_000,
                        if error { 2 } else { 0 }
                    )
                })
                .collect();
            format!(
                r#"{{"resource":{{"attributes":[{{"key":"cloud.region","value":{{"stringValue":"{region}"}}}},{{"key":"service.name","value":{{"stringValue":"{service}"}}}}]}},"scopeSpans":[{{"spans":[{}]}}]}}"#,
                spans.join(",")
            )
        })
        .collect();
    (
        format!(r#"{{"resourceSpans":[{}]}}"#, resources.join(",")).into_bytes(),
        markers.len(),
    )
}

/// What an [`InputWriter`] wrote: metric points, spans, and span-metrics markers they make.
#[derive(Default)]
struct Input {
    points: u64,
    spans: u64,
    span_markers: u64,
}

/// The input, step by step: 160 steps per region, each region on its own partition of `topic`
/// (metrics) and of `<topic>.traces` (spans).
struct InputWriter {
    producer: rdkafka::producer::FutureProducer,
    topic: String,
    t0: u64,
    counts: [[u64; 3]; 3],
    written: Input,
}

impl InputWriter {
    fn new(brokers: &str, topic: &str, t0: u64) -> Self {
        InputWriter {
            producer: producer(brokers),
            topic: topic.to_string(),
            t0,
            counts: [[0; 3]; 3],
            written: Input::default(),
        }
    }

    async fn steps(&mut self, steps: std::ops::Range<u64>) {
        let traces = format!("{}.traces", self.topic);
        for i in steps {
            for (ri, region) in REGIONS.iter().enumerate() {
                let slow = ri == 0 && (40..=72).contains(&i);
                if i > 0 {
                    self.counts[ri][if slow { 2 } else { 0 }] += 100;
                }
                let partition = i32::try_from(ri).expect("partition");
                let metrics = message(region, ri, self.t0, i, self.counts[ri]);
                produce(&self.producer, &self.topic, None, &metrics, None, Some(partition)).await;
                self.written.points += 1 + GAUGES.len() as u64;
                let (message, markers) = spans_message(region, ri, self.t0, i);
                produce(&self.producer, &traces, None, &message, None, Some(partition)).await;
                self.written.spans += 6;
                self.written.span_markers += markers as u64;
            }
        }
    }
}

fn yaml(brokers: &str, id: &str, input: &str, prom: &str, repartition: bool) -> String {
    let rules = format!("{}/../deploy/rules/dwcp.rules.yml", env!("CARGO_MANIFEST_DIR"));
    let anomaly_series: Vec<String> = GAUGES.iter().map(|g| g.replace('.', "_")).collect();
    let mut y = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  commit_interval_ms: 200\n  topics:\n    - {{name: \"{input}\", signal: metrics, encoding: otlp_json}}\n    - {{name: \"{input}.traces\", signal: traces, encoding: otlp_json}}\n\
         dead_letter:\n  topic: \"{id}.dlq\"\n\
         operators:\n  idle_timeout_ms: 600000\n  anomaly:\n    series: [{}]\n  aggregation:\n    rules: [{{metric: dwcp.latency}}, {{metric: dwcp.queue.a}}]\n\
         \x20 sla:\n    - {{name: fast, kind: latency, target: 0.99, histogram: dwcp_latency_milliseconds, threshold: 250}}\n\
         \x20 health:\n    latency: {{histogram_mean: dwcp_latency_milliseconds}}\n    utilization: {{gauge: dwcp_queue_b}}\n\
         \x20 capacity:\n    - {{resource: queue, series: dwcp_queue_c, capacity: 100}}\n\
         rules:\n  files: [\"{rules}\"]\n\
         derived_topics:\n  alerts: \"{id}.alerts\"\n  anomalies: \"{id}.anomalies\"\n  sla: \"{id}.sla\"\n  health: \"{id}.health\"\n\
         sinks:\n  prometheus_remote_write:\n    - {{url: \"{prom}\", batch_wait_ms: 100}}\n",
        anomaly_series.join(", ")
    );
    if repartition {
        y.push_str(&format!(
            "repartition:\n  enabled: true\n  series_topic: \"{id}.series\"\n  spans_topic: \"{id}.spans\"\n  partitions: 6\n"
        ));
    }
    y
}

/// Every series in a Prometheus, each with all its samples (labels → [(ms, value text)]).
async fn everything(base: &str, at: u64) -> BTreeMap<BTreeMap<String, String>, Vec<(i64, String)>> {
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", "{__name__=~\".+\"}[3h]"), ("time", &at.to_string())])
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    assert_eq!(body["status"], "success", "{body}");
    let mut out = BTreeMap::new();
    for s in body["data"]["result"].as_array().expect("matrix") {
        let labels: BTreeMap<String, String> = s["metric"]
            .as_object()
            .expect("labels")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let values = s["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|v| {
                #[allow(clippy::cast_possible_truncation)]
                let ms = (v[0].as_f64().expect("time") * 1000.0).round() as i64;
                (ms, v[1].as_str().unwrap_or_default().to_string())
            })
            .collect();
        out.insert(labels, values);
    }
    out
}

/// Waits until the workers' `metric` (summed over all of them) stops changing for 3 s and
/// reaches `want`.
async fn wait_sum(workers: &[&Worker], metric: &str, filter: &[(&str, &str)], want: f64) {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let mut total = 0.0;
        for w in workers {
            total += metric_sum(&w.metrics().await, metric, filter);
        }
        if total >= want {
            return;
        }
        if Instant::now() > deadline {
            let mut logs = Vec::new();
            for w in workers {
                let m = w.metrics().await;
                let interesting: Vec<&str> = m
                    .lines()
                    .filter(|l| {
                        !l.starts_with('#')
                            && (l.contains("records") || l.contains("partitions") || l.contains("decode"))
                    })
                    .collect();
                logs.push(format!("{}\n{}", interesting.join("\n"), w.log_text()));
            }
            panic!(
                "{metric}{filter:?} summed to {total}, not {want}; workers:\n{}",
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until a Prometheus holds `want` samples and stops gaining any.
async fn settled(base: &str, at: u64) -> BTreeMap<BTreeMap<String, String>, Vec<(i64, String)>> {
    let mut last = everything(base, at).await;
    let mut stable_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stable_since.elapsed() < Duration::from_secs(3) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = everything(base, at).await;
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    last
}

/// An Avro value as text, map entries in key order (Avro maps decode into hash maps).
fn canonical(v: &apache_avro::types::Value) -> String {
    use apache_avro::types::Value;
    match v {
        Value::Map(m) => {
            let sorted: BTreeMap<&String, String> = m.iter().map(|(k, v)| (k, canonical(v))).collect();
            format!("{sorted:?}")
        }
        Value::Record(fields) => {
            let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}: {}", canonical(v))).collect();
            format!("{{{}}}", parts.join(", "))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(", ")),
        Value::Union(i, v) => format!("Union({i}, {})", canonical(v)),
        other => format!("{other:?}"),
    }
}

fn sorted_records(brokers: &str, topic: &str, avsc: &str, count: usize) -> Vec<String> {
    sorted_records_within(brokers, topic, avsc, count, Duration::from_secs(30))
}

/// The first `count` records of `topic` or all it has after `timeout`, decoded, sorted.
fn sorted_records_within(brokers: &str, topic: &str, avsc: &str, count: usize, timeout: Duration) -> Vec<String> {
    let messages = consume_all(brokers, topic, count, timeout);
    let mut records: Vec<String> = decode_avro(&messages, avsc)
        .iter()
        .map(|r| {
            let fields: Vec<String> = r.iter().map(|(k, v)| format!("{k}: {}", canonical(v))).collect();
            fields.join(", ")
        })
        .collect();
    records.sort();
    records
}

/// Three workers in one group with repartitioning produce exactly what one worker produces
/// in process over the same input: the same alert transitions and anomaly episodes on the
/// derived topics and the same series, sample for sample, in Prometheus. Each region's data is
/// on its own input partition, so without repartitioning the cross-region aggregation and the
/// rules (p95 over all regions' buckets, `absent()`) would each see a third of it. All workers
/// are started and their groups settled before the input arrives (moving state with its
/// partitions is the changelog's job), and read it as it is produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_repartitioning_workers_produce_what_one_worker_does() {
    let Some(brokers) = kafka() else { return };
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let id = unique("scale");
    let input = format!("{id}.in");
    let (one, three) = (format!("{id}-one"), format!("{id}-three"));
    let mut topics = vec![input.clone(), format!("{input}.traces")];
    for g in [&one, &three] {
        for t in ["dlq", "alerts", "anomalies", "sla", "health"] {
            topics.push(format!("{g}.{t}"));
        }
    }
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    create_topics(&brokers, &names[..2], 3).await;
    create_topics(&brokers, &names[2..], 1).await;
    let work = tempfile::tempdir().expect("tempdir");
    let prom_one = PrometheusServer::start(&work.path().join("prom-one")).await;
    let prom_three = PrometheusServer::start(&work.path().join("prom-three")).await;
    let now_s = dwcp_tests::now_s();
    let t0 = now_s / 60 * 60 - 50 * 60;

    // Three workers first; wait until each owns partitions of both stages.
    let y3 = yaml(&brokers, &three, &input, &prom_three.write_url(), true);
    let workers: Vec<Worker> = (0..3)
        .map(|i| Worker::start(work.path(), &format!("w{i}"), &y3))
        .collect();
    let stage1 = format!("{three}.repartition");
    wait_groups_settled(&workers, &[(&stage1, Some(6.0)), (&three, Some(12.0))]).await;
    // One worker, no repartitioning, reading the same input as it arrives.
    let y1 = yaml(&brokers, &one, &input, &prom_one.write_url(), false);
    let single = Worker::start(work.path(), "single", &y1);
    single
        .wait_for(
            "dwcp_assigned_partitions",
            &[("group", &one)],
            6.0,
            Duration::from_secs(180),
        )
        .await;
    // The first step of every region first, read by the single worker before the rest: its
    // input partitions were empty when it started, and an empty partition stops holding event
    // time back until it shows a record (else a region silent from the start would hold it for
    // the idle timeout), so a region whose first record it read a minute after another
    // region's would have that minute late. The re-keying stage's partitions wait for every
    // input partition's first record, so they would not: the outputs would differ there.
    let mut writer = InputWriter::new(&brokers, &input, t0);
    writer.steps(0..1).await;
    for (topic, want) in [
        (input.clone(), writer.written.points),
        (format!("{input}.traces"), writer.written.spans),
    ] {
        single
            .wait_for(
                "dwcp_source_records_total",
                &[("topic", &topic)],
                want as f64,
                Duration::from_secs(180),
            )
            .await;
    }
    writer.steps(1..160).await;
    let Input {
        points,
        spans,
        span_markers,
    } = writer.written;
    let refs: Vec<&Worker> = workers.iter().collect();
    let series_topic = format!("{three}.series");
    wait_sum(
        &refs,
        "dwcp_repartitioned_records_total",
        &[("topic", &series_topic)],
        points as f64,
    )
    .await;
    // The points, a target_info marker per input message (one resource each), and the
    // span-metrics markers of the span messages.
    let markers = 160.0 * 3.0 + span_markers as f64;
    wait_sum(
        &refs,
        "dwcp_source_records_total",
        &[("topic", &series_topic)],
        points as f64 + markers,
    )
    .await;
    wait_sum(
        &refs,
        "dwcp_repartitioned_records_total",
        &[("topic", &format!("{three}.spans"))],
        spans as f64,
    )
    .await;
    // Every worker re-keyed some input (two of the six partitions each); the keyed work is
    // spread over more than one.
    let mut keyed = 0;
    for w in &workers {
        let m = w.metrics().await;
        assert!(metric_sum(&m, "dwcp_repartitioned_records_total", &[]) > 0.0, "{m}");
        if metric_sum(&m, "dwcp_source_records_total", &[("topic", &series_topic)]) > 0.0 {
            keyed += 1;
        }
    }
    assert!(keyed >= 2, "series on {keyed} worker(s)");

    single
        .wait_for(
            "dwcp_source_records_total",
            &[("topic", &input)],
            points as f64,
            Duration::from_secs(180),
        )
        .await;
    single
        .wait_for(
            "dwcp_source_records_total",
            &[("topic", &format!("{input}.traces"))],
            spans as f64,
            Duration::from_secs(180),
        )
        .await;

    let at = now_s + 60;
    // Both sides settle; the three workers' outputs go through one more hop and can trail on a
    // loaded machine by more than `settled`'s quiet spell, so compare again until they agree
    // or a deadline passes (then the differences are reported below).
    let deadline = Instant::now() + Duration::from_secs(180);
    let (mut want_one, mut got_three);
    loop {
        want_one = settled(&prom_one.url(), at).await;
        got_three = settled(&prom_three.url(), at).await;
        if want_one == got_three || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let samples: usize = want_one.values().map(Vec::len).sum();
    // The input's 7 metrics per region and step, plus what the operators derive.
    assert!(samples > 160 * 3 * 7, "{samples} samples");
    for name in [
        "dwcp:latency:p95:5m",
        "ALERTS",
        "dwcp_anomaly_score",
        "dwcp:latency:p95:10s",
        "dwcp_sla_compliance_ratio",
        "dwcp_region_health_score",
        "target_info",
        "traces_span_metrics_calls_total",
        "traces_span_metrics_duration_milliseconds_bucket",
    ] {
        assert!(want_one.keys().any(|l| l["__name__"] == name), "{name} missing");
    }
    let missing: Vec<_> = want_one.keys().filter(|k| !got_three.contains_key(*k)).collect();
    let extra: Vec<_> = got_three.keys().filter(|k| !want_one.contains_key(*k)).collect();
    if !(missing.is_empty() && extra.is_empty()) {
        let mut diag = String::new();
        for w in &workers {
            let m = w.metrics().await;
            let lines: Vec<&str> = m
                .lines()
                .filter(|l| {
                    [
                        "dwcp_watermark",
                        "dwcp_assigned_partitions",
                        "dwcp_late",
                        "dwcp_records_out",
                        "dwcp_changelog",
                        "dwcp_rule",
                        "dwcp_derived",
                        "dwcp_operator_state",
                        "dwcp_prometheus_samples",
                        "dwcp_remote_write",
                        "dwcp_series_dropped",
                        "dwcp_active_series",
                        "dwcp_series_batches_skipped",
                        "dwcp_rebalances",
                    ]
                    .iter()
                    .any(|p| l.starts_with(p))
                })
                .collect();
            diag.push_str(&format!("{}\n----\n", lines.join("\n")));
        }
        // Every log line but the dark-region warnings (hundreds while the input starts).
        let logs = logs_matching(work.path(), &[""])
            .lines()
            .filter(|l| !l.contains("region is dark"))
            .collect::<Vec<_>>()
            .join("\n");
        panic!("series missing: {missing:?}\nextra: {extra:?}\nthe three workers:\n{diag}{logs}");
    }
    for (labels, values) in &want_one {
        if &got_three[labels] != values {
            let mut diag = String::new();
            for w in workers.iter().chain(std::iter::once(&single)) {
                let m = w.metrics().await;
                let late: Vec<&str> = m
                    .lines()
                    .filter(|l| {
                        l.starts_with("dwcp_late") || l.starts_with("dwcp_rule") || l.starts_with("dwcp_watermark")
                    })
                    .collect();
                let log: Vec<&str> = w
                    .log_text()
                    .lines()
                    .filter(|l| l.contains("repartitioning") || l.contains("WARN"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
                    .leak()
                    .iter()
                    .map(String::as_str)
                    .collect();
                diag.push_str(&format!("{}\n{}\n----\n", late.join("\n"), log.join("\n")));
            }
            // The samples only one side has, in seconds from the input's first step.
            let rel = |v: &[(i64, String)], other: &[(i64, String)]| -> Vec<String> {
                v.iter()
                    .filter(|s| !other.contains(s))
                    .map(|(ms, val)| format!("t0{:+}s={val}", ms / 1000 - i64::try_from(t0).unwrap_or(0)))
                    .collect()
            };
            panic!(
                "{labels:?}: {} samples, want {}\nonly the three workers': {:?}\nonly the single worker's: {:?}\n{diag}",
                got_three[labels].len(),
                values.len(),
                rel(&got_three[labels], values),
                rel(values, &got_three[labels]),
            );
        }
    }

    // Alert transitions and anomaly episodes: the same records (the derived topics are
    // at-least-once without transactions, and no worker crashed, so exactly these).
    // (Every record: the workers are done, so what a topic holds after a few seconds is all.)
    let all =
        |topic: String, avsc: &str| sorted_records_within(&brokers, &topic, avsc, usize::MAX, Duration::from_secs(5));
    let alerts_one = all(format!("{one}.alerts"), "alert.avsc");
    let alerts_three = all(format!("{three}.alerts"), "alert.avsc");
    assert!(alerts_one.iter().any(|a| a.contains("HighLatency")), "{alerts_one:?}");
    assert!(
        alerts_one.iter().any(|a| a.contains("DWCPServiceDown")),
        "{alerts_one:?}"
    );
    // The rule reading the SLA operator's compliance series, evaluated where that runs.
    assert!(alerts_one.iter().any(|a| a.contains("SLAViolation")), "{alerts_one:?}");
    assert_eq!(alerts_three, alerts_one);
    let anomalies_one = sorted_records(&brokers, &format!("{one}.anomalies"), "anomaly.avsc", 6);
    let anomalies_three = sorted_records(
        &brokers,
        &format!("{three}.anomalies"),
        "anomaly.avsc",
        anomalies_one.len(),
    );
    // An episode opens at each gauge's spike (and does not end: the quiet gap that closes one
    // is longer than what follows).
    for g in GAUGES {
        let metric = format!("metric: String(\"{}\")", g.replace('.', "_"));
        assert!(
            anomalies_one.iter().any(|a| a.contains(&metric)),
            "{metric}: {anomalies_one:?}"
        );
    }
    assert_eq!(anomalies_three, anomalies_one);
    // SLA reports and health changes: run by one of the three workers (the one owning the key
    // of what they read), with every region's data. A report a minute per region and the
    // global rollup: us-east-1's slow requests (steps 40 to 72) break the SLA there and
    // globally.
    let sla_one = all(format!("{one}.sla"), "sla_report.avsc");
    let sla_three = all(format!("{three}.sla"), "sla_report.avsc");
    assert!(sla_one.len() > 100, "{} SLA reports", sla_one.len());
    for region in ["us-east-1", "us-west-1", "eu-west-1", "global"] {
        let region = format!("region: String(\"{region}\")");
        assert!(sla_one.iter().any(|r| r.contains(&region)), "{region}: {sla_one:?}");
    }
    assert!(
        sla_one
            .iter()
            .any(|r| r.contains("region: String(\"us-east-1\")") && r.contains("compliant: Boolean(false)")),
        "{sla_one:?}"
    );
    assert_eq!(sla_three, sla_one);
    let health_one = all(format!("{one}.health"), "region_health.avsc");
    let health_three = all(format!("{three}.health"), "region_health.avsc");
    assert!(!health_one.is_empty());
    assert_eq!(health_three, health_one);
    let _ = (&prom_one, &prom_three, single);
}

/// OTLP/JSON of one region's gauges at step `i`: a value per gauge that encodes (region, step,
/// gauge), so a sample in Prometheus names the point it came from; and a delta counter
/// `dwcp.sent` adding `ri + 1` bytes a step.
fn gauges_message(region: &str, ri: usize, t0: u64, i: u64) -> Vec<u8> {
    let t = (t0 + i * 5) * 1_000_000_000;
    let start = t - 5_000_000_000;
    let delta = format!(
        r#"{{"name":"dwcp.sent","unit":"By","sum":{{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{{"startTimeUnixNano":"{start}","timeUnixNano":"{t}","asInt":"{}"}}]}}}}"#,
        ri + 1
    );
    let gauges: Vec<String> = GAUGES
        .iter()
        .enumerate()
        .map(|(gi, name)| {
            let v = (ri * 100_000 + gi * 10_000) as u64 + i;
            format!(r#"{{"name":"{name}","gauge":{{"dataPoints":[{{"timeUnixNano":"{t}","asInt":"{v}"}}]}}}}"#)
        })
        .chain(std::iter::once(delta))
        .collect();
    format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"cloud.region","value":{{"stringValue":"{region}"}}}}]}},"scopeMetrics":[{{"metrics":[{}]}}]}}]}}"#,
        gauges.join(",")
    )
    .into_bytes()
}

/// OTLP/JSON of one region's spans at step `i`: two `gw` `replicate` spans of 7 ms, ending
/// 1 s and 3 s before the step's time.
fn replicate_spans(region: &str, ri: usize, t0: u64, i: u64) -> Vec<u8> {
    let spans: Vec<String> = SPAN_ENDS_BEFORE_STEP_S
        .iter()
        .enumerate()
        .map(|(k, before)| {
            let end = ((t0 + i * 5 - before) * 1000) * 1_000_000;
            format!(
                r#"{{"traceId":"{:032x}","spanId":"{:016x}","name":"replicate","kind":2,"startTimeUnixNano":"{}","endTimeUnixNano":"{end}"}}"#,
                (u128::from(i) << 8) | ((ri as u128) << 4) | k as u128 | (1 << 100),
                i * 8 + k as u64 + 1,
                end - 7_000_000,
            )
        })
        .collect();
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"cloud.region","value":{{"stringValue":"{region}"}}}},{{"key":"service.name","value":{{"stringValue":"gw"}}}}]}},"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        spans.join(",")
    )
    .into_bytes()
}

/// See `replicate_spans`.
const SPAN_ENDS_BEFORE_STEP_S: [u64; 2] = [1, 3];

/// Steps of `gauges_message` to `topic`, and of `replicate_spans` to `spans` when given, each
/// region on its own partition.
async fn produce_steps(
    p: &rdkafka::producer::FutureProducer,
    topic: &str,
    spans: Option<&str>,
    t0: u64,
    steps: std::ops::Range<u64>,
) {
    for i in steps {
        for (ri, region) in REGIONS.iter().enumerate() {
            let partition = i32::try_from(ri).expect("partition");
            produce(
                p,
                topic,
                None,
                &gauges_message(region, ri, t0, i),
                None,
                Some(partition),
            )
            .await;
            if let Some(spans) = spans {
                produce(
                    p,
                    spans,
                    None,
                    &replicate_spans(region, ri, t0, i),
                    None,
                    Some(partition),
                )
                .await;
            }
        }
    }
}

/// Every (series, time, value) of the gauges Prometheus holds.
async fn gauge_samples(base: &str, at: u64) -> std::collections::BTreeSet<(String, String, i64, String)> {
    let all = everything(base, at).await;
    all.iter()
        .filter(|(l, _)| l["__name__"].starts_with("dwcp_queue_"))
        .flat_map(|(l, v)| {
            v.iter()
                .map(|(t, x)| (l["__name__"].clone(), l["region"].clone(), *t, x.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every gauge sample of `steps` steps of `gauges_message`, as `gauge_samples` lists them.
fn want_gauge_samples(t0: u64, steps: u64) -> std::collections::BTreeSet<(String, String, i64, String)> {
    (0..steps)
        .flat_map(|i| {
            REGIONS.iter().enumerate().flat_map(move |(ri, region)| {
                GAUGES.iter().enumerate().map(move |(gi, g)| {
                    (
                        g.replace('.', "_"),
                        (*region).to_string(),
                        i64::try_from((t0 + i * 5) * 1000).expect("ms"),
                        ((ri * 100_000 + gi * 10_000) as u64 + i).to_string(),
                    )
                })
            })
        })
        .collect()
}

/// The cross-region aggregation of `dwcp.queue.a` in Prometheus: its first `windows` 10 s
/// windows (two steps each) exact, per region and global (waits for them until `deadline`).
async fn check_aggregates(base: &str, at: u64, t0: u64, windows: u64, deadline: Instant) {
    let mut want: BTreeMap<(String, String, i64), f64> = BTreeMap::new();
    for k in 0..windows {
        let ms = i64::try_from((t0 + 10 * k + 10) * 1000).expect("ms");
        let mut all: Vec<f64> = Vec::new();
        for (ri, region) in REGIONS.iter().enumerate() {
            #[allow(clippy::cast_precision_loss)]
            let v: Vec<f64> = (2 * k..2 * k + 2).map(|i| (ri as u64 * 100_000 + i) as f64).collect();
            all.extend(&v);
            for (name, x) in [("count", 2.0), ("sum", v.iter().sum()), ("min", v[0]), ("max", v[1])] {
                want.insert((format!("dwcp:queue:a:{name}:10s"), (*region).to_string(), ms), x);
            }
        }
        for (name, x) in [
            ("count", 6.0),
            ("sum", all.iter().sum()),
            ("min", all.iter().copied().fold(f64::INFINITY, f64::min)),
            ("max", all.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        ] {
            want.insert((format!("dwcp:queue:a:{name}:10s"), "global".to_string(), ms), x);
        }
    }
    let aggregated = |all: BTreeMap<BTreeMap<String, String>, Vec<(i64, String)>>| {
        let mut out: BTreeMap<(String, String, i64), f64> = BTreeMap::new();
        for (l, v) in all.iter().filter(|(l, _)| l["__name__"].starts_with("dwcp:queue:a:")) {
            for (t, x) in v {
                out.insert(
                    (l["__name__"].clone(), l["region"].clone(), *t),
                    x.parse().expect("value"),
                );
            }
        }
        out
    };
    let mut got = aggregated(everything(base, at).await);
    while !want.keys().all(|k| got.contains_key(k)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        got = aggregated(everything(base, at).await);
    }
    let wrong: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), *v, got.get(k).copied()))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} aggregated samples wrong or missing, e.g. {:?}",
        wrong.len(),
        want.len(),
        &wrong[..wrong.len().min(8)]
    );
}

/// Checks every sample of the delta counter `dwcp.sent` turned cumulative in `all`: each holds
/// the exact total of its region's steps up to it. Returns how many were checked.
fn check_delta_totals(
    all: &BTreeMap<BTreeMap<String, String>, Vec<(i64, String)>>,
    t0: u64,
    workers: &[Worker],
) -> usize {
    let mut checked = 0;
    for (ri, region) in REGIONS.iter().enumerate() {
        let (_, values) = all
            .iter()
            .find(|(l, _)| l["__name__"] == "dwcp_sent_bytes_total" && l["region"] == *region)
            .unwrap_or_else(|| panic!("no dwcp_sent_bytes_total for {region}"));
        for (ms, v) in values {
            let step = u64::try_from(*ms / 1000).expect("s").saturating_sub(t0) / 5;
            let want = (ri as u64 + 1) * (step + 1);
            assert_eq!(
                v,
                &want.to_string(),
                "{region} at step {step} (its first samples: {:?}); the workers' changelog lines:\n{}",
                values
                    .iter()
                    .take(12)
                    .map(|(t, x)| ((*t / 1000 - i64::try_from(t0).unwrap_or(0)) / 5, x.clone()))
                    .collect::<Vec<_>>(),
                workers
                    .iter()
                    .map(|w| w
                        .log_text()
                        .lines()
                        .filter(|l| l.contains("changelog")
                            || l.contains("moved")
                            || l.contains("assign")
                            || l.contains("revoked")
                            || l.contains("checkpoint")
                            || l.contains("WARN")
                            || l.contains("ERROR"))
                        .collect::<Vec<_>>()
                        .join("\n"))
                    .collect::<Vec<_>>()
                    .join("\n----\n")
            );
            checked += 1;
        }
    }
    checked
}

/// Everything in Prometheus once it holds `n` samples of the delta counter's totals, or at
/// `deadline` (their series are in another internal partition than the gauges: the gauges
/// being complete says nothing about them).
async fn wait_delta_totals(
    base: &str,
    at: u64,
    n: usize,
    deadline: Instant,
) -> BTreeMap<BTreeMap<String, String>, Vec<(i64, String)>> {
    loop {
        let all = everything(base, at).await;
        let have: usize = all
            .iter()
            .filter(|(l, _)| l["__name__"] == "dwcp_sent_bytes_total")
            .map(|(_, v)| v.len())
            .sum();
        if have >= n || Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Which steps of each region's delta total Prometheus holds, as ranges (`0-139 141-299`).
fn delta_coverage(all: &BTreeMap<BTreeMap<String, String>, Vec<(i64, String)>>, t0: u64) -> String {
    let mut out = String::new();
    for region in REGIONS {
        let mut steps: Vec<i64> = all
            .iter()
            .filter(|(l, _)| l["__name__"] == "dwcp_sent_bytes_total" && l["region"] == region)
            .flat_map(|(_, v)| v.iter().map(|(ms, _)| (ms / 1000 - i64::try_from(t0).unwrap_or(0)) / 5))
            .collect();
        steps.sort_unstable();
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        for s in steps {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == s => *end = s,
                _ => ranges.push((s, s)),
            }
        }
        let text: Vec<String> = ranges.iter().map(|(a, b)| format!("{a}-{b}")).collect();
        out.push_str(&format!("{region}: {}\n", text.join(" ")));
    }
    out
}

/// With `DWCP_TEST_KEEP_LOGS` set to a directory: copies every worker log under `dir` there
/// (into a folder named `id`), to read afterwards (a failure's, or a pass's to compare with).
fn keep_logs(dir: &std::path::Path, id: &str) {
    let Some(keep) = std::env::var_os("DWCP_TEST_KEEP_LOGS") else {
        return;
    };
    let to = std::path::Path::new(&keep).join(id);
    let _ = std::fs::create_dir_all(&to);
    for e in std::fs::read_dir(dir).into_iter().flatten().filter_map(Result::ok) {
        if e.path().extension().is_some_and(|x| x == "log") {
            let _ = std::fs::copy(e.path(), to.join(e.file_name()));
        }
    }
    eprintln!("worker logs kept in {}", to.display());
}

/// Where the `missing` gauge samples went, for a failure message: which of them the re-keying
/// stage wrote to the internal series topic (partition and offset), the groups' committed
/// offsets, and what the workers logged about refused samples and partition moves. Tells a
/// loss in the re-keying stage from one in the keyed stage or at the receiver.
fn trace_missing(
    brokers: &str,
    id: &str,
    missing: &std::collections::BTreeSet<(String, String, i64, String)>,
    dir: &std::path::Path,
) -> String {
    use dwcp_schemas::model::PointValue;
    use rdkafka::Message as _;
    let series = format!("{id}.series");
    let header = |m: &rdkafka::message::OwnedMessage, name: &str| -> Option<String> {
        use rdkafka::message::Headers as _;
        let h = m.headers()?;
        (0..h.count())
            .map(|i| h.get(i))
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    // (name, region, ms) -> every `partition@offset (value v)` holding it.
    let mut found: BTreeMap<(String, String, i64), Vec<String>> = BTreeMap::new();
    let messages = consume_all(brokers, &series, usize::MAX, Duration::from_secs(10));
    for m in &messages {
        let region = header(m, "dwcp.region").unwrap_or_default();
        let ctx = dwcp_schemas::RegionContext::new(Some(std::sync::Arc::from(region.as_str())));
        let Ok(d) = dwcp_schemas::decode(
            dwcp_schemas::Signal::Metrics,
            dwcp_schemas::Encoding::OtlpProto,
            m.payload().unwrap_or_default(),
            &ctx,
        ) else {
            continue;
        };
        let dwcp_schemas::Records::Metrics(points) = d.records else {
            continue;
        };
        for p in points {
            let key = (
                p.metric.name.replace('.', "_"),
                p.origin.region.to_string(),
                i64::try_from(p.time_unix_nano / 1_000_000).unwrap_or(0),
            );
            if missing.iter().any(|(n, r, t, _)| (n, r, t) == (&key.0, &key.1, &key.2)) {
                let value = match &p.value {
                    PointValue::Gauge { value } => format!("{value:?}"),
                    other => format!("{other:?}"),
                };
                let at = format!("{}@{} (value {value})", m.partition(), m.offset());
                found.entry(key).or_default().push(at);
            }
        }
    }
    let mut out = format!(
        "diagnosis: {} of the {} missing samples are in the internal topic {series} ({} messages read)\n",
        found.len(),
        missing.len(),
        messages.len()
    );
    for (name, region, ms, value) in missing.iter().take(40) {
        let at = found
            .get(&(name.clone(), region.clone(), *ms))
            .map(|v| v.join(", "))
            .unwrap_or_else(|| "not in the internal topic".into());
        out.push_str(&format!("  {name}{{region={region}}} {ms} {value}: {at}\n"));
    }
    let keyed = dwcp_tests::committed(brokers, id, &series, 6);
    let rekeyed = dwcp_tests::committed(brokers, &format!("{id}.repartition"), &format!("{id}.in"), 3);
    out.push_str(&format!(
        "committed: keyed stage {series} {keyed:?}; re-keying stage {id}.in {rekeyed:?}\n"
    ));
    out.push_str(&logs_matching(
        dir,
        &[
            "older than what",
            "rejected",
            "ERROR",
            "WARN",
            "revoked",
            "assigned",
            "restored",
            "skipped",
        ],
    ));
    out.push('\n');
    out
}

/// Every worker log under `dir` (stopped workers' too), lines matching any of `words`.
fn logs_matching(dir: &std::path::Path, words: &[&str]) -> String {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    names.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "log"));
    names.sort();
    names
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().filter(|l| words.iter().any(|w| l.contains(w))).collect();
            format!("---- {}\n{}", p.display(), lines.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Delivery across worker changes with repartitioning: while the input flows, the three
/// workers are restarted one after another (SIGTERM, start again), then one is killed with
/// SIGKILL mid-stream. Every point of the input reaches Prometheus, with its value: the
/// re-keying stage commits an input offset only once the internal messages are acknowledged,
/// the keyed stage only once remote-write accepted the samples, so a crash re-reads, never
/// skips (re-sent identical samples are accepted by Prometheus, or refused as out of order
/// when it already has newer ones of the series).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_and_killed_repartitioning_workers_lose_no_sample() {
    let Some(brokers) = kafka() else { return };
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let id = unique("scale-kill");
    let input = format!("{id}.in");
    let traces = format!("{id}.traces");
    create_topics(&brokers, &[&input, &traces], 3).await;
    let derived_topics: Vec<String> = ["dlq", "sla", "health", "alerts", "anomalies"]
        .iter()
        .map(|t| format!("{id}.{t}"))
        .collect();
    create_topics(
        &brokers,
        &derived_topics.iter().map(String::as_str).collect::<Vec<_>>(),
        1,
    )
    .await;
    let work = tempfile::tempdir().expect("tempdir");
    let prom = PrometheusServer::start(&work.path().join("prom")).await;
    let now_s = dwcp_tests::now_s();
    let t0 = now_s / 60 * 60 - 50 * 60;
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  commit_interval_ms: 200\n  topics:\n    - {{name: \"{input}\", signal: metrics, encoding: otlp_json}}\n    - {{name: \"{traces}\", signal: traces, encoding: otlp_json}}\n\
         dead_letter:\n  topic: \"{id}.dlq\"\n\
         operators:\n  idle_timeout_ms: 600000\n  prometheus: {{target_info: false}}\n  aggregation:\n    rules: [{{metric: dwcp.queue.a, aggregations: [count, sum, min, max]}}]\n\
         \x20 sla:\n    - {{name: rate, kind: throughput, target: 0.9, total: dwcp_sent_bytes_total, min_rate: 0.3}}\n\
         derived_topics:\n  sla: \"{id}.sla\"\n  health: \"{id}.health\"\n  alerts: \"{id}.alerts\"\n  anomalies: \"{id}.anomalies\"\n\
         sinks:\n  prometheus_remote_write:\n    - {{url: \"{}\", batch_wait_ms: 100}}\n\
         repartition:\n  enabled: true\n  series_topic: \"{id}.series\"\n  spans_topic: \"{id}.spans\"\n  partitions: 6\n",
        prom.write_url()
    );
    // Tansu would leave the groups leaderless if a killed worker led them (see `GroupLeader`).
    let _leader = GroupLeader::start(&brokers, &format!("{id}.leader"), &[&id, &format!("{id}.repartition")]).await;
    let mut workers: Vec<Worker> = (0..3)
        .map(|i| Worker::start(work.path(), &format!("w{i}"), &yaml))
        .collect();
    let p = producer(&brokers);
    let steps = 300u64;
    produce_steps(&p, &input, Some(&traces), t0, 0..60).await;
    // Rolling restart, the input flowing in between.
    for i in 0..3u64 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let stopped = workers[i as usize].stop();
        assert!(
            stopped,
            "clean stop of w{i}; its log:\n{}",
            workers[i as usize].log_text()
        );
        produce_steps(&p, &input, Some(&traces), t0, 60 + i * 40..100 + i * 40).await;
        workers[i as usize] = Worker::start(work.path(), &format!("w{i}-again"), &yaml);
    }
    // A crash mid-stream.
    produce_steps(&p, &input, Some(&traces), t0, 180..220).await;
    workers[1].kill9();
    produce_steps(&p, &input, Some(&traces), t0, 220..steps).await;

    let want = want_gauge_samples(t0, steps);
    // Tansu notices the killed member after its session timeout (45 s); then its partitions
    // move and are read again from their last commits.
    let at = now_s + 60;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut got = gauge_samples(&prom.url(), at).await;
    while !want.is_subset(&got) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        got = gauge_samples(&prom.url(), at).await;
    }
    let missing: std::collections::BTreeSet<_> = want.difference(&got).cloned().collect();
    keep_logs(work.path(), &id);
    assert!(
        missing.is_empty(),
        "{} of {} samples missing\n{}",
        missing.len(),
        want.len(),
        trace_missing(&brokers, &id, &missing, work.path())
    );
    assert_eq!(got.len(), want.len(), "no sample Prometheus holds was not produced");

    // The cross-region aggregation of dwcp.queue.a: every 10 s window (two steps) exact, per
    // region and global, though its partition moved mid-window: a partial window written by a
    // worker on its way out, or by one that started again after the last commit, would show
    // here (Prometheus keeps the first value written for a timestamp).
    check_aggregates(&prom.url(), at, t0, 145, deadline).await;

    // The delta counter turned cumulative: its running total moved with its partition, so
    // every sample holds the exact total of the steps up to it (no restart from 0, no step
    // added twice), and every step has one: a replayed step older than the restored total
    // sends nothing, but a checkpoint is written only once its samples were accepted.
    // Its series live in another partition than the gauges (key `derived`, read by the SLA):
    // when the killed worker owned no gauge partition, the gauges were complete before its
    // partitions moved, so wait for these too.
    let totals = wait_delta_totals(&prom.url(), at, 3 * steps as usize, deadline).await;
    let checked = check_delta_totals(&totals, t0, &workers);
    let coverage = delta_coverage(&totals, t0);
    assert_eq!(
        checked,
        3 * steps as usize,
        "delta totals checked; the steps Prometheus holds:\n{coverage}the workers' logs:\n{}",
        logs_matching(
            work.path(),
            &[
                "WARN",
                "ERROR",
                "assign",
                "revoked",
                "restored",
                "checkpoint",
                "older",
                "dropped"
            ]
        )
    );

    // Span metrics through the restarts and the crash: their partition's counts moved with it
    // and the replays of either stage were recognized, so every boundary's count is exactly
    // the region's spans that ended before it (a lost count would show fewer, a replay more),
    // and the duration sum 7 ms each.
    // (They are emitted as event time passes each boundary: wait for the last ones.)
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut all = everything(&prom.url(), at).await;
    let emitted = |all: &BTreeMap<BTreeMap<String, String>, Vec<(i64, String)>>| -> usize {
        all.iter()
            .filter(|(l, _)| l["__name__"] == "traces_span_metrics_calls_total")
            .map(|(_, v)| v.len())
            .sum()
    };
    while emitted(&all) < 3 * 145 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        all = everything(&prom.url(), at).await;
    }
    let series = |name: &str, region: &str| {
        all.iter()
            .find(|(l, _)| l["__name__"] == name && l["region"] == region)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} for {region}"))
    };
    let mut boundaries = 0;
    for region in REGIONS {
        let calls = series("traces_span_metrics_calls_total", region);
        let sums = series("traces_span_metrics_duration_milliseconds_sum", region);
        assert_eq!(
            calls.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            sums.iter().map(|(t, _)| *t).collect::<Vec<_>>()
        );
        for ((ms, n), (_, sum)) in calls.iter().zip(&sums) {
            let want = (0..steps)
                .flat_map(|i| SPAN_ENDS_BEFORE_STEP_S.iter().map(move |b| (t0 + i * 5 - b) * 1000))
                .filter(|end| i64::try_from(*end).expect("ms") < *ms)
                .count();
            assert_eq!(n, &want.to_string(), "{region}: spans ended before {ms}");
            assert_eq!(sum, &(7 * want).to_string(), "{region}: duration sum at {ms}");
        }
        boundaries += calls.len();
    }
    // 150 boundaries of 10 s in 300 steps of 5 s; the last two wait for event time to pass them.
    assert!(
        boundaries >= 3 * 145,
        "{boundaries} boundaries; the workers' logs:\n{}",
        workers
            .iter()
            .map(|w| w
                .log_text()
                .lines()
                .filter(|l| l.contains("span") || l.contains("WARN") || l.contains("ERROR") || l.contains("assign"))
                .collect::<Vec<_>>()
                .join("\n"))
            .collect::<Vec<_>>()
            .join("\n----\n")
    );

    // The throughput SLA over dwcp.sent (at least 0.3 bytes/s in a good minute): us-east-1
    // sends 12 bytes a minute (0.2/s), every minute bad from the first, one violation that never
    // ends; us-west-1 (0.4/s), eu-west-1 (0.6/s) and the global sum (1.2/s) are good every
    // minute. The SLA's state moved with its partition through the restarts and the crash: lost,
    // the violation would start again later; counted twice on a replay, some of us-east-1's
    // minutes would reach 24 bytes and be good.
    let last_minute = i64::try_from((t0 + 24 * 60) * 1000).expect("ms");
    let deadline = Instant::now() + Duration::from_secs(120);
    let latest = loop {
        let records = decode_avro(
            &consume_all(&brokers, &format!("{id}.sla"), usize::MAX, Duration::from_secs(3)),
            "sla_report.avsc",
        );
        let mut latest: BTreeMap<String, BTreeMap<String, apache_avro::types::Value>> = BTreeMap::new();
        for r in records {
            let (apache_avro::types::Value::String(region), apache_avro::types::Value::TimestampMillis(end)) =
                (&r["region"], &r["period_end"])
            else {
                panic!("{r:?}")
            };
            let newer = latest
                .get(region)
                .is_none_or(|l| matches!(l["period_end"], apache_avro::types::Value::TimestampMillis(e) if e < *end));
            if newer {
                latest.insert(region.clone(), r.clone());
            }
        }
        let done = latest.len() == 4
            && latest
                .values()
                .all(|r| matches!(r["period_end"], apache_avro::types::Value::TimestampMillis(e) if e >= last_minute));
        if done || Instant::now() > deadline {
            break latest;
        }
    };
    assert_eq!(
        latest.keys().map(String::as_str).collect::<Vec<_>>(),
        ["eu-west-1", "global", "us-east-1", "us-west-1"]
    );
    for (region, r) in &latest {
        let (compliance, violations) = (&r["compliance"], &r["violations"]);
        if region == "us-east-1" {
            assert_eq!(compliance, &apache_avro::types::Value::Double(0.0), "{r:?}");
            let apache_avro::types::Value::Array(v) = violations else {
                panic!("{r:?}")
            };
            assert_eq!(v.len(), 1, "one violation: {r:?}");
            let apache_avro::types::Value::Record(f) = &v[0] else {
                panic!("{r:?}")
            };
            let t0_ms = i64::try_from(t0 * 1000).expect("ms");
            assert_eq!(f[0].1, apache_avro::types::Value::TimestampMillis(t0_ms), "{r:?}");
            assert_eq!(
                f[1].1,
                apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)),
                "{r:?}"
            );
        } else {
            assert_eq!(compliance, &apache_avro::types::Value::Double(1.0), "{region}: {r:?}");
            assert_eq!(
                violations,
                &apache_avro::types::Value::Array(Vec::new()),
                "{region}: {r:?}"
            );
        }
    }

    // Every partition's reads began at or below what its restored state covered.
    let gaps = logs_matching(work.path(), &["lies past what its restored state covers"]);
    assert!(
        gaps.lines().all(|l| l.is_empty() || l.starts_with("---- ")),
        "a partition's reads began past its checkpoint:\n{gaps}"
    );
}

/// A checkpoint never runs ahead of the sinks. A worker whose remote-write endpoint refuses
/// everything (503, retried) processes the whole input, closes aggregation windows and keeps
/// the delta counter's totals, but writes no checkpoint (each waits for the samples of what it
/// covers to be accepted) and commits nothing. Killed with SIGKILL, it leaves the partitions to a
/// worker with a working endpoint, which reads them from the start: every gauge sample, every
/// closed window and every delta total reaches Prometheus. A checkpoint written when the state
/// was snapshotted would tell the second worker those windows were closed and those totals
/// counted, while their samples were only ever queued in the first worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_waits_until_the_sinks_accept_what_it_covers() {
    let Some(brokers) = kafka() else { return };
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let id = unique("scale-acked");
    let input = format!("{id}.in");
    create_topics(&brokers, &[&input], 3).await;
    create_topics(&brokers, &[&format!("{id}.dlq")], 1).await;
    let work = tempfile::tempdir().expect("tempdir");
    let prom = PrometheusServer::start(&work.path().join("prom")).await;
    let refusing = WebhookReceiver::start_answering("503 Service Unavailable").await;
    let now_s = dwcp_tests::now_s();
    let t0 = now_s / 60 * 60 - 30 * 60;
    // A short session timeout: the survivor gets the partitions 10 s after the kill, not 45.
    let yaml = |url: &str| {
        format!(
            "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  commit_interval_ms: 200\n  consumer_options: {{session.timeout.ms: \"10000\"}}\n  topics:\n    - {{name: \"{input}\", signal: metrics, encoding: otlp_json}}\n\
             dead_letter:\n  topic: \"{id}.dlq\"\n\
             operators:\n  idle_timeout_ms: 600000\n  checkpoint_interval_ms: 500\n  span_metrics: {{enabled: false}}\n  prometheus: {{target_info: false}}\n  aggregation:\n    rules: [{{metric: dwcp.queue.a, aggregations: [count, sum, min, max]}}]\n\
             sinks:\n  prometheus_remote_write:\n    - {{url: \"{url}\", batch_wait_ms: 100}}\n\
             repartition:\n  enabled: true\n  series_topic: \"{id}.series\"\n  spans_topic: \"{id}.spans\"\n  partitions: 2\n  changelog_prefix: \"{id}.state.\"\n"
        )
    };
    // Tansu would leave the groups leaderless if a killed worker led them (see `GroupLeader`).
    let _leader = GroupLeader::start(&brokers, &format!("{id}.leader"), &[&id, &format!("{id}.repartition")]).await;
    let mut first = Worker::start(work.path(), "refused", &yaml(&refusing.url));
    let steps = 40u64;
    produce_steps(&producer(&brokers), &input, None, t0, 0..steps).await;
    // Every point re-keyed and processed (7 metrics, 3 regions a step), then a few intervals.
    let points = f64::from(u32::try_from(steps * 3 * 7).expect("points"));
    let series_topic = format!("{id}.series");
    first
        .wait_for(
            "dwcp_source_records_total",
            &[("topic", &series_topic)],
            points,
            Duration::from_secs(120),
        )
        .await;
    first
        .wait_for("dwcp_remote_write_retries_total", &[], 3.0, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = first.metrics().await;
    assert_eq!(
        metric_sum(&m, "dwcp_changelog_checkpoints_total", &[("result", "written")]),
        0.0,
        "a checkpoint was written while the samples it covers were refused:\n{m}"
    );
    assert!(metric_sum(&m, "dwcp_changelog_checkpoints_waiting", &[]) >= 1.0, "{m}");
    first.kill9();
    let second = Worker::start(work.path(), "accepted", &yaml(&prom.write_url()));
    let at = now_s + 60;
    let deadline = Instant::now() + Duration::from_secs(240);
    let want = want_gauge_samples(t0, steps);
    let mut got = gauge_samples(&prom.url(), at).await;
    while got != want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        got = gauge_samples(&prom.url(), at).await;
    }
    assert_eq!(got, want, "the second worker's log:\n{}", second.log_text());
    // The last windows stay open: the watermark holds back allowed lateness.
    check_aggregates(&prom.url(), at, t0, steps / 2 - 2, deadline).await;
    let totals = wait_delta_totals(&prom.url(), at, 3 * steps as usize, deadline).await;
    let checked = check_delta_totals(&totals, t0, std::slice::from_ref(&second));
    assert_eq!(checked, 3 * steps as usize, "every step's total of every region");
}

/// Two repartitioning workers (and a `GroupLeader`) evaluating the design's rules over a
/// latency input topic `<id>.in` of two partitions; `source` and `rest` are YAML lines added
/// under `source:` and at the end.
async fn rules_workers(
    brokers: &str,
    id: &str,
    work: &std::path::Path,
    source: &str,
    rest: &str,
) -> (GroupLeader, Vec<Worker>) {
    let (leader, workers, _) = rules_workers_with(brokers, id, work, source, rest, 500, &|_| String::new()).await;
    (leader, workers)
}

/// [`rules_workers`] checkpointing every `checkpoint_ms`, with `per_worker(i)` added to worker
/// `i`'s configuration.
async fn rules_workers_with(
    brokers: &str,
    id: &str,
    work: &std::path::Path,
    source: &str,
    rest: &str,
    checkpoint_ms: u64,
    per_worker: &dyn Fn(usize) -> String,
) -> (GroupLeader, Vec<Worker>, String) {
    let input = format!("{id}.in");
    create_topics(brokers, &[&input], 2).await;
    create_topics(brokers, &[&format!("{id}.dlq")], 1).await;
    let rules = format!("{}/../deploy/rules/dwcp.rules.yml", env!("CARGO_MANIFEST_DIR"));
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  commit_interval_ms: 200\n{source}  topics:\n    - {{name: \"{input}\", signal: metrics, encoding: otlp_json}}\n\
         dead_letter:\n  topic: \"{id}.dlq\"\n\
         operators:\n  idle_timeout_ms: 120000\n  checkpoint_interval_ms: {checkpoint_ms}\n  span_metrics: {{enabled: false}}\n  prometheus: {{target_info: false}}\n\
         rules:\n  files: [\"{rules}\"]\n\
         repartition:\n  enabled: true\n  series_topic: \"{id}.series\"\n  spans_topic: \"{id}.spans\"\n  partitions: 4\n  changelog_prefix: \"{id}.state.\"\n{rest}"
    );
    // Tansu would leave the groups leaderless if a killed worker led them (see `GroupLeader`).
    let stage1 = format!("{id}.repartition");
    let leader = GroupLeader::start(brokers, &format!("{id}.leader"), &[id, &stage1]).await;
    let workers: Vec<Worker> = (0..2)
        .map(|i| Worker::start(work, &format!("w{i}"), &format!("{yaml}{}", per_worker(i))))
        .collect();
    wait_groups_settled(&workers, &[(&stage1, None), (id, None)]).await;
    (leader, workers, yaml)
}

/// Latency messages of us-east-1 (partition 0) and us-west-1 (partition 1) every 15 s, 100
/// requests a step each, us-east-1's slow (over 250 ms) when `slow` says so.
struct LatencyInput {
    t0: u64,
    counts: [[u64; 3]; 2],
}

impl LatencyInput {
    async fn send(
        &mut self,
        p: &rdkafka::producer::FutureProducer,
        topic: &str,
        range: std::ops::RangeInclusive<u64>,
        slow: impl Fn(u64) -> bool,
    ) {
        for t in range.step_by(15) {
            for (ri, region) in ["us-east-1", "us-west-1"].iter().enumerate() {
                if t > 0 {
                    self.counts[ri][if ri == 0 && slow(t) { 2 } else { 0 }] += 100;
                }
                let m = super::latency_message(region, self.t0 + t, self.counts[ri]);
                produce(p, topic, None, &m, None, Some(i32::try_from(ri).expect("partition"))).await;
            }
        }
    }
}

/// Waits until `w` has written `more` rule-state checkpoints beyond those written so far.
async fn wait_rules_checkpoints(w: &Worker, more: f64) {
    let filter = [("operator", "rules"), ("result", "written")];
    let before = metric_sum(&w.metrics().await, "dwcp_changelog_checkpoints_total", &filter);
    w.wait_for(
        "dwcp_changelog_checkpoints_total",
        &filter,
        before + more,
        Duration::from_secs(60),
    )
    .await;
}

/// Waits until `survivor` has read rule state back from the changelog.
async fn wait_rules_restored(survivor: &Worker) {
    survivor
        .wait_for(
            "dwcp_changelog_restores_total",
            &[("operator", "rules"), ("result", "restored")],
            1.0,
            Duration::from_secs(180),
        )
        .await;
}

/// A firing alert stays active in Alertmanager when the worker evaluating it dies: the worker
/// taking its partition over restores the alert's state and posts it at once (then every
/// `resend_interval_ms`). Alertmanager resolves an alert by itself once its `endsAt` (four
/// resend intervals, 4 s here) passes without a new post; the takeover takes longer than that
/// (the session timeout, 10 s here), so without the hand-over the alert would stay resolved
/// while it still fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_alert_stays_active_in_alertmanager_when_its_worker_dies() {
    let Some(brokers) = kafka() else { return };
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let id = unique("scale-am");
    let input = format!("{id}.in");
    let work = tempfile::tempdir().expect("tempdir");
    let hook = WebhookReceiver::start().await;
    let am = dwcp_tests::AlertmanagerServer::start(&work.path().join("am"), &hook.url).await;
    let (_leader, mut workers) = rules_workers(
        &brokers,
        &id,
        work.path(),
        "  consumer_options: {session.timeout.ms: \"10000\"}\n",
        &format!(
            "sinks:\n  alertmanager:\n    - {{url: \"{}\", resend_interval_ms: 1000}}\n",
            am.url()
        ),
    )
    .await;
    let now_s = dwcp_tests::now_s();
    let p = producer(&brokers);
    let mut steps = LatencyInput {
        t0: now_s / 60 * 60 - 40 * 60,
        counts: [[0; 3]; 2],
    };
    // us-east-1 slow from 600 s on: HighLatency pending at 600 s, firing at 900 s, and firing
    // still when the input stops at 1200 s.
    let slow = |t: u64| t >= 600;
    steps.send(&p, &input, 0..=990, slow).await;
    // The evaluating worker: the one that logged HighLatency firing (other alerts of the rule
    // file fire too, on either worker).
    let fired = |w: &Worker| {
        w.log_text()
            .lines()
            .any(|l| l.contains("alert state changed") && l.contains("HighLatency") && l.contains("firing"))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let owner = loop {
        if let Some(i) = workers.iter().position(fired) {
            break i;
        }
        assert!(Instant::now() < deadline, "no worker fires HighLatency");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    wait_rules_checkpoints(&workers[owner], 4.0).await;
    workers[owner].kill9();
    let killed = Instant::now();
    steps.send(&p, &input, 1005..=1200, slow).await;
    let survivor = &workers[1 - owner];
    wait_rules_restored(survivor).await;
    assert!(
        killed.elapsed() > Duration::from_secs(5),
        "the dead worker's endsAt is past"
    );
    let am_url = am.url();
    let high_latency = || dwcp_tests::alertmanager_alerts(&am_url, "alertname=\"HighLatency\"");
    let deadline = Instant::now() + Duration::from_secs(30);
    let active = loop {
        let v = high_latency().await;
        if !v.is_empty() || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(active.len(), 1, "{active:?}\nsurvivor log:\n{}", survivor.log_text());
    assert_eq!(active[0]["status"]["state"], "active", "{active:?}");
    assert_eq!(active[0]["labels"]["region"], "us-east-1", "{active:?}");
    assert!(
        survivor.log_text().contains("alerts taken over with their partition"),
        "{}",
        survivor.log_text()
    );
    // And it stays active: re-posted every second by the survivor.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let still = high_latency().await;
    assert_eq!(still.len(), 1, "{still:?}");
    assert_eq!(still[0]["status"]["state"], "active", "{still:?}");
}

/// OTLP/JSON of one probe gauge point of eu-west-1.
fn probe_message(t_s: u64, value: f64) -> Vec<u8> {
    let t = t_s * 1_000_000_000;
    format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"cloud.region","value":{{"stringValue":"eu-west-1"}}}}]}},"scopeMetrics":[{{"metrics":[{{"name":"dwcp.probe","unit":"ms","gauge":{{"dataPoints":[{{"timeUnixNano":"{t}","asDouble":{value}}}]}}}}]}}]}}]}}"#
    )
    .into_bytes()
}

/// State that moves: two repartitioning workers; the one owning the probe series learns its
/// baseline from 150 points and checkpoints it to the changelog, then is killed with SIGKILL.
/// The other takes the partition over, reads the checkpoint, and finds the spike that comes
/// next (a worker starting the series afresh would still be learning: 100 points first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomaly_baselines_move_with_their_partition_when_a_worker_dies() {
    let Some(brokers) = kafka() else { return };
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let id = unique("scale-state");
    let input = format!("{id}.in");
    let anomalies = format!("{id}.anomalies");
    create_topics(&brokers, &[&input], 2).await;
    create_topics(&brokers, &[&format!("{id}.dlq"), &anomalies], 1).await;
    let work = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  commit_interval_ms: 200\n  topics:\n    - {{name: \"{input}\", signal: metrics, encoding: otlp_json}}\n\
         dead_letter:\n  topic: \"{id}.dlq\"\n\
         operators:\n  idle_timeout_ms: 2000\n  checkpoint_interval_ms: 500\n  span_metrics: {{enabled: false}}\n  prometheus: {{target_info: false}}\n  anomaly:\n    series: [dwcp_probe_milliseconds]\n\
         derived_topics:\n  anomalies: \"{anomalies}\"\n\
         repartition:\n  enabled: true\n  series_topic: \"{id}.series\"\n  spans_topic: \"{id}.spans\"\n  partitions: 4\n  changelog_prefix: \"{id}.state.\"\n"
    );
    // Tansu would leave the groups leaderless if a killed worker led them (see `GroupLeader`).
    let _leader = GroupLeader::start(&brokers, &format!("{id}.leader"), &[&id, &format!("{id}.repartition")]).await;
    let mut workers: Vec<Worker> = (0..2)
        .map(|i| Worker::start(work.path(), &format!("w{i}"), &yaml))
        .collect();
    let series_topic = format!("{id}.series");
    let stage1 = format!("{id}.repartition");
    wait_groups_settled(&workers, &[(&stage1, None), (&id, None)]).await;
    let now_s = dwcp_tests::now_s();
    let t0 = now_s - 30 * 60;
    let value = |i: u64| 50.0 + 10.0 * (i as f64 / 10.0).sin() + ((i * 7) % 13) as f64 / 13.0;
    let p = producer(&brokers);
    for i in 0..150u64 {
        produce(&p, &input, None, &probe_message(t0 + i * 5, value(i)), None, Some(0)).await;
    }
    // The owner: the worker that reads the series; wait until a checkpoint covers all 150.
    let deadline = Instant::now() + Duration::from_secs(120);
    let owner = loop {
        let mut found = None;
        for (i, w) in workers.iter().enumerate() {
            let m = w.metrics().await;
            if metric_sum(&m, "dwcp_source_records_total", &[("topic", &series_topic)]) >= 150.0 {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            break i;
        }
        assert!(Instant::now() < deadline, "the series was not consumed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let written = |m: &str| metric_sum(m, "dwcp_changelog_checkpoints_total", &[("result", "written")]);
    let before = written(&workers[owner].metrics().await);
    workers[owner]
        .wait_for(
            "dwcp_changelog_checkpoints_total",
            &[("result", "written")],
            before + 4.0,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        metric_sum(&workers[owner].metrics().await, "dwcp_anomaly_series", &[]),
        1.0
    );
    workers[owner].kill9();
    // The spike, then quiet points.
    for i in 150..170u64 {
        let v = if i == 150 { value(i) + 200.0 } else { value(i) };
        produce(&p, &input, None, &probe_message(t0 + i * 5, v), None, Some(0)).await;
    }
    let survivor = &workers[1 - owner];
    survivor
        .wait_for(
            "dwcp_changelog_restores_total",
            &[("result", "restored")],
            1.0,
            Duration::from_secs(180),
        )
        .await;
    let messages = consume_all(&brokers, &anomalies, 1, Duration::from_secs(120));
    let records = decode_avro(&messages, "anomaly.avsc");
    assert!(
        !records.is_empty(),
        "no episode; survivor log:\n{}",
        survivor.log_text()
    );
    let start = match &records[0]["start_time"] {
        apache_avro::types::Value::TimestampMillis(t) => *t,
        other => panic!("start_time: {other:?}"),
    };
    assert_eq!(start, i64::try_from((t0 + 150 * 5) * 1000).expect("ms"), "{records:?}");
}

/// HighLatency's transitions among decoded alert records: (state, event time in seconds after
/// `t0`), sorted, repeats kept.
fn high_latency_transitions(records: &[BTreeMap<String, apache_avro::types::Value>], t0: u64) -> Vec<(String, i64)> {
    let mut high: Vec<(String, i64)> = records
        .iter()
        .filter(|r| super::avro_str(&r["alertname"]) == "HighLatency")
        .map(|r| {
            (
                super::avro_str(&r["state"]),
                super::avro_ms(&r["event_time"]) / 1000 - i64::try_from(t0).expect("t0"),
            )
        })
        .collect();
    high.sort();
    high
}

/// Rule state that moves: two repartitioning workers evaluate the design's HighLatency rule
/// (`for: 5m`); us-east-1 turns slow at 600 s, so the alert is pending from 600 s. The worker
/// evaluating the rule is killed at 750 s of event time; the other takes the partition over,
/// reads the rule state (the series window and the pending alert) from the changelog, and the
/// alert fires at 900 s and resolves at 1365 s, as without the crash (a fresh start would go
/// pending again and fire 5 minutes after its restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_alert_fires_on_time_after_its_worker_dies() {
    let Some(brokers) = kafka() else { return };
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let id = unique("scale-rules");
    let input = format!("{id}.in");
    let alerts = format!("{id}.alerts");
    create_topics(&brokers, &[&alerts], 1).await;
    let work = tempfile::tempdir().expect("tempdir");
    let (_leader, mut workers) = rules_workers(
        &brokers,
        &id,
        work.path(),
        "",
        &format!("derived_topics:\n  alerts: \"{alerts}\"\n"),
    )
    .await;
    let now_s = dwcp_tests::now_s();
    let t0 = now_s / 60 * 60 - 40 * 60;
    let p = producer(&brokers);
    let mut steps = LatencyInput {
        t0,
        counts: [[0; 3]; 2],
    };
    let slow = |t: u64| (600..=1080).contains(&t);
    steps.send(&p, &input, 0..=750, slow).await;
    // The evaluating worker: the one whose rule engine evaluates (it owns the group's home).
    let deadline = Instant::now() + Duration::from_secs(120);
    let owner = loop {
        let mut found = None;
        for (i, w) in workers.iter().enumerate() {
            if metric_sum(&w.metrics().await, "dwcp_rule_evaluations_total", &[]) > 0.0 {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            break i;
        }
        assert!(Instant::now() < deadline, "no worker evaluates the rules");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Pending published, then a checkpoint that covers everything sent so far.
    let pending = consume_all(&brokers, &alerts, 1, Duration::from_secs(60));
    assert!(!pending.is_empty(), "no pending transition");
    wait_rules_checkpoints(&workers[owner], 4.0).await;
    workers[owner].kill9();
    steps.send(&p, &input, 765..=1500, slow).await;
    let survivor = &workers[1 - owner];
    wait_rules_restored(survivor).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let transitions = loop {
        // DWCPServiceDown (no request counter here) shares the topic: read everything there is.
        let records = decode_avro(
            &consume_all(&brokers, &alerts, 1000, Duration::from_secs(15)),
            "alert.avsc",
        );
        let high: std::collections::BTreeSet<(String, i64)> =
            high_latency_transitions(&records, t0).into_iter().collect();
        if high.iter().any(|(s, _)| s == "resolved") || Instant::now() > deadline {
            break high;
        }
    };
    // At least once: a transition may repeat after the crash, never at another time.
    assert_eq!(
        transitions,
        [
            ("firing".to_string(), 900),
            ("pending".to_string(), 600),
            ("resolved".to_string(), 1365)
        ]
        .into_iter()
        .collect(),
        "survivor log:\n{}",
        survivor.log_text()
    );
}

/// Exactly-once alerts across a `kill -9` (issue 9), on the test stack's Tansu with transactions
/// (deploy/tansu/tansu.patch): the worker evaluating HighLatency is killed right after it
/// makes the firing transition, while that transition waits for its checkpoint's transaction;
/// the survivor restores the rule state of the last committed checkpoint, evaluates again from
/// the offsets committed with it, and the alerts topic read with `read_committed` holds every
/// transition exactly once: HighLatency pending at 600 s, firing at 900 s and resolved at
/// 1365 s (the same input and times as `a_pending_alert_fires_on_time_after_its_worker_dies`),
/// and no key twice. At least once, the killed worker's firing record was already in the topic
/// and the survivor's would repeat it. Then a rolling restart: a third worker joins and the
/// survivor stops cleanly; the newcomer makes the resolved transition. Tansu hands the newcomer
/// the alert's partition while the survivor still owns it, and the group fences the checkpoint
/// transactions of both (each worker's generation falls behind in turn): each drops the
/// partition's state and records and reads it again from the committed checkpoint (Kafka
/// Streams' TaskMigrated), so no transition is committed twice nor lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_alerts_across_a_kill_9() {
    let Some(brokers) = kafka() else { return };
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let id = unique("scale-eos");
    let input = format!("{id}.in");
    let alerts = format!("{id}.alerts");
    create_topics(&brokers, &[&alerts], 1).await;
    let work = tempfile::tempdir().expect("tempdir");
    let transactional = |i: usize| {
        format!(
            "derived_topics:\n  alerts: \"{alerts}\"\n  delivery: exactly_once\n  transactional_id: \"{id}-w{i}\"\n  producer_options: {{transaction.timeout.ms: \"10000\"}}\n"
        )
    };
    // Checkpoints (and so transactions) every 5 s: the firing transition waits for one.
    let (_leader, mut workers, yaml) = rules_workers_with(
        &brokers,
        &id,
        work.path(),
        "  consumer_options: {session.timeout.ms: \"10000\"}\n",
        "",
        5000,
        &transactional,
    )
    .await;
    for w in &workers {
        assert!(
            w.log_text().contains("derived topics: records as Avro") && w.log_text().contains("exactly-once"),
            "{}",
            w.log_text()
        );
    }
    let t0 = dwcp_tests::now_s() / 60 * 60 - 40 * 60;
    let p = producer(&brokers);
    let mut steps = LatencyInput {
        t0,
        counts: [[0; 3]; 2],
    };
    let slow = |t: u64| (600..=1080).contains(&t);
    steps.send(&p, &input, 0..=750, slow).await;
    // Pending is committed with a checkpoint (read_committed sees it), so the survivor has
    // rule state to restore.
    let pending = consume_all(&brokers, &alerts, 1, Duration::from_secs(60));
    assert!(!pending.is_empty(), "no pending transition committed");
    let fired = |w: &Worker| {
        w.log_text()
            .lines()
            .any(|l| l.contains("alert state changed") && l.contains("HighLatency") && l.contains("firing"))
    };
    steps.send(&p, &input, 765..=990, slow).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let owner = loop {
        if let Some(i) = workers.iter().position(fired) {
            break i;
        }
        assert!(Instant::now() < deadline, "no worker fires HighLatency");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    workers[owner].kill9();
    steps.send(&p, &input, 1005..=1140, slow).await;
    let survivor = &workers[1 - owner];
    wait_rules_restored(survivor).await;
    // Then a rolling restart: a new worker joins, the survivor stops cleanly (its records go
    // in its last transaction with its final checkpoints) and the new one takes everything over.
    let mut joined = Worker::start(work.path(), "w2", &format!("{yaml}{}", transactional(2)));
    dwcp_tests::wait_groups_settled_among(
        &[&workers[1 - owner], &joined],
        &[(&format!("{id}.repartition"), None), (&id, None)],
    )
    .await;
    assert!(workers[1 - owner].stop(), "the survivor stops cleanly");
    steps.send(&p, &input, 1155..=1500, slow).await;
    wait_rules_restored(&joined).await;
    let survivor = &mut joined;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (keys, high) = loop {
        // Everything there is (DWCPServiceDown shares the topic), committed records only.
        let messages = consume_all(&brokers, &alerts, 1000, Duration::from_secs(15));
        let keys: Vec<String> = messages
            .iter()
            .map(|m| String::from_utf8_lossy(rdkafka::Message::key(m).unwrap_or_default()).into_owned())
            .collect();
        let records = decode_avro(&messages, "alert.avsc");
        let high = high_latency_transitions(&records, t0);
        if high.iter().any(|(s, _)| s == "resolved") || Instant::now() > deadline {
            break (keys, high);
        }
    };
    keep_logs(work.path(), &id);
    assert_eq!(
        high,
        vec![
            ("firing".to_string(), 900),
            ("pending".to_string(), 600),
            ("resolved".to_string(), 1365)
        ],
        "each HighLatency transition exactly once\nthe killed worker's log:\n{}\nthe survivor's log:\n{}\nthe joined worker's log:\n{}",
        workers[owner].log_text(),
        workers[1 - owner].log_text(),
        survivor.log_text()
    );
    let mut seen = std::collections::BTreeSet::new();
    let repeated: Vec<&String> = keys.iter().filter(|k| !seen.insert(k.as_str())).collect();
    assert!(repeated.is_empty(), "keys repeated: {repeated:?} of {keys:?}");
    let committed = metric_sum(
        &survivor.metrics().await,
        "dwcp_derived_transactions_total",
        &[("result", "committed")],
    );
    assert!(committed >= 1.0, "the joined worker committed transactions");
}

/// The values of `topic` (one partition) read from the start with `isolation`, until `count`
/// or `timeout`.
fn values_read(brokers: &str, topic: &str, isolation: &str, count: usize, timeout: Duration) -> Vec<String> {
    use rdkafka::consumer::Consumer as _;
    let c: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .expect("partition");
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < count && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push(String::from_utf8_lossy(rdkafka::Message::payload(&m).unwrap_or_default()).into_owned());
        }
    }
    out
}

/// What the broker tests share: a consumer group's metadata, as a worker sends it with the
/// offsets in its transactions, and initialized transactional producers writing to `out`.
struct TxnClients {
    brokers: String,
    out: String,
    metadata: rdkafka::consumer::ConsumerGroupMetadata,
}

impl TxnClients {
    const TIMEOUT: Duration = Duration::from_secs(30);

    fn new(brokers: &str, group: &str, out: &str) -> Self {
        use rdkafka::consumer::Consumer as _;
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        TxnClients {
            brokers: brokers.to_string(),
            out: out.to_string(),
            metadata: consumer.group_metadata().expect("group metadata"),
        }
    }

    /// A producer with `transactional.id` `tid` and transactions timing out after `timeout_ms`.
    fn producer(&self, tid: &str, timeout_ms: &str) -> rdkafka::producer::BaseProducer {
        use rdkafka::producer::Producer as _;
        let p: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("transactional.id", tid)
            .set("transaction.timeout.ms", timeout_ms)
            .set("message.timeout.ms", timeout_ms)
            .create()
            .expect("producer");
        p.init_transactions(Self::TIMEOUT).expect("init");
        p
    }

    /// Sends `v` (key and value) to `out` and waits until the broker has it.
    fn send(&self, p: &rdkafka::producer::BaseProducer, v: &str) {
        use rdkafka::producer::Producer as _;
        p.send(rdkafka::producer::BaseRecord::to(&self.out).key(v).payload(v))
            .expect("enqueue");
        p.flush(Self::TIMEOUT).expect("delivered");
    }
}

/// The test stack's broker does what exactly-once relies on (Tansu 0.6.0 with
/// deploy/tansu/tansu.patch): a committed transaction's records and the offsets sent
/// within it take effect at the commit; an aborted one's records are never delivered to
/// `read_committed` readers; and a transaction its producer left open (a crash) holds
/// `read_committed` readers at its first record until the broker aborts it after its
/// `transaction.timeout.ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_broker_commits_aborts_and_times_out_transactions() {
    use rdkafka::consumer::Consumer as _;
    use rdkafka::producer::{BaseProducer, Producer as _};
    let Some(brokers) = kafka() else { return };
    let id = unique("txn");
    let (input, out) = (format!("{id}.in"), format!("{id}.out"));
    create_topics(&brokers, &[&input, &out], 1).await;
    let group = format!("{id}.group");
    let clients = TxnClients::new(&brokers, &group, &out);
    let (metadata, t) = (&clients.metadata, TxnClients::TIMEOUT);
    let p = clients.producer(&format!("{id}.tx"), "60000");
    let send = |p: &BaseProducer, v: &str| clients.send(p, v);
    p.begin_transaction().expect("begin");
    send(&p, "committed-1");
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets
        .add_partition_offset(&input, 0, rdkafka::Offset::Offset(5))
        .expect("offset");
    p.send_offsets_to_transaction(&offsets, metadata, t)
        .expect("offsets in the transaction");
    assert_eq!(
        dwcp_tests::committed(&brokers, &group, &input, 1),
        vec![0],
        "none before the commit"
    );
    p.commit_transaction(t).expect("commit");
    p.begin_transaction().expect("begin");
    send(&p, "aborted");
    p.abort_transaction(t).expect("abort");
    p.begin_transaction().expect("begin");
    send(&p, "committed-2");
    p.commit_transaction(t).expect("commit");
    // A producer that dies with its transaction open.
    let zombie = clients.producer(&format!("{id}.zombie"), "10000");
    zombie.begin_transaction().expect("begin");
    send(&zombie, "open");
    let opened = Instant::now();
    std::mem::forget(zombie);
    let stable = |c: &rdkafka::consumer::BaseConsumer| {
        c.fetch_watermarks(&out, 0, Duration::from_secs(10))
            .expect("watermarks")
            .1
    };
    let reader: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique("reader"))
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    // Offsets: committed-1 0, its marker 1, aborted 2, marker 3, committed-2 4, marker 5,
    // open 6: the last stable offset stops at the open transaction's first record.
    assert_eq!(stable(&reader), 6);

    assert_eq!(
        dwcp_tests::committed(&brokers, &group, &input, 1),
        vec![5],
        "the offsets sent within the transaction are committed with it"
    );
    let everything = values_read(&brokers, &out, "read_uncommitted", 4, Duration::from_secs(20));
    assert_eq!(everything, ["committed-1", "aborted", "committed-2", "open"]);
    let committed = values_read(&brokers, &out, "read_committed", 3, Duration::from_secs(5));
    assert_eq!(committed, ["committed-1", "committed-2"], "no aborted or open record");
    let deadline = Instant::now() + Duration::from_secs(60);
    while stable(&reader) < 8 {
        assert!(Instant::now() < deadline, "the open transaction was not aborted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        opened.elapsed() >= Duration::from_secs(10),
        "aborted after its timeout, not before"
    );
    let committed = values_read(&brokers, &out, "read_committed", 3, Duration::from_secs(5));
    assert_eq!(
        committed,
        ["committed-1", "committed-2"],
        "the timed-out transaction is aborted"
    );
}

/// Two producers' transactions interleaved on one partition (the workers share the changelog
/// and derived topics) end each on its own, as in Kafka: one committed while the other is still
/// open is committed at once, its offsets with it, and stays committed when its producer's
/// next transaction and the other producer's are aborted. (Tansu 0.6.0 held it prepared until
/// every transaction overlapping it had ended, and its producer's next transaction took it
/// over: aborting that one aborted records and offsets whose commit had been acknowledged.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_transactions_of_two_producers_end_independently() {
    use rdkafka::producer::{BaseProducer, Producer as _};
    let Some(brokers) = kafka() else { return };
    let id = unique("txn2");
    let (input, out) = (format!("{id}.in"), format!("{id}.out"));
    create_topics(&brokers, &[&input, &out], 1).await;
    let group = format!("{id}.group");
    let clients = TxnClients::new(&brokers, &group, &out);
    let (metadata, t) = (&clients.metadata, TxnClients::TIMEOUT);
    let a = clients.producer(&format!("{id}.a"), "60000");
    let b = clients.producer(&format!("{id}.b"), "60000");
    let send = |p: &BaseProducer, v: &str| clients.send(p, v);
    a.begin_transaction().expect("begin");
    send(&a, "a-aborted");
    b.begin_transaction().expect("begin");
    send(&b, "b-committed");
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets
        .add_partition_offset(&input, 0, rdkafka::Offset::Offset(5))
        .expect("offset");
    b.send_offsets_to_transaction(&offsets, metadata, t)
        .expect("offsets in the transaction");
    b.commit_transaction(t).expect("commit");
    assert_eq!(
        dwcp_tests::committed(&brokers, &group, &input, 1),
        vec![5],
        "the offsets are committed with their transaction while the other producer's is open"
    );
    b.begin_transaction().expect("begin");
    send(&b, "b-aborted");
    b.abort_transaction(t).expect("abort");
    a.abort_transaction(t).expect("abort");
    assert_eq!(
        values_read(&brokers, &out, "read_committed", 2, Duration::from_secs(10)),
        ["b-committed"],
        "the committed transaction stays committed"
    );
    assert_eq!(dwcp_tests::committed(&brokers, &group, &input, 1), vec![5]);
}

/// KIP-447 on the patched Tansu: offsets sent in a transaction with the group metadata of a
/// generation that has ended are refused (the worker whose partitions moved on cannot commit
/// the transaction carrying their records and checkpoints), and the transaction can only be
/// aborted; with the current generation's metadata the next one commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_of_an_ended_generation_fence_the_transaction() {
    use rdkafka::consumer::Consumer as _;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    let Some(brokers) = kafka() else { return };
    let id = unique("fence");
    let (input, out) = (format!("{id}.in"), format!("{id}.out"));
    create_topics(&brokers, &[&input], 2).await;
    create_topics(&brokers, &[&out], 1).await;
    let group = format!("{id}.group");
    let member = || -> rdkafka::consumer::BaseConsumer {
        let c: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "10000")
            .create()
            .expect("consumer");
        c.subscribe(&[&input]).expect("subscribe");
        c
    };
    let owned = |c: &rdkafka::consumer::BaseConsumer| c.assignment().map_or(0, |a| a.count());
    let first = member();
    let deadline = Instant::now() + Duration::from_secs(60);
    while owned(&first) < 2 {
        assert!(Instant::now() < deadline, "the first member got no assignment");
        let _ = first.poll(Duration::from_millis(100));
    }
    let stale = first.group_metadata().expect("group metadata");
    // A second member joins: the group's next generation shares the partitions out.
    let second = member();
    let deadline = Instant::now() + Duration::from_secs(90);
    while owned(&first) != 1 || owned(&second) != 1 {
        assert!(Instant::now() < deadline, "the group did not rebalance");
        let _ = first.poll(Duration::from_millis(50));
        let _ = second.poll(Duration::from_millis(50));
    }
    let t = Duration::from_secs(30);
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("transactional.id", format!("{id}.tx"))
        .create()
        .expect("producer");
    p.init_transactions(t).expect("init");
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets
        .add_partition_offset(&input, 0, rdkafka::Offset::Offset(7))
        .expect("offset");
    let attempt = |value: &str, metadata: &rdkafka::consumer::ConsumerGroupMetadata| {
        p.begin_transaction().expect("begin");
        p.send(BaseRecord::to(&out).key(value).payload(value)).expect("enqueue");
        p.flush(t).expect("delivered");
        p.send_offsets_to_transaction(&offsets, metadata, t)
            .and_then(|()| p.commit_transaction(t))
    };
    let fenced = attempt("zombie", &stale).expect_err("the ended generation's offsets are refused");
    let abortable = match &fenced {
        rdkafka::error::KafkaError::Transaction(e) => e.txn_requires_abort() && !e.is_fatal(),
        _ => false,
    };
    assert!(abortable, "an abortable error, not a fatal one: {fenced:?}");
    p.abort_transaction(t).expect("abort");
    let current = first.group_metadata().expect("group metadata");
    attempt("current", &current).expect("the current generation commits");
    assert_eq!(
        values_read(&brokers, &out, "read_committed", 2, Duration::from_secs(10)),
        ["current"],
        "the fenced transaction's record is aborted"
    );
    assert_eq!(dwcp_tests::committed(&brokers, &group, &input, 2), vec![7, 0]);
}

/// A consumer that starts inside a record batch (a committed offset falls anywhere: a worker
/// commits what it has done, record by record) reads the rest of that batch, as on Kafka,
/// which returns the batch holding the fetch offset and leaves the client to skip what lies
/// before it. (Tansu 0.6.0 returned the batches from the next one on: the new owner of a
/// partition lost the records between the committed offset and the end of its batch, and the
/// keyed stage's samples of them went missing. The stack's Tansu is patched.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_starting_inside_a_record_batch_reads_the_rest_of_it() {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    use rdkafka::Message as _;
    let Some(brokers) = kafka() else { return };
    let topic = unique("midbatch");
    create_topics(&brokers, &[&topic], 1).await;
    // One batch of ten records: linger long enough to hold them all, then flush.
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "1000")
        .create()
        .expect("producer");
    for i in 0..10 {
        let v = format!("r{i}");
        p.send(BaseRecord::<(), _>::to(&topic).partition(0).payload(&v))
            .map_err(|(e, _)| e)
            .expect("enqueued");
    }
    p.flush(Duration::from_secs(10)).expect("flushed");
    // Then a second batch, so a skipped rest of the first shows as a jump to it.
    p.send(BaseRecord::<(), _>::to(&topic).partition(0).payload("r10"))
        .map_err(|(e, _)| e)
        .expect("enqueued");
    p.flush(Duration::from_secs(10)).expect("flushed");
    for start in [0, 4, 9] {
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", unique("midbatch-reader"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(start))
            .expect("offset");
        c.assign(&tpl).expect("assign");
        let mut read = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while read.len() < usize::try_from(11 - start).expect("count") && Instant::now() < deadline {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                read.push((
                    m.offset(),
                    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                ));
            }
        }
        let want: Vec<(i64, String)> = (start..11).map(|i| (i, format!("r{i}"))).collect();
        assert_eq!(read, want, "read from offset {start}");
    }
}

/// A series partition whose reads begin past what its restored checkpoint covers is reported:
/// the records between are in neither the state nor the reads (a broker that skipped them, as
/// Tansu 0.6.0 did from inside a record batch, or a changelog behind the committed offset). A
/// worker stops cleanly (its last checkpoint covers every record it read, and it commits up to
/// there); five records are then added to internal series partition 0 and the group's offset
/// of that partition is moved three past the checkpoint. The next worker restores the
/// checkpoint, reads from the moved offset, logs the gap and counts its three offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_partition_read_past_its_checkpoint_is_reported() {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let Some(brokers) = kafka() else { return };
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let id = unique("scale-gap");
    let input = format!("{id}.in");
    let series = format!("{id}.series");
    create_topics(&brokers, &[&input], 3).await;
    create_topics(&brokers, &[&format!("{id}.dlq")], 1).await;
    let work = tempfile::tempdir().expect("tempdir");
    let t0 = dwcp_tests::now_s() / 60 * 60 - 30 * 60;
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  commit_interval_ms: 200\n  topics:\n    - {{name: \"{input}\", signal: metrics, encoding: otlp_json}}\n\
         dead_letter:\n  topic: \"{id}.dlq\"\n\
         operators:\n  idle_timeout_ms: 600000\n  checkpoint_interval_ms: 500\n  span_metrics: {{enabled: false}}\n  prometheus: {{target_info: false}}\n  aggregation:\n    rules: [{{metric: dwcp.queue.a, aggregations: [count, sum]}}]\n\
         repartition:\n  enabled: true\n  series_topic: \"{series}\"\n  spans_topic: \"{id}.spans\"\n  partitions: 2\n  changelog_prefix: \"{id}.state.\"\n"
    );
    let mut first = Worker::start(work.path(), "first", &yaml);
    let steps = 10u64;
    produce_steps(&producer(&brokers), &input, None, t0, 0..steps).await;
    // Every point re-keyed and processed (7 metrics, 3 regions a step).
    let points = f64::from(u32::try_from(steps * 3 * 7).expect("points"));
    first
        .wait_for(
            "dwcp_source_records_total",
            &[("topic", &series)],
            points,
            Duration::from_secs(120),
        )
        .await;
    assert!(first.stop(), "clean stop; its log:\n{}", first.log_text());
    // The stop's last checkpoint covers every record read, and the commit follows it.
    let end = dwcp_tests::committed(&brokers, &id, &series, 2)[0];
    assert!(end > 0, "partition 0 of {series} holds records and was committed");

    // Five records more in partition 0, as the re-keying stage writes them.
    let p = producer(&brokers);
    for i in steps..steps + 5 {
        let Ok(d) = dwcp_schemas::decode(
            dwcp_schemas::Signal::Metrics,
            dwcp_schemas::Encoding::OtlpJson,
            &gauges_message(REGIONS[0], 0, t0, i),
            &dwcp_schemas::RegionContext::new(None),
        ) else {
            panic!("the test's own message decodes")
        };
        let dwcp_schemas::Records::Metrics(points) = d.records else {
            panic!("metrics")
        };
        let headers = rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header {
                key: "dwcp.region",
                value: Some(REGIONS[0]),
            })
            .insert(rdkafka::message::Header {
                key: "dwcp.source.topic",
                value: Some(input.as_str()),
            })
            .insert(rdkafka::message::Header {
                key: "dwcp.source.partition",
                value: Some("0"),
            });
        let payload = dwcp_schemas::otlp::encode_metrics(&points);
        produce(&p, &series, None, &payload, Some(headers), Some(0)).await;
    }
    // The group's offset of partition 0 three past the checkpoint.
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &id)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&series, 0, rdkafka::Offset::Offset(end + 3))
        .expect("offset");
    c.commit(&tpl, rdkafka::consumer::CommitMode::Sync).expect("commit");
    drop(c);

    let second = Worker::start(work.path(), "second", &yaml);
    second
        .wait_for("dwcp_series_offsets_unread_total", &[], 3.0, Duration::from_secs(120))
        .await;
    let log = second.log_text();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lies past what its restored state covers"))
        .collect();
    assert_eq!(warned.len(), 1, "one warning; the log:\n{log}");
    for field in [
        "partition=0",
        &format!("covers_offset={end}"),
        &format!("first_offset={}", end + 3),
    ] {
        assert!(warned[0].contains(field), "{field} in {}", warned[0]);
    }
    assert_eq!(
        metric_sum(&second.metrics().await, "dwcp_series_offsets_unread_total", &[]),
        3.0
    );
}
