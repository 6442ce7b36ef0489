//! Derived records back to Kafka: SLA reports on `dwcp.sla`, region health changes on
//! `dwcp.health` and alert state changes on `dwcp.alerts`, Avro single-object encoded with the
//! schemas in `schemas/avro/`.
//!
//! Records are keyed deterministically (`<sla>/<region>/<period end ms>`,
//! `<region>/<time ms>`, `<fingerprint>/<state>/<time ms>`), so a consumer can drop the duplicates an at-least-once restart may
//! produce. The producer is idempotent; sends are enqueued in order without waiting and their
//! delivery is awaited in the background, counted in `dwcp_derived_records_total{topic,result}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dwcp_operators::alerts::AlertTransition;
use dwcp_operators::anomaly::operator::AnomalyRecord;
use dwcp_operators::derived::{HealthChange, SlaRecord};
use dwcp_operators::health::{ComponentStatus, Trend};
use dwcp_operators::sla::SlaKind;
use dwcp_schemas::avro::{DerivedKind, SingleObjectCodec};
use dwcp_sinks::ack::Ack;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

use crate::config::DerivedTopicsConfig;
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
}

impl DerivedProducer {
    /// A producer for `config`, on `brokers` unless the config names its own.
    ///
    /// # Errors
    /// When the client cannot be created or a shipped schema fails to parse.
    pub fn new(config: DerivedTopicsConfig, brokers: &str, telemetry: Arc<Telemetry>) -> anyhow::Result<Self> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", config.brokers.as_deref().unwrap_or(brokers))
            .set("enable.idempotence", "true")
            .set("linger.ms", "50")
            .set("message.timeout.ms", "120000");
        for (k, v) in &config.producer_options {
            cc.set(k, v);
        }
        Ok(DerivedProducer {
            producer: cc.create()?,
            config,
            sla: SingleObjectCodec::for_kind(DerivedKind::SlaReport)?,
            health: SingleObjectCodec::for_kind(DerivedKind::RegionHealth)?,
            alerts: SingleObjectCodec::for_kind(DerivedKind::Alert)?,
            anomalies: SingleObjectCodec::for_kind(DerivedKind::Anomaly)?,
            telemetry,
        })
    }

    /// Encodes and enqueues SLA reports, health changes and alert transitions; delivery is
    /// counted in the background, and `ack` (when given) is held until each record's delivery
    /// is settled.
    pub fn publish(&self, sla: &[SlaRecord], health: &[HealthChange], alerts: &[AlertTransition], ack: Option<&Ack>) {
        for a in alerts {
            // Key: fingerprint/state/time, unique per transition.
            let key = format!("{:016x}/{}/{}", a.fingerprint, a.state.as_str(), ms(a.event_time));
            let payload = self.alerts.encode_serde(&AlertAvro::from(a));
            self.send(&self.config.alerts, key, payload, ack);
        }
        for r in sla {
            let key = format!("{}/{}/{}", r.sla, r.region, ms(r.period_end));
            let payload = self.sla.encode_serde(&SlaAvro::from(r));
            self.send(&self.config.sla, key, payload, ack);
        }
        for c in health {
            let key = format!("{}/{}", c.region, ms(c.time));
            let payload = self.health.encode_serde(&HealthAvro::from(c));
            self.send(&self.config.health, key, payload, ack);
        }
    }

    /// Encodes and enqueues anomaly episodes; key `<series>/<start ms>`; `ack` as in `publish`.
    pub fn publish_anomalies(&self, records: &[AnomalyRecord], ack: Option<&Ack>) {
        for r in records {
            let key = format!("{}/{}", r.series(), ms(r.episode.start));
            let payload = self.anomalies.encode_serde(&AnomalyAvro::from(r));
            self.send(&self.config.anomalies, key, payload, ack);
        }
    }

    fn send(
        &self,
        topic: &str,
        key: String,
        payload: Result<Vec<u8>, dwcp_schemas::avro::AvroError>,
        ack: Option<&Ack>,
    ) {
        let count = |result: &str| {
            self.telemetry
                .derived_records
                .get_or_create(&labels([("topic", topic), ("result", result)]))
                .inc();
        };
        let payload = match payload {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(%topic, %key, error = %e, "derived record does not fit its schema; not published");
                count("failed");
                return;
            }
        };
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
                count("failed");
            }
        }
    }

    /// Waits up to `timeout` for queued records to be delivered.
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer as _;
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "derived records still queued at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
