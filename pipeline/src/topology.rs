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
use dwcp_operators::watermark::{WatermarkConfig, WatermarkTracker};
use dwcp_operators::{EventTime, Operator};
use dwcp_schemas::Records;
use dwcp_sinks::file::FileSinkStats;
use dwcp_sinks::Batch;
use tokio::sync::{broadcast, mpsc, watch};

use crate::config::ValidatedConfig;
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
}

/// Wall-clock now in nanoseconds; the only clock the pipeline reads (operators read none).
pub fn now_nanos() -> EventTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The largest event time in a batch.
fn max_event_time(records: &Records) -> EventTime {
    match records {
        Records::Metrics(v) => v.iter().map(|r| r.time_unix_nano).max(),
        Records::Traces(v) => v.iter().map(|r| r.end_time_unix_nano).max(),
        Records::Logs(v) => v.iter().map(dwcp_schemas::model::LogRecord::timestamp).max(),
    }
    .unwrap_or(0)
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
    let http_addr = crate::http::serve(
        &config.config.http.listen,
        telemetry.clone(),
        ready.clone(),
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
    tracing::info!(%http_addr, "http server listening (/metrics, /healthz, /readyz)");
    let (reports, _) = broadcast::channel(256);
    let handles = Handles {
        telemetry: telemetry.clone(),
        reports: reports.clone(),
        http_addr,
    };
    on_start(&handles);

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

    let (batch_tx, batch_rx) = mpsc::channel::<SourceBatch>(config.config.source.queue_capacity);
    let router = tokio::spawn(route(config.clone(), batch_rx, file_tx, reports, telemetry.clone()));

    let src = source.clone();
    let source_task = tokio::spawn(async move { src.run(batch_tx, shutdown).await });
    source_task.await?;
    router.await?;
    for t in sink_tasks {
        t.await?;
    }
    source.final_commit();
    Ok(())
}

async fn route(
    config: ValidatedConfig,
    mut input: mpsc::Receiver<SourceBatch>,
    file_tx: Option<mpsc::Sender<Batch>>,
    reports: broadcast::Sender<ActivityReport>,
    telemetry: Arc<Telemetry>,
) {
    let oc = &config.config.operators;
    let mut watermarks: WatermarkTracker<(Arc<str>, i32)> = WatermarkTracker::new(WatermarkConfig {
        allowed_lateness: oc.allowed_lateness_ms * MS,
        idle_timeout: oc.idle_timeout_ms * MS,
        max_future_skew: oc.max_future_skew_ms * MS,
    });
    let mut activity = ActivityOperator::new(ActivityConfig {
        window: oc.activity_window_ms * MS,
        dark_after: oc.dark_after_ms * MS,
        max_regions: oc.max_regions,
    });
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ignored_seen = 0;
    let mut late_seen = 0;
    loop {
        tokio::select! {
            b = input.recv() => {
                let Some(b) = b else { break };
                let now = now_nanos();
                watermarks.observe(&(b.topic.clone(), b.partition), max_event_time(&b.records), now);
                activity.process(&b.records, &mut out);
                if let Some(tx) = &file_tx {
                    telemetry.sink_queue_depth.get_or_create(&labels([("sink", "file")]))
                        .set(i64::try_from(tx.max_capacity() - tx.capacity()).unwrap_or(0));
                    // Awaiting here is the backpressure: a slow sink slows the source.
                    if tx.send(Batch { records: b.records.clone(), ack: b.ack.clone() }).await.is_err() {
                        tracing::error!("file sink is gone; its records are not written");
                    }
                }
            }
            _ = tick.tick() => {
                let now = now_nanos();
                let wm = watermarks.watermark(now);
                telemetry.watermark_seconds.set(i64::try_from(wm / 1_000_000_000).unwrap_or(0));
                activity.on_watermark(wm, &mut out);
            }
        }
        let ignored = watermarks.ignored();
        telemetry.watermark_ignored.inc_by(ignored - ignored_seen);
        ignored_seen = ignored;
        let late = activity.late();
        telemetry
            .late_records
            .get_or_create(&labels([("operator", "activity")]))
            .inc_by(late - late_seen);
        late_seen = late;
        telemetry
            .operator_state
            .get_or_create(&labels([("operator", "activity")]))
            .set(i64::try_from(activity.open_windows()).unwrap_or(i64::MAX));
        for r in out.drain(..) {
            for reg in &r.regions {
                if reg.status == dwcp_operators::activity::RegionStatus::Dark {
                    tracing::warn!(region = %reg.region, window_end_ms = r.window_end / MS, "region is dark: no records");
                }
            }
            let _ = reports.send(r);
        }
    }
    activity.on_close(&mut out);
    for r in out.drain(..) {
        let _ = reports.send(r);
    }
}
