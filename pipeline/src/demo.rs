//! `dwcp-monitor demo`: the whole pipeline on an embedded Kafka, with no external service.
//!
//! librdkafka's in-process mock cluster stands in for Kafka. Simulated agents in three regions
//! publish OTLP protobuf to the Collector's default topics, as its kafka exporter would: metrics
//! (a request counter and a latency histogram), spans (some traces cross regions, keyed by
//! trace id) and logs. A script of incidents repeats every 60 s:
//!
//! | seconds | incident |
//! | --- | --- |
//! | 15–25 | latency spike in us-east-1 (spans 10× slower) |
//! | 30–40 | error burst in eu-west-1 (a third of the spans fail, ERROR logs) |
//! | 45–60 | us-west-1 goes dark (publishes nothing) |
//!
//! One corrupted message is published at start to show the dead-letter path. The worker runs the
//! real topology; the terminal summary shows what its operators report as windows close.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1 as pc;
use opentelemetry_proto::tonic::logs::v1 as pl;
use opentelemetry_proto::tonic::metrics::v1 as pm;
use opentelemetry_proto::tonic::resource::v1 as pr;
use opentelemetry_proto::tonic::trace::v1 as pt;
use prost::Message as _;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::watch;

use crate::config::{self, ValidatedConfig};
use crate::topology::{self, now_nanos};

/// The regions the demo simulates.
pub const REGIONS: [&str; 3] = ["us-west-1", "us-east-1", "eu-west-1"];

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// HTTP listen address.
    pub listen: String,
    /// Plain lines instead of redrawing the terminal.
    pub plain: bool,
    /// A Prometheus remote-write URL to send every series to as well.
    pub remote_write: Option<String>,
}

fn kv(k: &str, v: &str) -> pc::KeyValue {
    pc::KeyValue {
        key: k.into(),
        value: Some(pc::AnyValue {
            value: Some(pc::any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn resource(region: &str, service: &str) -> pr::Resource {
    pr::Resource {
        attributes: vec![
            kv("service.name", service),
            kv("service.namespace", "dwcp"),
            kv("service.instance.id", &format!("{service}-{region}-0")),
            kv("cloud.region", region),
        ],
        ..Default::default()
    }
}

/// A cumulative sum: monotonic (a counter) or not (an up-down counter, a gauge in Prometheus).
fn sum(
    name: &str,
    unit: &str,
    attrs: &[pc::KeyValue],
    value: i64,
    monotonic: bool,
    start: u64,
    now: u64,
) -> pm::Metric {
    pm::Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(pm::metric::Data::Sum(pm::Sum {
            data_points: vec![pm::NumberDataPoint {
                attributes: attrs.to_vec(),
                start_time_unix_nano: start,
                time_unix_nano: now,
                value: Some(pm::number_data_point::Value::AsInt(value)),
                ..Default::default()
            }],
            aggregation_temporality: 2,
            is_monotonic: monotonic,
        })),
        ..Default::default()
    }
}

/// A cumulative monotonic sum.
fn counter(name: &str, unit: &str, attrs: &[pc::KeyValue], value: u64, start: u64, now: u64) -> pm::Metric {
    sum(
        name,
        unit,
        attrs,
        i64::try_from(value).unwrap_or(i64::MAX),
        true,
        start,
        now,
    )
}

/// A cumulative non-monotonic sum (an up-down counter): a gauge in Prometheus.
fn updown(name: &str, unit: &str, attrs: &[pc::KeyValue], value: i64, start: u64, now: u64) -> pm::Metric {
    sum(name, unit, attrs, value, false, start, now)
}

/// A gauge.
fn gauge(name: &str, unit: &str, attrs: &[pc::KeyValue], value: f64, now: u64) -> pm::Metric {
    pm::Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(pm::metric::Data::Gauge(pm::Gauge {
            data_points: vec![pm::NumberDataPoint {
                attributes: attrs.to_vec(),
                time_unix_nano: now,
                value: Some(pm::number_data_point::Value::AsDouble(value)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    }
}

/// Which incident is active `t` seconds into the 60-second script.
fn incident(t: u64) -> Option<(&'static str, &'static str)> {
    match t % 60 {
        15..=24 => Some(("us-east-1", "latency spike")),
        30..=39 => Some(("eu-west-1", "error burst")),
        45..=59 => Some(("us-west-1", "region dark")),
        _ => None,
    }
}

/// One message an agent publishes: topic, key, payload.
type Outgoing = (&'static str, Option<Vec<u8>>, Vec<u8>);

struct Agent {
    region: &'static str,
    requests: u64,
    errors: u64,
    /// Toward the peer region: packets sent and received, bytes sent and received.
    packets: (u64, u64),
    bytes: (u64, u64),
    bucket_counts: Vec<u64>,
    latency_sum: f64,
    start: u64,
    /// DWCP messages by type, protocol errors by type.
    messages: [u64; MESSAGE_TYPES.len()],
    protocol_errors: [u64; PROTOCOL_ERRORS.len()],
    /// The region's load balancer: requests and failures per backend.
    lb_requests: [u64; BACKENDS.len()],
    lb_failures: [u64; BACKENDS.len()],
}

const MESSAGE_TYPES: [&str; 5] = ["heartbeat", "replicate", "snapshot", "consensus_vote", "ack"];
const PROTOCOL_ERRORS: [&str; 3] = ["checksum", "timeout", "version_mismatch"];
const BACKENDS: [&str; 3] = ["gw-0", "gw-1", "gw-2"];

const BOUNDS: [f64; 8] = [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

impl Agent {
    fn tick(&mut self, rng: &mut rand::rngs::StdRng, t: u64, now: u64) -> Vec<Outgoing> {
        let inc = incident(t);
        if inc == Some((self.region, "region dark")) {
            return Vec::new();
        }
        let slow = inc == Some((self.region, "latency spike"));
        let failing = inc == Some((self.region, "error burst"));
        let mut out = Vec::new();
        let mut spans = Vec::new();
        let mut logs = Vec::new();
        // Every fourth request replicates to the next region: a client span here and a server
        // span there, one trace across two regions' agents.
        let peer = REGIONS[(REGIONS.iter().position(|r| *r == self.region).unwrap_or(0) + 1) % REGIONS.len()];
        let peer_dark = incident(t) == Some((peer, "region dark"));
        let mut remote = Vec::new();
        for k in 0..20 {
            let mut ms: f64 = rng.random_range(5.0..40.0);
            // The peer's own work: half the unspiked time (a spike here is not the peer's).
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let peer_work = (ms * 500_000.0) as u64;
            if slow {
                ms *= 10.0;
            }
            let error = failing && rng.random_bool(0.33);
            self.requests += 1;
            self.errors += u64::from(error);
            self.latency_sum += ms;
            let i = BOUNDS.iter().position(|b| ms <= *b).unwrap_or(BOUNDS.len());
            self.bucket_counts[i] += 1;
            let mut trace_id = [0u8; 16];
            rng.fill(&mut trace_id);
            let span_id: [u8; 8] = rng.random();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let dur = (ms * 1_000_000.0) as u64;
            let cross = k % 4 == 0;
            spans.push(pt::Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                name: if cross {
                    format!("replicate {peer}")
                } else {
                    "replicate".into()
                },
                kind: if cross { 3 } else { 2 },
                start_time_unix_nano: now - dur,
                end_time_unix_nano: now,
                status: Some(pt::Status {
                    code: if error { 2 } else { 0 },
                    message: String::new(),
                }),
                ..Default::default()
            });
            if cross && !peer_dark {
                // The wire takes 2–8 ms of the client's time, both ways together.
                let wire: u64 = rng
                    .random_range(2_000_000..8_000_000)
                    .min(dur.saturating_sub(peer_work));
                let server_id: [u8; 8] = rng.random();
                let start = now - dur + wire / 2;
                remote.push(pt::Span {
                    trace_id: trace_id.to_vec(),
                    span_id: server_id.to_vec(),
                    parent_span_id: span_id.to_vec(),
                    name: "receive-snapshot".into(),
                    kind: 2,
                    start_time_unix_nano: start,
                    end_time_unix_nano: start + peer_work,
                    ..Default::default()
                });
            }
            if error {
                logs.push(pl::LogRecord {
                    time_unix_nano: now,
                    severity_number: 17,
                    severity_text: "ERROR".into(),
                    body: Some(pc::AnyValue {
                        value: Some(pc::any_value::Value::StringValue("replication failed".into())),
                    }),
                    trace_id: trace_id.to_vec(),
                    span_id: span_id.to_vec(),
                    ..Default::default()
                });
            }
        }
        logs.push(pl::LogRecord {
            time_unix_nano: now,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(pc::AnyValue {
                value: Some(pc::any_value::Value::StringValue("heartbeat".into())),
            }),
            ..Default::default()
        });
        // The link to the peer: 200 probes a tick, 3 % lost during an error burst, none when the
        // peer is dark (the tunnel is down); round trips grow tenfold in a latency spike.
        let sent = 200;
        let received = if peer_dark {
            0
        } else if failing {
            194
        } else {
            200
        };
        self.packets.0 += sent;
        self.packets.1 += received;
        self.bytes.0 += rng.random_range(4_000_000..6_000_000);
        self.bytes.1 += if peer_dark {
            0
        } else {
            rng.random_range(3_000_000..5_000_000)
        };
        let base_rtt = 20.0 + 15.0 * (REGIONS.iter().position(|r| *r == self.region).unwrap_or(0) as f64);
        let rtt = base_rtt * if slow { 10.0 } else { 1.0 } + rng.random_range(0.0..4.0);
        let cpu = if slow { 0.92 } else { 0.45 } + rng.random_range(0.0..0.05);
        let consensus = if peer_dark { 0.66 } else { 0.99 };
        let link = vec![kv("peer_region", peer)];
        let attrs = vec![kv("operation", "replicate")];
        // The protocol: per tick 20 replicate messages and as many acks, 2 heartbeats, a snapshot
        // every 10 s, consensus votes; checksum errors in an error burst, timeouts toward a dark
        // peer, one version mismatch a minute.
        for (i, n) in [2, 20, u64::from(t.is_multiple_of(10)), 3, 20].into_iter().enumerate() {
            self.messages[i] += n;
        }
        self.protocol_errors[0] += if failing { rng.random_range(2..6) } else { 0 };
        self.protocol_errors[1] += if peer_dark { 4 } else { 0 };
        self.protocol_errors[2] += u64::from(t % 60 == 5);
        let compression = if slow { 1.6 } else { 3.2 } + rng.random_range(0.0..0.3);
        // The load balancer spreads the 20 requests 8/7/5; gw-2 fails its health checks and a
        // third of its requests in an error burst.
        for (i, n) in [8u64, 7, 5].into_iter().enumerate() {
            self.lb_requests[i] += n;
            if failing && i == 2 {
                self.lb_failures[i] += 2;
            }
        }
        let mut extra = vec![updown(
            "dwcp.active_connections",
            "{connection}",
            &[],
            40 + rng.random_range(0..10) + if slow { 60 } else { 0 },
            self.start,
            now,
        )];
        for (i, ty) in MESSAGE_TYPES.iter().enumerate() {
            extra.push(counter(
                "dwcp.protocol.messages",
                "{message}",
                &[kv("message.type", ty)],
                self.messages[i],
                self.start,
                now,
            ));
        }
        for (i, ty) in PROTOCOL_ERRORS.iter().enumerate() {
            extra.push(counter(
                "dwcp.protocol.errors",
                "{error}",
                &[kv("error.type", ty)],
                self.protocol_errors[i],
                self.start,
                now,
            ));
        }
        extra.push(gauge("dwcp.compression.ratio", "1", &[], compression, now));
        for (i, b) in BACKENDS.iter().enumerate() {
            let backend = [kv("backend", b)];
            let down = failing && i == 2;
            extra.push(gauge(
                "dwcp.lb.backend.up",
                "",
                &backend,
                if down { 0.0 } else { 1.0 },
                now,
            ));
            extra.push(counter(
                "dwcp.lb.requests",
                "{request}",
                &backend,
                self.lb_requests[i],
                self.start,
                now,
            ));
            extra.push(counter(
                "dwcp.lb.failures",
                "{request}",
                &backend,
                self.lb_failures[i],
                self.start,
                now,
            ));
            let active = rng.random_range(4..12) + if slow { 20 } else { 0 };
            for (state, n) in [("active", active), ("idle", 32 - active.min(32))] {
                extra.push(updown(
                    "dwcp.lb.pool.connections",
                    "{connection}",
                    &[kv("backend", b), kv("state", state)],
                    n,
                    self.start,
                    now,
                ));
            }
        }
        let metrics = pm::MetricsData {
            resource_metrics: vec![pm::ResourceMetrics {
                resource: Some(resource(self.region, "dwcp-gateway")),
                scope_metrics: vec![pm::ScopeMetrics {
                    scope: Some(pc::InstrumentationScope {
                        name: "dwcp.demo".into(),
                        ..Default::default()
                    }),
                    metrics: vec![
                        counter("dwcp.requests", "{request}", &attrs, self.requests, self.start, now),
                        counter("dwcp.errors", "{request}", &attrs, self.errors, self.start, now),
                        counter(
                            "dwcp.network.packets.sent",
                            "{packet}",
                            &link,
                            self.packets.0,
                            self.start,
                            now,
                        ),
                        counter(
                            "dwcp.network.packets.received",
                            "{packet}",
                            &link,
                            self.packets.1,
                            self.start,
                            now,
                        ),
                        counter("dwcp.network.io.sent", "By", &link, self.bytes.0, self.start, now),
                        counter("dwcp.network.io.received", "By", &link, self.bytes.1, self.start, now),
                        gauge("dwcp.network.rtt", "ms", &link, rtt, now),
                        gauge("dwcp.tunnel.up", "", &link, if peer_dark { 0.0 } else { 1.0 }, now),
                        gauge("dwcp.cpu.utilization", "1", &[], cpu, now),
                        gauge("dwcp.consensus.health", "1", &[], consensus, now),
                        pm::Metric {
                            name: "dwcp.latency".into(),
                            unit: "ms".into(),
                            data: Some(pm::metric::Data::Histogram(pm::Histogram {
                                data_points: vec![pm::HistogramDataPoint {
                                    attributes: attrs,
                                    start_time_unix_nano: self.start,
                                    time_unix_nano: now,
                                    count: self.requests,
                                    sum: Some(self.latency_sum),
                                    bucket_counts: self.bucket_counts.clone(),
                                    explicit_bounds: BOUNDS.to_vec(),
                                    ..Default::default()
                                }],
                                aggregation_temporality: 2,
                            })),
                            ..Default::default()
                        },
                    ]
                    .into_iter()
                    .chain(extra)
                    .collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        out.push(("otlp_metrics", None, metrics.encode_to_vec()));
        // Spans go out one trace per message, keyed by trace id (partition_traces_by_id).
        for s in spans {
            let key = s.trace_id.clone();
            let data = pt::TracesData {
                resource_spans: vec![pt::ResourceSpans {
                    resource: Some(resource(self.region, "dwcp-gateway")),
                    scope_spans: vec![pt::ScopeSpans {
                        scope: None,
                        spans: vec![s],
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            };
            out.push(("otlp_spans", Some(key), data.encode_to_vec()));
        }
        // The peer region's agent publishes the server halves.
        for s in remote {
            let key = s.trace_id.clone();
            let data = pt::TracesData {
                resource_spans: vec![pt::ResourceSpans {
                    resource: Some(resource(peer, "dwcp-gateway")),
                    scope_spans: vec![pt::ScopeSpans {
                        scope: None,
                        spans: vec![s],
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            };
            out.push(("otlp_spans", Some(key), data.encode_to_vec()));
        }
        let data = pl::LogsData {
            resource_logs: vec![pl::ResourceLogs {
                resource: Some(resource(self.region, "dwcp-gateway")),
                scope_logs: vec![pl::ScopeLogs {
                    scope: None,
                    log_records: logs,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        out.push(("otlp_logs", None, data.encode_to_vec()));
        out
    }
}

/// The SLAs, health factors, network pairs and capacity of the demo, as a user configures them
/// under `operators:` (the same block is in deploy/config/pipeline.yaml).
const DEMO_DERIVED: &str = include_str!("../../deploy/config/derived.yaml");

/// The design's alert rules (HighLatency, DWCPServiceDown, SLAViolation).
const DEMO_RULES: &str = include_str!("../../deploy/rules/dwcp.rules.yml");

/// How long the demo may take to stop once told to.
const STOP_WITHIN: Duration = Duration::from_secs(90);

/// Runs the demo until `shutdown` turns true.
///
/// # Errors
/// When the mock cluster or the pipeline cannot start.
pub async fn run(opts: DemoOptions, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let cluster = MockCluster::new(1)?;
    let brokers = cluster.bootstrap_servers();
    for topic in ["otlp_metrics", "otlp_spans", "otlp_logs", "dwcp.dlq"] {
        cluster.create_topic(topic, 3, 1)?;
    }
    for topic in ["dwcp.sla", "dwcp.health", "dwcp.alerts", "dwcp.anomalies"] {
        cluster.create_topic(topic, 1, 1)?;
    }
    // The design's rules, from deploy/rules, written where the config can name them.
    let rules_file = std::env::temp_dir().join(format!("dwcp-demo-rules-{}.yml", std::process::id()));
    std::fs::write(&rules_file, DEMO_RULES)?;
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: dwcp-demo\n  commit_interval_ms: 500\n\
         http:\n  listen: \"{}\"\nrules:\n  files: [\"{}\"]\noperators:\n  activity_window_ms: 5000\n  dark_after_ms: 10000\n  allowed_lateness_ms: 1000\n{}",
        opts.listen,
        rules_file.display(),
        DEMO_DERIVED.replace("\n", "\n  ").trim_end_matches(' ')
    );
    let yaml = match &opts.remote_write {
        Some(url) => format!("{yaml}sinks:\n  prometheus_remote_write:\n    - url: \"{url}\"\n"),
        None => yaml,
    };
    let cfg: ValidatedConfig = config::parse(&yaml, std::path::Path::new("<demo>"), &[])?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .create()?;

    let (handles_tx, handles_rx) = tokio::sync::oneshot::channel();
    let pipeline = tokio::spawn(topology::run(cfg, shutdown.clone(), move |h| {
        let _ = handles_tx.send((h.telemetry.clone(), h.reports.clone(), h.http_addr, h.derived.clone()));
    }));
    let (telemetry, reports, http_addr, derived) = handles_rx
        .await
        .map_err(|_| anyhow::anyhow!("pipeline did not start"))?;
    let mut reports = reports.subscribe();

    // One corrupted message, to show the dead-letter path.
    let _ = producer
        .send(
            FutureRecord::<(), [u8]>::to("otlp_metrics").payload(&b"\x0a\xff\xff not otlp"[..]),
            Duration::from_secs(5),
        )
        .await;

    let producer = Arc::new(producer);
    let mut stop = shutdown.clone();
    let p = producer.clone();
    let agents = tokio::spawn(async move {
        let start = now_nanos();
        let mut agents: Vec<Agent> = REGIONS
            .iter()
            .map(|r| Agent {
                region: r,
                requests: 0,
                errors: 0,
                packets: (0, 0),
                bytes: (0, 0),
                bucket_counts: vec![0; BOUNDS.len() + 1],
                latency_sum: 0.0,
                start,
                messages: [0; MESSAGE_TYPES.len()],
                protocol_errors: [0; PROTOCOL_ERRORS.len()],
                lb_requests: [0; BACKENDS.len()],
                lb_failures: [0; BACKENDS.len()],
            })
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let began = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick() => {}
            }
            let t = began.elapsed().as_secs();
            let now = now_nanos();
            // Enqueue everything, then wait for the deliveries together: awaiting each send
            // in turn would cap the agents at one linger per message.
            let mut deliveries = Vec::new();
            for a in &mut agents {
                for (topic, key, payload) in a.tick(&mut rng, t, now) {
                    let mut rec = FutureRecord::<Vec<u8>, Vec<u8>>::to(topic).payload(&payload);
                    if let Some(k) = &key {
                        rec = rec.key(k);
                    }
                    match p.send_result(rec) {
                        Ok(d) => deliveries.push(d),
                        Err((e, _)) => tracing::warn!(error = %e, "demo agent could not publish"),
                    }
                }
            }
            for r in futures::future::join_all(deliveries).await {
                if let Ok(Err((e, _))) = r {
                    tracing::warn!(error = %e, "demo agent could not publish");
                }
            }
        }
    });

    let began = Instant::now();
    let mut stop = shutdown.clone();
    let mut last = String::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = reports.recv() => {
                let Ok(r) = r else { continue };
                let t = began.elapsed().as_secs();
                let mut text = summary(&r, &telemetry.render(), t, http_addr);
                derived_summary(&derived.borrow(), &mut text);
                if opts.plain {
                    println!("{text}");
                } else {
                    print!("\x1b[2J\x1b[H{text}");
                }
                last = text;
            }
        }
    }
    // A stop that does not finish is a bug: say where it stuck and exit, instead of hanging.
    let waiting_for = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let watchdog = {
        let waiting_for = waiting_for.clone();
        tokio::spawn(async move {
            tokio::time::sleep(STOP_WITHIN).await;
            let what = match waiting_for.load(std::sync::atomic::Ordering::SeqCst) {
                0 => "the simulated agents' last deliveries",
                _ => "the pipeline to drain and stop",
            };
            eprintln!(
                "demo: still waiting for {what} {} s after the stop; exiting",
                STOP_WITHIN.as_secs()
            );
            std::process::exit(1);
        })
    };
    let _ = agents.await;
    waiting_for.store(1, std::sync::atomic::Ordering::SeqCst);
    pipeline.await??;
    watchdog.abort();
    let _ = std::fs::remove_file(&rules_file);
    // Clients first, then the cluster they talk to.
    drop(producer);
    drop(cluster);
    if !opts.plain {
        println!("\n{last}");
    }
    Ok(())
}

/// Sums a counter family from the exposition text by a label value.
fn sum_metric(text: &str, name: &str, label: Option<(&str, &str)>) -> u64 {
    let mut total = 0.0;
    for line in text.lines() {
        if !line.starts_with(name) || line.starts_with('#') {
            continue;
        }
        let rest = &line[name.len()..];
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if let Some((k, v)) = label {
            if !line.contains(&format!("{k}=\"{v}\"")) {
                continue;
            }
        }
        if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            total += v;
        }
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let t = total as u64;
    t
}

fn summary(r: &dwcp_operators::activity::ActivityReport, metrics: &str, t: u64, http: std::net::SocketAddr) -> String {
    let secs = (r.window_end - r.window_start) as f64 / 1e9;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "dwcp-monitor demo · {t}s · embedded Kafka (mock cluster) · metrics at http://{http}/metrics"
    );
    let _ = writeln!(
        s,
        "API: http://{http}/api/v1/query?query=dwcp_region_health_score · /api/v1/alerts · /api/v1/sla · \
         /api/v1/regions/health · /api/v1/network · /api/v1/capacity · /openapi.json \
         (Grafana: a Prometheus datasource at http://{http})"
    );
    let _ = writeln!(s, "window of {secs:.0}s ending {} ms", r.window_end / 1_000_000);
    let _ = writeln!(
        s,
        "{:<12} {:>10} {:>10} {:>10} {:>8} {:>10} {:>8}",
        "region", "points/s", "spans/s", "logs/s", "errors", "p95 ms", "status"
    );
    let mut incidents: BTreeMap<String, String> = BTreeMap::new();
    for reg in &r.regions {
        let p95 = reg.span_duration_ms.map_or("-".to_string(), |d| format!("{:.1}", d[1]));
        let status = match reg.status {
            dwcp_operators::activity::RegionStatus::Active => "active",
            dwcp_operators::activity::RegionStatus::Dark => "DARK",
        };
        #[allow(clippy::cast_precision_loss)]
        let rate = |n: u64| n as f64 / secs;
        let _ = writeln!(
            s,
            "{:<12} {:>10.1} {:>10.1} {:>10.1} {:>8} {:>10} {:>8}",
            reg.region,
            rate(reg.metric_points),
            rate(reg.spans),
            rate(reg.logs),
            reg.span_errors,
            p95,
            status
        );
        if let Some(d) = reg.span_duration_ms {
            if d[1] > 100.0 {
                incidents.insert(reg.region.to_string(), format!("latency spike: p95 {:.0} ms", d[1]));
            }
        }
        if reg.spans > 0 && reg.span_errors * 10 >= reg.spans {
            incidents.insert(
                reg.region.to_string(),
                format!("error burst: {} of {} spans failed", reg.span_errors, reg.spans),
            );
        }
        if reg.status == dwcp_operators::activity::RegionStatus::Dark {
            incidents.insert(reg.region.to_string(), "region dark: nothing received".into());
        }
    }
    let _ = writeln!(
        s,
        "incidents: {}",
        if incidents.is_empty() {
            "none".to_string()
        } else {
            incidents
                .iter()
                .map(|(r, i)| format!("{r}: {i}"))
                .collect::<Vec<_>>()
                .join("; ")
        }
    );
    let _ = writeln!(
        s,
        "traces: {} stitched ({} sampled), {} cross-region hops",
        sum_metric(metrics, "dwcp_traces_decided_total", None),
        sum_metric(metrics, "dwcp_traces_decided_total", Some(("decision", "sampled"))),
        sum_metric(metrics, "dwcp_cross_region_hops_total", None),
    );
    let _ = writeln!(
        s,
        "alerts so far: {} went pending, {} fired, {} resolved (deploy/rules/dwcp.rules.yml and SLA burn rates; every change on dwcp.alerts)",
        sum_metric(metrics, "dwcp_alert_transitions_total", Some(("state", "pending"))),
        sum_metric(metrics, "dwcp_alert_transitions_total", Some(("state", "firing"))),
        sum_metric(metrics, "dwcp_alert_transitions_total", Some(("state", "resolved"))),
    );
    let _ = writeln!(
        s,
        "anomalies: {} episodes over {} series (round trips and CPU; learning the first 100 points; each on dwcp.anomalies)",
        sum_metric(metrics, "dwcp_anomaly_episodes_total", None),
        sum_metric(metrics, "dwcp_anomaly_series", None),
    );
    let _ = writeln!(
        s,
        "totals: records in {} (metrics {}, traces {}, logs {}), dead-lettered {}, decode errors {}",
        sum_metric(metrics, "dwcp_source_records_total", None),
        sum_metric(metrics, "dwcp_source_records_total", Some(("signal", "metrics"))),
        sum_metric(metrics, "dwcp_source_records_total", Some(("signal", "traces"))),
        sum_metric(metrics, "dwcp_source_records_total", Some(("signal", "logs"))),
        sum_metric(metrics, "dwcp_dead_letter_messages_total", None),
        sum_metric(metrics, "dwcp_decode_errors_total", None),
    );
    s
}

/// SLAs, health and network as of the last closed minute.
fn derived_summary(v: &dwcp_operators::derived::DerivedView, s: &mut String) {
    if v.sla.is_empty() && v.health.is_empty() {
        let _ = writeln!(s, "SLAs, health and network: first report when the first minute closes");
        return;
    }
    let _ = writeln!(
        s,
        "{:<20} {:<10} {:>11} {:>8} {:>10} {:>8}  alert",
        "SLA", "region", "compliance", "target", "budget", "burn 5m"
    );
    for r in &v.sla {
        let burn = r
            .report
            .burn_rates
            .iter()
            .find(|(w, _)| w == "5m")
            .map_or(0.0, |(_, b)| *b);
        let alert = match r.report.alert {
            Some(dwcp_operators::sla::BurnAlert::Page) => "PAGE",
            Some(dwcp_operators::sla::BurnAlert::Ticket) => "ticket",
            None => "-",
        };
        let _ = writeln!(
            s,
            "{:<20} {:<10} {:>10.3}% {:>7.2}% {:>9.0}% {:>8.1}  {alert}",
            r.sla,
            r.region,
            r.report.compliance * 100.0,
            r.target * 100.0,
            r.report.budget_remaining * 100.0,
            burn
        );
    }
    let health: Vec<String> = v
        .health
        .iter()
        .map(|(r, h)| {
            let trend = match h.trend {
                dwcp_operators::health::Trend::Improving => "improving",
                dwcp_operators::health::Trend::Stable => "stable",
                dwcp_operators::health::Trend::Degrading => "degrading",
            };
            format!("{r} {:.0} {trend}", h.score)
        })
        .collect();
    let _ = writeln!(s, "health: {}", health.join(" · "));
    let pairs: Vec<String> = v
        .network
        .iter()
        .map(|p| {
            format!(
                "{}→{} jitter {:.1} ms loss {:.1}% {:?}",
                p.region,
                p.peer_region,
                p.report.jitter_ms,
                p.report.loss * 100.0,
                p.report.status
            )
            .to_lowercase()
        })
        .collect();
    let _ = writeln!(s, "network: {}", pairs.join(" · "));
    let learning = v.capacity.iter().filter(|c| c.forecast.is_none()).count();
    let _ = writeln!(
        s,
        "capacity: {} forecasts, {learning} learning (48 h of history needed)",
        v.capacity.len() - learning
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_script() {
        assert_eq!(incident(5), None);
        assert_eq!(incident(16), Some(("us-east-1", "latency spike")));
        assert_eq!(incident(95), Some(("eu-west-1", "error burst")));
        assert_eq!(incident(50), Some(("us-west-1", "region dark")));
    }
}
