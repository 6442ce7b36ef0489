//! The worker's own metrics, all in one place, served at `/metrics` in the Prometheus text
//! format. Every drop of data has a counter here. Label sets are bounded: topics and partitions
//! come from the configuration and the broker, not from message contents.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels `[(name, value)]`.
pub type Labels = Vec<(&'static str, String)>;

/// All internal metrics.
pub struct Telemetry {
    registry: Registry,
    /// Kafka messages read, by topic and signal.
    pub messages_in: Family<Labels, Counter>,
    /// Bytes read, by topic.
    pub bytes_in: Family<Labels, Counter>,
    /// Records decoded, by topic and signal.
    pub records_in: Family<Labels, Counter>,
    /// Records handed to every operator and sink, by topic and signal.
    pub records_out: Family<Labels, Counter>,
    /// Records with no region from any source, tagged `unknown`, by signal.
    pub records_unknown_region: Family<Labels, Counter>,
    /// Messages that failed to decode, by topic and reason kind.
    pub decode_errors: Family<Labels, Counter>,
    /// Messages sent to the dead-letter topic, by source topic.
    pub dead_lettered: Family<Labels, Counter>,
    /// Messages that could not be dead-lettered (lost, and logged at ERROR), by source topic.
    pub dead_letter_failures: Family<Labels, Counter>,
    /// Messages from topics no configured entry covers (skipped), by topic.
    pub unrouted_messages: Family<Labels, Counter>,
    /// Series partitions whose checkpoint transaction the consumer group fenced: state and
    /// derived records dropped, read again from the committed offsets.
    pub partitions_migrated: Counter,
    /// Messages read from a partition's earlier assignment (before a revocation or a rewind):
    /// processed or skipped, but their acknowledgement moves no commit.
    pub stale_messages: Family<Labels, Counter>,
    /// Consumer lag per partition, from librdkafka statistics.
    pub consumer_lag: Family<Labels, Gauge>,
    /// Last offset sent for commit per partition.
    pub committed_offset: Family<Labels, Gauge>,
    /// Offset commits: `requested`, `failed` (not sent), `error` (refused by the broker).
    pub commits: Family<Labels, Counter>,
    /// Messages read but not yet acknowledged by every sink.
    pub in_flight_messages: Gauge,
    /// Partitions assigned to this worker, by consumer group (the keyed stage's group, and
    /// `<group>.repartition` for the re-keying stage).
    pub assigned_partitions: Family<Labels, Gauge>,
    /// Records the re-keying stage wrote to the internal topics, by topic.
    pub repartitioned: Family<Labels, Counter>,
    /// Internal-topic messages whose delivery failed for good; their input offsets are never
    /// committed, so a restarted worker reads them again.
    pub repartition_failures: Counter,
    /// Internal series messages set aside unprocessed, by reason: read under an earlier
    /// assignment of their partition, or the partition moved while its state was read back.
    /// Not lost: the partition's owner reads them again from the committed offset.
    pub series_batches_skipped: Family<Labels, Counter>,
    /// Offsets of internal series partitions between what a restored checkpoint covers and the
    /// first record read after the partition moved here: in neither the state nor the reads.
    pub series_offsets_unread: Counter,
    /// Rebalances seen, by kind (assign, revoke).
    pub rebalances: Family<Labels, Counter>,
    /// Seconds the consumer group membership has been rebalancing without settling, by group
    /// (librdkafka's join state, sampled with its statistics every 5 s); 0 when settled.
    pub group_unsettled_seconds: Family<Labels, Gauge>,
    /// Records written by each sink.
    pub sink_records: Family<Labels, Counter>,
    /// Sink errors (retried), by sink.
    pub sink_errors: Family<Labels, Counter>,
    /// Batches queued for each sink.
    pub sink_queue_depth: Family<Labels, Gauge>,
    /// Operator state size (open windows, series, ...), by operator.
    pub operator_state: Family<Labels, Gauge>,
    /// Records that arrived after their window closed, by operator.
    pub late_records: Family<Labels, Counter>,
    /// Points not added again because their series already had one at or after their time.
    pub duplicate_points: Family<Labels, Counter>,
    /// Event times ignored by the watermark (zero or far in the future).
    pub watermark_ignored: Counter<u64, AtomicU64>,
    /// The current event-time watermark, in seconds since the epoch.
    pub watermark_seconds: Gauge,
    /// Remote-write samples by endpoint and result (`sent`, `dropped`).
    pub remote_write_samples: Family<Labels, Counter>,
    /// Remote-write requests (each attempt), by endpoint.
    pub remote_write_requests: Family<Labels, Counter>,
    /// Remote-write retries, by endpoint.
    pub remote_write_retries: Family<Labels, Counter>,
    /// Prometheus samples produced, by origin (`converted`, `aggregated`, `stale`).
    pub samples_out: Family<Labels, Counter>,
    /// Samples of new series dropped by the cardinality guard, by metric.
    pub series_dropped: Family<Labels, Counter>,
    /// Active series under the cardinality guard.
    pub active_series: Gauge,
    /// Metric points dropped by the conversion, by reason.
    pub points_dropped: Family<Labels, Counter>,
    /// Traces decided, by decision (`sampled`, `not_sampled`).
    pub traces_decided: Family<Labels, Counter>,
    /// Traces decided before `decision_wait` because a bound was hit.
    pub traces_evicted_early: Counter<u64, AtomicU64>,
    /// Spans that arrived after their trace was decided (they follow its decision).
    pub late_spans: Counter<u64, AtomicU64>,
    /// Cross-region hops in decided traces.
    pub cross_region_hops: Counter<u64, AtomicU64>,
    /// Traces buffered.
    pub traces_in_flight: Gauge,
    /// Estimated bytes of buffered spans.
    pub trace_bytes_in_flight: Gauge,
    /// Spans not counted in span metrics: the key bound was reached, they end past the wall
    /// clock plus `max_future_skew_ms`, or their counts reached a worker that keeps none.
    pub span_metrics_dropped: Counter<u64, AtomicU64>,
    /// Elasticsearch documents by result (`stored`, `rejected`).
    pub es_docs: Family<Labels, Counter>,
    /// Elasticsearch bulk requests (each attempt).
    pub es_requests: Counter<u64, AtomicU64>,
    /// Elasticsearch requests or items retried.
    pub es_retries: Counter<u64, AtomicU64>,
    /// Derived records by topic and result (`published`, `failed`; with exactly-once also
    /// `aborted`: sent in a transaction that aborted, sent again in the next).
    pub derived_records: Family<Labels, Counter>,
    /// With exactly-once: checkpoint transactions by result (`committed`, `aborted`).
    pub derived_transactions: Family<Labels, Counter>,
    /// With exactly-once: derived records waiting for their partition's checkpoint transaction.
    pub derived_records_waiting: Gauge,
    /// Samples the SLA/health/network/capacity operator did not use, by reason.
    pub derived_dropped: Family<Labels, Counter>,
    /// Alerts posted to Alertmanager by alertmanager and result (`posted`, `failed`).
    pub alertmanager_alerts: Family<Labels, Counter>,
    /// Alerts firing per Alertmanager.
    pub alerts_firing: Family<Labels, Gauge>,
    /// Alert state changes by state.
    pub alert_transitions: Family<Labels, Counter>,
    /// Rule evaluations (one rule at one timestamp).
    pub rule_evaluations: Counter<u64, AtomicU64>,
    /// Rule evaluations that failed, by group and rule.
    pub rule_failures: Family<Labels, Counter>,
    /// Wall time of the last tick's rule evaluations, seconds.
    pub rule_eval_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Series and samples held for rule evaluation.
    pub rule_series: Gauge,
    /// Samples the rule store dropped, by reason (`out_of_order`, `series_limit`).
    pub rule_samples_dropped: Family<Labels, Counter>,
    /// Anomaly episodes found.
    pub anomaly_episodes: Counter<u64, AtomicU64>,
    /// Series under anomaly detection.
    pub anomaly_series: Gauge,
    /// Local state snapshots by result (`written`, `failed`).
    pub checkpoints: Family<Labels, Counter>,
    /// Duration of the last local state snapshot, seconds.
    pub checkpoint_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Changelog checkpoints of partition state, by operator and result (`written`, `failed`).
    pub changelog_checkpoints: Family<Labels, Counter>,
    /// Duration of the last changelog checkpoint (every owned partition), seconds, by operator.
    pub changelog_checkpoint_seconds: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Bytes of the last changelog checkpoint, by operator.
    pub changelog_checkpoint_bytes: Family<Labels, Gauge>,
    /// When the last changelog checkpoint was acknowledged (Unix seconds), by operator: its age
    /// is `time() - dwcp_changelog_last_checkpoint_timestamp_seconds`.
    pub changelog_last_checkpoint: Family<Labels, Gauge>,
    /// Partition snapshots taken and not yet written: their outputs are not all accepted by the
    /// sinks yet.
    pub changelog_checkpoints_waiting: Gauge,
    /// Partition states read back from a changelog, by operator and result (`restored`,
    /// `empty`, `failed`).
    pub changelog_restores: Family<Labels, Counter>,
    /// Duration of the last restore, seconds, by operator.
    pub changelog_restore_seconds: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Series and samples held in the monitoring API's window.
    pub api_series: Gauge,
    /// Samples the API window dropped, by reason (`out_of_order`, `series_limit`).
    pub api_samples_dropped: Family<Labels, Counter>,
    /// API requests by endpoint and status code.
    pub api_requests: Family<Labels, Counter>,
    /// Rows held for SQL.
    pub api_sql_rows: Gauge,
    /// Rows the SQL history dropped, by reason (`retention`, `max_rows`).
    pub api_sql_rows_dropped: Family<Labels, Counter>,
    /// Grafana annotations by result (`posted`, `updated`, `failed`).
    pub grafana_annotations: Family<Labels, Counter>,
}

impl Telemetry {
    /// Registers every metric.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("dwcp");
        macro_rules! reg {
            ($name:literal, $help:literal, $metric:expr) => {{
                let m = $metric;
                registry.register($name, $help, m.clone());
                m
            }};
        }
        let t = Telemetry {
            messages_in: reg!(
                "source_messages",
                "Kafka messages read, by topic and signal",
                Family::default()
            ),
            bytes_in: reg!("source_bytes", "Message bytes read, by topic", Family::default()),
            records_in: reg!(
                "source_records",
                "Records decoded, by topic and signal",
                Family::default()
            ),
            records_out: reg!(
                "records_out",
                "Records handed to every operator and sink, by topic and signal",
                Family::default()
            ),
            records_unknown_region: reg!(
                "records_unknown_region",
                "Records with no region from resource, topic or header, tagged unknown",
                Family::default()
            ),
            decode_errors: reg!(
                "decode_errors",
                "Messages that failed to decode, by topic and kind",
                Family::default()
            ),
            dead_lettered: reg!(
                "dead_letter_messages",
                "Messages sent to the dead-letter topic",
                Family::default()
            ),
            dead_letter_failures: reg!(
                "dead_letter_failures",
                "Undecodable messages that could not be written to the dead-letter topic (lost)",
                Family::default()
            ),
            unrouted_messages: reg!(
                "unrouted_messages",
                "Messages from topics that no topic entry covers",
                Family::default()
            ),
            partitions_migrated: reg!(
                "partitions_migrated",
                "Series partitions whose checkpoint transaction the consumer group fenced (this worker's generation was behind): their state and derived records were dropped and they were read again from the committed offsets and the changelog",
                Counter::default()
            ),
            stale_messages: reg!(
                "stale_messages",
                "Messages read from a partition's earlier assignment (fetched before a revocation or a rewind): they move no offset commit, the partition is read again from its committed offset",
                Family::default()
            ),
            consumer_lag: reg!("consumer_lag_messages", "Consumer lag per partition", Family::default()),
            committed_offset: reg!(
                "committed_offset",
                "Last committed offset per partition",
                Family::default()
            ),
            commits: reg!(
                "offset_commits",
                "Offset commit requests (requested, failed) and commits the broker refused (error)",
                Family::default()
            ),
            in_flight_messages: reg!(
                "in_flight_messages",
                "Messages read and not yet acknowledged by every sink",
                Gauge::default()
            ),
            assigned_partitions: reg!(
                "assigned_partitions",
                "Partitions assigned to this worker, by consumer group",
                Family::default()
            ),
            repartitioned: reg!(
                "repartitioned_records",
                "Records written to the internal topics by the re-keying stage, by topic",
                Family::default()
            ),
            repartition_failures: reg!(
                "repartition_failures",
                "Internal-topic messages not delivered (their input is read again after a restart)",
                Counter::default()
            ),
            series_batches_skipped: reg!(
                "series_batches_skipped",
                "Internal series messages set aside unprocessed (their partition's owner reads them again), by reason",
                Family::default()
            ),
            series_offsets_unread: reg!(
                "series_offsets_unread",
                "Internal series offsets between a restored checkpoint and the first record read after, never read (a broker that skipped them, or a changelog behind the committed offset)",
                Counter::default()
            ),
            rebalances: reg!("rebalances", "Consumer group rebalances, by kind", Family::default()),
            group_unsettled_seconds: reg!(
                "consumer_group_unsettled_seconds",
                "Seconds the consumer group membership has been rebalancing without settling, by group (0 when settled)",
                Family::default()
            ),
            sink_records: reg!("sink_records", "Records accepted by each sink", Family::default()),
            sink_errors: reg!("sink_errors", "Sink errors (retried), by sink", Family::default()),
            sink_queue_depth: reg!("sink_queue_depth", "Batches queued for each sink", Family::default()),
            operator_state: reg!(
                "operator_state_entries",
                "Operator state size, by operator",
                Family::default()
            ),
            late_records: reg!(
                "late_records",
                "Records that arrived after their window closed",
                Family::default()
            ),
            duplicate_points: reg!(
                "duplicate_points",
                "Points not added again because their series already had one at or after their time (a replay's)",
                Family::default()
            ),
            watermark_ignored: reg!(
                "watermark_ignored_timestamps",
                "Event times ignored by the watermark (zero or far in the future)",
                Counter::default()
            ),
            watermark_seconds: reg!("watermark_seconds", "Current event-time watermark", Gauge::default()),
            remote_write_samples: reg!(
                "remote_write_samples",
                "Remote-write samples by endpoint and result",
                Family::default()
            ),
            remote_write_requests: reg!(
                "remote_write_requests",
                "Remote-write requests (each attempt)",
                Family::default()
            ),
            remote_write_retries: reg!(
                "remote_write_retries",
                "Remote-write requests retried",
                Family::default()
            ),
            samples_out: reg!(
                "prometheus_samples",
                "Prometheus samples produced, by origin",
                Family::default()
            ),
            series_dropped: reg!(
                "series_dropped",
                "Samples of new series dropped by the cardinality guard, by metric",
                Family::default()
            ),
            active_series: reg!(
                "active_series",
                "Active series under the cardinality guard",
                Gauge::default()
            ),
            points_dropped: reg!(
                "points_dropped",
                "Metric points dropped by the conversion, by reason",
                Family::default()
            ),
            traces_decided: reg!(
                "traces_decided",
                "Traces decided by tail sampling, by decision",
                Family::default()
            ),
            traces_evicted_early: reg!(
                "traces_evicted_early",
                "Traces decided before decision_wait because a memory bound was hit",
                Counter::default()
            ),
            late_spans: reg!(
                "late_spans",
                "Spans that arrived after their trace was decided",
                Counter::default()
            ),
            cross_region_hops: reg!(
                "cross_region_hops",
                "Cross-region hops in decided traces",
                Counter::default()
            ),
            traces_in_flight: reg!("traces_in_flight", "Traces buffered for stitching", Gauge::default()),
            trace_bytes_in_flight: reg!(
                "trace_bytes_in_flight",
                "Estimated bytes of buffered spans",
                Gauge::default()
            ),
            span_metrics_dropped: reg!(
                "span_metrics_dropped_spans",
                "Spans not counted in span metrics: the key bound was reached, they end past the wall clock plus the allowed future skew, or their counts reached a worker that keeps none",
                Counter::default()
            ),
            es_docs: reg!(
                "elasticsearch_documents",
                "Elasticsearch documents by result",
                Family::default()
            ),
            es_requests: reg!(
                "elasticsearch_requests",
                "Elasticsearch bulk requests (each attempt)",
                Counter::default()
            ),
            es_retries: reg!(
                "elasticsearch_retries",
                "Elasticsearch requests or items retried",
                Counter::default()
            ),
            derived_records: reg!(
                "derived_records",
                "Derived records (alerts, anomalies, SLA reports, health changes) by topic and result",
                Family::default()
            ),
            derived_transactions: reg!(
                "derived_transactions",
                "Exactly-once: checkpoint transactions (derived records, checkpoints, offsets) by result",
                Family::default()
            ),
            derived_records_waiting: reg!(
                "derived_records_waiting",
                "Exactly-once: derived records waiting for their partition's checkpoint transaction",
                Gauge::default()
            ),
            derived_dropped: reg!(
                "derived_samples_dropped",
                "Samples the SLA, health, network and capacity operator did not use, by reason",
                Family::default()
            ),
            alertmanager_alerts: reg!(
                "alertmanager_alerts",
                "Alerts posted to Alertmanager (posted) and posts that failed after retries (failed)",
                Family::default()
            ),
            alerts_firing: reg!(
                "alerts_firing",
                "Alerts firing, re-sent to each Alertmanager every resend interval",
                Family::default()
            ),
            alert_transitions: reg!("alert_transitions", "Alert state changes by state", Family::default()),
            rule_evaluations: reg!(
                "rule_evaluations",
                "Rule evaluations (one rule at one timestamp)",
                Counter::default()
            ),
            rule_failures: reg!(
                "rule_evaluation_failures",
                "Rule evaluations that failed, by group and rule",
                Family::default()
            ),
            rule_eval_seconds: reg!(
                "rule_evaluation_duration_seconds",
                "Wall time of the last tick's rule evaluations",
                Gauge::default()
            ),
            rule_series: reg!("rule_series", "Series held for rule evaluation", Gauge::default()),
            rule_samples_dropped: reg!(
                "rule_samples_dropped",
                "Samples the rule store dropped, by reason",
                Family::default()
            ),
            anomaly_episodes: reg!(
                "anomaly_episodes",
                "Anomaly episodes found (one per episode, when it ends)",
                Counter::default()
            ),
            anomaly_series: reg!("anomaly_series", "Series under anomaly detection", Gauge::default()),
            checkpoints: reg!(
                "state_checkpoints",
                "Local state snapshots by result",
                Family::default()
            ),
            checkpoint_seconds: reg!(
                "state_checkpoint_duration_seconds",
                "Duration of the last local state snapshot",
                Gauge::default()
            ),
            changelog_checkpoints: reg!(
                "changelog_checkpoints",
                "Partition state checkpoints to changelog topics, by operator and result",
                Family::default()
            ),
            changelog_checkpoint_seconds: reg!(
                "changelog_checkpoint_duration_seconds",
                "Duration of the last changelog checkpoint of every owned partition",
                Family::default()
            ),
            changelog_checkpoint_bytes: reg!(
                "changelog_checkpoint_bytes",
                "Bytes of the last changelog checkpoint",
                Family::default()
            ),
            changelog_last_checkpoint: reg!(
                "changelog_last_checkpoint_timestamp_seconds",
                "When the last changelog checkpoint was acknowledged",
                Family::default()
            ),
            changelog_checkpoints_waiting: reg!(
                "changelog_checkpoints_waiting",
                "Partition snapshots waiting for the sinks to accept the outputs they cover before they are written",
                Gauge::default()
            ),
            changelog_restores: reg!(
                "changelog_restores",
                "Partition states read back from a changelog, by operator and result",
                Family::default()
            ),
            changelog_restore_seconds: reg!(
                "changelog_restore_duration_seconds",
                "Duration of the last restore of a partition's state",
                Family::default()
            ),
            api_series: reg!(
                "api_series",
                "Series held in the monitoring API's window",
                Gauge::default()
            ),
            api_samples_dropped: reg!(
                "api_samples_dropped",
                "Samples the monitoring API's window did not keep, by reason",
                Family::default()
            ),
            api_requests: reg!(
                "api_requests",
                "Monitoring API requests by endpoint and status code",
                Family::default()
            ),
            api_sql_rows: reg!(
                "api_sql_rows",
                "Rows held for SQL over recent history",
                Gauge::default()
            ),
            api_sql_rows_dropped: reg!(
                "api_sql_rows_dropped",
                "Rows the SQL history dropped, by reason (retention, max_rows)",
                Family::default()
            ),
            grafana_annotations: reg!(
                "grafana_annotations",
                "Grafana annotations by result (posted, updated, failed)",
                Family::default()
            ),
            registry: Registry::default(),
        };
        Arc::new(Telemetry { registry, ..t })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// `[("topic", t)]` and friends.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}
