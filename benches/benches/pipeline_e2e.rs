//! End-to-end throughput of the metrics path with a real broker and a real receiver: OTLP
//! messages pre-produced to Tansu, one `dwcp-monitor` worker (the release binary) consuming them
//! through decode, conversion, the cardinality guard and aggregation into remote-write to
//! VictoriaMetrics. Reports data points/s and samples/s from the worker's own counters.
//!
//! eval "$(deploy/local/stack.sh env)"; cargo build --release -p dwcp-monitor
//! cargo bench -p dwcp-benches --bench pipeline_e2e
//!
//! Environment: DWCP_BENCH_MESSAGES (default 400), 1,200 points each; DWCP_BENCH_SERIES_SPREAD
//! (default 50): how many distinct `peer` offsets cycle, so distinct series ≈ spread × 1,200.
//! DWCP_BENCH_WORKERS (default 1): workers in the group; with more than one (or
//! DWCP_BENCH_REPARTITION=1) they run the re-keying stage through internal topics of 6
//! partitions; they start and settle their groups first, and the input is produced meanwhile.
//! One worker (no repartitioning) starts after the input was produced, unless
//! DWCP_BENCH_CONCURRENT=1. The time runs from the first point consumed to the last (summed
//! over workers). DWCP_BENCH_ROLLUPS_ONLY=1: the endpoint's
//! `write_relabel_configs` keep only the `dwcp:` rollups (a global store's setup) and the
//! windows are 2 s, so the receiver takes a few samples and the figure is the worker's.

use std::time::{Duration, Instant};

use dwcp_benches::metrics_message_at;
use dwcp_tests::{create_topics, metric_sum, unique, wait_groups_settled, Worker};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes benches: nothing to run here.
    }
    let (Ok(brokers), Ok(vm)) = (
        std::env::var("DWCP_TEST_KAFKA"),
        std::env::var("DWCP_TEST_VICTORIAMETRICS"),
    ) else {
        eprintln!("skipped: DWCP_TEST_KAFKA and DWCP_TEST_VICTORIAMETRICS not set (deploy/local/stack.sh up)");
        return;
    };
    let messages = env_usize("DWCP_BENCH_MESSAGES", 400);
    let workers = env_usize("DWCP_BENCH_WORKERS", 1).max(1);
    let repartition = workers > 1 || env_usize("DWCP_BENCH_REPARTITION", 0) == 1;
    let spread = env_usize("DWCP_BENCH_SERIES_SPREAD", 50);
    let rollups_only = env_usize("DWCP_BENCH_ROLLUPS_ONLY", 0) == 1;
    let id = unique("bench");
    let topic = format!("{id}.metrics");
    create_topics(&brokers, &[&topic, &format!("{id}.dlq")], 6).await;

    let work = tempfile_dir();
    let mut yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n  queue_capacity: 256\n  topics:\n    - {{name: \"{topic}\", signal: metrics}}\n\
         dead_letter:\n  topic: \"{id}.dlq\"\nlog:\n  level: warn\n\
         operators:\n  aggregation:\n    rules:\n      - {{metric: dwcp.metric.2}}\n      - {{metric: dwcp.metric.1}}\n      - {{metric: dwcp.metric.0}}\n\
         sinks:\n  prometheus_remote_write:\n    - url: \"{vm}/api/v1/write\"\n      shards: 4\n      max_samples_per_send: 10000\n"
    );
    if rollups_only {
        // Windows of 2 s, so the 8 s of event time of the default input close some and their
        // rollups reach the receiver.
        yaml = yaml.replace("  aggregation:\n", "  aggregation:\n    window_ms: 2000\n");
        yaml.push_str("      write_relabel_configs: [{source_labels: [__name__], regex: \"dwcp:.*\", action: keep}]\n");
    }
    let series_topic = format!("{id}.series");
    if repartition {
        yaml = yaml.replace(
            "operators:\n",
            "operators:\n  span_metrics: {enabled: false}\n  prometheus: {target_info: false}\n",
        );
        yaml.push_str(&format!(
            "repartition:\n  enabled: true\n  series_topic: \"{series_topic}\"\n  spans_topic: \"{id}.spans\"\n  partitions: 6\n"
        ));
    }
    std::env::set_var("DWCP_BIN", release_binary());
    // One worker without repartitioning reads input produced before it starts: in a deployment
    // the regional Collectors produce on other machines, and producing here takes ~2.3 µs of
    // CPU per point from the same two cores. DWCP_BENCH_CONCURRENT=1 produces while it runs.
    let preproduce = !repartition && env_usize("DWCP_BENCH_CONCURRENT", 0) == 0;
    let total_points = messages * POINTS_PER_MESSAGE;
    let start_workers = || -> Vec<Worker> {
        (0..workers)
            .map(|i| Worker::start(&work, &format!("bench{i}"), &yaml))
            .collect()
    };
    let (mut ws, cpu0) = if preproduce {
        produce(&brokers, &topic, messages, spread).await;
        let mut cpu0 = cpu_times(&[]);
        // The worker's clock starts with it: all its CPU counts.
        cpu0[0].1 = 0.0;
        (start_workers(), cpu0)
    } else {
        let ws = start_workers();
        // Settle the groups: every worker owns partitions of each stage.
        let stage1 = format!("{id}.repartition");
        let mut groups = vec![(id.as_str(), None)];
        if repartition {
            groups.push((stage1.as_str(), None));
        }
        wait_groups_settled(&ws, &groups).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu0 = cpu_times(&ws);
        // Produced on another task: the time runs from the first point consumed, which comes
        // while production goes on.
        let (b, t) = (brokers.clone(), topic.clone());
        tokio::spawn(async move { produce(&b, &t, messages, spread).await });
        (ws, cpu0)
    };

    let consumed_topic = if repartition {
        series_topic.as_str()
    } else {
        topic.as_str()
    };
    let sum_over = |texts: &[String], metric: &str, filter: &[(&str, &str)]| -> f64 {
        texts.iter().map(|t| metric_sum(t, metric, filter)).sum()
    };
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(900);
    let consumed = loop {
        let mut texts = Vec::new();
        for w in &ws {
            texts.push(w.metrics().await);
        }
        let n = sum_over(&texts, "dwcp_source_records_total", &[("topic", consumed_topic)]);
        if n > 0.0 && first.is_none() {
            first = Some(Instant::now());
        }
        if n >= total_points as f64 {
            break first.map_or(Duration::ZERO, |f| f.elapsed());
        }
        assert!(Instant::now() < deadline, "consumed {n} of {total_points}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let start = first.unwrap_or_else(Instant::now);
    // Decoded is not yet converted: wait until the operators have had every record.
    let texts = loop {
        let mut texts = Vec::new();
        for w in &ws {
            texts.push(w.metrics().await);
        }
        if sum_over(&texts, "dwcp_records_out_total", &[("topic", consumed_topic)]) >= total_points as f64 {
            break texts;
        }
        assert!(Instant::now() < deadline, "operators did not get every record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let converted = sum_over(&texts, "dwcp_prometheus_samples_total", &[("origin", "converted")]);
    // Everything converted is admitted or dropped by the guard; wait until the endpoint took it.
    let admitted = converted - sum_over(&texts, "dwcp_series_dropped_total", &[]);
    loop {
        let mut texts = Vec::new();
        for w in &ws {
            texts.push(w.metrics().await);
        }
        let handled = sum_over(&texts, "dwcp_remote_write_samples_total", &[("result", "sent")])
            + sum_over(
                &texts,
                "dwcp_remote_write_samples_total",
                &[("result", "relabel_dropped")],
            );
        if handled >= admitted {
            break;
        }
        assert!(Instant::now() < deadline, "remote-write did not take everything");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = start.elapsed();
    let cpu1 = cpu_times(&ws);
    let mut texts = Vec::new();
    for w in &ws {
        texts.push(w.metrics().await);
    }
    let rss: u64 = ws.iter().map(rss_kib).sum();
    eprintln!(
        "samples: converted {:.0}, aggregated {:.0}; late points {:.0}",
        sum_over(&texts, "dwcp_prometheus_samples_total", &[("origin", "converted")]),
        sum_over(&texts, "dwcp_prometheus_samples_total", &[("origin", "aggregated")]),
        sum_over(&texts, "dwcp_late_records_total", &[("operator", "aggregate")]),
    );
    for w in &mut ws {
        assert!(w.stop());
    }
    // CPU per point of each process until remote-write accepted everything: from the worker's
    // start when the input was produced before, else from the start of production (then the
    // harness produces meanwhile, and Tansu's figure includes taking the input).
    for (name, b) in &cpu1 {
        let Some((_, a)) = cpu0.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let secs = b - a;
        eprintln!(
            "cpu {name}: {secs:.2} s, {:.2} µs per point",
            secs * 1e6 / total_points as f64
        );
    }
    println!(
        "pipeline_e2e: {workers} worker(s){}{}{}: {total_points} points in {:.2} s consumed ({:.0} points/s), {:.2} s until remote-write accepted all \
         ({:.0} points/s, {:.0} samples/s); active series {}; workers' RSS {} MiB",
        if repartition { ", repartitioned" } else { "" },
        if rollups_only { ", rollups only to remote-write" } else { "" },
        if preproduce { ", input produced before" } else { ", produced meanwhile" },
        consumed.as_secs_f64(),
        total_points as f64 / consumed.as_secs_f64(),
        done.as_secs_f64(),
        total_points as f64 / done.as_secs_f64(),
        sum_over(&texts, "dwcp_remote_write_samples_total", &[("result", "sent")]) / done.as_secs_f64(),
        sum_over(&texts, "dwcp_active_series", &[]),
        rss / 1024,
    );
}

/// Data points in each message the harness produces.
const POINTS_PER_MESSAGE: usize = 1200;

/// Produces `messages` messages of [`POINTS_PER_MESSAGE`] points to the topic's 6 partitions.
async fn produce(brokers: &str, topic: &str, messages: usize, spread: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("message.max.bytes", "16777216")
        .create()
        .expect("producer");
    let t0 = Instant::now();
    let base = 1_795_000_000_000_000_000u64;
    let mut total_points = 0usize;
    let mut bytes = 0usize;
    let mut pending = Vec::new();
    for i in 0..messages {
        // Each message: 1,200 points, one second after the previous one of its series.
        let payload = metrics_message_at(60, 20, base + (i / spread) as u64 * 1_000_000_000, (i % spread) * 20);
        bytes += payload.len();
        total_points += POINTS_PER_MESSAGE;
        let topic = topic.to_string();
        let p = producer.clone();
        pending.push(tokio::spawn(async move {
            p.send(
                FutureRecord::<(), Vec<u8>>::to(&topic)
                    .payload(&payload)
                    .partition((i % 6) as i32),
                Duration::from_secs(30),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
        }));
    }
    for p in pending {
        p.await.expect("join").expect("delivered");
    }
    let _ = producer.flush(Duration::from_secs(30));
    eprintln!(
        "produced {messages} messages, {total_points} points, {:.1} MiB in {:.1} s",
        bytes as f64 / 1048576.0,
        t0.elapsed().as_secs_f64()
    );
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(unique("dwcp-bench"));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn release_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("exe");
    let bin = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target dir")
        .join("dwcp-monitor");
    assert!(
        bin.exists(),
        "{} missing: cargo build --release -p dwcp-monitor",
        bin.display()
    );
    bin
}

/// CPU seconds (user + system, `/proc/<pid>/stat`) of the workers together, this harness, and the
/// broker and VictoriaMetrics when the stack's pid files are found (`DWCP_TEST_STACK_DATA`).
fn cpu_times(ws: &[Worker]) -> Vec<(String, f64)> {
    let mut out = vec![(
        "workers".to_string(),
        ws.iter().filter_map(|w| cpu_seconds(&w.pid().to_string())).sum(),
    )];
    out.push(("harness".into(), cpu_seconds("self").unwrap_or(0.0)));
    if let Ok(dir) = std::env::var("DWCP_TEST_STACK_DATA") {
        for name in ["tansu", "victoria-metrics"] {
            let pid = std::fs::read_to_string(format!("{dir}/{name}.pid")).unwrap_or_default();
            if let Some(s) = cpu_seconds(pid.trim()) {
                out.push((name.into(), s));
            }
        }
    }
    out
}

/// utime + stime of a process in seconds (Linux's user-space clock tick is 100 Hz).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn rss_kib(w: &Worker) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", w.pid()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
