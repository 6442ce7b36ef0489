//! Derived records back to Kafka: SLA reports on `dwcp.sla`, region health changes on
//! `dwcp.health` and alert state changes on `dwcp.alerts`, Avro single-object encoded with the
//! schemas in `schemas/avro/`.
//!
//! Records are keyed deterministically (`<sla>/<region>/<period end ms>`,
//! `<region>/<time ms>`, `<fingerprint>/<state>/<time ms>`), so a consumer can drop the duplicates an at-least-once restart may
//! produce. The producer is idempotent; sends are enqueued in order without waiting and their
//! delivery is awaited in the background, counted in `dwcp_derived_records_total{topic,result}`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dwcp_operators::alerts::AlertTransition;
use dwcp_operators::anomaly::operator::AnomalyRecord;
use dwcp_operators::derived::{HealthChange, SlaRecord};
use dwcp_operators::health::{ComponentStatus, Trend};
use dwcp_operators::sla::SlaKind;
use dwcp_schemas::avro::{DerivedKind, SingleObjectCodec};
use dwcp_sinks::ack::Ack;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::TopicPartitionList;
use serde::Serialize;

use crate::config::{Delivery, DerivedTopicsConfig};
use crate::telemetry::{labels, Telemetry};

/// The `dwcp.sla` record.
#[derive(Debug, Serialize)]
pub struct SlaAvro {
    sla: String,
    kind: &'static str,
    region: String,
    target: f64,
    period_start: i64,
    period_end: i64,
    compliance: f64,
    month_compliance: f64,
    compliant: bool,
    error_budget_allowed: f64,
    error_budget_consumed: f64,
    error_budget_remaining: f64,
    error_budget_remaining_seconds: f64,
    burn_rates: BTreeMap<String, f64>,
    violations: Vec<ViolationAvro>,
}

#[derive(Debug, Serialize)]
struct ViolationAvro {
    start: i64,
    end: Option<i64>,
    worst_value: f64,
}

/// The `dwcp.health` record.
#[derive(Debug, Serialize)]
pub struct HealthAvro {
    region: String,
    time: i64,
    score: f64,
    healthy: bool,
    trend: &'static str,
    factors: BTreeMap<String, f64>,
    components: Vec<ComponentAvro>,
}

#[derive(Debug, Serialize)]
struct ComponentAvro {
    name: String,
    status: &'static str,
    score: f64,
    message: String,
}

/// The `dwcp.alerts` record.
#[derive(Debug, Serialize)]
pub struct AlertAvro {
    fingerprint: String,
    alertname: String,
    state: &'static str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    value: f64,
    active_since: Option<i64>,
    event_time: i64,
    group: String,
    expr: String,
}

impl From<&AlertTransition> for AlertAvro {
    fn from(a: &AlertTransition) -> Self {
        AlertAvro {
            fingerprint: format!("{:016x}", a.fingerprint),
            alertname: a.alertname().to_string(),
            state: a.state.as_str(),
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            value: a.value,
            active_since: a.active_since.map(ms),
            event_time: ms(a.event_time),
            group: a.group.clone(),
            expr: a.expr.clone(),
        }
    }
}

/// The `dwcp.anomalies` record.
#[derive(Debug, Serialize)]
pub struct AnomalyAvro {
    series: String,
    metric: String,
    labels: BTreeMap<String, String>,
    region: String,
    start_time: i64,
    end_time: Option<i64>,
    peak_time: i64,
    value: f64,
    expected: f64,
    band_lower: f64,
    band_upper: f64,
    score: f64,
    detectors: Vec<String>,
    baseline: BaselineAvro,
}

#[derive(Debug, Serialize)]
struct BaselineAvro {
    mean: f64,
    stddev: f64,
    min: f64,
    max: f64,
    median: f64,
    points: i64,
}

impl From<&AnomalyRecord> for AnomalyAvro {
    fn from(r: &AnomalyRecord) -> Self {
        let e = &r.episode;
        let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
        AnomalyAvro {
            series: r.series(),
            metric: r.labels.get("__name__").cloned().unwrap_or_default(),
            labels: r
                .labels
                .iter()
                .filter(|(k, _)| k.as_str() != "__name__")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            region: r.labels.get("region").cloned().unwrap_or_default(),
            start_time: ms(e.start),
            end_time: r.closed.then(|| ms(e.end)),
            peak_time: ms(e.peak_time),
            value: e.value,
            expected: finite(e.expected),
            band_lower: finite(e.expected - e.band),
            band_upper: finite(e.expected + e.band),
            score: e.peak_score,
            detectors: e.detectors.clone(),
            baseline: BaselineAvro {
                mean: e.baseline.mean,
                stddev: e.baseline.stddev,
                min: finite(e.baseline.min),
                max: finite(e.baseline.max),
                median: e.baseline.median,
                points: i64::try_from(e.baseline.count).unwrap_or(i64::MAX),
            },
        }
    }
}

fn ms(ns: u64) -> i64 {
    i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX)
}

impl From<&SlaRecord> for SlaAvro {
    fn from(r: &SlaRecord) -> Self {
        let p = &r.report;
        SlaAvro {
            sla: r.sla.clone(),
            kind: match r.kind {
                SlaKind::Availability => "availability",
                SlaKind::Latency => "latency",
                SlaKind::Throughput => "throughput",
            },
            region: r.region.clone(),
            target: r.target,
            period_start: ms(r.period_start),
            period_end: ms(r.period_end),
            compliance: p.compliance,
            month_compliance: p.month_compliance,
            compliant: p.compliant,
            error_budget_allowed: p.budget_allowed,
            error_budget_consumed: p.budget_consumed,
            error_budget_remaining: p.budget_remaining,
            error_budget_remaining_seconds: p.budget_remaining_seconds,
            burn_rates: p.burn_rates.iter().cloned().collect(),
            violations: p
                .violations
                .iter()
                .map(|v| ViolationAvro {
                    start: ms(v.start),
                    end: v.end.map(ms),
                    worst_value: v.worst,
                })
                .collect(),
        }
    }
}

impl From<&HealthChange> for HealthAvro {
    fn from(c: &HealthChange) -> Self {
        let h = &c.health;
        HealthAvro {
            region: c.region.clone(),
            time: ms(c.time),
            score: h.score,
            healthy: h.healthy,
            trend: match h.trend {
                Trend::Improving => "improving",
                Trend::Stable => "stable",
                Trend::Degrading => "degrading",
            },
            factors: h.components.iter().map(|c| (c.name.clone(), c.score)).collect(),
            components: h
                .components
                .iter()
                .map(|c| ComponentAvro {
                    name: c.name.clone(),
                    status: match c.status {
                        ComponentStatus::Healthy => "healthy",
                        ComponentStatus::Degraded => "degraded",
                        ComponentStatus::Unhealthy => "unhealthy",
                    },
                    score: c.score,
                    message: c.message.clone(),
                })
                .collect(),
        }
    }
}

/// Publishes derived records.
pub struct DerivedProducer {
    producer: FutureProducer,
    config: DerivedTopicsConfig,
    sla: SingleObjectCodec,
    health: SingleObjectCodec,
    alerts: SingleObjectCodec,
    anomalies: SingleObjectCodec,
    telemetry: Arc<Telemetry>,
    /// With `exactly_once`: records waiting for the transaction of their partition's checkpoint.
    pending: Option<Mutex<Vec<Pending>>>,
}

/// Where a derived record comes from, for `exactly_once`: the series partition whose state
/// produced it (`None`: no partition's) and the checkpoint epoch it was produced in. It is
/// committed with the first checkpoint of that partition taken at or after that epoch.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// The series partition.
    pub partition: Option<i32>,
    /// The epoch.
    pub epoch: u64,
}

impl Origin {
    /// Whether a record of this origin goes in a transaction holding `checkpoints` (partition,
    /// epoch the snapshot was taken at): its partition's checkpoint covers it, or it is of no
    /// partition.
    pub fn due(&self, checkpoints: &[(i32, u64)]) -> bool {
        match self.partition {
            None => true,
            Some(x) => checkpoints.iter().any(|&(y, e)| y == x && self.epoch <= e),
        }
    }
}

/// A derived record waiting for its transaction.
#[derive(Debug)]
struct Pending {
    origin: Origin,
    topic: String,
    key: String,
    payload: Vec<u8>,
}

/// Records sent in the open transaction, to count once it commits or to send again if it aborts.
#[derive(Default)]
pub struct Sent {
    records: Vec<Pending>,
    deliveries: Vec<rdkafka::producer::DeliveryFuture>,
}

impl Sent {
    /// How many records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// How long a transaction call may take before it fails (and the transaction is aborted).
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

impl DerivedProducer {
    /// A producer for `config`, on `brokers` unless the config names its own; with
    /// `exactly_once` transactional (`transactional.id` from the config or
    /// `<group_id>-<host name>`), its transactions initialized (which aborts one this id left
    /// open).
    ///
    /// # Errors
    /// When the client cannot be created, a shipped schema fails to parse, or the broker does
    /// not take the transactional producer.
    pub async fn new(
        config: DerivedTopicsConfig,
        brokers: &str,
        group_id: &str,
        telemetry: Arc<Telemetry>,
    ) -> anyhow::Result<Self> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", config.brokers.as_deref().unwrap_or(brokers))
            .set("enable.idempotence", "true")
            .set("linger.ms", "50")
            .set("message.timeout.ms", "120000");
        let exactly_once = config.delivery == Delivery::ExactlyOnce;
        if exactly_once {
            // A record's delivery timeout may not exceed the transaction's.
            let txn_timeout = config
                .producer_options
                .get("transaction.timeout.ms")
                .map_or("60000", String::as_str);
            cc.set("transactional.id", transactional_id(&config, group_id))
                .set("transaction.timeout.ms", txn_timeout)
                .set("message.timeout.ms", txn_timeout);
        }
        for (k, v) in &config.producer_options {
            cc.set(k, v);
        }
        let producer: FutureProducer = cc.create()?;
        if exactly_once {
            let p = producer.clone();
            tokio::task::spawn_blocking(move || p.init_transactions(TXN_TIMEOUT))
                .await?
                .map_err(|e| {
                    anyhow::anyhow!(
                        "derived_topics.delivery: exactly_once: the broker did not start the transactional producer ({e}); brokers without transactions (Tansu 0.6 as released) need at_least_once"
                    )
                })?;
        }
        Ok(DerivedProducer {
            producer,
            config,
            sla: SingleObjectCodec::for_kind(DerivedKind::SlaReport)?,
            health: SingleObjectCodec::for_kind(DerivedKind::RegionHealth)?,
            alerts: SingleObjectCodec::for_kind(DerivedKind::Alert)?,
            anomalies: SingleObjectCodec::for_kind(DerivedKind::Anomaly)?,
            telemetry,
            pending: exactly_once.then(|| Mutex::new(Vec::new())),
        })
    }

    /// Whether records go in transactions.
    pub fn transactional(&self) -> bool {
        self.pending.is_some()
    }

    /// The producer, for the changelogs to write their checkpoints in the same transactions.
    pub fn client(&self) -> FutureProducer {
        self.producer.clone()
    }

    /// Encodes and enqueues SLA reports, health changes and alert transitions; delivery is
    /// counted in the background, and `ack` (when given) is held until each record's delivery
    /// is settled. With `exactly_once` they wait for their partition's next checkpoint
    /// transaction instead (`ack` is not held).
    pub fn publish(
        &self,
        sla: &[SlaRecord],
        health: &[HealthChange],
        alerts: &[AlertTransition],
        ack: Option<&Ack>,
        origin: Origin,
    ) {
        for a in alerts {
            // Key: fingerprint/state/time, unique per transition.
            let key = format!("{:016x}/{}/{}", a.fingerprint, a.state.as_str(), ms(a.event_time));
            let payload = self.alerts.encode_serde(&AlertAvro::from(a));
            self.send(&self.config.alerts, key, payload, ack, origin);
        }
        for r in sla {
            let key = format!("{}/{}/{}", r.sla, r.region, ms(r.period_end));
            let payload = self.sla.encode_serde(&SlaAvro::from(r));
            self.send(&self.config.sla, key, payload, ack, origin);
        }
        for c in health {
            let key = format!("{}/{}", c.region, ms(c.time));
            let payload = self.health.encode_serde(&HealthAvro::from(c));
            self.send(&self.config.health, key, payload, ack, origin);
        }
    }

    /// Encodes and enqueues anomaly episodes; key `<series>/<start ms>`; `ack` and `origin` as
    /// in `publish`.
    pub fn publish_anomalies(&self, records: &[AnomalyRecord], ack: Option<&Ack>, origin: Origin) {
        for r in records {
            let key = format!("{}/{}", r.series(), ms(r.episode.start));
            let payload = self.anomalies.encode_serde(&AnomalyAvro::from(r));
            self.send(&self.config.anomalies, key, payload, ack, origin);
        }
    }

    fn count(&self, topic: &str, result: &str, n: u64) {
        self.telemetry
            .derived_records
            .get_or_create(&labels([("topic", topic), ("result", result)]))
            .inc_by(n);
    }

    fn send(
        &self,
        topic: &str,
        key: String,
        payload: Result<Vec<u8>, dwcp_schemas::avro::AvroError>,
        ack: Option<&Ack>,
        origin: Origin,
    ) {
        let payload = match payload {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(%topic, %key, error = %e, "derived record does not fit its schema; not published");
                self.count(topic, "failed", 1);
                return;
            }
        };
        if let Some(pending) = &self.pending {
            pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Pending {
                    origin,
                    topic: topic.to_string(),
                    key,
                    payload,
                });
            return;
        }
        match self
            .producer
            .send_result(FutureRecord::to(topic).key(&key).payload(&payload))
        {
            Ok(delivery) => {
                let telemetry = self.telemetry.clone();
                let topic = topic.to_string();
                let ack = ack.cloned();
                tokio::spawn(async move {
                    let result = match delivery.await {
                        Ok(Ok(_)) => "published",
                        Ok(Err((e, _))) => {
                            tracing::warn!(%topic, %key, error = %e, "derived record not delivered");
                            "failed"
                        }
                        Err(_) => "failed",
                    };
                    telemetry
                        .derived_records
                        .get_or_create(&labels([("topic", topic.as_str()), ("result", result)]))
                        .inc();
                    drop(ack);
                });
            }
            Err((e, _)) => {
                tracing::warn!(%topic, %key, error = %e, "derived record not enqueued");
                self.count(topic, "failed", 1);
            }
        }
    }

    /// With `exactly_once`: drops the waiting records of partitions `keep` says no (moved to
    /// another worker, which produces them again from the partition's last checkpoint).
    pub fn forget(&self, keep: impl Fn(i32) -> bool) {
        if let Some(pending) = &self.pending {
            pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|p| p.origin.partition.is_none_or(&keep));
        }
    }

    /// With `exactly_once`: records waiting, for /metrics.
    pub fn waiting(&self) -> usize {
        self.pending
            .as_ref()
            .map_or(0, |p| p.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len())
    }

    /// Begins a transaction (blocking up to [`TXN_TIMEOUT`]).
    ///
    /// # Errors
    /// librdkafka's, when one cannot begin (one is open, or the producer is fenced).
    pub async fn begin(&self) -> rdkafka::error::KafkaResult<()> {
        let p = self.producer.clone();
        blocking(move || p.begin_transaction()).await
    }

    /// Sends, in the open transaction, the waiting records of each `(partition, epoch)` produced
    /// up to that epoch, and those of no partition.
    pub fn send_waiting(&self, checkpoints: &[(i32, u64)]) -> Sent {
        let Some(pending) = &self.pending else {
            return Sent::default();
        };
        let records: Vec<Pending> = {
            let mut all = pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (now, later) = std::mem::take(&mut *all)
                .into_iter()
                .partition(|p| p.origin.due(checkpoints));
            *all = later;
            now
        };
        let mut sent = Sent::default();
        for r in records {
            match self
                .producer
                .send_result(FutureRecord::to(&r.topic).key(&r.key).payload(&r.payload))
            {
                Ok(d) => sent.deliveries.push(d),
                Err((e, _)) => {
                    tracing::warn!(topic = %r.topic, key = %r.key, error = %e, "derived record not enqueued in the transaction; it is aborted")
                }
            }
            sent.records.push(r);
        }
        sent
    }

    /// Whether every record of `sent` reached the broker (in the open transaction).
    pub async fn delivered(&self, sent: &mut Sent) -> bool {
        let mut ok = sent.deliveries.len() == sent.records.len();
        for d in std::mem::take(&mut sent.deliveries) {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    tracing::warn!(error = %e, "derived record not delivered in the transaction; it is aborted");
                    ok = false;
                }
                Err(_) => ok = false,
            }
        }
        ok
    }

    /// Sends the consumed `offsets` of `group` within the open transaction, then commits it:
    /// its records (and the checkpoints written in it) become visible to `read_committed`
    /// readers and the offsets committed, all at once. On failure the transaction is aborted,
    /// `sent` is put back to go in the next one, and the error returned.
    ///
    /// # Errors
    /// librdkafka's; [`fatal`] tells whether the producer can go on.
    pub async fn commit(
        &self,
        offsets: TopicPartitionList,
        group: Option<ConsumerGroupMetadata>,
        sent: Sent,
    ) -> rdkafka::error::KafkaResult<()> {
        let p = self.producer.clone();
        let result = blocking(move || {
            if let Some(g) = group {
                if offsets.count() > 0 {
                    p.send_offsets_to_transaction(&offsets, &g, TXN_TIMEOUT)?;
                }
            }
            p.commit_transaction(TXN_TIMEOUT)
        })
        .await;
        match result {
            Ok(()) => {
                let mut by_topic: BTreeMap<&str, u64> = BTreeMap::new();
                for r in &sent.records {
                    *by_topic.entry(r.topic.as_str()).or_default() += 1;
                }
                for (topic, n) in by_topic {
                    self.count(topic, "published", n);
                }
                Ok(())
            }
            Err(e) => {
                self.abort(sent).await;
                Err(e)
            }
        }
    }

    /// Aborts the open transaction; `sent` waits for the next one.
    pub async fn abort(&self, sent: Sent) {
        let p = self.producer.clone();
        if let Err(e) = blocking(move || p.abort_transaction(TXN_TIMEOUT)).await {
            tracing::warn!(error = %e, "derived records: aborting the transaction failed");
        }
        let mut by_topic: BTreeMap<String, u64> = BTreeMap::new();
        for r in &sent.records {
            *by_topic.entry(r.topic.clone()).or_default() += 1;
        }
        for (topic, n) in by_topic {
            self.count(&topic, "aborted", n);
        }
        if let Some(pending) = &self.pending {
            let mut all = pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let later = std::mem::take(&mut *all);
            *all = sent.records;
            all.extend(later);
        }
    }

    /// Waits up to `timeout` for queued records to be delivered.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "derived records still queued at shutdown");
        }
    }
}

/// Whether a transaction error leaves the producer unusable (fenced by another worker with
/// the same `transactional.id`, or broken): the worker must stop.
pub fn fatal(e: &rdkafka::error::KafkaError) -> bool {
    match e {
        rdkafka::error::KafkaError::Transaction(t) => t.is_fatal(),
        _ => false,
    }
}

/// Whether a transaction error says the consumer group fenced the offsets sent in it: this
/// member's generation is not the group's (ILLEGAL_GENERATION), or the group no longer knows it
/// (UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID). The producer goes on; the partitions may be another
/// member's now.
pub fn migrated(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(C::IllegalGeneration | C::UnknownMemberId | C::FencedInstanceId)
    )
}

/// The `transactional.id`: the configured one, else `<group_id>-<host name>`.
pub fn transactional_id(config: &DerivedTopicsConfig, group_id: &str) -> String {
    config.transactional_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "worker".into());
        format!("{group_id}-{host}")
    })
}

/// Runs a blocking librdkafka transaction call off the async threads.
async fn blocking(
    f: impl FnOnce() -> rdkafka::error::KafkaResult<()> + Send + 'static,
) -> rdkafka::error::KafkaResult<()> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(rdkafka::error::KafkaError::Canceled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_fencing_error_means_the_partitions_may_have_moved() {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode as C;
        for code in [C::IllegalGeneration, C::UnknownMemberId, C::FencedInstanceId] {
            assert!(migrated(&KafkaError::ConsumerCommit(code)), "{code:?}");
        }
        for code in [C::RequestTimedOut, C::ProducerFenced, C::InvalidProducerEpoch] {
            assert!(!migrated(&KafkaError::ConsumerCommit(code)), "{code:?}");
        }
        assert!(!migrated(&KafkaError::Canceled));
    }

    #[test]
    fn a_record_goes_with_the_first_checkpoint_of_its_partition_at_or_after_its_epoch() {
        let o = |partition, epoch| Origin { partition, epoch };
        let checkpoints = [(1, 5), (3, 7)];
        assert!(o(Some(1), 5).due(&checkpoints), "made in the epoch the snapshot ended");
        assert!(o(Some(1), 2).due(&checkpoints));
        assert!(
            !o(Some(1), 6).due(&checkpoints),
            "made after the snapshot: the next one"
        );
        assert!(o(Some(3), 7).due(&checkpoints));
        assert!(
            !o(Some(2), 0).due(&checkpoints),
            "its partition's checkpoint is not in it"
        );
        assert!(o(None, 99).due(&checkpoints), "no partition's state: any transaction");
        assert!(!o(Some(1), 0).due(&[]));
    }

    #[test]
    fn the_transactional_id_is_the_configured_one_or_group_and_host() {
        let mut c = DerivedTopicsConfig::default();
        let id = transactional_id(&c, "dwcp");
        assert!(id.starts_with("dwcp-") && id.len() > 5, "{id}");
        c.transactional_id = Some("worker-7".into());
        assert_eq!(transactional_id(&c, "dwcp"), "worker-7");
    }
    use dwcp_operators::health::{Component, Health};
    use dwcp_operators::sla::{SlaReport, Violation};

    #[test]
    fn records_encode_with_the_shipped_schemas_and_decode_back() {
        let r = SlaRecord {
            sla: "api".into(),
            kind: SlaKind::Latency,
            region: "eu-west-1".into(),
            target: 0.99,
            period_start: 0,
            period_end: 180_000_000_000,
            report: SlaReport {
                name: "api".into(),
                compliance: 0.9,
                month_compliance: 0.9,
                compliant: false,
                budget_allowed: 0.01,
                budget_consumed: 10.0,
                budget_remaining: -9.0,
                budget_remaining_seconds: -233_280.0,
                burn_rates: vec![("5m".into(), 10.0), ("1h".into(), 10.0)],
                alert: None,
                violations: vec![Violation {
                    start: 60_000_000_000,
                    end: None,
                    worst: 0.5,
                }],
            },
        };
        let codec = SingleObjectCodec::for_kind(DerivedKind::SlaReport).expect("codec");
        let bytes = codec.encode_serde(&SlaAvro::from(&r)).expect("encode");
        let v = codec.decode(&bytes).expect("decode");
        let text = format!("{v:?}");
        assert!(text.contains("Enum(1, \"latency\")"), "{text}");
        assert!(text.contains("TimestampMillis(180000)"), "{text}");
        assert!(text.contains("TimestampMillis(60000)"), "{text}");

        let c = HealthChange {
            region: "us-east-1".into(),
            time: 120_000_000_000,
            health: Health {
                score: 85.0,
                healthy: true,
                trend: Trend::Degrading,
                components: vec![Component {
                    name: "latency".into(),
                    status: ComponentStatus::Degraded,
                    score: 60.0,
                    message: "170.0 ms".into(),
                }],
            },
        };
        let codec = SingleObjectCodec::for_kind(DerivedKind::RegionHealth).expect("codec");
        let bytes = codec.encode_serde(&HealthAvro::from(&c)).expect("encode");
        let text = format!("{:?}", codec.decode(&bytes).expect("decode"));
        assert!(text.contains("Enum(2, \"degrading\")"), "{text}");
        assert!(text.contains("Enum(1, \"degraded\")"), "{text}");

        let a = AnomalyRecord {
            labels: [
                ("__name__".to_string(), "rtt_ms".to_string()),
                ("region".into(), "eu".into()),
            ]
            .into(),
            episode: dwcp_operators::anomaly::Episode {
                start: 1_000_000_000,
                end: 2_000_000_000,
                peak_time: 1_500_000_000,
                peak_score: 0.9,
                value: 130.0,
                expected: 50.0,
                band: 8.0,
                detectors: vec!["three_sigma".into(), "seasonal".into()],
                baseline: dwcp_operators::anomaly::Baseline {
                    count: 700,
                    mean: 50.0,
                    stddev: 2.0,
                    min: 40.0,
                    max: 60.0,
                    median: 50.0,
                    moving_average: 50.0,
                    ewma: 50.0,
                },
            },
            closed: true,
        };
        let codec = SingleObjectCodec::for_kind(DerivedKind::Anomaly).expect("codec");
        let bytes = codec.encode_serde(&AnomalyAvro::from(&a)).expect("encode");
        let text = format!("{:?}", codec.decode(&bytes).expect("decode"));
        assert!(text.contains("(\"metric\", String(\"rtt_ms\"))"), "{text}");
        assert!(text.contains("Union(1, TimestampMillis(2000))"), "{text}");
        assert!(text.contains("Double(42.0)"), "band_lower: {text}");
    }
}
