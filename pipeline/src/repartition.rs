//! The re-keying stage: with `repartition.enabled`, metric points and spans are decoded from
//! the inputs (by the group `<group_id>.repartition`) and written to the internal topics, each
//! point to the partition of its series key, each span to the partition of its trace id. The
//! keyed stage (the group `<group_id>`) reads those topics, so all regions' points of one series
//! and all spans of one trace meet at one worker, whichever worker read them first.
//!
//! # Format and delivery
//!
//! An internal message is OTLP protobuf (`MetricsData` / `TracesData`), the records of one
//! input message that fall in one partition and share a region, in input order; the region
//! travels in the `dwcp.region` header (a resource without `cloud.region` stays without it),
//! the input topic and partition in `dwcp.source.topic` and `dwcp.source.partition`: the keyed
//! stage's watermark is the minimum over input partitions, as with one worker, so a rule or a
//! window closes only when every input partition has passed it, whatever worker re-keyed it.
//! The producer is idempotent with no delivery timeout, so a series' points keep their order in
//! their partition and a broker outage stalls the stage instead of dropping anything. An input
//! offset is committed only when every internal message made from it is acknowledged by the
//! broker (the same `Ack` contract as every sink), so a crash re-reads, never loses: at least
//! once, with duplicates possible after a crash (the keyed operators drop points older than
//! what they have, and identical samples are accepted again by Prometheus).
//!
//! # Keys
//!
//! Partition = FNV-1a 64 of the key, mixed by MurmurHash3's `fmix64`, modulo the partition
//! count: the same on every worker. A
//! span's key is its trace id's 16 bytes. A metric point's key is fixed at startup from the
//! rules and the aggregation rules, so that what one computation reads meets at one worker:
//!
//! - the metrics a rule group reads (its selectors' metric families, the inputs of the
//!   recording rules and cross-region aggregations it reads) share the key of the group, and
//!   groups reading a common metric share one key ([`KeyPlan`]); each group is evaluated by
//!   the worker that owns its key's partition, so `absent()` is answered by one worker, with
//!   the metric's whole data;
//! - the metrics the SLA, health, network and capacity operators read share one key with the
//!   rule groups reading any of them or any of the operators' outputs (`derived` when no
//!   group does): the operators run at the worker owning that key's partition;
//! - an aggregation rule's metric is keyed by its OTLP name;
//! - with `target_info` on, each input message's resources get a marker point
//!   ([`dwcp_operators::prom::TARGET_INFO_MARKER`]) keyed by the resource's `job`, `instance` and
//!   region, in messages of their own: the worker owning that key writes its `target_info`;
//! - any other point by its metric family: its Prometheus name without `_bucket`, `_sum`,
//!   `_count` (every series of a metric meets at one worker, for the anomaly detectors and the
//!   API's queries by metric).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dwcp_operators::prom::{target_info_key, target_info_markers};
use dwcp_schemas::model::{MetricPoint, Span, TraceId};
use dwcp_schemas::otlp::{encode_metrics, encode_spans};
use dwcp_schemas::Records;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use tokio::sync::mpsc;

use crate::config::{RepartitionConfig, ValidatedConfig};
use crate::source::{producer_config, SourceBatch};
use crate::telemetry::{labels, Telemetry};

/// Largest internal message the stage writes (a larger group of records is split): under the
/// 1 MB Kafka brokers accept by default.
pub const MAX_MESSAGE_BYTES: usize = 900 * 1024;

/// The header carrying an internal message's region.
pub const REGION_HEADER: &str = "dwcp.region";
/// The headers naming the input topic and partition an internal message was made from: the
/// keyed stage tracks watermarks per input partition, as one worker reading the inputs would.
pub const SOURCE_TOPIC_HEADER: &str = "dwcp.source.topic";
/// See [`SOURCE_TOPIC_HEADER`].
pub const SOURCE_PARTITION_HEADER: &str = "dwcp.source.partition";
/// On span-metrics marker messages: the input offset they were made from, and
/// ([`SOURCE_SEQ_HEADER`]) the message's index among that input message's markers, so the
/// keyed stage counts each once whichever stage replays it.
pub const SOURCE_OFFSET_HEADER: &str = "dwcp.source.offset";
/// See [`SOURCE_OFFSET_HEADER`].
pub const SOURCE_SEQ_HEADER: &str = "dwcp.source.seq";

/// The key of span-metrics markers, and the token of both span-metrics families in the plan:
/// the rule groups reading span metrics meet where they are counted.
const SPAN_METRICS_KEY: &str = "spanmetrics";

/// The plan's token of a metric family: both span-metrics families share one.
fn family_token(family: &str) -> &str {
    match family {
        "traces_span_metrics_calls_total" | "traces_span_metrics_duration_milliseconds" => SPAN_METRICS_KEY,
        f => f,
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// MurmurHash3's 64-bit finalizer: FNV-1a's low bits depend only on the input's low bits, so
/// the hash is mixed before it is reduced to a partition.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn partition_of(hash: u64, partitions: i32) -> i32 {
    let n = u64::try_from(partitions.max(1)).unwrap_or(1);
    i32::try_from(fmix64(hash) % n).unwrap_or(0)
}

/// The partition of a key.
pub fn key_partition(key: &str, partitions: i32) -> i32 {
    partition_of(fnv1a(FNV_OFFSET, key.as_bytes()), partitions)
}

/// Which key each metric point and each rule group gets; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct KeyPlan {
    /// Metric family (or `otlp:<name>` of an aggregated metric) → the key of the rule groups
    /// (or the derived operator) reading it.
    read_by_rules: HashMap<String, String>,
    /// OTLP names of aggregated metrics.
    aggregated: std::collections::HashSet<String>,
    /// Per rule group (config order): its key.
    group_keys: Vec<String>,
    /// The derived operator's key, when it is configured.
    pub derived_key: Option<String>,
    /// Rule groups whose selectors match metric names by pattern: they read only the series
    /// their own worker holds.
    pub open_groups: Vec<String>,
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

impl KeyPlan {
    /// The plan for `config`'s rule groups, aggregation rules and derived operator.
    pub fn new(config: &ValidatedConfig) -> Self {
        use dwcp_operators::prom::family;
        let groups = &config.rule_groups;
        let agg = &config.config.operators.aggregation.rules;
        // The derived operator (SLAs, health, network, capacity) is one more reader, after the
        // groups: what it reads meets at one worker, with the groups reading its outputs.
        let derived = dwcp_operators::derived::DerivedOperator::new(config.config.operators.derived_config())
            .ok()
            .filter(|_| config.config.operators.derived_config().is_enabled());
        let d = groups.len();
        // What each group reads, as family tokens; recorded names resolve to their group, the
        // derived operator's outputs to it.
        let mut recorded_by: HashMap<&str, usize> = groups
            .iter()
            .enumerate()
            .flat_map(|(gi, g)| {
                g.rules
                    .iter()
                    .filter(|r| !r.is_alert)
                    .map(move |r| (r.name.as_str(), gi))
            })
            .collect();
        if derived.is_some() {
            recorded_by.extend(dwcp_operators::derived::OUTPUT_NAMES.iter().map(|n| (*n, d)));
        }
        let mut parent: Vec<usize> = (0..=d).collect();
        let mut readers: HashMap<String, usize> = HashMap::new();
        let mut open_groups = Vec::new();
        let mut read = |gi: usize, n: &str, parent: &mut Vec<usize>| {
            let token = if let Some(&hi) = recorded_by.get(n) {
                // A recorded series lives where its group is evaluated.
                let (a, b) = (find(parent, gi), find(parent, hi));
                parent[a.max(b)] = a.min(b);
                return;
            } else if let Some(a) = agg.iter().find(|a| n.starts_with(&format!("{}:", a.record()))) {
                format!("otlp:{}", a.metric)
            } else {
                family_token(family(n)).to_string()
            };
            match readers.get(&token) {
                Some(&other) => {
                    let (a, b) = (find(parent, gi), find(parent, other));
                    parent[a.max(b)] = a.min(b);
                }
                None => {
                    readers.insert(token, gi);
                }
            }
        };
        for (gi, g) in groups.iter().enumerate() {
            let mut open = false;
            for r in &g.rules {
                let (names, o) = r.selected_metrics();
                open |= o;
                for n in names {
                    read(gi, &n, &mut parent);
                }
            }
            if open {
                open_groups.push(format!("{}:{}", g.file, g.name));
            }
        }
        if let Some(op) = &derived {
            for n in op.read_names().0 {
                read(d, &n, &mut parent);
            }
        }
        let node_key = |root: usize| {
            if root == d {
                "derived".to_string()
            } else {
                format!("rules:{}:{}", groups[root].file, groups[root].name)
            }
        };
        let group_keys: Vec<String> = (0..groups.len()).map(|gi| node_key(find(&mut parent, gi))).collect();
        let derived_key = derived.map(|_| node_key(find(&mut parent, d)));
        let read_by_rules = readers
            .into_iter()
            .map(|(token, gi)| (token, node_key(find(&mut parent, gi))))
            .collect();
        KeyPlan {
            read_by_rules,
            aggregated: agg.iter().map(|a| a.metric.clone()).collect(),
            group_keys,
            derived_key,
            open_groups,
        }
    }

    /// A metric point's key.
    pub fn point_key(&self, p: &MetricPoint) -> String {
        use dwcp_operators::prom::{family, metric_name, prom_kind};
        if self.aggregated.contains(&p.metric.name) {
            let token = format!("otlp:{}", p.metric.name);
            return self.read_by_rules.get(&token).cloned().unwrap_or(token);
        }
        let name = metric_name(&p.metric.name, &p.metric.unit, prom_kind(&p.value));
        let f = family(&name);
        self.read_by_rules.get(f).cloned().unwrap_or_else(|| f.to_string())
    }

    /// The key of span-metrics markers: the rule groups reading span metrics, if any.
    pub fn span_metrics_key(&self) -> String {
        self.read_by_rules
            .get(SPAN_METRICS_KEY)
            .cloned()
            .unwrap_or_else(|| SPAN_METRICS_KEY.to_string())
    }

    /// The partition of each rule group's key, in config order.
    pub fn group_partitions(&self, partitions: i32) -> Vec<i32> {
        self.group_keys.iter().map(|k| key_partition(k, partitions)).collect()
    }

    /// The partition of the derived operator's key.
    pub fn derived_partition(&self, partitions: i32) -> Option<i32> {
        self.derived_key.as_deref().map(|k| key_partition(k, partitions))
    }
}

/// The partition of a trace.
pub fn trace_partition(t: &TraceId, partitions: i32) -> i32 {
    partition_of(fnv1a(FNV_OFFSET, &t.0), partitions)
}

/// Creates the internal topics when missing and returns their partition counts (series, spans).
///
/// # Errors
/// When the broker refuses the creation for another reason than their existence, or their
/// metadata cannot be read.
pub async fn ensure_topics(config: &ValidatedConfig) -> anyhow::Result<(i32, i32)> {
    let rp = &config.config.repartition;
    let admin: AdminClient<DefaultClientContext> = producer_config(config).create()?;
    let topics = [
        NewTopic::new(
            &rp.series_topic,
            rp.partitions,
            TopicReplication::Fixed(rp.replication_factor),
        ),
        NewTopic::new(
            &rp.spans_topic,
            rp.partitions,
            TopicReplication::Fixed(rp.replication_factor),
        ),
    ];
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin.create_topics(&topics, &opts).await? {
        match r {
            Ok(name) => tracing::info!(topic = %name, partitions = rp.partitions, "internal topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, e)) => anyhow::bail!("repartition: creating internal topic {name}: {e}"),
        }
    }
    let client: FutureProducer = producer_config(config).create()?;
    let series = partition_count(&client, &rp.series_topic).await?;
    let spans = partition_count(&client, &rp.spans_topic).await?;
    Ok((series, spans))
}

/// The partitions of the topics `stage` reads (its names and patterns against the cluster's
/// topics now).
///
/// # Errors
/// When the metadata cannot be read.
pub async fn input_partitions(stage: &ValidatedConfig) -> anyhow::Result<Vec<(Arc<str>, i32)>> {
    let client: FutureProducer = producer_config(stage).create()?;
    let c = client.clone();
    let md = tokio::task::spawn_blocking(move || c.client().fetch_metadata(None, Duration::from_secs(10))).await??;
    let mut out = Vec::new();
    for t in md.topics() {
        if t.error().is_none() && stage.topic(t.name()).is_some() {
            let name: Arc<str> = Arc::from(t.name());
            out.extend(t.partitions().iter().map(|p| (name.clone(), p.id())));
        }
    }
    out.sort();
    Ok(out)
}

async fn partition_count(client: &FutureProducer, topic: &str) -> anyhow::Result<i32> {
    // A topic just created may take a moment to show its partitions.
    for _ in 0..50 {
        let c = client.clone();
        let t = topic.to_string();
        let md =
            tokio::task::spawn_blocking(move || c.client().fetch_metadata(Some(&t), Duration::from_secs(5))).await??;
        if let Some(n) = md
            .topics()
            .iter()
            .find(|mt| mt.name() == topic && mt.error().is_none())
            .map(|mt| mt.partitions().len())
            .filter(|n| *n > 0)
        {
            return Ok(i32::try_from(n)?);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("repartition: internal topic {topic} shows no partitions")
}

/// The stage's producer and what it needs to route.
pub struct Repartitioner {
    producer: FutureProducer,
    config: RepartitionConfig,
    plan: KeyPlan,
    series_partitions: i32,
    spans_partitions: i32,
    telemetry: Arc<Telemetry>,
    /// Send a `target_info` marker per resource of each message.
    target_info: bool,
    /// Makes the span-metrics markers of each message of spans.
    span_metrics: Option<dwcp_operators::spanmetrics::SpanMetrics>,
}

impl Repartitioner {
    /// A producer for the internal topics of `config`, whose partition counts are given.
    ///
    /// # Errors
    /// When librdkafka refuses the producer configuration.
    pub fn new(
        config: &ValidatedConfig,
        (series_partitions, spans_partitions): (i32, i32),
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, KafkaError> {
        let mut pc = producer_config(config);
        pc.set("enable.idempotence", "true")
            // No delivery timeout: a broker outage stalls the stage (and, through the full
            // queue, the consumer) instead of failing messages.
            .set("message.timeout.ms", "0")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("message.max.bytes", "33554432");
        Ok(Repartitioner {
            producer: pc.create()?,
            config: config.config.repartition.clone(),
            plan: KeyPlan::new(config),
            series_partitions,
            spans_partitions,
            telemetry,
            target_info: config.config.operators.prometheus.target_info,
            span_metrics: config
                .config
                .operators
                .span_metrics
                .enabled
                .then(|| dwcp_operators::spanmetrics::SpanMetrics::new(config.config.operators.span_metrics.clone())),
        })
    }

    /// Writes every batch of `input` to the internal topics; a batch's `ack` is released when
    /// the broker has acknowledged all of its messages. Returns when `input` closes and every
    /// message is delivered.
    pub async fn run(mut self, mut input: mpsc::Receiver<SourceBatch>) {
        let series_label = labels([("topic", self.config.series_topic.as_str())]);
        let spans_label = labels([("topic", self.config.spans_topic.as_str())]);
        let series_count = self.telemetry.repartitioned.get_or_create(&series_label).clone();
        let spans_count = self.telemetry.repartitioned.get_or_create(&spans_label).clone();
        let mut pending = tokio::task::JoinSet::new();
        while let Some(b) = input.recv().await {
            let mut deliveries = Vec::new();
            match &*b.records {
                Records::Metrics(points) => {
                    // Points of one metric come together and share their descriptor: the key
                    // (a name conversion and a hash) is computed once per run of them.
                    let mut last: Option<(usize, &'static str, i32)> = None;
                    let groups = group_by(points, |p| {
                        let kind = p.value.kind();
                        let partition = match last {
                            Some((d, k, partition)) if d == Arc::as_ptr(&p.metric) as usize && k == kind => partition,
                            _ => {
                                let partition = key_partition(&self.plan.point_key(p), self.series_partitions);
                                last = Some((Arc::as_ptr(&p.metric) as usize, kind, partition));
                                partition
                            }
                        };
                        (partition, p.origin.region.clone())
                    });
                    self.send_series(groups, &b, &mut deliveries).await;
                    series_count.inc_by(points.len() as u64);
                    if self.target_info {
                        // In messages of their own: the keyed stage turns them into
                        // `target_info` and passes them to nothing else.
                        let markers = target_info_markers(points);
                        let groups = group_by(&markers, |m| {
                            (
                                key_partition(&target_info_key(m), self.series_partitions),
                                m.origin.region.clone(),
                            )
                        });
                        self.send_series(groups, &b, &mut deliveries).await;
                    }
                }
                Records::Traces(spans) => {
                    let groups = group_by(spans, |s: &Span| {
                        (
                            trace_partition(&s.trace_id, self.spans_partitions),
                            s.origin.region.clone(),
                        )
                    });
                    let topic = &self.config.spans_topic;
                    self.send_groups(
                        topic,
                        groups,
                        |m| encode_spans(m.iter().copied()),
                        &b,
                        false,
                        &mut deliveries,
                    )
                    .await;
                    spans_count.inc_by(spans.len() as u64);
                    // Their span-metrics counts, to the partition where span metrics are kept.
                    let markers = self.span_metrics.as_mut().map(|m| m.markers(spans)).unwrap_or_default();
                    let partition = key_partition(&self.plan.span_metrics_key(), self.series_partitions);
                    let groups = group_by(&markers, |m| (partition, m.origin.region.clone()));
                    let topic = &self.config.series_topic;
                    self.send_groups(
                        topic,
                        groups,
                        |m| encode_metrics(m.iter().copied()),
                        &b,
                        true,
                        &mut deliveries,
                    )
                    .await;
                }
                // The stage reads no log topics (`ValidatedConfig::repartition_stage`).
                Records::Logs(_) => {}
            }
            let ack = b.ack;
            let failures = self.telemetry.repartition_failures.clone();
            pending.spawn(async move {
                let mut ok = true;
                for d in deliveries {
                    match d.await {
                        Ok(Ok(_)) => {}
                        Ok(Err((e, _))) => {
                            tracing::error!(error = %e, "internal topic message not delivered; its input offset stays uncommitted until a restart re-reads it");
                            ok = false;
                        }
                        Err(_) => ok = false,
                    }
                }
                if ok {
                    drop(ack);
                } else {
                    failures.inc();
                    // Never released: the input offset is not committed past this message.
                    std::mem::forget(ack);
                }
            });
            // Reap what is done, so the set stays as large as what is in flight.
            while pending.try_join_next().is_some() {}
        }
        while pending.join_next().await.is_some() {}
        let p = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(30))).await;
    }

    /// Metric points to the series topic, one message per (partition, region) group.
    async fn send_series(
        &self,
        groups: Groups<'_, MetricPoint>,
        from: &SourceBatch,
        deliveries: &mut Vec<DeliveryFuture>,
    ) {
        let topic = &self.config.series_topic;
        self.send_groups(
            topic,
            groups,
            |m| encode_metrics(m.iter().copied()),
            from,
            false,
            deliveries,
        )
        .await;
    }

    /// One message per (partition, region) group, encoded by `encode`; with `numbered`, each
    /// carries the input offset and its index among these messages.
    async fn send_groups<T>(
        &self,
        topic: &str,
        groups: Groups<'_, T>,
        encode: impl Fn(&[&T]) -> Vec<u8>,
        from: &SourceBatch,
        numbered: bool,
        deliveries: &mut Vec<DeliveryFuture>,
    ) {
        let mut seq = 0u32;
        for ((partition, region), members) in groups {
            // Under the brokers' default message limit (1 MB): a group too large is halved
            // until its parts fit (a single record larger than that is sent alone).
            let mut parts: Vec<&[&T]> = vec![&members];
            while let Some(part) = parts.pop() {
                let payload = encode(part);
                if payload.len() > MAX_MESSAGE_BYTES && part.len() > 1 {
                    let (first, second) = part.split_at(part.len() / 2);
                    parts.push(second);
                    parts.push(first);
                    continue;
                }
                let position = numbered.then_some(seq);
                seq += 1;
                deliveries.push(self.send(topic, partition, &region, from, position, payload).await);
            }
        }
    }

    /// Enqueues one message, waiting while librdkafka's queue is full.
    async fn send(
        &self,
        topic: &str,
        partition: i32,
        region: &str,
        from: &SourceBatch,
        seq: Option<u32>,
        payload: Vec<u8>,
    ) -> DeliveryFuture {
        let source_partition = from.partition.to_string();
        let mut headers = OwnedHeaders::new();
        for (key, value) in [
            (REGION_HEADER, region),
            (SOURCE_TOPIC_HEADER, &*from.topic),
            (SOURCE_PARTITION_HEADER, source_partition.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        if let Some(seq) = seq {
            let (offset, seq) = (from.ack.id().to_string(), seq.to_string());
            for (key, value) in [(SOURCE_OFFSET_HEADER, &offset), (SOURCE_SEQ_HEADER, &seq)] {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_str()),
                });
            }
        }
        let mut record = FutureRecord::<(), _>::to(topic)
            .partition(partition)
            .payload(&payload)
            .headers(headers);
        loop {
            match self.producer.send_result(record) {
                Ok(d) => return d,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, r)) => {
                    tracing::warn!(error = %e, topic, partition, "internal topic produce refused, retrying");
                    record = r;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// Records grouped by (internal partition, region).
type Groups<'a, T> = Vec<((i32, Arc<str>), Vec<&'a T>)>;

/// The items grouped by `key`, groups in order of first appearance, items in input order.
fn group_by<T, K: Eq + std::hash::Hash + Clone>(items: &[T], mut key: impl FnMut(&T) -> K) -> Vec<(K, Vec<&T>)> {
    let mut index: HashMap<K, usize> = HashMap::new();
    let mut groups: Vec<(K, Vec<&T>)> = Vec::new();
    for item in items {
        let k = key(item);
        let i = *index.entry(k.clone()).or_insert_with(|| {
            groups.push((k, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(item);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwcp_schemas::model::{Number, PointValue, Temporality};

    fn point(name: &str, unit: &str, value: dwcp_schemas::model::PointValue) -> MetricPoint {
        use dwcp_schemas::model::{Attributes, MetricDescriptor, Origin, Resource, Scope};
        MetricPoint {
            origin: Origin {
                region: Arc::from("r"),
                resource: Arc::new(Resource::default()),
                scope: Arc::new(Scope::default()),
            },
            metric: Arc::new(MetricDescriptor {
                name: name.into(),
                description: String::new(),
                unit: unit.into(),
            }),
            attributes: Attributes::default(),
            start_time_unix_nano: 0,
            time_unix_nano: 1,
            value,
            flags: 0,
        }
    }

    /// The key plan of a repartitioning configuration with `rules` as its rule file and
    /// `operators` (YAML lines under `operators:`); and the rule file's path.
    fn plan_for(rules: &str, operators: &str) -> (KeyPlan, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.yml");
        std::fs::write(&path, rules).expect("write rules");
        let yaml = format!(
            "repartition: {{enabled: true}}\nrules:\n  files: [\"{}\"]\noperators:\n  span_metrics: {{enabled: false}}\n{operators}",
            path.display()
        );
        let c = crate::config::parse(&yaml, std::path::Path::new("p.yaml"), &[]).expect("valid");
        (KeyPlan::new(&c), path.display().to_string())
    }

    fn counter(v: i64) -> PointValue {
        PointValue::Sum {
            value: Number::Int(v),
            temporality: Temporality::Cumulative,
            monotonic: true,
        }
    }

    fn hist() -> PointValue {
        PointValue::Histogram {
            count: 1,
            sum: Some(1.0),
            min: None,
            max: None,
            bounds: vec![],
            bucket_counts: vec![1],
            temporality: Temporality::Cumulative,
        }
    }

    fn gauge() -> PointValue {
        PointValue::Gauge { value: Number::Int(1) }
    }

    /// Rule groups reading a common metric (directly, through a recording rule or through a
    /// cross-region aggregation) share one key; everything else keys by its own family.
    #[test]
    fn what_one_rule_group_reads_meets_under_one_key() {
        let (plan, file) = plan_for(
            r#"groups:
  - name: latency
    rules:
      - record: job:latency:p95
        expr: histogram_quantile(0.95, sum by (le) (rate(lat_milliseconds_bucket[5m])))
  - name: slo
    rules:
      - alert: Slow
        expr: job:latency:p95 > 100
      - alert: Errors
        expr: rate(errors_total[1m]) > 0
  - name: traffic
    rules:
      - alert: NoTraffic
        expr: absent(requests_total) or dwcp:rtt:p95:10s > 5
  - name: open
    rules:
      - alert: Any
        expr: '{__name__=~"x.*"} > 1'
"#,
            "  prometheus: {target_info: false}\n  aggregation:\n    rules: [{metric: dwcp.rtt}]\n",
        );
        // latency and slo: slo reads latency's recorded series and errors_total.
        let latency = format!("rules:{file}:latency");
        assert_eq!(plan.point_key(&point("lat", "ms", hist())), latency);
        assert_eq!(plan.point_key(&point("errors", "", counter(1))), latency);
        // traffic: requests_total and the aggregated dwcp.rtt, whatever its unit.
        let traffic = format!("rules:{file}:traffic");
        assert_eq!(plan.point_key(&point("requests", "", counter(2))), traffic);
        assert_eq!(plan.point_key(&point("dwcp.rtt", "ms", gauge())), traffic);
        // Read by no rule: the family.
        assert_eq!(
            plan.point_key(&point("queue.depth", "By", gauge())),
            "queue_depth_bytes"
        );
        assert_eq!(
            plan.group_keys,
            [latency.clone(), latency, traffic, format!("rules:{file}:open")]
        );
        assert_eq!(plan.open_groups, [format!("{file}:open")]);
        let parts = plan.group_partitions(12);
        assert_eq!(parts[0], parts[1]);
        assert_eq!(parts[0], key_partition(&format!("rules:{file}:latency"), 12));
    }

    /// Both span-metrics families (their names as the conversion writes them) are one token:
    /// rule groups reading either meet, and the markers go where they are evaluated.
    #[test]
    fn span_metrics_are_counted_where_the_rules_reading_them_are_evaluated() {
        use dwcp_operators::spanmetrics::{SpanMetrics, SpanMetricsConfig};
        let mut m = SpanMetrics::new(SpanMetricsConfig::default());
        let span = {
            use dwcp_schemas::model::{Attributes, Origin, Resource, Scope, SpanId, SpanKind, StatusCode, TraceId};
            Span {
                origin: Origin {
                    region: Arc::from("eu"),
                    resource: Arc::new(Resource::default()),
                    scope: Arc::new(Scope::default()),
                },
                trace_id: TraceId([1; 16]),
                span_id: SpanId([1; 8]),
                parent_span_id: None,
                trace_state: String::new(),
                name: "op".into(),
                kind: SpanKind::Server,
                start_time_unix_nano: 1_000_000,
                end_time_unix_nano: 2_000_000,
                attributes: Attributes::default(),
                events: vec![],
                links: vec![],
                status_code: StatusCode::Unset,
                status_message: String::new(),
            }
        };
        m.process(&[span]);
        let mut points = Vec::new();
        m.flush(10_000_000_000, &mut points);
        let mut samples = Vec::new();
        dwcp_operators::prom::PromConverter::new(dwcp_operators::prom::PromConfig::default())
            .convert(&points, &mut samples);
        let families: std::collections::BTreeSet<String> = samples
            .iter()
            .filter_map(|s| s.labels.iter().find(|l| &*l.0 == "__name__"))
            .map(|l| dwcp_operators::prom::family(&l.1).to_string())
            .collect();
        let families: Vec<&str> = families
            .iter()
            .filter(|f| *f != "target_info")
            .map(|f| family_token(f))
            .collect();
        assert_eq!(families, [SPAN_METRICS_KEY, SPAN_METRICS_KEY]);

        let (plan, file) = plan_for(
            r#"groups:
  - name: red
    rules:
      - alert: Errors
        expr: sum by (job) (rate(traces_span_metrics_calls_total{status_code="STATUS_CODE_ERROR"}[1m])) > 0
  - name: latency
    rules:
      - alert: Slow
        expr: histogram_quantile(0.95, sum by (le) (rate(traces_span_metrics_duration_milliseconds_bucket[5m]))) > 250
"#,
            "",
        );
        let red = format!("rules:{file}:red");
        assert_eq!(plan.group_keys, [red.clone(), red.clone()]);
        assert_eq!(plan.span_metrics_key(), red);
        // Read by no rule: a key of their own.
        let (plan, _) = plan_for("groups: []\n", "");
        assert_eq!(plan.span_metrics_key(), SPAN_METRICS_KEY);
    }

    #[test]
    fn the_derived_operators_inputs_meet_with_the_rules_that_read_them_or_its_outputs() {
        let (plan, file) = plan_for(
            r#"groups:
  - name: errors
    rules:
      - alert: Errors
        expr: rate(errors_total[1m]) > 0
  - name: budget
    rules:
      - alert: BudgetLow
        expr: dwcp_sla_compliance_ratio < 0.99
  - name: other
    rules:
      - alert: Queue
        expr: queue_depth > 5
"#,
            "  prometheus: {target_info: false}\n  sla:\n    - {name: api, kind: availability, target: 0.99, total: requests_total, bad: errors_total}\n    - {name: lat, kind: latency, target: 0.9, histogram: 'latency_milliseconds{job=\"gw\"}', threshold: 250}\n  capacity:\n    - {resource: disk, series: disk_used_ratio}\n",
        );
        // errors_total is read by the first group and the SLA; the budget group reads the SLA's
        // output: one key, the first group's (the lowest index names the union).
        let key = format!("rules:{file}:errors");
        assert_eq!(plan.derived_key.as_deref(), Some(key.as_str()));
        assert_eq!(plan.group_keys[..2], [key.clone(), key.clone()]);
        for p in [
            point("requests", "", counter(1)),
            point("errors", "", counter(1)),
            point("latency", "ms", hist()),
            point("disk.used", "1", gauge()),
        ] {
            assert_eq!(plan.point_key(&p), key, "{}", p.metric.name);
        }
        // A group reading none of that keeps its own key.
        assert_eq!(plan.group_keys[2], format!("rules:{file}:other"));
        assert_eq!(
            plan.point_key(&point("queue.depth", "", gauge())),
            format!("rules:{file}:other")
        );
        assert_eq!(plan.derived_partition(12), Some(key_partition(&key, 12)));
        // Without rules the operator's inputs share the key "derived".
        let c = crate::config::parse(
            "repartition: {enabled: true}\noperators:\n  span_metrics: {enabled: false}\n  prometheus: {target_info: false}\n  capacity:\n    - {resource: disk, series: disk_used_ratio}\n",
            std::path::Path::new("p.yaml"),
            &[],
        )
        .expect("valid");
        let plan = KeyPlan::new(&c);
        assert_eq!(plan.derived_key.as_deref(), Some("derived"));
        let p = point("disk.used", "1", gauge());
        assert_eq!(plan.point_key(&p), "derived");
        // A selector naming no metric cannot be routed: refused, naming the field.
        let e = crate::config::parse(
            "repartition: {enabled: true}\noperators:\n  span_metrics: {enabled: false}\n  prometheus: {target_info: false}\n  capacity:\n    - {resource: disk, series: '{job=\"x\"}'}\n",
            std::path::Path::new("p.yaml"),
            &[],
        )
        .expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("p.yaml: repartition.enabled: the SLA, health"),
            "{e}"
        );
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // From the FNV reference (draft-eastlake-fnv): FNV-1a 64 of "" and "a" and "foobar".
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn groups_keep_first_appearance_and_input_order() {
        let g = group_by(&[5, 2, 7, 4, 9], |x| x % 2);
        assert_eq!(g, vec![(1, vec![&5, &7, &9]), (0, vec![&2, &4])]);
    }

    #[test]
    fn every_partition_is_reachable_and_stable() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0u8..=255 {
            let t = TraceId([i; 16]);
            let p = trace_partition(&t, 12);
            assert!((0..12).contains(&p));
            assert_eq!(p, trace_partition(&t, 12));
            seen.insert(p);
        }
        assert_eq!(seen.len(), 12);
    }
}
