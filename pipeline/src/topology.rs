//! Wiring: source → operators → sinks, and the order things stop in.
//!
//! ```text
//! KafkaSource ──SourceBatch──► router ──► activity operator ──► reports (log, demo summary)
//!                                 └──────► file sink (Batch with the message's ack)
//! ```
//!
//! Shutdown: the source stops reading; the router drains its queue and closes the sinks'
//! queues; the sinks finish what they hold and release the acks; then the source commits for
//! the last time. So a clean stop commits everything that was processed.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dwcp_operators::activity::{ActivityConfig, ActivityOperator, ActivityReport};
use dwcp_operators::aggregate::AggregateOperator;
use dwcp_operators::alerts::AlertState;
use dwcp_operators::cardinality::CardinalityGuard;
use dwcp_operators::derived::{DerivedOperator, DerivedOutput, DerivedState, DerivedView};
use dwcp_operators::prom::PromConverter;
use dwcp_operators::rules::{RuleEngine, RuleOutput};
use dwcp_operators::spanmetrics::SpanMetrics;
use dwcp_operators::traces::{Decision, TraceOperator, TraceOutput, TraceStats};
use dwcp_operators::watermark::{WatermarkConfig, WatermarkTracker};
use dwcp_operators::{EventTime, Operator};
use dwcp_schemas::Records;
use dwcp_sinks::alertmanager::{AlertmanagerSink, AlertmanagerStats};
use dwcp_sinks::elasticsearch::{jaeger_span, log_document, EsQuery, EsSink, EsStats, Rejected};
use dwcp_sinks::file::FileSinkStats;
use dwcp_sinks::prometheus::remote_write::{RemoteWriteSink, RemoteWriteStats};
use dwcp_sinks::Batch;
use tokio::sync::{broadcast, mpsc, watch};

use crate::api::sql::{History, HistoryStats};
use crate::api::window::MetricsWindow;
use crate::api::ApiState;
use crate::config::ValidatedConfig;
use crate::derived::{DerivedProducer, Origin};
use crate::grafana::client::{Annotator, GrafanaClient, Note};
use crate::source::{KafkaSource, SourceBatch};
use crate::telemetry::{labels, Telemetry};

const MS: u64 = 1_000_000;

/// What a running pipeline exposes to its caller (the CLI, the demo, tests).
pub struct Handles {
    /// Internal metrics.
    pub telemetry: Arc<Telemetry>,
    /// Closed activity windows.
    pub reports: broadcast::Sender<ActivityReport>,
    /// The HTTP address actually bound.
    pub http_addr: std::net::SocketAddr,
    /// SLAs, health, network and capacity as of the last closed minute.
    pub derived: watch::Receiver<Arc<DerivedView>>,
}

/// The file the derived operator's state is snapshotted to, under `operators.state_dir`.
const DERIVED_STATE_FILE: &str = "derived.json";

/// The file the anomaly operator's state is snapshotted to.
const ANOMALY_STATE_FILE: &str = "anomaly.json";

/// Reads a state snapshot `name` from `dir`, if there is one.
fn load_state<T: serde::de::DeserializeOwned>(dir: &std::path::Path, name: &str) -> anyhow::Result<Option<T>> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!("{}: not a state snapshot of this version: {e}", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// Writes a snapshot atomically: a temporary file, fsync, rename.
fn write_snapshot(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))
}

/// Wall-clock now in nanoseconds; the only clock the pipeline reads (operators read none).
pub fn now_nanos() -> EventTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The largest event time in a batch.
/// The event times of a batch's records.
fn event_times(records: &Records) -> Box<dyn Iterator<Item = EventTime> + '_> {
    match records {
        Records::Metrics(v) => Box::new(v.iter().map(|r| r.time_unix_nano)),
        Records::Traces(v) => Box::new(v.iter().map(|r| r.end_time_unix_nano)),
        Records::Logs(v) => Box::new(v.iter().map(dwcp_schemas::model::LogRecord::timestamp)),
    }
}

/// Runs the worker until `shutdown` turns true. `on_start` receives the handles once the HTTP
/// port is bound.
///
/// # Errors
/// When Kafka clients cannot be created, the HTTP port cannot be bound or a sink cannot start.
pub async fn run(
    config: ValidatedConfig,
    shutdown: watch::Receiver<bool>,
    on_start: impl FnOnce(&Handles),
) -> anyhow::Result<()> {
    let telemetry = Telemetry::new();
    let ready = Arc::new(AtomicBool::new(false));
    let ac = &config.config.api;
    let window = ac
        .enabled
        .then(|| Arc::new(MetricsWindow::new(ac.retention_ms, ac.max_series)));
    let (derived_view, derived_rx) = watch::channel(Arc::new(DerivedView::default()));
    let (alerts_view, alerts_rx) = watch::channel(Arc::new(Vec::new()));
    let sc = &ac.sql;
    let history = sc
        .enabled
        .then(|| Arc::new(History::new(sc.retention_ms, sc.max_rows, sc.max_result_rows)));
    let api = Arc::new(ApiState {
        window: window.clone(),
        history: history.clone(),
        closed_ranges: config.config.rules.prometheus_version == 2,
        derived: derived_rx.clone(),
        alerts: alerts_rx,
        es: config
            .config
            .sinks
            .elasticsearch
            .as_ref()
            .map(EsQuery::from_config)
            .transpose()
            .map_err(|e| anyhow::anyhow!("{}: sinks.elasticsearch: {e}", config.file.display()))?,
        keys: config.api_keys.clone(),
        telemetry: telemetry.clone(),
    });
    if config.api_keys.is_empty() {
        tracing::info!("api: no keys configured (api.keys); the monitoring API is open");
    }
    let http_addr = crate::http::serve(
        &config.config.http.listen,
        telemetry.clone(),
        ready.clone(),
        api,
        shutdown.clone(),
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{}: http.listen {}: {e}",
            config.file.display(),
            config.config.http.listen
        )
    })?;
    tracing::info!(%http_addr, "http server listening (/metrics, /healthz, /readyz, /api/v1, /openapi.json)");
    let (reports, _) = broadcast::channel(256);
    let handles = Handles {
        telemetry: telemetry.clone(),
        reports: reports.clone(),
        http_addr,
        derived: derived_rx,
    };
    on_start(&handles);

    let oc = &config.config.operators;
    let derived_config = oc.derived_config();
    let mut derived = None;
    let mut producer = None;
    let derived_moves = derived_config.is_enabled() && config.config.repartition.enabled;
    if derived_config.is_enabled() {
        let mut op = DerivedOperator::new(derived_config)
            .map_err(|e| anyhow::anyhow!("{}: operators.{e}", config.file.display()))?;
        if derived_moves {
            // Run by the worker owning its key's series partition, state in the changelog.
        } else if let Some(dir) = &oc.state_dir {
            if let Some(state) = load_state::<DerivedState>(dir, DERIVED_STATE_FILE)? {
                op.restore(state);
                tracing::info!(dir = %dir.display(), "derived state restored from snapshot");
            }
        }
        derived = Some(op);
    }
    // One producer for every derived topic, when anything produces derived records.
    let dt = &config.config.derived_topics;
    if dt.enabled && (derived.is_some() || !config.rule_groups.is_empty() || oc.anomaly.is_active()) {
        let p = DerivedProducer::new(
            dt.clone(),
            &config.config.source.brokers,
            &config.config.source.group_id,
            telemetry.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.file.display()))?;
        if p.transactional() {
            tracing::info!(
                sla = %dt.sla,
                health = %dt.health,
                alerts = %dt.alerts,
                anomalies = %dt.anomalies,
                transactional_id = %crate::derived::transactional_id(dt, &config.config.source.group_id),
                delivery = "exactly-once: in Kafka transactions with the state checkpoints and consumed offsets; read_committed consumers see each record once, at its checkpoint",
                "derived topics: records as Avro"
            );
        } else {
            tracing::info!(
                sla = %dt.sla,
                health = %dt.health,
                alerts = %dt.alerts,
                anomalies = %dt.anomalies,
                delivery = "at-least-once: after a crash records may repeat, under the same deterministic key (derived_topics.delivery: exactly_once on a broker with transactions)",
                "derived topics: records as Avro"
            );
        }
        producer = Some(p);
    }

    // With repartitioning, a first stage re-keys metric points and spans into the internal
    // topics and the operators read those (and the log inputs).
    let mut repartition_stage = None;
    let mut rule_partitions = None;
    let mut derived_home = None;
    let mut span_metrics_home = None;
    let mut input_partitions = Vec::new();
    let mut trace_inputs = Vec::new();
    if let Some(stage) = config.repartition_stage() {
        let counts = crate::repartition::ensure_topics(&config).await?;
        let rp = &config.config.repartition;
        let plan = crate::repartition::KeyPlan::new(&config);
        for g in &plan.open_groups {
            tracing::warn!(group = %g, "rule group selects metrics by name pattern: with several workers it reads only the series of the worker that evaluates it");
        }
        rule_partitions = Some((rp.series_topic.clone(), plan.group_partitions(counts.0)));
        derived_home = plan.derived_partition(counts.0);
        if let (Some(x), Some(key)) = (derived_home, &plan.derived_key) {
            tracing::info!(partition = x, key = %key, "SLA, health, network and capacity: run by the worker owning this series partition");
            if oc.derived_config().network.is_some() {
                tracing::warn!("with repartitioning, the network view's cross-region hop latencies from traces are not measured (traces are spread over the workers by trace id); its metric inputs are");
            }
        }
        if oc.span_metrics.enabled {
            let x = crate::repartition::key_partition(&plan.span_metrics_key(), counts.0);
            span_metrics_home = Some(x);
            tracing::info!(partition = x, "span metrics: counted by the worker owning this series partition, from the re-keying stage's counts per input message");
        }
        // Metric inputs send points to every series partition; span inputs send only the
        // span-metrics counts, to one: each waits for the inputs that feed it.
        (trace_inputs, input_partitions) = crate::repartition::input_partitions(&stage)
            .await?
            .into_iter()
            .partition(|(t, _)| {
                stage
                    .topic(t)
                    .is_some_and(|e| e.config.signal == dwcp_schemas::Signal::Traces)
            });
        tracing::info!(
            metric_partitions = input_partitions.len(),
            span_partitions = trace_inputs.len(),
            "repartitioning: every internal series partition waits for the metric input partitions before its event time advances, span metrics for the span input partitions"
        );
        let rsource = Arc::new(KafkaSource::new(stage.clone(), telemetry.clone(), ready.clone())?);
        let rep = crate::repartition::Repartitioner::new(&stage, counts, telemetry.clone())?;
        tracing::info!(
            group = %stage.config.source.group_id,
            topics = ?stage.topics.iter().map(|t| t.config.name.as_str()).collect::<Vec<_>>(),
            series_topic = %rp.series_topic,
            series_partitions = counts.0,
            spans_topic = %rp.spans_topic,
            spans_partitions = counts.1,
            "repartitioning: metric points by series key, spans by trace id"
        );
        let (tx, rx) = mpsc::channel::<SourceBatch>(config.config.source.queue_capacity);
        let src = rsource.clone();
        let sd = shutdown.clone();
        let reader = tokio::spawn(async move { src.run(tx, sd).await });
        let writer = tokio::spawn(rep.run(rx));
        repartition_stage = Some((rsource, reader, writer));
    }
    let config = config.keyed_stage();
    let source = Arc::new(KafkaSource::new(config.clone(), telemetry.clone(), ready)?);
    tracing::info!(
        brokers = %config.config.source.brokers,
        group = %config.config.source.group_id,
        topics = ?config.topics.iter().map(|t| t.config.name.as_str()).collect::<Vec<_>>(),
        "kafka source subscribed"
    );

    // Sinks.
    let mut sink_tasks = Vec::new();
    let mut file_tx = None;
    if let Some(fc) = config.config.sinks.file.clone() {
        let (tx, rx) = mpsc::channel::<Batch>(config.config.source.queue_capacity);
        let sink = labels([("sink", "file")]);
        let stats = Arc::new(FileSinkStats {
            records: telemetry.sink_records.get_or_create(&sink).clone(),
            errors: telemetry.sink_errors.get_or_create(&sink).clone(),
        });
        let sink = dwcp_sinks::file::FileSink::open(fc)
            .await
            .map_err(|e| anyhow::anyhow!("{}: sinks.file.path: {e}", config.file.display()))?;
        sink_tasks.push(tokio::spawn(sink.run(rx, stats)));
        file_tx = Some(tx);
    }

    let mut remote_write = Vec::new();
    for rw in &config.config.sinks.prometheus_remote_write {
        let name = rw.display_name();
        let ep = labels([("endpoint", &name)]);
        let sent = labels([("endpoint", &name), ("result", "sent")]);
        let dropped = labels([("endpoint", &name), ("result", "dropped")]);
        let relabel_dropped = labels([("endpoint", &name), ("result", "relabel_dropped")]);
        // One statement per counter: a family's guard lives to the end of its statement, and a
        // second get_or_create on the same family inside it would wait for itself.
        let samples_sent = telemetry.remote_write_samples.get_or_create(&sent).clone();
        let samples_dropped = telemetry.remote_write_samples.get_or_create(&dropped).clone();
        let samples_relabel_dropped = telemetry.remote_write_samples.get_or_create(&relabel_dropped).clone();
        let retries = telemetry.remote_write_retries.get_or_create(&ep).clone();
        let requests = telemetry.remote_write_requests.get_or_create(&ep).clone();
        let queue_depth = telemetry
            .sink_queue_depth
            .get_or_create(&labels([("sink", &format!("remote_write:{name}"))]))
            .clone();
        let stats = RemoteWriteStats {
            samples_sent,
            samples_dropped,
            samples_relabel_dropped,
            retries,
            requests,
            queue_depth,
        };
        let sink = RemoteWriteSink::start(rw.clone(), stats)
            .map_err(|e| anyhow::anyhow!("{}: sinks.prometheus_remote_write ({name}): {e}", config.file.display()))?;
        tracing::info!(endpoint = %name, url = %rw.url, shards = rw.shards, "remote-write endpoint started");
        remote_write.push(sink);
    }

    let mut es = None;
    let mut rejected_task = None;
    if let Some(ec) = config.config.sinks.elasticsearch.clone() {
        let stored = telemetry.es_docs.get_or_create(&labels([("result", "stored")])).clone();
        let rejected = telemetry
            .es_docs
            .get_or_create(&labels([("result", "rejected")]))
            .clone();
        let queue_depth = telemetry
            .sink_queue_depth
            .get_or_create(&labels([("sink", "elasticsearch")]))
            .clone();
        let stats = EsStats {
            docs_sent: stored,
            docs_rejected: rejected,
            retries: telemetry.es_retries.clone(),
            requests: telemetry.es_requests.clone(),
            queue_depth,
        };
        let (rtx, mut rrx) = mpsc::channel::<Rejected>(256);
        let url = ec.url.clone();
        es = Some(
            EsSink::start(ec, stats, rtx)
                .map_err(|e| anyhow::anyhow!("{}: sinks.elasticsearch: {e}", config.file.display()))?,
        );
        tracing::info!(%url, "elasticsearch sink started");
        let src = source.clone();
        rejected_task = Some(tokio::spawn(async move {
            while let Some(r) = rrx.recv().await {
                src.dead_letter_document("elasticsearch", &r.doc.index, &r.doc.id, &r.doc.source, &r.reason)
                    .await;
            }
        }));
    }

    let mut alertmanagers = Vec::new();
    for am in &config.config.sinks.alertmanager {
        let name = am.display_name();
        let posted = telemetry
            .alertmanager_alerts
            .get_or_create(&labels([("alertmanager", &name), ("result", "posted")]))
            .clone();
        let failed = telemetry
            .alertmanager_alerts
            .get_or_create(&labels([("alertmanager", &name), ("result", "failed")]))
            .clone();
        let firing = telemetry
            .alerts_firing
            .get_or_create(&labels([("alertmanager", &name)]))
            .clone();
        let sink = AlertmanagerSink::start(am.clone(), AlertmanagerStats { posted, failed, firing })
            .map_err(|e| anyhow::anyhow!("{}: sinks.alertmanager ({name}): {e}", config.file.display()))?;
        tracing::info!(alertmanager = %name, url = %am.url, "alertmanager sink started");
        alertmanagers.push(sink);
    }

    let mut annotator_task = None;
    let mut annotator = None;
    if let Some(g) = &config.config.sinks.grafana {
        let client = GrafanaClient::new(
            &g.url,
            config.grafana_token.clone(),
            Duration::from_millis(g.timeout_ms),
        )
        .map_err(|e| anyhow::anyhow!("{}: sinks.grafana: {e}", config.file.display()))?;
        if g.push_dashboards {
            let (c, folder) = (client.clone(), g.folder_uid.clone());
            tokio::spawn(async move {
                match c.push_all(folder.as_deref()).await {
                    Ok(uids) => tracing::info!(dashboards = ?uids, "grafana dashboards pushed"),
                    Err(e) => tracing::error!(error = %e, "grafana dashboards not pushed"),
                }
            });
        }
        if g.annotations {
            let (a, task) = Annotator::start(client, telemetry.grafana_annotations.clone());
            annotator = Some(a);
            annotator_task = Some(task);
            tracing::info!(url = %g.url, "grafana annotations for alerts and anomalies");
        }
    }

    let (batch_tx, batch_rx) = mpsc::channel::<SourceBatch>(config.config.source.queue_capacity);
    // With exactly-once, checkpoints go in the derived records' transactions.
    let txn_client = producer
        .as_ref()
        .filter(|p| p.transactional())
        .map(DerivedProducer::client);
    let mut router = Router::new(&config, file_tx, remote_write, es, reports, telemetry.clone());
    router.input_partitions = input_partitions;
    router.trace_inputs = trace_inputs;
    router.progress = Some(source.progress());
    router.source = Some(source.clone());
    if derived_moves {
        router.derived_template = Some(oc.derived_config());
        router.derived_home = derived_home;
        if config.config.repartition.changelog {
            let cl = crate::changelog::Changelog::open(&config, txn_client.clone(), "derived").await?;
            tracing::info!(topic = %cl.topic(), "SLA, health, network and capacity state, checkpointed to the changelog");
            router.derived_changelog = Some(Arc::new(cl));
        }
    } else {
        router.derived = derived;
    }
    if let Some(x) = span_metrics_home {
        router.span_metrics_home = Some(x);
        if config.config.repartition.changelog {
            let cl = crate::changelog::Changelog::open(&config, txn_client.clone(), "spanmetrics").await?;
            tracing::info!(topic = %cl.topic(), "span metrics state, checkpointed to the changelog");
            router.span_metrics_changelog = Some(Arc::new(cl));
        }
    }
    router.producer = producer;
    router.derived_view = Some(derived_view);
    router.alerts_view = Some(alerts_view);
    router.window = window;
    router.history = history;
    router.alertmanagers = alertmanagers;
    router.annotator = annotator;
    if !oc.aggregation.rules.is_empty() && config.config.repartition.enabled && config.config.repartition.changelog {
        let cl = crate::changelog::Changelog::open(&config, txn_client.clone(), "aggregate").await?;
        tracing::info!(topic = %cl.topic(), "aggregation windows per series partition, checkpointed to the changelog");
        router.aggregate_changelog = Some(Arc::new(cl));
    }
    if config.config.repartition.enabled && config.config.repartition.changelog {
        let cl = crate::changelog::Changelog::open(&config, txn_client.clone(), "delta").await?;
        tracing::info!(topic = %cl.topic(), "delta-to-cumulative totals per series partition, checkpointed to the changelog");
        router.delta_changelog = Some(Arc::new(cl));
    }
    if oc.anomaly.is_active() && config.config.repartition.enabled {
        router.anomaly_template = Some(oc.anomaly.clone());
        // Checked now, so the per-partition operators cannot fail later.
        dwcp_operators::anomaly::operator::AnomalyOperator::new(oc.anomaly.clone())
            .map_err(|e| anyhow::anyhow!("{}: operators.anomaly.{e}", config.file.display()))?;
        if config.config.repartition.changelog {
            let cl = crate::changelog::Changelog::open(&config, txn_client.clone(), "anomaly").await?;
            tracing::info!(topic = %cl.topic(), "anomaly state per series partition, checkpointed to the changelog");
            router.changelog = Some(Arc::new(cl));
        }
    } else if oc.anomaly.is_active() {
        let mut op = dwcp_operators::anomaly::operator::AnomalyOperator::new(oc.anomaly.clone())
            .map_err(|e| anyhow::anyhow!("{}: operators.anomaly.{e}", config.file.display()))?;
        if let Some(dir) = &oc.state_dir {
            if let Some(state) = load_state(dir, ANOMALY_STATE_FILE)? {
                op.restore(state);
                tracing::info!(dir = %dir.display(), "anomaly state restored from snapshot");
            }
        }
        router.anomaly = Some(op);
    }
    if !config.rule_groups.is_empty() {
        let n: usize = config.rule_groups.iter().map(|g| g.rules.len()).sum();
        tracing::info!(groups = config.rule_groups.len(), rules = n, "rules loaded");
        let mut engine = RuleEngine::new(config.rule_groups.clone(), config.config.rules.max_series);
        engine.prometheus2 = config.config.rules.prometheus_version == 2;
        if let Some((topic, partitions)) = &rule_partitions {
            engine.set_homes(partitions.clone());
            if config.config.repartition.changelog {
                let cl = crate::changelog::Changelog::open(&config, txn_client.clone(), "rules").await?;
                tracing::info!(topic = %cl.topic(), "rule state per series partition, checkpointed to the changelog");
                router.rules_changelog = Some(Arc::new(cl));
            }
            router.rule_homes = Some(RuleHomes {
                topic: topic.clone(),
                partitions: partitions.clone(),
                assignment: source.assignment(),
            });
        }
        router.rules = Some(engine);
    }
    let router = tokio::spawn(router.run(batch_rx));

    let src = source.clone();
    let source_task = tokio::spawn(async move { src.run(batch_tx, shutdown).await });
    source_task.await?;
    router.await?;
    for t in sink_tasks {
        t.await?;
    }
    if let Some(t) = rejected_task {
        t.await?;
    }
    if let Some(t) = annotator_task {
        t.await?;
    }
    source.final_commit();
    let mut sources = vec![source];
    if let Some((rsource, reader, writer)) = repartition_stage {
        reader.await?;
        writer.await?;
        rsource.final_commit();
        sources.push(rsource);
    }
    crate::source::close_within(sources, crate::source::CLOSE_TIMEOUT).await;
    Ok(())
}

/// The operators and the fan-out to sinks, driven by batches and a 500 ms tick.
/// Frees decoded batches on a thread of its own: a batch of OTLP points is thousands of
/// allocations (attribute strings, bucket vectors) made on the source's thread, and freeing
/// them took about a tenth of the router's time, which is the pipeline's one serial stage. The
/// queue is bounded; when it is full (or the thread could not start) the router frees the
/// batch itself.
struct Releaser {
    tx: Option<std::sync::mpsc::SyncSender<Arc<dwcp_schemas::Records>>>,
}

impl Releaser {
    fn new() -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<dwcp_schemas::Records>>(64);
        let started = std::thread::Builder::new()
            .name("dwcp-release".into())
            .spawn(move || while rx.recv().is_ok() {});
        if let Err(e) = &started {
            tracing::warn!(error = %e, "no thread to free batches on; the router frees them");
        }
        Releaser {
            tx: started.ok().map(|_| tx),
        }
    }

    /// Frees `records` on the releaser's thread if this is the last reference.
    fn release(&self, records: Arc<dwcp_schemas::Records>) {
        if Arc::strong_count(&records) > 1 {
            return;
        }
        if let Some(tx) = &self.tx {
            // Full or gone: dropped here, as the error holds it.
            let _ = tx.try_send(records);
        }
    }
}

struct Router {
    /// Frees the decoded batches once they are done with.
    releaser: Releaser,
    watermarks: WatermarkTracker<crate::source::WatermarkKey>,
    /// With repartitioning: the input partitions every internal partition expects data from
    /// (registered with the watermark when the internal partition first shows data), and the
    /// internal partitions already registered.
    input_partitions: Vec<(Arc<str>, i32)>,
    /// Those of them that carry spans: the span-metrics home partition's event time waits for
    /// each (the metric inputs need not send anything there).
    trace_inputs: Vec<(Arc<str>, i32)>,
    /// Input partitions assigned and caught up, from the source: an assigned partition holds
    /// event time until it shows data, is reported empty, or goes idle.
    progress: Option<crate::source::Progress>,
    /// With repartitioning: the series topic, and per partition of it the watermark over the
    /// input partitions and the cross-region aggregation, so a partition read later than
    /// another on this worker (assigned later, or simply fetched later) is not late for the
    /// event time the other reached. Rule groups follow their home partition's watermark.
    series_topic: Option<Arc<str>>,
    partition_marks: std::collections::BTreeMap<i32, WatermarkTracker<(Arc<str>, i32)>>,
    partition_aggregates: std::collections::BTreeMap<i32, AggregateOperator>,
    watermark_config: WatermarkConfig,
    aggregation_config: dwcp_operators::aggregate::AggregationConfig,
    activity: ActivityOperator,
    converter: PromConverter,
    guard: CardinalityGuard,
    aggregate: AggregateOperator,
    traces: TraceOperator,
    span_metrics: SpanMetrics,
    /// With repartitioning: the series partition whose task counts span metrics (from the
    /// re-keying stage's markers), its changelog, and markers that arrived elsewhere (spans
    /// not counted).
    span_metrics_home: Option<i32>,
    span_metrics_changelog: Option<Arc<crate::changelog::Changelog>>,
    span_markers_misrouted: u64,
    trace_out: Vec<TraceOutput>,
    file_tx: Option<mpsc::Sender<Batch>>,
    remote_write: Vec<RemoteWriteSink>,
    es: Option<EsSink>,
    logs_prefix: String,
    spans_prefix: String,
    reports: broadcast::Sender<ActivityReport>,
    telemetry: Arc<Telemetry>,
    /// Counters already reported, to add only the difference.
    reported: Reported,
    /// Metric names seen in `series_dropped` labels; bounded so input cannot grow /metrics.
    dropped_metric_labels: std::collections::HashSet<String>,
    /// SLAs, health, network and capacity, when configured.
    derived: Option<DerivedOperator>,
    /// With repartitioning: the derived operator's configuration; it runs in the task of
    /// series partition `derived_home` (the partition of its inputs' key).
    derived_template: Option<dwcp_operators::derived::DerivedConfig>,
    derived_home: Option<i32>,
    derived_changelog: Option<Arc<crate::changelog::Changelog>>,
    producer: Option<DerivedProducer>,
    derived_view: Option<watch::Sender<Arc<DerivedView>>>,
    alertmanagers: Vec<AlertmanagerSink>,
    annotator: Option<Annotator>,
    rules: Option<RuleEngine>,
    rules_reported: (u64, u64),
    /// Alerts pending or firing, by fingerprint, for the API.
    active_alerts: std::collections::BTreeMap<u64, dwcp_operators::alerts::AlertTransition>,
    alerts_view: Option<watch::Sender<Arc<Vec<dwcp_operators::alerts::AlertTransition>>>>,
    /// The API's PromQL window.
    window: Option<Arc<MetricsWindow>>,
    /// The API's SQL history.
    history: Option<Arc<History>>,
    history_reported: HistoryStats,
    window_reported: (u64, u64),
    anomaly: Option<dwcp_operators::anomaly::operator::AnomalyOperator>,
    /// With repartitioning: state per series partition (moving through the changelogs).
    anomaly_template: Option<dwcp_operators::anomaly::operator::AnomalyOperatorConfig>,
    tasks: std::collections::BTreeMap<i32, PartitionTask>,
    changelog: Option<Arc<crate::changelog::Changelog>>,
    rules_changelog: Option<Arc<crate::changelog::Changelog>>,
    aggregate_changelog: Option<Arc<crate::changelog::Changelog>>,
    delta_changelog: Option<Arc<crate::changelog::Changelog>>,
    source: Option<Arc<KafkaSource>>,
    /// With repartitioning: each rule group's partition of the series topic, and the
    /// partitions this worker owns; a group is evaluated here only when its partition is.
    rule_homes: Option<RuleHomes>,
    anomaly_scores: Vec<dwcp_operators::prom::Sample>,
    /// Episodes to ship, with the series partition whose detectors produced them.
    anomaly_records: Vec<(Option<i32>, dwcp_operators::anomaly::operator::AnomalyRecord)>,
    state_dir: Option<std::path::PathBuf>,
    checkpoint_every: Duration,
    last_checkpoint: std::time::Instant,
    /// Outputs no single record stands for hold the current epoch's token, so a checkpoint
    /// waits until they are accepted (see `changelog`).
    epochs: crate::changelog::Epochs,
}

#[derive(Default)]
struct Reported {
    ignored: u64,
    activity_late: u64,
    aggregate_late: u64,
    aggregate_duplicates: u64,
    prom: dwcp_operators::prom::PromStats,
    traces: TraceStats,
    span_metrics_dropped: u64,
    derived: dwcp_operators::derived::DerivedStats,
}

/// One series partition's state (its anomaly detectors; its rule state lives in the engine) and
/// the offset after the last record it has seen.
struct PartitionTask {
    anomaly: Option<dwcp_operators::anomaly::operator::AnomalyOperator>,
    /// The derived operator, in the task of its home partition.
    derived: Option<DerivedOperator>,
    next_offset: i64,
    /// Per changelog (anomaly, rules, aggregate, delta, derived, span metrics): the generation of the last
    /// checkpoint written or read; the next one goes to the other chunk set, and only a success
    /// moves it on.
    generations: [u64; 6],
    /// Records of the partition below this offset are in the aggregation windows restored
    /// from the changelog: read again (the commit was behind the checkpoint), they are not
    /// added twice.
    aggregate_from: i64,
    /// Records of the partition below this offset are in the derived state restored from the
    /// changelog: read again, they are not counted twice.
    derived_from: i64,
    /// When the partition was assigned (the assignment's instant): another instant means it was
    /// revoked and assigned again, and this state is stale.
    since: Option<std::time::Instant>,
    /// A snapshot waiting for the sinks to accept the outputs of what it covers.
    staged: Option<Staged>,
    /// In the span-metrics home partition: the counts, and per input partition the position
    /// (input offset, index) of the last marker message counted: a replay of either stage
    /// repeats positions already counted.
    span_metrics: Option<SpanMetrics>,
    span_applied: MarkerPositions,
    /// The span inputs' event time, from the markers: the boundaries it passes are emitted.
    span_marks: Option<WatermarkTracker<(Arc<str>, i32)>>,
}

/// Per input partition, the position (input offset, index) of the last marker message counted.
type MarkerPositions = std::collections::BTreeMap<(Arc<str>, i32), (i64, u32)>;
/// One entry of [`MarkerPositions`] (a changelog holds them as a list: JSON keys are text).
type MarkerPosition = ((Arc<str>, i32), (i64, u32));

/// The span-metrics changelog's state: the counts and the marker positions counted.
#[derive(serde::Serialize, serde::Deserialize)]
struct SpanMetricsCheckpoint {
    metrics: dwcp_operators::spanmetrics::SpanMetricsState,
    applied: Vec<MarkerPosition>,
}

/// A partition's snapshot, serialized per changelog, taken when epoch `epoch` ended with the
/// partition's records below `next_offset` processed: it is written once those records are
/// acknowledged and that epoch is done.
struct Staged {
    next_offset: i64,
    epoch: u64,
    parts: Vec<(Log, serde_json::Result<Vec<u8>>)>,
}

/// A changelog record of one operator's state for one partition: the state and the offset of
/// the partition's next record after what it covers.
#[derive(serde::Serialize, serde::Deserialize)]
struct Checkpoint<S> {
    next_offset: i64,
    state: S,
}

/// The changelogs, in the order of `PartitionTask::generations`.
#[derive(Clone, Copy)]
enum Log {
    Anomaly,
    Rules,
    Aggregate,
    Delta,
    Derived,
    SpanMetrics,
}

impl Log {
    const ALL: [Log; 6] = [
        Log::Anomaly,
        Log::Rules,
        Log::Aggregate,
        Log::Delta,
        Log::Derived,
        Log::SpanMetrics,
    ];

    fn name(self) -> &'static str {
        match self {
            Log::Anomaly => "anomaly",
            Log::Rules => "rules",
            Log::Aggregate => "aggregate",
            Log::Delta => "delta",
            Log::Derived => "derived",
            Log::SpanMetrics => "span_metrics",
        }
    }
}

/// What the restores of one partition covered: the lowest offset any checkpoint covers, and
/// each changelog's generation read.
struct Restored {
    next_offset: i64,
    generations: [u64; 6],
}

/// Where each rule group is evaluated when several workers share the series.
struct RuleHomes {
    topic: String,
    partitions: Vec<i32>,
    assignment: crate::source::Assignment,
}

impl RuleHomes {
    /// Per group, since when this worker owns its partition (`None`: it does not).
    fn owned_since(&self) -> Vec<Option<std::time::Instant>> {
        let a = self
            .assignment
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.partitions
            .iter()
            .map(|p| a.get(&(self.topic.clone(), *p)).copied())
            .collect()
    }
}

/// Distinct metric names labelled in `dwcp_series_dropped_total`; further ones count as `other`.
const MAX_DROPPED_METRIC_LABELS: usize = 1000;

impl Router {
    fn new(
        config: &ValidatedConfig,
        file_tx: Option<mpsc::Sender<Batch>>,
        remote_write: Vec<RemoteWriteSink>,
        es: Option<EsSink>,
        reports: broadcast::Sender<ActivityReport>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let es_config = config.config.sinks.elasticsearch.as_ref();
        let logs_prefix = es_config.map_or_else(String::new, |c| c.logs_index_prefix.clone());
        let spans_prefix = es_config.map_or_else(String::new, |c| c.spans_index_prefix.clone());
        let oc = &config.config.operators;
        Router {
            releaser: Releaser::new(),
            watermarks: WatermarkTracker::new(WatermarkConfig {
                allowed_lateness: oc.allowed_lateness_ms * MS,
                idle_timeout: oc.idle_timeout_ms * MS,
                max_future_skew: oc.max_future_skew_ms * MS,
            }),
            input_partitions: Vec::new(),
            trace_inputs: Vec::new(),
            progress: None,
            series_topic: config
                .config
                .repartition
                .enabled
                .then(|| Arc::from(config.config.repartition.series_topic.as_str())),
            partition_marks: std::collections::BTreeMap::new(),
            partition_aggregates: std::collections::BTreeMap::new(),
            watermark_config: WatermarkConfig {
                allowed_lateness: oc.allowed_lateness_ms * MS,
                idle_timeout: oc.idle_timeout_ms * MS,
                max_future_skew: oc.max_future_skew_ms * MS,
            },
            aggregation_config: oc.aggregation.clone(),
            activity: ActivityOperator::new(ActivityConfig {
                window: oc.activity_window_ms * MS,
                dark_after: oc.dark_after_ms * MS,
                max_regions: oc.max_regions,
            }),
            converter: {
                let mut c = PromConverter::new(oc.prometheus.clone());
                c.limit_label_sets(oc.cardinality.max_series_total);
                // The re-keying stage sends each resource's marker to one worker.
                if config.config.repartition.enabled {
                    c.target_info_from_markers();
                }
                c
            },
            guard: CardinalityGuard::new(oc.cardinality),
            aggregate: AggregateOperator::new(oc.aggregation.clone()),
            traces: TraceOperator::new(oc.traces.clone()),
            span_metrics: SpanMetrics::new(oc.span_metrics.clone()),
            span_metrics_home: None,
            span_metrics_changelog: None,
            span_markers_misrouted: 0,
            trace_out: Vec::new(),
            file_tx,
            remote_write,
            es,
            logs_prefix,
            spans_prefix,
            reports,
            telemetry,
            reported: Reported::default(),
            dropped_metric_labels: std::collections::HashSet::new(),
            derived: None,
            derived_template: None,
            derived_home: None,
            derived_changelog: None,
            producer: None,
            derived_view: None,
            alertmanagers: Vec::new(),
            annotator: None,
            rules: None,
            rules_reported: (0, 0),
            active_alerts: std::collections::BTreeMap::new(),
            alerts_view: None,
            window: None,
            window_reported: (0, 0),
            history: None,
            history_reported: HistoryStats::default(),
            anomaly: None,
            anomaly_template: None,
            tasks: std::collections::BTreeMap::new(),
            changelog: None,
            rules_changelog: None,
            aggregate_changelog: None,
            delta_changelog: None,
            source: None,
            rule_homes: None,
            anomaly_scores: Vec::new(),
            anomaly_records: Vec::new(),
            state_dir: oc.state_dir.clone(),
            checkpoint_every: Duration::from_millis(oc.checkpoint_interval_ms),
            last_checkpoint: std::time::Instant::now(),
            epochs: crate::changelog::Epochs::default(),
        }
    }

    async fn run(mut self, mut input: mpsc::Receiver<SourceBatch>) {
        let mut out = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                b = input.recv() => {
                    let Some(b) = b else { break };
                    let records = b.records.clone();
                    self.batch(b, &mut out).await;
                    self.releaser.release(records);
                }
                _ = tick.tick() => {
                    self.track_progress(now_nanos());
                    self.drop_moved_partitions().await;
                    let wm = self.watermarks.watermark(now_nanos());
                    self.telemetry.watermark_seconds.set(i64::try_from(wm / 1_000_000_000).unwrap_or(0));
                    self.activity.on_watermark(wm, &mut out);
                    let mut samples = Vec::new();
                    self.aggregate.on_watermark(wm, &mut samples);
                    self.derive_from(&samples, None, None);
                    self.publish(samples, "aggregated", None).await;
                    let now = now_nanos();
                    let partitions: Vec<i32> = self.partition_aggregates.keys().copied().collect();
                    for x in partitions {
                        let mut samples = Vec::new();
                        if let (Some(agg), Some(m)) = (self.partition_aggregates.get_mut(&x), self.partition_marks.get_mut(&x)) {
                            agg.on_watermark(m.watermark(now), &mut samples);
                        }
                        if !samples.is_empty() {
                            self.derive_from(&samples, Some(x), None);
                            self.publish(samples, "aggregated", None).await;
                        }
                    }
                    self.flush_partition_span_metrics(now).await;
                    self.traces.on_watermark(wm, &mut self.trace_out);
                    self.ship_traces().await;
                    let mut points = Vec::new();
                    self.span_metrics.on_watermark(wm, &mut points);
                    if !points.is_empty() && self.wants_samples() {
                        let mut samples = Vec::new();
                        // Each boundary on its own: its services' target_info at its time.
                        for flush in points.chunk_by(|a, b| a.time_unix_nano == b.time_unix_nano) {
                            self.converter.convert(flush, &mut samples);
                        }
                        self.derive_from(&samples, None, None);
                        self.publish(samples, "span_metrics", None).await;
                    }
                    self.close_derived(wm).await;
                    self.evaluate_rules(wm).await;
                    self.ship_anomalies().await;
                    if self.last_checkpoint.elapsed() >= self.checkpoint_every {
                        self.checkpoint().await;
                    } else {
                        // Snapshots whose outputs the sinks have accepted since go now.
                        self.checkpoint_changelog(false).await;
                    }
                    if let (Some(w), true) = (&self.window, wm > 0) {
                        w.trim(i64::try_from(wm / MS).unwrap_or(i64::MAX));
                    }
                    if let Some(h) = &self.history {
                        h.trim();
                    }
                    let stale = self.guard.expire();
                    self.publish_admitted(stale, "stale", None).await;
                }
            }
            self.report(&mut out);
        }
        // Input closed: flush every window, then drain the sinks.
        self.activity.on_close(&mut out);
        let mut samples = Vec::new();
        self.aggregate.on_watermark(EventTime::MAX, &mut samples);
        // With a changelog, a series partition's open windows are not complete: they stay
        // open in its last checkpoint, and its commits wait there, so whoever reads the
        // partition next closes them with all their points.
        if self.aggregate_changelog.is_none() {
            for agg in self.partition_aggregates.values_mut() {
                agg.on_watermark(EventTime::MAX, &mut samples);
            }
        }
        self.publish(samples, "aggregated", None).await;
        self.report(&mut out);
        self.traces.on_watermark(EventTime::MAX / 2, &mut self.trace_out);
        self.ship_traces().await;
        // Open minutes of the derived operator stay open: they are not complete. Its state is
        // snapshotted so a restart continues them.
        self.checkpoint().await;
        // Exactly-once records go out with the final checkpoints, below.
        if let Some(p) = self.producer.take_if(|p| !p.transactional()) {
            let _ = tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(10))).await;
        }
        for am in std::mem::take(&mut self.alertmanagers) {
            am.close().await;
        }
        drop(self.file_tx.take());
        for sink in std::mem::take(&mut self.remote_write) {
            sink.close().await;
        }
        if let Some(es) = self.es.take() {
            es.close().await;
        }
        // Every output is accepted (or refused for good) now: the snapshots waiting, then the
        // partitions' final state, go to the changelogs, so the next owner starts from here.
        self.checkpoint_changelog(false).await;
        self.checkpoint_changelog(true).await;
        self.checkpoint_changelog(false).await;
        if let Some(p) = self.producer.take() {
            let waiting = p.waiting();
            if waiting > 0 {
                tracing::warn!(waiting, "derived records not committed at the stop: their partitions' next owners make them again from the last checkpoint");
            }
            let _ = tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(10))).await;
        }
    }

    /// Sends the spans of sampled traces (and late spans of sampled traces) to Elasticsearch in
    /// Jaeger's format; not-sampled ones are dropped here, by decision.
    async fn ship_traces(&mut self) {
        let outputs = std::mem::take(&mut self.trace_out);
        let hops: usize = outputs
            .iter()
            .map(|o| match o {
                TraceOutput::Trace(t) => t.hops.len(),
                TraceOutput::LateSpan { .. } => 0,
            })
            .sum();
        self.telemetry.cross_region_hops.inc_by(hops as u64);
        if let Some(d) = &mut self.derived {
            for o in &outputs {
                if let TraceOutput::Trace(t) = o {
                    let end = t.spans.iter().map(|s| s.end_time_unix_nano).max().unwrap_or(0);
                    for h in &t.hops {
                        d.hop(&h.from, &h.to, h.latency_ns, end);
                    }
                }
            }
        }
        let Some(es) = &self.es else { return };
        let mut docs = Vec::new();
        for o in &outputs {
            match o {
                TraceOutput::Trace(t) if t.decision == Decision::Sampled => {
                    docs.extend(t.spans.iter().map(|s| jaeger_span(s, &self.spans_prefix)));
                }
                TraceOutput::LateSpan {
                    span,
                    decision: Decision::Sampled,
                } => docs.push(jaeger_span(span, &self.spans_prefix)),
                _ => {}
            }
        }
        // No epoch token: no checkpoint holds trace state, so an Elasticsearch outage does not
        // hold the checkpoints back.
        es.send(docs, None).await;
    }

    /// Registers newly assigned input partitions with the watermark and releases the ones
    /// reported empty.
    fn track_progress(&mut self, now: EventTime) {
        let Some(p) = &self.progress else { return };
        let mut p = p.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (t, part) in p.assigned.drain(..) {
            self.watermarks.register(&(Arc::from(t.as_str()), part, -1), now);
        }
        for (t, part) in &p.caught_up {
            self.watermarks.release(&(Arc::from(t.as_str()), *part, -1));
        }
    }

    async fn batch(&mut self, b: SourceBatch, out: &mut Vec<ActivityReport>) {
        let now = now_nanos();
        self.track_progress(now);
        let series_partition = self
            .series_topic
            .as_ref()
            .filter(|t| ***t == *b.topic)
            .map(|_| b.partition);
        // A series batch read before its partition's current assignment (queued while the
        // partition moved away, or away and back): its owner reads it again from the committed
        // offset, with the partition's state. Processed here it would start that state afresh
        // from the middle (a delta total from 0, say) and move the commit limit past what the
        // state covers.
        if let Some(x) = series_partition {
            if self.assigned_since(x).is_none_or(|since| b.received < since) {
                tracing::debug!(
                    partition = x,
                    offset = b.ack.id(),
                    "batch from an earlier assignment skipped"
                );
                self.telemetry
                    .series_batches_skipped
                    .get_or_create(&labels([("reason", "earlier_assignment")]))
                    .inc();
                return;
            }
        }
        self.watermarks
            .observe_all(&b.watermark_key, event_times(&b.records), now);
        // The re-keying stage's span-metrics counts of one input message: numbered (only they
        // carry an input position), so a metric of the same name in the input is not one.
        let span_markers = b.source_position.is_some()
            && matches!(&*b.records, Records::Metrics(points)
                if points.first().is_some_and(|p| p.metric.name == dwcp_operators::spanmetrics::MARKER));
        if let Some(x) = series_partition {
            // Revoked and assigned again since its state was opened: start over from the
            // changelog (the state here missed what the other owner did).
            if self.tasks.get(&x).is_some_and(|t| t.since != self.assigned_since(x)) {
                self.drop_moved_partitions().await;
            }
            let (config, inputs) = (self.watermark_config, &self.input_partitions);
            let mark = self.partition_marks.entry(x).or_insert_with(|| {
                // Every input partition is expected here: until each shows data (or goes idle)
                // event time waits, so one read first is not ahead of the rest.
                let mut w = WatermarkTracker::new(config);
                for (t, p) in inputs {
                    w.register(&(t.clone(), *p), now);
                }
                w
            });
            // Span inputs send this partition nothing else: they do not hold its event time
            // (the span-metrics counts follow their own, `span_marks`).
            if !span_markers {
                mark.observe_all(
                    &(b.watermark_key.0.clone(), b.watermark_key.1),
                    event_times(&b.records),
                    now,
                );
            }
            #[allow(clippy::cast_possible_wrap)]
            let offset = b.ack.id() as i64;
            self.open_partition_task(x, offset).await;
            // Moved (and maybe back) while its state was read back: that state may be behind
            // what another owner did meanwhile, and this batch is from before the current
            // assignment; drop both, the owner reads it again from the committed offset.
            if self.assigned_since(x).is_none_or(|since| b.received < since)
                || self.tasks.get(&x).is_some_and(|t| t.since != self.assigned_since(x))
            {
                self.telemetry
                    .series_batches_skipped
                    .get_or_create(&labels([("reason", "moved_during_restore")]))
                    .inc();
                self.drop_moved_partitions().await;
                return;
            }
            if let Some(t) = self.tasks.get_mut(&x) {
                t.next_offset = t.next_offset.max(offset + 1);
            }
        }
        // A resource's target_info marker (repartitioning): its series, and nothing else.
        if let Records::Metrics(points) = &*b.records {
            if points
                .first()
                .is_some_and(|p| p.metric.name == dwcp_operators::prom::TARGET_INFO_MARKER)
            {
                let mut samples = Vec::new();
                self.converter.convert_markers(points, &mut samples);
                self.publish(samples, "target_info", Some(&b.ack)).await;
                return;
            }
            if let (Some(x), true) = (series_partition, span_markers) {
                self.merge_span_markers(x, &b, points);
                return;
            }
        }
        #[allow(clippy::cast_possible_wrap)]
        let aggregated_already = series_partition
            .and_then(|x| self.tasks.get(&x))
            .is_some_and(|t| (b.ack.id() as i64) < t.aggregate_from);
        self.activity.process(&b.records, out);
        if let Records::Metrics(points) = &*b.records {
            if self.wants_samples() {
                let mut samples = Vec::new();
                self.converter.convert_from(points, series_partition, &mut samples);
                #[allow(clippy::cast_possible_wrap)]
                self.derive_from(&samples, series_partition, Some(b.ack.id() as i64));
                self.publish(samples, "converted", Some(&b.ack)).await;
                // Anomaly scores go out with the samples they score (and their offsets wait for
                // them), so a receiver sees them in time order with the raw series.
                let scores = std::mem::take(&mut self.anomaly_scores);
                self.publish(scores, "anomaly", Some(&b.ack)).await;
                // An episode that opened (or ended) in this batch goes out now, not at the tick.
                self.ship_anomaly_records();
            }
            match series_partition {
                Some(_) if aggregated_already => {}
                Some(x) => {
                    let config = &self.aggregation_config;
                    self.partition_aggregates
                        .entry(x)
                        .or_insert_with(|| AggregateOperator::new(config.clone()))
                        .process(points);
                }
                None => self.aggregate.process(points),
            }
        }
        // A rule group whose time has come is evaluated now, not at the next tick: alert
        // latency is then the group's interval boundary, not the tick.
        if matches!(&*b.records, Records::Metrics(_)) && self.rules.is_some() {
            let wm = self.watermarks.watermark(now);
            let wms = self.rule_watermarks(wm, now);
            if self.rules.as_ref().is_some_and(|r| r.due_at(&wms)) {
                // The minutes of the SLA/health operators this event time closes first: a rule
                // reading their series (dwcp_sla_compliance_ratio) then sees the same samples
                // however batches and ticks interleave.
                self.close_derived(wm).await;
                self.evaluate_rules(wm).await;
            }
        }
        if let Records::Traces(spans) = &*b.records {
            // With repartitioning the re-keying stage counts them (markers to the home partition).
            if self.series_topic.is_none() {
                self.span_metrics
                    .set_horizon(now.saturating_add(self.watermark_config.max_future_skew));
                self.span_metrics.process(spans);
            }
            let wm = self.watermarks.watermark(now);
            self.traces.process(spans, wm, &mut self.trace_out);
            self.ship_traces().await;
        }
        if let (Records::Logs(logs), Some(es)) = (&*b.records, &self.es) {
            let docs = logs.iter().map(|l| log_document(l, &self.logs_prefix)).collect();
            es.send(docs, Some(&b.ack)).await;
        }
        if let Some(tx) = &self.file_tx {
            self.telemetry
                .sink_queue_depth
                .get_or_create(&labels([("sink", "file")]))
                .set(i64::try_from(tx.max_capacity() - tx.capacity()).unwrap_or(0));
            // Awaiting here is the backpressure: a slow sink slows the source.
            if tx
                .send(Batch {
                    records: b.records.clone(),
                    ack: b.ack.clone(),
                })
                .await
                .is_err()
            {
                tracing::error!("file sink is gone; its records are not written");
            }
        }
        let out = labels([("topic", &b.topic), ("signal", b.records.signal().as_str())]);
        self.telemetry
            .records_out
            .get_or_create(&out)
            .inc_by(b.records.len() as u64);
    }

    /// Counts a marker message of the re-keying stage in partition `x`'s span metrics, unless
    /// its position was counted already (a replay).
    fn merge_span_markers(&mut self, x: i32, b: &SourceBatch, points: &[dwcp_schemas::model::MetricPoint]) {
        let Some(t) = self.tasks.get_mut(&x) else { return };
        let Some(op) = t.span_metrics.as_mut() else {
            let calls: u64 = points
                .iter()
                .map(|p| match p.value {
                    dwcp_schemas::model::PointValue::Histogram { count, .. } => count,
                    _ => 0,
                })
                .sum();
            self.span_markers_misrouted += calls;
            tracing::warn!(
                partition = x,
                spans = calls,
                "span-metrics counts for a partition that does not keep them (workers configured differently?); not counted"
            );
            return;
        };
        let source = (b.watermark_key.0.clone(), b.watermark_key.1);
        if let Some(position) = b.source_position {
            if t.span_applied.get(&source).is_some_and(|last| position <= *last) {
                // Counted already (a replay; or an input partition whose offsets started over,
                // counted until they pass the last position).
                self.telemetry
                    .duplicate_points
                    .get_or_create(&labels([("operator", "span_metrics")]))
                    .inc_by(points.len() as u64);
                return;
            }
            t.span_applied.insert(source.clone(), position);
        }
        if let Some(w) = t.span_marks.as_mut() {
            w.observe_all(&source, points.iter().map(|p| p.time_unix_nano), now_nanos());
        }
        op.set_horizon(now_nanos().saturating_add(self.watermark_config.max_future_skew));
        let refused = op.merge_markers(points);
        if refused > 0 {
            tracing::warn!(
                partition = x,
                points = refused,
                "span-metrics markers of another shape (another configuration?) not counted"
            );
        }
    }

    /// Emits the home partition's span metrics at the boundaries its watermark passed.
    async fn flush_partition_span_metrics(&mut self, now: EventTime) {
        let Some(x) = self.span_metrics_home else { return };
        let mut points = Vec::new();
        if let Some(t) = self.tasks.get_mut(&x) {
            if let (Some(op), Some(w)) = (t.span_metrics.as_mut(), t.span_marks.as_mut()) {
                op.on_watermark(w.watermark(now), &mut points);
            }
        }
        if !points.is_empty() && self.wants_samples() {
            let mut samples = Vec::new();
            for flush in points.chunk_by(|a, b| a.time_unix_nano == b.time_unix_nano) {
                self.converter.convert_from(flush, Some(x), &mut samples);
                // The keyed stage writes `target_info` from markers only: these are the
                // services', one each per boundary, as one worker writes them.
                let markers = dwcp_operators::prom::target_info_markers(flush);
                self.converter.convert_markers(&markers, &mut samples);
            }
            self.derive_from(&samples, Some(x), None);
            self.publish(samples, "span_metrics", None).await;
        }
    }

    /// Whether anything reads Prometheus samples.
    fn wants_samples(&self) -> bool {
        !self.remote_write.is_empty()
            || self.derived.is_some()
            || self.derived_template.is_some()
            || self.rules.is_some()
            || self.anomaly.is_some()
            || self.anomaly_template.is_some()
            || self.window.is_some()
    }

    /// Feeds samples to the operators downstream of conversion; `partition`: the internal
    /// series partition they came from (their anomaly state is that partition's); `offset`: the
    /// offset of the record they were converted from (`None`: an operator's output).
    fn derive_from(&mut self, samples: &[dwcp_operators::prom::Sample], partition: Option<i32>, offset: Option<i64>) {
        if let Some(d) = &mut self.derived {
            d.process(samples);
        }
        if let Some(t) = partition
            .filter(|x| self.derived_home == Some(*x))
            .and_then(|x| self.tasks.get_mut(&x))
        {
            // A record below the restored checkpoint is in its state already.
            if let (Some(d), true) = (&mut t.derived, offset.is_none_or(|o| o >= t.derived_from)) {
                d.process(samples);
            }
        }
        if let Some(r) = &mut self.rules {
            match partition {
                Some(x) => r.process_from(samples, x),
                None => r.process(samples),
            }
        }
        match partition
            .and_then(|x| self.tasks.get_mut(&x))
            .and_then(|t| t.anomaly.as_mut())
        {
            Some(op) => {
                let mut records = Vec::new();
                op.process(samples, &mut self.anomaly_scores, &mut records);
                self.anomaly_records.extend(records.into_iter().map(|r| (partition, r)));
            }
            None => {
                if let Some(a) = &mut self.anomaly {
                    let mut records = Vec::new();
                    a.process(samples, &mut self.anomaly_scores, &mut records);
                    self.anomaly_records.extend(records.into_iter().map(|r| (None, r)));
                }
            }
        }
    }

    /// With repartitioning: the state of series partition `x` (its anomaly detectors, its part
    /// of the rule engine), opened at its first record (`offset`): read back from the
    /// changelogs when there are any, and the partition's commits held at `offset` until its
    /// first checkpoint.
    async fn open_partition_task(&mut self, x: i32, offset: i64) {
        let home = self.derived_home == Some(x);
        let spans_home = self.span_metrics_home == Some(x);
        if self.tasks.contains_key(&x)
            || (self.anomaly_template.is_none() && !self.has_changelog() && !home && !spans_home)
        {
            return;
        }
        // A batch still queued from a partition revoked meanwhile: its new owner has the state.
        // The assignment the state is read back for: if the partition moves while the reads
        // below wait, the task is stale and `batch` drops it.
        let Some(since) = self.assigned_since(x) else {
            return;
        };
        let mut anomaly = None;
        if let Some(config) = &self.anomaly_template {
            match dwcp_operators::anomaly::operator::AnomalyOperator::new(config.clone()) {
                Ok(op) => anomaly = Some(op),
                // Checked at startup with the same configuration.
                Err(e) => tracing::error!(error = %e, "anomaly operator not created"),
            }
        }
        let mut r = Restored {
            next_offset: offset,
            generations: [0; 6],
        };
        let mut derived = None;
        if let (true, Some(config)) = (home, &self.derived_template) {
            match DerivedOperator::new(config.clone()) {
                Ok(op) => derived = Some(op),
                // Checked at startup with the same configuration.
                Err(e) => tracing::error!(error = %e, "derived operator not created"),
            }
        }
        let mut derived_from = 0;
        let cl = self.derived_changelog.clone().filter(|_| derived.is_some());
        if let Some(c) = self.restore_step::<DerivedState>(cl, Log::Derived, x, &mut r).await {
            if let Some(op) = derived.as_mut() {
                op.restore(c.state);
                // Its counts so far were reported by the worker that made them.
                self.reported.derived = op.stats();
            }
            derived_from = c.next_offset;
        }
        let cl = self.changelog.clone().filter(|_| anomaly.is_some());
        if let Some(c) = self.restore_step(cl, Log::Anomaly, x, &mut r).await {
            if let Some(op) = anomaly.as_mut() {
                op.restore(c.state);
            }
        }
        if let Some(c) = self
            .restore_step(self.rules_changelog.clone(), Log::Rules, x, &mut r)
            .await
        {
            if let Some(rules) = &mut self.rules {
                rules.restore_partition(x, c.state);
            }
            self.take_over_alerts(x).await;
        }
        let mut aggregate_from = 0;
        let cl = self.aggregate_changelog.clone();
        if let Some(c) = self.restore_step(cl, Log::Aggregate, x, &mut r).await {
            let mut op = AggregateOperator::new(self.aggregation_config.clone());
            op.restore(c.state);
            // Its counts so far were reported by the worker that made them.
            self.reported.aggregate_late += op.late();
            self.reported.aggregate_duplicates += op.duplicates();
            self.partition_aggregates.insert(x, op);
            aggregate_from = c.next_offset;
        }
        if let Some(c) = self
            .restore_step(self.delta_changelog.clone(), Log::Delta, x, &mut r)
            .await
        {
            self.converter.restore_partition(x, c.state);
        }
        let mut span_metrics = None;
        let mut span_applied = std::collections::BTreeMap::new();
        let mut span_marks = None;
        if spans_home {
            let mut w = WatermarkTracker::new(self.watermark_config);
            let now = now_nanos();
            for (t, p) in &self.trace_inputs {
                w.register(&(t.clone(), *p), now);
            }
            span_marks = Some(w);
            let mut op = SpanMetrics::new(self.span_metrics.config().clone());
            let cl = self.span_metrics_changelog.clone();
            if let Some(c) = self
                .restore_step::<SpanMetricsCheckpoint>(cl, Log::SpanMetrics, x, &mut r)
                .await
            {
                op.restore(c.state.metrics);
                span_applied = c.state.applied.into_iter().collect();
                // Its count of dropped spans was reported by the worker that made it.
                self.reported.span_metrics_dropped += op.dropped();
            }
            span_metrics = Some(op);
        }
        if r.next_offset < offset {
            // The commit never passes a checkpoint, so the partition's reads should begin at or
            // below what its latest one covers: the broker skipped records (Tansu 0.6.0 does,
            // from a committed offset inside a record batch), or the changelog read back is
            // behind the committed offset. Either way the state misses these records.
            tracing::warn!(
                partition = x,
                covers_offset = r.next_offset,
                first_offset = offset,
                "the first record read of a series partition lies past what its restored state covers: \
                 the records between were never read here and their samples are missing"
            );
            #[allow(clippy::cast_sign_loss)]
            self.telemetry
                .series_offsets_unread
                .inc_by((offset - r.next_offset) as u64);
        }
        let moving = self.has_changelog();
        if let (Some(src), Some(topic), true) = (&self.source, &self.series_topic, moving) {
            src.limit_commits(topic, x, offset.min(r.next_offset));
        }
        self.tasks.insert(
            x,
            PartitionTask {
                anomaly,
                derived,
                next_offset: offset,
                generations: r.generations,
                since: Some(since),
                aggregate_from,
                derived_from,
                staged: None,
                span_metrics,
                span_applied,
                span_marks,
            },
        );
    }

    /// Reads partition `x`'s latest checkpoint of `log` from `cl` (none: that operator keeps
    /// no changelog here) and records what it covers in `r`.
    async fn restore_step<S: serde::de::DeserializeOwned>(
        &self,
        cl: Option<Arc<crate::changelog::Changelog>>,
        log: Log,
        x: i32,
        r: &mut Restored,
    ) -> Option<Checkpoint<S>> {
        let (g, c) = self.restore::<Checkpoint<S>>(cl.as_deref()?, log.name(), x).await?;
        tracing::info!(
            partition = x,
            operator = log.name(),
            covers_offset = c.next_offset,
            first_offset = r.next_offset,
            "state restored from the changelog"
        );
        r.next_offset = r.next_offset.min(c.next_offset);
        r.generations[log as usize] = g;
        Some(c)
    }

    /// Whether any operator's state goes to a changelog (anomaly, rules, aggregate, delta,
    /// derived).
    fn has_changelog(&self) -> bool {
        Log::ALL.into_iter().any(|log| self.changelog_of(log).is_some())
    }

    /// Since when this worker owns series partition `x` (`None`: it does not).
    fn assigned_since(&self, x: i32) -> Option<std::time::Instant> {
        let (Some(src), Some(topic)) = (&self.source, &self.series_topic) else {
            return None;
        };
        let a = src.assignment();
        let a = a.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        a.get(&(topic.to_string(), x)).copied()
    }

    /// Forgets the per-partition state of series partitions this worker no longer owns, or
    /// owns again since a later assignment (their new owner, or this one anew, starts from the
    /// changelog): the watermark, the aggregation windows and the anomaly state.
    async fn drop_moved_partitions(&mut self) {
        let (Some(src), Some(topic)) = (&self.source, &self.series_topic) else {
            return;
        };
        let moved: std::collections::BTreeSet<i32> = {
            let a = src.assignment();
            let a = a.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let owned = |x: &i32| a.get(&(topic.to_string(), *x)).copied();
            self.partition_marks
                .keys()
                .chain(self.tasks.keys())
                .copied()
                .filter(|x| match (owned(x), self.tasks.get(x)) {
                    (None, _) => true,
                    (Some(since), Some(t)) => t.since != Some(since),
                    (Some(_), None) => false,
                })
                .collect()
        };
        for x in moved {
            if self.partition_marks.remove(&x).is_some() | self.tasks.remove(&x).is_some() {
                tracing::info!(partition = x, "series partition moved: its state here is dropped");
            }
            self.hand_over_alerts(x).await;
            if let Some(rules) = &mut self.rules {
                rules.drop_partition(x, false);
            }
            self.partition_aggregates.remove(&x);
            self.converter.drop_partition(x);
        }
    }

    /// The alerts of partition `x`'s rule groups, restored from the changelog: listed by the
    /// API, and the firing ones posted to the Alertmanagers now and re-posted from here on (the
    /// worker that had them stopped re-posting them).
    async fn take_over_alerts(&mut self, x: i32) {
        let Some(rules) = &self.rules else { return };
        let restored = rules.active_alerts_in(x);
        if restored.is_empty() {
            return;
        }
        for a in &restored {
            self.active_alerts.insert(a.fingerprint, a.clone());
        }
        if let Some(v) = &self.alerts_view {
            v.send_replace(Arc::new(self.active_alerts.values().cloned().collect()));
        }
        let firing: Vec<_> = restored.into_iter().filter(|a| a.state == AlertState::Firing).collect();
        tracing::info!(
            partition = x,
            firing = firing.len(),
            "alerts taken over with their partition"
        );
        for am in &self.alertmanagers {
            am.send(firing.clone()).await;
        }
    }

    /// Partition `x` moved to another worker: its rule groups' alerts are its now (not listed
    /// here, not re-posted from here, not resolved).
    async fn hand_over_alerts(&mut self, x: i32) {
        let Some(rules) = &self.rules else { return };
        let gone: Vec<u64> = rules.active_alerts_in(x).iter().map(|a| a.fingerprint).collect();
        if gone.is_empty() {
            return;
        }
        for f in &gone {
            self.active_alerts.remove(f);
        }
        if let Some(v) = &self.alerts_view {
            v.send_replace(Arc::new(self.active_alerts.values().cloned().collect()));
        }
        for am in &self.alertmanagers {
            am.forget(gone.clone()).await;
        }
    }

    /// Reads partition `x`'s latest checkpoint from `cl`, counted and timed under `operator`.
    async fn restore<T: serde::de::DeserializeOwned>(
        &self,
        cl: &crate::changelog::Changelog,
        operator: &str,
        x: i32,
    ) -> Option<(u64, T)> {
        let started = std::time::Instant::now();
        let (result, value) = match cl.read(x).await {
            Ok(Some((g, bytes))) => match serde_json::from_slice::<T>(&bytes) {
                Ok(c) => ("restored", Some((g, c))),
                Err(e) => {
                    tracing::error!(partition = x, error = %e, topic = %cl.topic(), "changelog record is not a checkpoint of this version; starting empty");
                    ("failed", None)
                }
            },
            Ok(None) => ("empty", None),
            Err(e) => {
                tracing::error!(partition = x, error = %e, topic = %cl.topic(), "changelog not readable; starting empty");
                ("failed", None)
            }
        };
        self.telemetry
            .changelog_restores
            .get_or_create(&labels([("operator", operator), ("result", result)]))
            .inc();
        self.telemetry
            .changelog_restore_seconds
            .get_or_create(&labels([("operator", operator)]))
            .set(started.elapsed().as_secs_f64());
        value
    }

    /// Writes each owned series partition's staged snapshot to the changelogs once the sinks
    /// have accepted every output of what it covers; the partition's commits then advance to
    /// what it covers (only when every changelog took it). With `stage`, partitions with no
    /// snapshot waiting take one, and the epoch ends. Partitions no longer owned are dropped
    /// (their new owner reads the last checkpoint written).
    async fn checkpoint_changelog(&mut self, stage: bool) {
        let (Some(topic), Some(src)) = (self.series_topic.clone(), self.source.clone()) else {
            return;
        };
        if !self.has_changelog() {
            return;
        }
        let owned = src.assignment();
        {
            let owned = owned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            self.tasks.retain(|x, _| owned.contains_key(&(topic.to_string(), *x)));
        }
        let started = std::time::Instant::now();
        // Per operator: (written, failed, bytes).
        let mut stats: std::collections::BTreeMap<&'static str, (usize, usize, usize)> =
            std::collections::BTreeMap::new();
        let transactional = self.producer.as_ref().is_some_and(DerivedProducer::transactional);
        if let (true, Some(p)) = (transactional, &self.producer) {
            // Records of partitions moved away: their new owner makes them again.
            p.forget(|x| self.tasks.contains_key(&x));
        }
        let epoch = self.epochs.token().id();
        let mut staged_any = false;
        let mut in_transaction = Vec::new();
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for x in partitions {
            let ready = self.tasks.get(&x).and_then(|t| t.staged.as_ref()).is_some_and(|s| {
                self.epochs.done_through(s.epoch) && src.acknowledged(&topic, x).is_some_and(|a| a >= s.next_offset)
            });
            if let Some(staged) = self.tasks.get_mut(&x).and_then(|t| t.staged.take_if(|_| ready)) {
                if transactional {
                    in_transaction.push((x, staged));
                } else if self.write_staged(x, staged.parts, &mut stats).await {
                    src.limit_commits(&topic, x, staged.next_offset);
                }
            }
            if stage && self.tasks.get(&x).is_some_and(|t| t.staged.is_none()) {
                let staged = self.snapshot_partition(x, epoch);
                if let Some(t) = self.tasks.get_mut(&x) {
                    t.staged = staged;
                    staged_any = true;
                }
            }
        }
        if !in_transaction.is_empty() {
            self.commit_checkpoints(&topic, &src, in_transaction, &mut stats).await;
        }
        if staged_any {
            self.epochs.end();
        }
        if let Some(p) = &self.producer {
            self.telemetry
                .derived_records_waiting
                .set(i64::try_from(p.waiting()).unwrap_or(i64::MAX));
        }
        self.telemetry
            .changelog_checkpoints_waiting
            .set(i64::try_from(self.tasks.values().filter(|t| t.staged.is_some()).count()).unwrap_or(i64::MAX));
        let t = &self.telemetry;
        let now_s = i64::try_from(now_nanos() / 1_000_000_000).unwrap_or(0);
        for (operator, (written, failed, bytes)) in stats {
            let op = labels([("operator", operator)]);
            t.changelog_checkpoints
                .get_or_create(&labels([("operator", operator), ("result", "written")]))
                .inc_by(written as u64);
            if failed > 0 {
                t.changelog_checkpoints
                    .get_or_create(&labels([("operator", operator), ("result", "failed")]))
                    .inc_by(failed as u64);
            }
            t.changelog_checkpoint_seconds
                .get_or_create(&op)
                .set(started.elapsed().as_secs_f64());
            t.changelog_checkpoint_bytes
                .get_or_create(&op)
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            if written > 0 {
                t.changelog_last_checkpoint.get_or_create(&op).set(now_s);
            }
        }
    }

    /// Ships anomaly scores (remote-write) and episodes as they open and end (the anomalies
    /// topic, Grafana; the SQL history keeps the ended ones).
    async fn ship_anomalies(&mut self) {
        if self.anomaly.is_none() && self.anomaly_template.is_none() {
            return;
        }
        let tracked = self.anomaly.as_ref().map_or(0, |a| a.tracked())
            + self
                .tasks
                .values()
                .filter_map(|t| t.anomaly.as_ref())
                .map(dwcp_operators::anomaly::operator::AnomalyOperator::tracked)
                .sum::<usize>();
        self.telemetry
            .anomaly_series
            .set(i64::try_from(tracked).unwrap_or(i64::MAX));
        self.ship_anomaly_records();
        let scores = std::mem::take(&mut self.anomaly_scores);
        self.publish(scores, "anomaly", None).await;
    }

    /// Episodes as they open and end: the anomalies topic, Grafana, the SQL history (the ended
    /// ones).
    fn ship_anomaly_records(&mut self) {
        let tagged = std::mem::take(&mut self.anomaly_records);
        if !tagged.is_empty() {
            let epoch = self.epochs.token().id();
            if let Some(p) = &self.producer {
                for by_partition in tagged.chunk_by(|a, b| a.0 == b.0) {
                    let records: Vec<_> = by_partition.iter().map(|(_, r)| r.clone()).collect();
                    let origin = Origin {
                        partition: by_partition[0].0,
                        epoch,
                    };
                    p.publish_anomalies(&records, Some(self.epochs.token()), origin);
                }
            }
            let records: Vec<_> = tagged.into_iter().map(|(_, r)| r).collect();
            for r in &records {
                if r.closed {
                    self.telemetry.anomaly_episodes.inc();
                    tracing::info!(series = %r.series(), score = r.episode.peak_score, detectors = ?r.episode.detectors, "anomaly episode ended");
                } else {
                    tracing::info!(series = %r.series(), score = r.episode.peak_score, detectors = ?r.episode.detectors, "anomaly episode opened");
                }
                if let Some(a) = &self.annotator {
                    a.send(Note::Anomaly(Box::new(r.clone())));
                }
            }
            if let Some(h) = &self.history {
                let ended: Vec<_> = records.iter().filter(|r| r.closed).cloned().collect();
                h.anomalies(&ended);
            }
        }
    }

    /// Evaluates the rule groups due at the watermark; ships alerts and recorded series.
    /// Per rule group, the event time it has reached: the worker's watermark, or with
    /// repartitioning its home partition's. A home partition owned but silent for the idle
    /// timeout follows the worker's (so `absent()` of a metric no one sends still fires).
    fn rule_watermarks(&mut self, wm: EventTime, now: EventTime) -> Vec<EventTime> {
        let Some(rules) = &self.rules else { return Vec::new() };
        let Some(h) = &self.rule_homes else {
            return vec![wm; rules.groups().len()];
        };
        let idle = Duration::from_nanos(self.watermark_config.idle_timeout);
        let since = h.owned_since();
        h.partitions
            .iter()
            .zip(since)
            .map(|(x, since)| match (since, self.partition_marks.get_mut(x)) {
                // Not evaluated here: the worker's event time, so it does not hold back the
                // trimming of the engine's series.
                (None, _) => wm,
                (Some(_), Some(m)) => m.watermark(now),
                (Some(s), None) if s.elapsed() >= idle => wm,
                (Some(_), None) => 0,
            })
            .collect()
    }

    async fn evaluate_rules(&mut self, wm: EventTime) {
        let wms = self.rule_watermarks(wm, now_nanos());
        let Some(rules) = &mut self.rules else { return };
        if let Some(h) = &self.rule_homes {
            rules.set_owned(Some(h.owned_since().iter().map(Option::is_some).collect()));
        }
        let started = std::time::Instant::now();
        let mut out = RuleOutput::default();
        rules.on_watermarks(&wms, &mut out);
        let t = &self.telemetry;
        if out.evaluations > 0 {
            t.rule_eval_seconds.set(started.elapsed().as_secs_f64());
        }
        t.rule_evaluations.inc_by(out.evaluations);
        for (group, rule, error) in &out.errors {
            tracing::warn!(%group, %rule, %error, "rule evaluation failed");
            t.rule_failures
                .get_or_create(&labels([("group", group), ("rule", rule)]))
                .inc();
        }
        let store = rules.store();
        t.rule_series.set(i64::try_from(store.len()).unwrap_or(i64::MAX));
        let (ooo, dropped) = (store.out_of_order, store.dropped_series);
        t.rule_samples_dropped
            .get_or_create(&labels([("reason", "out_of_order")]))
            .inc_by(ooo - self.rules_reported.0);
        t.rule_samples_dropped
            .get_or_create(&labels([("reason", "series_limit")]))
            .inc_by(dropped - self.rules_reported.1);
        self.rules_reported = (ooo, dropped);
        self.ship_alerts(&out.alerts, false).await;
        self.publish(out.samples, "rules", None).await;
    }

    /// Alert state changes to the log, /metrics, the alerts topic and every Alertmanager.
    async fn ship_alerts(&mut self, alerts: &[dwcp_operators::alerts::AlertTransition], derived: bool) {
        if alerts.is_empty() {
            return;
        }
        for a in alerts {
            if matches!(a.state, AlertState::Pending | AlertState::Firing) {
                self.active_alerts.insert(a.fingerprint, a.clone());
            } else {
                self.active_alerts.remove(&a.fingerprint);
            }
            tracing::info!(
                alert = %a.alertname(),
                state = a.state.as_str(),
                value = a.value,
                labels = ?a.labels,
                "alert state changed"
            );
            self.telemetry
                .alert_transitions
                .get_or_create(&labels([("state", a.state.as_str())]))
                .inc();
            if let Some(n) = &self.annotator {
                n.send(Note::Alert(a.clone()));
            }
        }
        if let Some(h) = &self.history {
            h.alerts(alerts);
        }
        if let Some(v) = &self.alerts_view {
            v.send_replace(Arc::new(self.active_alerts.values().cloned().collect()));
        }
        if let Some(p) = &self.producer {
            let epoch = self.epochs.token().id();
            let partitions: Vec<Option<i32>> = alerts.iter().map(|a| self.alert_partition(a, derived)).collect();
            let mut i = 0;
            for same in partitions.chunk_by(|a, b| a == b) {
                let origin = Origin {
                    partition: same[0],
                    epoch,
                };
                p.publish(&[], &[], &alerts[i..i + same.len()], Some(self.epochs.token()), origin);
                i += same.len();
            }
        }
        for am in &self.alertmanagers {
            am.send(alerts.to_vec()).await;
        }
    }

    /// The series partition whose state produced alert `a`: the derived operator's (`derived`)
    /// or its rule group's home (`None` without repartitioning).
    fn alert_partition(&self, a: &dwcp_operators::alerts::AlertTransition, derived: bool) -> Option<i32> {
        if derived {
            return self.derived_home;
        }
        let homes = self.rule_homes.as_ref()?;
        let i = self.rules.as_ref()?.groups().iter().position(|g| g.name == a.group)?;
        homes.partitions.get(i).copied()
    }

    /// Closes the derived operator's minutes up to the watermark and ships what they produced.
    async fn close_derived(&mut self, wm: EventTime) {
        // With repartitioning, in its home partition's task and at that partition's event time.
        let (d, wm) = match self.derived_home {
            Some(x) => {
                let Some(m) = self.partition_marks.get_mut(&x) else {
                    return;
                };
                let wm = m.watermark(now_nanos());
                let Some(d) = self.tasks.get_mut(&x).and_then(|t| t.derived.as_mut()) else {
                    return;
                };
                (d, wm)
            }
            None => {
                let Some(d) = &mut self.derived else { return };
                (d, wm)
            }
        };
        let mut out = DerivedOutput::default();
        d.on_watermark(wm, &mut out);
        let closed = !out.samples.is_empty() || !out.sla.is_empty() || !out.health.is_empty();
        if let Some(p) = &self.producer {
            let origin = Origin {
                partition: self.derived_home,
                epoch: self.epochs.token().id(),
            };
            p.publish(&out.sla, &out.health, &[], Some(self.epochs.token()), origin);
        }
        if let Some(h) = &self.history {
            h.sla(&out.sla);
            h.health(&out.health);
        }
        if closed {
            if let Some(tx) = &self.derived_view {
                tx.send_replace(Arc::new(d.view()));
            }
        }
        // Derived series feed the rules (an SLA rule reads dwcp_sla_compliance_ratio).
        if let Some(r) = &mut self.rules {
            match self.derived_home {
                Some(x) => r.process_from(&out.samples, x),
                None => r.process(&out.samples),
            }
        }
        self.ship_alerts(&out.alerts, true).await;
        self.publish(out.samples, "derived", None).await;
    }

    /// Partition `x`'s state, serialized per changelog, as epoch `epoch` ends.
    fn snapshot_partition(&mut self, x: i32, epoch: u64) -> Option<Staged> {
        let t = self.tasks.get(&x)?;
        let next_offset = t.next_offset;
        let mut parts = Vec::new();
        if let (Some(_), Some(op)) = (&self.changelog, &t.anomaly) {
            let c = Checkpoint {
                next_offset,
                state: op.snapshot(),
            };
            parts.push((Log::Anomaly, serde_json::to_vec(&c)));
        }
        if let (Some(_), Some(r)) = (&self.rules_changelog, &mut self.rules) {
            let c = Checkpoint {
                next_offset,
                state: r.snapshot_partition(x),
            };
            parts.push((Log::Rules, serde_json::to_vec(&c)));
        }
        if self.aggregate_changelog.is_some() {
            // A partition with no aggregated metric yet has empty windows to checkpoint.
            let state = self.partition_aggregates.get(&x).map_or_else(
                || AggregateOperator::new(self.aggregation_config.clone()).snapshot(),
                AggregateOperator::snapshot,
            );
            let c = Checkpoint { next_offset, state };
            parts.push((Log::Aggregate, serde_json::to_vec(&c)));
        }
        if self.delta_changelog.is_some() {
            let c = Checkpoint {
                next_offset,
                state: self.converter.snapshot_partition(x),
            };
            parts.push((Log::Delta, serde_json::to_vec(&c)));
        }
        if let (Some(_), Some(op)) = (&self.derived_changelog, &t.derived) {
            let c = Checkpoint {
                next_offset,
                state: op.snapshot(),
            };
            parts.push((Log::Derived, serde_json::to_vec(&c)));
        }
        if let (Some(_), Some(op)) = (&self.span_metrics_changelog, &t.span_metrics) {
            let c = Checkpoint {
                next_offset,
                state: SpanMetricsCheckpoint {
                    metrics: op.snapshot(),
                    applied: t.span_applied.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                },
            };
            parts.push((Log::SpanMetrics, serde_json::to_vec(&c)));
        }
        Some(Staged {
            next_offset,
            epoch,
            parts,
        })
    }

    /// With exactly-once derived records: one transaction holds the `ready` partitions'
    /// checkpoints, the derived records their state produced up to each checkpoint, and their
    /// consumed offsets up to what each covers. Committed, all of it is visible at once; if
    /// anything fails it is aborted: the records wait for the next one, the partitions take a
    /// new snapshot at the next checkpoint, and their commits stay where they were.
    async fn commit_checkpoints(
        &mut self,
        topic: &str,
        src: &KafkaSource,
        ready: Vec<(i32, Staged)>,
        stats: &mut std::collections::BTreeMap<&'static str, (usize, usize, usize)>,
    ) {
        // Revocations wait for this transaction; partitions being revoked stay out of it.
        let (in_transaction, revoking) = src.gate().enter();
        let ready: Vec<(i32, Staged)> = {
            let owned = src.assignment();
            let owned = owned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            ready
                .into_iter()
                .filter(|(x, _)| {
                    let key = (topic.to_string(), *x);
                    owned.contains_key(&key) && !revoking.contains(&key)
                })
                .collect()
        };
        if ready.is_empty() {
            return;
        }
        let Some(p) = &self.producer else { return };
        if let Err(e) = p.begin().await {
            self.transaction_failed("begin", &e);
            return;
        }
        let Some(p) = &self.producer else { return };
        let mut sent = p.send_waiting(&ready.iter().map(|(x, s)| (*x, s.epoch)).collect::<Vec<_>>());
        let before: Vec<(i32, [u64; 6])> = ready
            .iter()
            .filter_map(|(x, _)| self.tasks.get(x).map(|t| (*x, t.generations)))
            .collect();
        let mut written = true;
        let mut offsets = rdkafka::TopicPartitionList::new();
        let mut covered = Vec::new();
        for (x, staged) in ready {
            written &= self.write_staged(x, staged.parts, stats).await;
            if offsets
                .add_partition_offset(topic, x, rdkafka::Offset::Offset(staged.next_offset))
                .is_ok()
            {
                covered.push((x, staged.next_offset));
            }
        }
        let Some(p) = &self.producer else { return };
        written &= p.delivered(&mut sent).await;
        let records = sent.len();
        if written && src.gate().doomed() {
            // Tansu 0.6 can complete a rebalance before this member rejoins, and give a
            // partition it owns to another member in the same generation: that member may be
            // restoring the partition's last committed checkpoint now.
            tracing::info!(records, "a revocation came while the checkpoint transaction was under way: aborted; the records of partitions still owned go in the next one");
            written = false;
        }
        let result = if written {
            p.commit(offsets, src.group_metadata(), sent).await.map_err(Some)
        } else {
            p.abort(sent).await;
            Err(None)
        };
        match result {
            Ok(()) => {
                for (x, next) in covered {
                    src.commit_transacted(topic, x, next);
                }
                self.telemetry
                    .derived_transactions
                    .get_or_create(&labels([("result", "committed")]))
                    .inc();
                tracing::debug!(records, "checkpoint transaction committed");
            }
            Err(e) => {
                // The checkpoints written in it are aborted: the generations stay.
                for (x, generations) in before {
                    if let Some(t) = self.tasks.get_mut(&x) {
                        t.generations = generations;
                    }
                }
                if let Some(e) = e {
                    self.transaction_failed("commit", &e);
                    if crate::derived::migrated(&e) {
                        // Out of the transaction gate: a revocation may go on meanwhile.
                        drop(in_transaction);
                        let xs: Vec<i32> = covered.iter().map(|(x, _)| *x).collect();
                        self.migrated(topic, src, &xs).await;
                    }
                } else {
                    self.telemetry
                        .derived_transactions
                        .get_or_create(&labels([("result", "aborted")]))
                        .inc();
                    tracing::warn!(records, "a checkpoint or derived record was not written: transaction aborted; its records go in the next one");
                }
            }
        }
    }

    /// The group fenced a checkpoint transaction of series partitions `xs`: this worker's
    /// generation is behind the group's, and another member may own them now and have gone on
    /// from their last committed checkpoint (Tansu can even hand a partition to two members at
    /// once). As Kafka Streams does on `TaskMigratedException`, their state here and the
    /// derived records made from it are dropped, and their reads start over from the group's
    /// committed offsets, so the next batch reads their state back from the changelog first.
    /// Committing those records later, when the partition is this worker's again, would repeat
    /// what the other owner committed (an alert transition twice).
    async fn migrated(&mut self, topic: &str, src: &KafkaSource, xs: &[i32]) {
        if let Some(p) = &self.producer {
            p.forget(|x| !xs.contains(&x));
        }
        self.telemetry.partitions_migrated.inc_by(xs.len() as u64);
        if let Err(e) = src.rewind(topic, xs).await {
            // Going on would process them from where the fenced state left off, over a state
            // read back from an older checkpoint. A restart reads them from the committed
            // offsets, as after a crash.
            tracing::error!(
                partitions = ?xs,
                error = %e,
                "checkpoint transaction fenced by the consumer group, and its partitions could not be rewound to the committed offsets; stopping"
            );
            std::process::exit(1);
        }
        tracing::warn!(
            partitions = ?xs,
            "checkpoint transaction fenced by the consumer group (another member may own these partitions now): their state and derived records here are dropped, and they are read again from the committed offsets and the changelog"
        );
        // Their rule groups evaluate again from the restored checkpoint's schedule, or with
        // none from the first sample, as on a worker that never held them: the transitions
        // made since were in the fenced transaction.
        if let Some(rules) = &mut self.rules {
            for x in xs {
                rules.drop_partition(*x, true);
            }
        }
        // With the partitions' `since` moved, their tasks are from an earlier assignment:
        // dropped here, opened again from the changelog at the next batch.
        for x in xs {
            if let Some(t) = self.tasks.get_mut(x) {
                t.since = None;
            }
        }
        self.drop_moved_partitions().await;
    }

    /// A transaction call failed: counted and logged; a producer that cannot go on (fenced by
    /// another worker with its `transactional.id`) stops the worker, as a crash would: what it
    /// has not committed is made again by the partitions' next owners.
    fn transaction_failed(&self, step: &str, e: &rdkafka::error::KafkaError) {
        self.telemetry
            .derived_transactions
            .get_or_create(&labels([("result", "aborted")]))
            .inc();
        if crate::derived::fatal(e) {
            tracing::error!(step, error = %e, "derived records: the transactional producer cannot go on (another worker with the same derived_topics.transactional_id?); stopping");
            std::process::exit(1);
        }
        tracing::warn!(step, error = %e, "derived records: transaction aborted; its records go in the next one");
    }

    /// Writes a staged snapshot's `parts` of partition `x` to its changelogs; whether every one
    /// took it (then the partition's commits may go up to what it covers).
    async fn write_staged(
        &mut self,
        x: i32,
        parts: Vec<(Log, Result<Vec<u8>, serde_json::Error>)>,
        stats: &mut std::collections::BTreeMap<&'static str, (usize, usize, usize)>,
    ) -> bool {
        let Some(mut generations) = self.tasks.get(&x).map(|t| t.generations) else {
            return false;
        };
        let mut all = true;
        for (log, bytes) in parts {
            let (which, operator) = (log as usize, log.name());
            let entry = stats.entry(operator).or_default();
            let generation = generations[which] + 1;
            let written = match (bytes, self.changelog_of(log)) {
                (Ok(b), Some(cl)) => {
                    entry.2 += b.len();
                    cl.write(x, generation, &b).await
                }
                (Ok(_), None) => continue,
                (Err(e), _) => Err(e.into()),
            };
            match written {
                Ok(()) => {
                    entry.0 += 1;
                    generations[which] = generation;
                }
                Err(e) => {
                    entry.1 += 1;
                    all = false;
                    tracing::warn!(partition = x, operator, error = %e, "checkpoint not written; the partition's commits wait for the next one");
                }
            }
        }
        if let Some(t) = self.tasks.get_mut(&x) {
            t.generations = generations;
        }
        all
    }

    /// The changelog `log` is written to.
    fn changelog_of(&self, log: Log) -> Option<&Arc<crate::changelog::Changelog>> {
        match log {
            Log::Anomaly => self.changelog.as_ref(),
            Log::Rules => self.rules_changelog.as_ref(),
            Log::Aggregate => self.aggregate_changelog.as_ref(),
            Log::Delta => self.delta_changelog.as_ref(),
            Log::Derived => self.derived_changelog.as_ref(),
            Log::SpanMetrics => self.span_metrics_changelog.as_ref(),
        }
    }

    /// Snapshots the derived operator's state to `state_dir`, off the async threads.
    async fn checkpoint(&mut self) {
        self.last_checkpoint = std::time::Instant::now();
        self.checkpoint_changelog(true).await;
        let Some(dir) = self.state_dir.clone() else { return };
        let mut files = Vec::new();
        if let Some(d) = &self.derived {
            files.push((DERIVED_STATE_FILE, serde_json::to_vec(&d.snapshot())));
        }
        if let Some(a) = &self.anomaly {
            files.push((ANOMALY_STATE_FILE, serde_json::to_vec(&a.snapshot())));
        }
        if files.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let mut ready = Vec::new();
        for (name, bytes) in files {
            match bytes {
                Ok(b) => ready.push((name, b)),
                Err(e) => tracing::error!(error = %e, file = name, "state could not be serialized"),
            }
        }
        let result =
            tokio::task::spawn_blocking(move || ready.iter().try_for_each(|(name, b)| write_snapshot(&dir, name, b)))
                .await;
        let ok = match result {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "derived state snapshot not written");
                false
            }
            Err(_) => false,
        };
        let label = labels([("result", if ok { "written" } else { "failed" })]);
        self.telemetry.checkpoints.get_or_create(&label).inc();
        self.telemetry.checkpoint_seconds.set(started.elapsed().as_secs_f64());
    }

    /// Applies the cardinality guard, then hands the samples to every remote-write endpoint.
    async fn publish(
        &mut self,
        mut samples: Vec<dwcp_operators::prom::Sample>,
        origin: &str,
        ack: Option<&dwcp_sinks::ack::Ack>,
    ) {
        if samples.is_empty() {
            return;
        }
        for d in self.guard.admit(&mut samples) {
            if d.first_time {
                tracing::warn!(metric = %d.metric, "series limit reached: new series of this metric are dropped (logged once per metric)");
            }
            let known = self.dropped_metric_labels.contains(&d.metric);
            if !known && self.dropped_metric_labels.len() < MAX_DROPPED_METRIC_LABELS {
                self.dropped_metric_labels.insert(d.metric.clone());
            }
            let label = if self.dropped_metric_labels.contains(&d.metric) {
                d.metric.as_str()
            } else {
                "other"
            };
            self.telemetry
                .series_dropped
                .get_or_create(&labels([("metric", label)]))
                .inc_by(d.samples);
        }
        self.telemetry
            .active_series
            .set(i64::try_from(self.guard.active()).unwrap_or(i64::MAX));
        self.publish_admitted(samples, origin, ack).await;
    }

    async fn publish_admitted(
        &mut self,
        samples: Vec<dwcp_operators::prom::Sample>,
        origin: &str,
        ack: Option<&dwcp_sinks::ack::Ack>,
    ) {
        if samples.is_empty() {
            return;
        }
        self.telemetry
            .samples_out
            .get_or_create(&labels([("origin", origin)]))
            .inc_by(samples.len() as u64);
        if let Some(w) = &self.window {
            w.append(&samples);
        }
        if let (Some(h), "aggregated") = (&self.history, origin) {
            h.rollups(&samples);
        }
        // Outputs of no single record (closed windows, rule results, ...) hold the epoch's token.
        let ack = ack.or(Some(self.epochs.token()));
        let n = self.remote_write.len();
        let mut samples = Some(samples);
        for (i, sink) in self.remote_write.iter().enumerate() {
            // The last endpoint takes the samples, the others a copy.
            let s = if i + 1 == n {
                samples.take().unwrap_or_default()
            } else {
                samples.clone().unwrap_or_default()
            };
            sink.send(s, ack).await;
        }
    }

    /// A count of the worker's aggregation operator plus every series partition's.
    fn aggregate_total(&self, count: fn(&AggregateOperator) -> u64) -> u64 {
        count(&self.aggregate) + self.partition_aggregates.values().map(count).sum::<u64>()
    }

    fn report(&mut self, out: &mut Vec<ActivityReport>) {
        let t = &self.telemetry;
        let ignored = self.watermarks.ignored();
        t.watermark_ignored.inc_by(ignored - self.reported.ignored);
        self.reported.ignored = ignored;
        let late = self.activity.late();
        t.late_records
            .get_or_create(&labels([("operator", "activity")]))
            .inc_by(late - self.reported.activity_late);
        self.reported.activity_late = late;
        let late = self.aggregate_total(AggregateOperator::late);
        // Per-partition operators come and go with their partitions: a total that went down
        // adds nothing.
        t.late_records
            .get_or_create(&labels([("operator", "aggregate")]))
            .inc_by(late.saturating_sub(self.reported.aggregate_late));
        self.reported.aggregate_late = late;
        let duplicates = self.aggregate_total(AggregateOperator::duplicates);
        t.duplicate_points
            .get_or_create(&labels([("operator", "aggregate")]))
            .inc_by(duplicates.saturating_sub(self.reported.aggregate_duplicates));
        self.reported.aggregate_duplicates = duplicates;
        let ps = self.converter.stats();
        t.points_dropped
            .get_or_create(&labels([("reason", "delta_out_of_order")]))
            .inc_by(ps.delta_out_of_order - self.reported.prom.delta_out_of_order);
        t.points_dropped
            .get_or_create(&labels([("reason", "invalid")]))
            .inc_by(ps.invalid_points - self.reported.prom.invalid_points);
        t.duplicate_points
            .get_or_create(&labels([("operator", "prometheus_delta")]))
            .inc_by(ps.delta_duplicates - self.reported.prom.delta_duplicates);
        self.reported.prom = ps;
        let ts = self.traces.stats();
        let was = self.reported.traces;
        let sampled = ts.traces_sampled - was.traces_sampled;
        let decided = ts.traces_decided - was.traces_decided;
        t.traces_decided
            .get_or_create(&labels([("decision", "sampled")]))
            .inc_by(sampled);
        t.traces_decided
            .get_or_create(&labels([("decision", "not_sampled")]))
            .inc_by(decided - sampled);
        t.traces_evicted_early.inc_by(ts.evicted_early - was.evicted_early);
        t.late_spans.inc_by(ts.late_spans - was.late_spans);
        self.reported.traces = ts;
        t.traces_in_flight
            .set(i64::try_from(self.traces.traces_in_flight()).unwrap_or(i64::MAX));
        t.trace_bytes_in_flight
            .set(i64::try_from(self.traces.bytes_in_flight()).unwrap_or(i64::MAX));
        let home = self
            .derived_home
            .and_then(|x| self.tasks.get(&x))
            .and_then(|t| t.derived.as_ref());
        if let Some(dop) = self.derived.as_ref().or(home) {
            // (Counts restored with a moved partition's state can be below what was reported.)
            let ds = dop.stats();
            let was = self.reported.derived;
            t.derived_dropped
                .get_or_create(&labels([("reason", "late")]))
                .inc_by(ds.late_samples.saturating_sub(was.late_samples));
            t.derived_dropped
                .get_or_create(&labels([("reason", "group_limit")]))
                .inc_by(ds.dropped_groups.saturating_sub(was.dropped_groups));
            t.derived_dropped
                .get_or_create(&labels([("reason", "counter_series_limit")]))
                .inc_by(ds.dropped_counter_series.saturating_sub(was.dropped_counter_series));
            self.reported.derived = ds;
            t.operator_state
                .get_or_create(&labels([("operator", "derived")]))
                .set(i64::try_from(dop.groups()).unwrap_or(i64::MAX));
        }
        if let Some(w) = &self.window {
            let ws = w.stats();
            t.api_series.set(i64::try_from(ws.series).unwrap_or(i64::MAX));
            t.api_samples_dropped
                .get_or_create(&labels([("reason", "out_of_order")]))
                .inc_by(ws.out_of_order - self.window_reported.0);
            t.api_samples_dropped
                .get_or_create(&labels([("reason", "series_limit")]))
                .inc_by(ws.dropped_series - self.window_reported.1);
            self.window_reported = (ws.out_of_order, ws.dropped_series);
        }
        if let Some(h) = &self.history {
            let hs = h.stats();
            let was = self.history_reported;
            t.api_sql_rows.set(i64::try_from(hs.rows).unwrap_or(i64::MAX));
            t.api_sql_rows_dropped
                .get_or_create(&labels([("reason", "retention")]))
                .inc_by(hs.aged_out - was.aged_out);
            t.api_sql_rows_dropped
                .get_or_create(&labels([("reason", "max_rows")]))
                .inc_by(hs.over_limit - was.over_limit);
            self.history_reported = hs;
        }
        let d = self.span_metrics.dropped()
            + self.span_markers_misrouted
            + self
                .tasks
                .values()
                .filter_map(|t| t.span_metrics.as_ref())
                .map(SpanMetrics::dropped)
                .sum::<u64>();
        // Lower when the span-metrics partition moved away (its count went with it).
        t.span_metrics_dropped
            .inc_by(d.saturating_sub(self.reported.span_metrics_dropped));
        self.reported.span_metrics_dropped = d;

        t.operator_state
            .get_or_create(&labels([("operator", "activity")]))
            .set(i64::try_from(self.activity.open_windows()).unwrap_or(i64::MAX));
        t.operator_state
            .get_or_create(&labels([("operator", "aggregate")]))
            .set(
                i64::try_from(
                    self.aggregate.series()
                        + self
                            .partition_aggregates
                            .values()
                            .map(AggregateOperator::series)
                            .sum::<usize>(),
                )
                .unwrap_or(i64::MAX),
            );
        t.operator_state
            .get_or_create(&labels([("operator", "prometheus_delta")]))
            .set(i64::try_from(self.converter.delta_series()).unwrap_or(i64::MAX));
        t.operator_state
            .get_or_create(&labels([("operator", "prometheus_label_sets")]))
            .set(i64::try_from(self.converter.label_sets()).unwrap_or(i64::MAX));
        for r in out.drain(..) {
            for reg in &r.regions {
                if reg.status == dwcp_operators::activity::RegionStatus::Dark {
                    tracing::warn!(region = %reg.region, window_end_ms = r.window_end / MS, "region is dark: no records");
                }
            }
            let _ = self.reports.send(r);
        }
    }
}
