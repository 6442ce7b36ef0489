//! The Kafka source: a consumer group member reading OTLP exactly as the OpenTelemetry
//! Collector's kafka exporter writes it.
//!
//! # Delivery contract
//!
//! - Each message is decoded into one batch of records of the topic's signal. A message that
//!   fails to decode is produced, unchanged (key, payload), to the dead-letter topic with the
//!   headers `dwcp.error` (the reason), `dwcp.source.topic`, `dwcp.source.partition`,
//!   `dwcp.source.offset`, `dwcp.signal` and `dwcp.encoding`, and counted.
//! - An offset is committed only when every message up to it in its partition has been released
//!   by every sink (see `dwcp_sinks::ack`), or dead-lettered. Commits run every
//!   `commit_interval_ms`, when partitions are revoked, and at shutdown. So after a crash, a
//!   restarted worker re-reads from the last committed offset: at-least-once, per partition, in
//!   partition order. Records are never acknowledged before they are accepted downstream: this
//!   is where the Collector's kafka receiver loses data and we do not.
//! - When the queue to the operators is full, reading pauses (backpressure), nothing is dropped.
//! - Keys are not interpreted: messages keyed by trace id (`partition_traces_by_id`), by
//!   resource, or unkeyed are all read the same way.
//! - A record's region: the resource attribute `cloud.region`, else the `region` configured for
//!   its topic, else the `region_header` Kafka header, else `unknown` (counted).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dwcp_schemas::{decode, RegionContext, Signal};
use dwcp_sinks::ack::{Ack, AckReceiver};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};

use crate::config::ValidatedConfig;
use crate::telemetry::{labels, Telemetry};

/// See [`SourceBatch::watermark_key`].
pub type WatermarkKey = (Arc<str>, i32, i32);

/// Records of one message, on their way to the operators.
#[derive(Debug)]
pub struct SourceBatch {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Whose event time the records advance: this message's topic and partition (and -1); on
    /// an internal topic, the input topic and partition the re-keying stage read them from and
    /// the internal partition, so the watermark waits for every input partition in every
    /// internal partition, as one worker reading the inputs would.
    pub watermark_key: WatermarkKey,
    /// On an internal message that carries them (span-metrics markers): the input offset it
    /// was made from and its index among that input message's markers for its partition, so a
    /// replay of either stage is recognized.
    pub source_position: Option<(i64, u32)>,
    /// The records.
    pub records: Arc<dwcp_schemas::Records>,
    /// Released when every consumer of the records is done.
    pub ack: Ack,
    /// When the source read it: a batch read before its partition's current assignment is
    /// from an earlier one (still queued when the partition moved).
    pub received: std::time::Instant,
}

/// Acknowledgements of one assigned partition.
#[derive(Debug, Default)]
pub struct PartitionAcks {
    state: Mutex<PartitionState>,
}

#[derive(Debug, Default)]
struct PartitionState {
    pending: std::collections::BTreeSet<i64>,
    next_offset: Option<i64>,
    committed: Option<i64>,
    /// Commits go no further than this: the offset a state checkpoint covers.
    limit: Option<i64>,
}

impl PartitionAcks {
    /// One past the highest offset registered.
    fn read_end(&self) -> Option<i64> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next_offset
    }

    fn register(&self, offset: i64) {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.pending.insert(offset);
        s.next_offset = Some(s.next_offset.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// The lowest unacknowledged offset, else one past the last read: every record below it
    /// is done in every sink.
    fn acknowledged(&self) -> Option<i64> {
        let s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.pending.first().copied().or(s.next_offset)
    }

    /// The offset to commit: the acknowledged prefix, no further than the checkpoint limit.
    fn committable(&self) -> Option<i64> {
        let c = self.acknowledged()?;
        let s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = s.limit.map_or(c, |l| c.min(l));
        (Some(c) != s.committed && Some(c) > s.committed).then_some(c)
    }

    fn mark_committed(&self, offset: i64) {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.committed = Some(offset);
    }

    fn in_flight(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pending
            .len()
    }
}

impl AckReceiver for PartitionAcks {
    fn done(&self, offset: u64) {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        #[allow(clippy::cast_possible_wrap)]
        s.pending.remove(&(offset as i64));
    }
}

type Trackers = Arc<Mutex<HashMap<(String, i32), Arc<PartitionAcks>>>>;

/// What the watermark needs to know about input partitions beyond their records: which were
/// just assigned (expected to show data), and which have nothing left to read (consumer lag 0
/// in librdkafka's statistics), so an empty partition stops holding event time back.
#[derive(Debug, Default)]
pub struct PartitionProgress {
    /// Assigned since the operators last looked, internal topics left out.
    pub assigned: Vec<(String, i32)>,
    /// Partitions whose last reported lag was 0.
    pub caught_up: std::collections::HashSet<(String, i32)>,
}

/// Shared [`PartitionProgress`].
pub type Progress = Arc<Mutex<PartitionProgress>>;

/// The partitions the consumer owns now, as (topic, partition), each with when it was
/// assigned; updated at every rebalance.
pub type Assignment = Arc<Mutex<std::collections::BTreeMap<(String, i32), std::time::Instant>>>;

/// Whether the consumer's group membership settles, from librdkafka's join state as its
/// statistics report it. A rebalance with every member alive completes in seconds; one that
/// has not after twice the session timeout is reported once (and again when it settles): this
/// worker processes nothing of the group meanwhile, and says so instead of going quiet.
#[derive(Debug)]
struct Settling {
    /// When the join state was first seen other than `steady`, since it last was.
    since: Option<std::time::Instant>,
    warned: bool,
    warn_after: Duration,
}

/// What [`Settling::observe`] has to report.
#[derive(Debug, PartialEq)]
enum SettlingNews {
    /// Not settled for this long, the first time past the threshold.
    Unsettled(Duration),
    /// Settled after this long, having been reported unsettled.
    Settled(Duration),
}

impl Settling {
    fn new(session_timeout: Duration) -> Self {
        Settling {
            since: None,
            warned: false,
            warn_after: session_timeout * 2,
        }
    }

    /// Takes the join state seen at `now`: how long the membership has been unsettled (zero
    /// when steady), and news to log.
    fn observe(&mut self, join_state: &str, now: std::time::Instant) -> (Duration, Option<SettlingNews>) {
        if join_state == "steady" {
            let news = match self.since.take() {
                Some(s) if self.warned => Some(SettlingNews::Settled(now.saturating_duration_since(s))),
                _ => None,
            };
            self.warned = false;
            return (Duration::ZERO, news);
        }
        let age = now.saturating_duration_since(*self.since.get_or_insert(now));
        if age >= self.warn_after && !self.warned {
            self.warned = true;
            return (age, Some(SettlingNews::Unsettled(age)));
        }
        (age, None)
    }
}

/// The consumer's context: rebalance handling and statistics.
pub struct SourceContext {
    telemetry: Arc<Telemetry>,
    progress: Progress,
    internal_topics: Vec<String>,
    group: String,
    assignment: Assignment,
    trackers: Trackers,
    ready: Arc<AtomicBool>,
    settling: Mutex<Settling>,
    gate: Arc<TransactionGate>,
}

/// Keeps a revocation from passing a transaction that commits offsets of the partitions it
/// takes away: the revocation waits for the transaction to end, and a transaction begun while a
/// revocation is under way leaves its partitions out. Otherwise a worker could commit a
/// partition's checkpoint and offsets after its next owner read the previous ones, and both
/// would produce what lies between.
#[derive(Debug, Default)]
pub struct TransactionGate {
    state: Mutex<GateState>,
    ended: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    in_transaction: bool,
    /// A revocation came while the transaction was under way: it must not commit (the
    /// partitions may be another member's already, when the assignor did not know this one
    /// owned them).
    doomed: bool,
    revoking: std::collections::BTreeSet<(String, i32)>,
}

/// A transaction under way: revocations wait until this is dropped.
pub struct InTransaction(Arc<TransactionGate>);

impl Drop for InTransaction {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// How long a revocation waits for a transaction at most.
const GATE_WAIT: Duration = Duration::from_secs(70);

impl TransactionGate {
    /// A transaction begins; it ends when the guard is dropped. With the partitions being
    /// revoked now, to leave out of it.
    pub fn enter(self: &Arc<Self>) -> (InTransaction, std::collections::BTreeSet<(String, i32)>) {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.in_transaction = true;
        s.doomed = false;
        (InTransaction(self.clone()), s.revoking.clone())
    }

    /// Whether a revocation came since the transaction under way began: abort it, do not
    /// commit it.
    pub fn doomed(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .doomed
    }

    fn leave(&self) {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.in_transaction = false;
        drop(s);
        self.ended.notify_all();
    }

    /// `partitions` are being revoked: waits for a transaction under way to end.
    fn revoke(&self, partitions: impl Iterator<Item = (String, i32)>) {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.revoking.extend(partitions);
        s.doomed |= s.in_transaction;
        let deadline = std::time::Instant::now() + GATE_WAIT;
        while s.in_transaction {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                tracing::warn!("a revocation waited {GATE_WAIT:?} for a transaction to end; going on");
                break;
            }
            s = self
                .ended
                .wait_timeout(s, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// `partitions` are assigned (again), or their revocation is complete.
    fn settled(&self, partitions: impl Iterator<Item = (String, i32)>) {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for p in partitions {
            s.revoking.remove(&p);
        }
    }
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
        if let Some(g) = &stats.cgrp {
            let mut settling = self.settling.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (age, news) = settling.observe(&g.join_state, std::time::Instant::now());
            drop(settling);
            self.telemetry
                .group_unsettled_seconds
                .get_or_create(&labels([("group", &self.group)]))
                .set(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
            match news {
                Some(SettlingNews::Unsettled(age)) => tracing::warn!(
                    group = %self.group,
                    join_state = %g.join_state,
                    state = %g.state,
                    last_rebalance_reason = %g.rebalance_reason,
                    seconds = age.as_secs(),
                    "the consumer group has not settled after twice the session timeout: this worker \
                     processes none of the group's partitions until it does (with every member alive \
                     a rebalance takes seconds; Tansu 0.6 never settles a group whose leader died, \
                     see the README)"
                ),
                Some(SettlingNews::Settled(age)) => tracing::info!(
                    group = %self.group,
                    seconds = age.as_secs(),
                    "the consumer group settled"
                ),
                None => {}
            }
        }
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    let key = (topic.clone(), *partition);
                    let mut progress = self.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if p.consumer_lag == 0 {
                        progress.caught_up.insert(key);
                    } else {
                        progress.caught_up.remove(&key);
                    }
                    drop(progress);
                    self.telemetry
                        .consumer_lag
                        .get_or_create(&labels([("topic", topic), ("partition", &partition.to_string())]))
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // Partitions being assigned are owned from now, before librdkafka assigns them:
            // every message of this assignment is read after this instant (the operators
            // skip series batches read before their partition's instant, as left from an
            // earlier assignment), whichever thread polls them.
            let now = std::time::Instant::now();
            let mut owned = self
                .assignment
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for e in tpl.elements() {
                owned.entry((e.topic().to_string(), e.partition())).or_insert(now);
            }
        }
        if let Rebalance::Revoke(tpl) = rebalance {
            self.gate
                .revoke(tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())));
            self.telemetry
                .rebalances
                .get_or_create(&labels([("kind", "revoke")]))
                .inc();
            tracing::info!(
                group = %self.group,
                partitions = tpl.count(),
                which = %partition_list(tpl),
                lost = consumer.assignment_lost(),
                "partitions revoked"
            );
            // Commit what is done for the partitions we lose; the rest is re-read by their new owner.
            let mut commit = TopicPartitionList::new();
            let mut trackers = self.trackers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for e in tpl.elements() {
                if let Some(t) = trackers.remove(&(e.topic().to_string(), e.partition())) {
                    if let Some(o) = t.committable() {
                        let _ = commit.add_partition_offset(e.topic(), e.partition(), Offset::Offset(o));
                    }
                }
            }
            drop(trackers);
            if commit.count() > 0 {
                match consumer.commit(&commit, CommitMode::Sync) {
                    Ok(()) => tracing::info!(
                        partitions = commit.count(),
                        offsets = %offset_list(&commit),
                        "committed offsets of revoked partitions"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "commit on revoke failed; the new owner re-reads from the last commit")
                    }
                }
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Error(e) = rebalance {
            tracing::warn!(group = %self.group, error = %e, "rebalance failed");
        }
        if let Rebalance::Assign(tpl) = rebalance {
            self.telemetry
                .rebalances
                .get_or_create(&labels([("kind", "assign")]))
                .inc();
            tracing::info!(
                group = %self.group,
                partitions = tpl.count(),
                which = %partition_list(tpl),
                "partitions assigned"
            );
            let mut progress = self.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for e in tpl.elements() {
                if !self.internal_topics.iter().any(|t| t == e.topic()) {
                    progress.assigned.push((e.topic().to_string(), e.partition()));
                }
            }
        }
        if let Ok(a) = consumer.assignment() {
            let mut owned = self
                .assignment
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = std::time::Instant::now();
            *owned = a
                .elements()
                .iter()
                .map(|e| {
                    let key = (e.topic().to_string(), e.partition());
                    let since = owned.get(&key).copied().unwrap_or(now);
                    (key, since)
                })
                .collect();
            drop(owned);
            self.telemetry
                .assigned_partitions
                .get_or_create(&labels([("group", &self.group)]))
                .set(i64::try_from(a.count()).unwrap_or(i64::MAX));
        }
        // After the assignment above no longer has them.
        if let Rebalance::Assign(tpl) | Rebalance::Revoke(tpl) = rebalance {
            self.gate
                .settled(tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())));
        }
        self.ready.store(true, Ordering::Release);
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            self.telemetry
                .commits
                .get_or_create(&labels([("result", "error")]))
                .inc();
            tracing::warn!(error = %e, "offset commit failed; retried at the next interval");
        }
    }
}

/// The consumer type.
pub type SourceConsumer = StreamConsumer<SourceContext>;

/// Errors that stop the source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The consumer or producer could not be created or subscribed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// A producer's configuration for the source's cluster: its brokers and the consumer's
/// `security.*`, `sasl.*` and `ssl.*` options.
pub fn producer_config(config: &ValidatedConfig) -> ClientConfig {
    let src = &config.config.source;
    let mut pc = ClientConfig::new();
    pc.set("bootstrap.servers", &src.brokers);
    for (k, v) in &src.consumer_options {
        if k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl.") {
            pc.set(k, v);
        }
    }
    pc
}

/// `topic[0,3,5] other[1]`: the partitions of a rebalance, for the log.
fn partition_list(tpl: &TopicPartitionList) -> String {
    let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = std::collections::BTreeMap::new();
    for e in tpl.elements() {
        by_topic.entry(e.topic().to_string()).or_default().push(e.partition());
    }
    by_topic
        .iter_mut()
        .map(|(t, ps)| {
            ps.sort_unstable();
            let ps: Vec<String> = ps.iter().map(ToString::to_string).collect();
            format!("{t}[{}]", ps.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `topic/0@120 topic/3@88`: the offsets of a commit, for the log.
fn offset_list(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => format!("{}/{}@{o}", e.topic(), e.partition()),
            other => format!("{}/{}@{other:?}", e.topic(), e.partition()),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A header's value as text.
fn header_text<'m>(m: &'m BorrowedMessage<'_>, name: &str) -> Option<&'m str> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The input topic and partition an internal message was made from (its `dwcp.source.topic`
/// and `dwcp.source.partition` headers).
fn source_partition(m: &BorrowedMessage<'_>) -> Option<(Arc<str>, i32)> {
    let topic = header_text(m, crate::repartition::SOURCE_TOPIC_HEADER)?;
    let partition = header_text(m, crate::repartition::SOURCE_PARTITION_HEADER)?
        .parse()
        .ok()?;
    Some((Arc::from(topic), partition))
}

/// The input offset an internal message was made from and its index among that input
/// message's messages of its kind (`dwcp.source.offset`, `dwcp.source.seq`; span-metrics
/// markers carry them).
fn source_position(m: &BorrowedMessage<'_>) -> Option<(i64, u32)> {
    let offset = header_text(m, crate::repartition::SOURCE_OFFSET_HEADER)?.parse().ok()?;
    let seq = header_text(m, crate::repartition::SOURCE_SEQ_HEADER)?.parse().ok()?;
    Some((offset, seq))
}

/// The running source.
pub struct KafkaSource {
    config: ValidatedConfig,
    consumer: Arc<SourceConsumer>,
    dead_letter: Option<FutureProducer>,
    trackers: Trackers,
    assignment: Assignment,
    /// Partitions being rewound (see [`KafkaSource::rewind`]): the assignment instant the rewind
    /// set, and one past the highest offset read before it.
    rewinds: Mutex<HashMap<(String, i32), (std::time::Instant, i64)>>,
    progress: Progress,
    telemetry: Arc<Telemetry>,
}

impl KafkaSource {
    /// Creates the consumer (and dead-letter producer) and subscribes.
    ///
    /// # Errors
    /// When librdkafka refuses the configuration or the subscription.
    pub fn new(
        config: ValidatedConfig,
        telemetry: Arc<Telemetry>,
        ready: Arc<AtomicBool>,
    ) -> Result<Self, SourceError> {
        let src = &config.config.source;
        let trackers: Trackers = Arc::default();
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &src.brokers)
            .set("group.id", &src.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &src.auto_offset_reset)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("statistics.interval.ms", "5000")
            .set("fetch.message.max.bytes", "33554432")
            .set("topic.metadata.refresh.interval.ms", "10000");
        for (k, v) in &src.consumer_options {
            cc.set(k, v);
        }
        let assignment = Assignment::default();
        let progress = Progress::default();
        // librdkafka's default session timeout, unless the configuration sets one.
        let session_timeout_ms = src
            .consumer_options
            .get("session.timeout.ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(45_000u64);
        let context = SourceContext {
            telemetry: telemetry.clone(),
            progress: progress.clone(),
            internal_topics: config
                .topics
                .iter()
                .filter(|t| t.internal)
                .map(|t| t.config.name.clone())
                .collect(),
            group: src.group_id.clone(),
            assignment: assignment.clone(),
            trackers: trackers.clone(),
            ready,
            settling: Mutex::new(Settling::new(Duration::from_millis(session_timeout_ms))),
            gate: Arc::default(),
        };
        let consumer: SourceConsumer = cc.create_with_context(context)?;
        let topics: Vec<&str> = config.topics.iter().map(|t| t.config.name.as_str()).collect();
        consumer.subscribe(&topics)?;
        let dl = &config.config.dead_letter;
        let dead_letter = if dl.enabled {
            let mut pc = producer_config(&config);
            pc.set("message.max.bytes", dl.max_message_bytes.to_string())
                .set("enable.idempotence", "true")
                .set("message.timeout.ms", "30000");
            Some(pc.create()?)
        } else {
            None
        };
        Ok(KafkaSource {
            config,
            consumer: Arc::new(consumer),
            dead_letter,
            trackers,
            assignment,
            rewinds: Mutex::default(),
            progress,
            telemetry,
        })
    }

    /// Assignments and caught-up partitions, for the watermark.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// The gate between transactions committing this consumer's offsets and its revocations.
    pub fn gate(&self) -> Arc<TransactionGate> {
        self.consumer.context().gate.clone()
    }

    /// The partitions this consumer owns, kept current across rebalances.
    pub fn assignment(&self) -> Assignment {
        self.assignment.clone()
    }

    /// Reads until `shutdown` turns true, sending batches to `out`; then commits what is done.
    ///
    /// Returns after the final commit. Batches already sent are acknowledged by the sinks; the
    /// caller waits for them before calling [`KafkaSource::final_commit`].
    pub async fn run(&self, out: mpsc::Sender<SourceBatch>, mut shutdown: watch::Receiver<bool>) {
        let commit_every = Duration::from_millis(self.config.config.source.commit_interval_ms);
        let mut commit_tick = tokio::time::interval(commit_every);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let topic_names: Mutex<HashMap<String, Arc<str>>> = Mutex::default();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                _ = commit_tick.tick() => { self.commit(CommitMode::Async); }
                msg = self.consumer.recv() => match msg {
                    Ok(m) => {
                        let topic = {
                            let mut names = topic_names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                            names.entry(m.topic().to_string()).or_insert_with(|| Arc::from(m.topic())).clone()
                        };
                        if let Some(batch) = self.handle(&m, topic).await {
                            if out.send(batch).await.is_err() {
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka consumer error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }

    /// The tracker `offset` of `topic`/`partition` is registered with, when the message is of
    /// the partition's current assignment: owned, read after the assignment began, and not of
    /// the earlier position of a rewind (see [`KafkaSource::rewind`]). Locks in `rewind`'s order.
    fn admit(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        received: std::time::Instant,
    ) -> Option<Arc<PartitionAcks>> {
        let key = (topic.to_string(), partition);
        let owned = self
            .assignment
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let since = owned.get(&key).copied().filter(|since| *since <= received)?;
        let mut rewinds = self.rewinds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match rewound(rewinds.get(&key).copied(), since, offset) {
            Rewound::Earlier => return None,
            Rewound::Begun => {
                rewinds.remove(&key);
            }
            Rewound::No => {}
        }
        let mut trackers = self.trackers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tracker = trackers
            .entry(key)
            .or_insert_with(|| {
                tracing::debug!(
                    topic,
                    partition,
                    offset,
                    "first message read since the partition's assignment"
                );
                Arc::default()
            })
            .clone();
        tracker.register(offset);
        Some(tracker)
    }

    fn tracker(&self, topic: &str, partition: i32) -> Arc<PartitionAcks> {
        let mut t = self.trackers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        t.entry((topic.to_string(), partition)).or_default().clone()
    }

    async fn handle(&self, m: &BorrowedMessage<'_>, topic: Arc<str>) -> Option<SourceBatch> {
        let received = std::time::Instant::now();
        let partition = m.partition();
        let offset = m.offset();
        let Some(tracker) = self.admit(&topic, partition, offset, received) else {
            // Fetched before a revocation or a rewind: dropped, its partition's reads start
            // over from the committed offset (here or at its new owner).
            self.telemetry
                .stale_messages
                .get_or_create(&labels([("topic", &topic)]))
                .inc();
            return None;
        };
        #[allow(clippy::cast_sign_loss)]
        let ack = Ack::new(offset as u64, tracker);
        let payload = m.payload().unwrap_or_default();
        let Some(entry) = self.config.topic(&topic) else {
            self.telemetry
                .unrouted_messages
                .get_or_create(&labels([("topic", &topic)]))
                .inc();
            tracing::warn!(%topic, partition, offset, "message from a topic no entry covers, skipped");
            return None;
        };
        let signal = entry.config.signal;
        let encoding = entry.config.encoding;
        self.telemetry
            .messages_in
            .get_or_create(&labels([("topic", &topic), ("signal", signal.as_str())]))
            .inc();
        self.telemetry
            .bytes_in
            .get_or_create(&labels([("topic", &topic)]))
            .inc_by(payload.len() as u64);
        let fallback = entry.region.clone().or_else(|| self.header_region(m, entry.internal));
        let ctx = RegionContext::new(fallback);
        // Large messages decode off the async threads.
        let result = if payload.len() > 256 * 1024 {
            tokio::task::block_in_place(|| decode(signal, encoding, payload, &ctx))
        } else {
            decode(signal, encoding, payload, &ctx)
        };
        match result {
            Ok(d) => {
                self.telemetry
                    .records_in
                    .get_or_create(&labels([("topic", &topic), ("signal", signal.as_str())]))
                    .inc_by(d.records.len() as u64);
                if d.unknown_region > 0 {
                    self.telemetry
                        .records_unknown_region
                        .get_or_create(&labels([("signal", signal.as_str())]))
                        .inc_by(d.unknown_region as u64);
                }
                let watermark_key = match source_partition(m) {
                    Some((t, p)) if entry.internal => (t, p, partition),
                    _ => (topic.clone(), partition, -1),
                };
                Some(SourceBatch {
                    topic,
                    partition,
                    watermark_key,
                    source_position: entry.internal.then(|| source_position(m)).flatten(),
                    records: Arc::new(d.records),
                    ack,
                    received,
                })
            }
            Err(e) => {
                self.telemetry
                    .decode_errors
                    .get_or_create(&labels([("topic", &topic), ("kind", e.kind())]))
                    .inc();
                self.dead_letter(m, &topic, signal, encoding, &e.to_string()).await;
                None // `ack` drops here: the message is dealt with.
            }
        }
    }

    /// The region header's value: `dwcp.region` on the internal topics (set by the
    /// repartitioning stage), else the configured `region_header`.
    fn header_region(&self, m: &BorrowedMessage<'_>, internal: bool) -> Option<Arc<str>> {
        let name = if internal {
            crate::repartition::REGION_HEADER
        } else {
            &self.config.config.source.region_header
        };
        let headers = m.headers()?;
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|v| !v.is_empty())
            .map(Arc::from)
    }

    async fn dead_letter(
        &self,
        m: &BorrowedMessage<'_>,
        topic: &str,
        signal: Signal,
        encoding: dwcp_schemas::Encoding,
        reason: &str,
    ) {
        let (partition, offset) = (m.partition(), m.offset());
        let Some(producer) = &self.dead_letter else {
            tracing::warn!(
                topic,
                partition,
                offset,
                reason,
                "undecodable message dropped (dead-letter topic disabled)"
            );
            self.telemetry
                .dead_letter_failures
                .get_or_create(&labels([("topic", topic)]))
                .inc();
            return;
        };
        let dlq = &self.config.config.dead_letter.topic;
        let (p, o) = (partition.to_string(), offset.to_string());
        let mut headers = OwnedHeaders::new();
        for (key, value) in [
            ("dwcp.error", reason),
            ("dwcp.source.topic", topic),
            ("dwcp.source.partition", p.as_str()),
            ("dwcp.source.offset", o.as_str()),
            ("dwcp.signal", signal.as_str()),
            ("dwcp.encoding", encoding.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        // Keep the original headers after ours.
        if let Some(orig) = m.headers() {
            for h in orig.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let payload = m.payload().unwrap_or_default();
        if self
            .produce_dead_letter(producer, m.key(), payload, headers, topic)
            .await
        {
            tracing::warn!(topic, partition, offset, reason, dead_letter_topic = %dlq, "message sent to dead-letter topic");
        } else {
            tracing::error!(
                topic,
                partition,
                offset,
                reason,
                "undecodable message could not be dead-lettered and is lost"
            );
        }
    }

    /// Produces to the dead-letter topic with 5 attempts; counts the outcome under `source`
    /// (the topic the data came from, or the sink that refused it).
    async fn produce_dead_letter(
        &self,
        producer: &FutureProducer,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: OwnedHeaders,
        source: &str,
    ) -> bool {
        let dlq = &self.config.config.dead_letter.topic;
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=5 {
            let mut record = FutureRecord::to(dlq).payload(payload).headers(headers.clone());
            if let Some(k) = key {
                record = record.key(k);
            }
            match producer.send(record, Duration::from_secs(10)).await {
                Ok(_) => {
                    self.telemetry
                        .dead_lettered
                        .get_or_create(&labels([("topic", source)]))
                        .inc();
                    return true;
                }
                Err((e, _)) => {
                    tracing::warn!(source, attempt, error = %e, "dead-letter produce failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        self.telemetry
            .dead_letter_failures
            .get_or_create(&labels([("topic", source)]))
            .inc();
        false
    }

    /// Dead-letters a document a sink refused for good: the document as payload, its id as
    /// key, headers `dwcp.error` (the store's reason), `dwcp.sink` and `dwcp.index`.
    pub async fn dead_letter_document(&self, sink: &str, index: &str, id: &str, payload: &[u8], reason: &str) {
        let Some(producer) = &self.dead_letter else {
            tracing::warn!(
                sink,
                index,
                id,
                reason,
                "rejected document dropped (dead-letter topic disabled)"
            );
            self.telemetry
                .dead_letter_failures
                .get_or_create(&labels([("topic", sink)]))
                .inc();
            return;
        };
        let mut headers = OwnedHeaders::new();
        for (key, value) in [("dwcp.error", reason), ("dwcp.sink", sink), ("dwcp.index", index)] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        if !self
            .produce_dead_letter(producer, Some(id.as_bytes()), payload, headers, sink)
            .await
        {
            tracing::error!(
                sink,
                index,
                id,
                reason,
                "rejected document could not be dead-lettered and is lost"
            );
        }
    }

    /// Commits of `topic`/`partition` go no further than `offset` from now on (the offset a
    /// state checkpoint covers), until the next call.
    pub fn limit_commits(&self, topic: &str, partition: i32, offset: i64) {
        let t = self.tracker(topic, partition);
        let mut s = t.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tracing::debug!(topic, partition, offset, was = ?s.limit, "commits limited to a checkpoint's offset");
        s.limit = Some(offset);
    }

    /// Reads of `topic`'s `partitions` start over from the group's committed offsets (with
    /// none, from `auto_offset_reset`), as if they were assigned anew now: the first batch of
    /// each opens the partition's state from the changelog again, and what was fetched from the
    /// earlier position is dropped and moves no commit.
    ///
    /// For a worker whose checkpoint transaction the group fenced (its generation is behind
    /// the group's): another member may own these partitions and have gone on from their last
    /// checkpoint (Kafka Streams' `TaskMigratedException`).
    ///
    /// Where the earlier position ends is told by offsets, not by time: librdkafka may hand
    /// over messages of the new position before the seek returns, and of the earlier one after
    /// this call marks the partition. Everything read before was below `end` (one past the
    /// highest offset read); the earlier position goes on at `end` and up, the new one starts
    /// at the committed offset, below it. So until a message below `end` arrives, those at or
    /// above it are dropped.
    ///
    /// # Errors
    /// librdkafka's, when the committed offsets cannot be fetched, or the seek of a partition
    /// still owned fails. The partitions are then marked but not moved: the caller must not
    /// go on with them (the worker exits, as a crash would).
    pub async fn rewind(&self, topic: &str, partitions: &[i32]) -> rdkafka::error::KafkaResult<()> {
        let mut tpl = TopicPartitionList::new();
        for x in partitions {
            tpl.add_partition(topic, *x);
        }
        let consumer = self.consumer.clone();
        let reset = self.config.config.source.auto_offset_reset.clone();
        let targets = tokio::task::spawn_blocking(move || committed_positions(&consumer, &tpl, &reset))
            .await
            .unwrap_or_else(|_| Err(rdkafka::error::KafkaError::Canceled))?;
        {
            let now = std::time::Instant::now();
            let mut owned = self
                .assignment
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut rewinds = self.rewinds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut trackers = self.trackers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for e in targets.elements() {
                let key = (e.topic().to_string(), e.partition());
                // One past the highest offset read: from the tracker, or from a rewind that
                // nothing was read since.
                let end = trackers
                    .remove(&key)
                    .and_then(|t| t.read_end())
                    .or_else(|| rewinds.get(&key).map(|(_, end)| *end));
                rewinds.remove(&key);
                if let Some(since) = owned.get_mut(&key) {
                    *since = now;
                    if let (Some(end), Offset::Offset(target)) = (end, e.offset()) {
                        // Read no further than the target: the earlier position and the new one
                        // are the same messages from there on.
                        if end > target {
                            rewinds.insert(key, (now, end));
                        }
                    }
                }
            }
        }
        let consumer = self.consumer.clone();
        let positions = tokio::task::spawn_blocking(move || consumer.seek_partitions(targets, REWIND_TIMEOUT))
            .await
            .unwrap_or_else(|_| Err(rdkafka::error::KafkaError::Canceled))?;
        for e in positions.elements() {
            if let Err(err) = e.error() {
                // Revoked meanwhile: its next owner reads it from the committed offset.
                let owned = self
                    .assignment
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .contains_key(&(e.topic().to_string(), e.partition()));
                if owned {
                    return Err(err);
                }
            }
        }
        tracing::info!(%topic, positions = %offset_list(&positions), "partitions rewound to the group's committed offsets");
        Ok(())
    }

    /// The consumer group's metadata, for offsets sent within a producer's transaction.
    pub fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    /// `topic`/`partition`'s offsets were committed up to `offset` within a transaction (with
    /// the checkpoint covering them): commits go no further until the next one, and that one is
    /// not committed again.
    pub fn commit_transacted(&self, topic: &str, partition: i32, offset: i64) {
        let t = self.tracker(topic, partition);
        {
            let mut s = t.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            s.limit = Some(offset);
        }
        t.mark_committed(offset);
        self.telemetry
            .committed_offset
            .get_or_create(&labels([("topic", topic), ("partition", &partition.to_string())]))
            .set(offset);
    }

    /// Every record of `topic`/`partition` below the returned offset is done in every sink
    /// (`None`: none read since the partition was assigned).
    pub fn acknowledged(&self, topic: &str, partition: i32) -> Option<i64> {
        let t = self.trackers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        t.get(&(topic.to_string(), partition)).and_then(|a| a.acknowledged())
    }

    /// Commits every partition's acknowledged prefix; returns what it asked the broker to
    /// commit.
    pub fn commit(&self, mode: CommitMode) -> TopicPartitionList {
        let trackers: Vec<((String, i32), Arc<PartitionAcks>)> = {
            let t = self.trackers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let mut tpl = TopicPartitionList::new();
        let mut to_mark = Vec::new();
        let mut in_flight = 0;
        for ((topic, partition), t) in &trackers {
            in_flight += t.in_flight();
            if let Some(o) = t.committable() {
                if tpl.add_partition_offset(topic, *partition, Offset::Offset(o)).is_ok() {
                    to_mark.push((t.clone(), o));
                }
            }
        }
        self.telemetry
            .in_flight_messages
            .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        if tpl.count() == 0 {
            return tpl;
        }
        let result = self.consumer.commit(&tpl, mode);
        tracing::debug!(offsets = %offset_list(&tpl), sync = matches!(mode, CommitMode::Sync), ok = result.is_ok(), "offsets committed");
        let outcome = if result.is_ok() { "requested" } else { "failed" };
        self.telemetry
            .commits
            .get_or_create(&labels([("result", outcome)]))
            .inc();
        if result.is_ok() {
            for e in tpl.elements() {
                if let Offset::Offset(o) = e.offset() {
                    self.telemetry
                        .committed_offset
                        .get_or_create(&labels([
                            ("topic", e.topic()),
                            ("partition", &e.partition().to_string()),
                        ]))
                        .set(o);
                }
            }
        }
        match result {
            // An async commit may still fail: only a synchronous success stops re-committing.
            Ok(()) if matches!(mode, CommitMode::Sync) => {
                for (t, o) in to_mark {
                    t.mark_committed(o);
                }
            }
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "offset commit failed; retried at the next interval"),
        }
        tpl
    }

    /// The last, synchronous commit at shutdown.
    pub fn final_commit(&self) {
        let offsets = self.commit(CommitMode::Sync);
        tracing::info!(
            group = %self.config.config.source.group_id,
            offsets = %offset_list(&offsets),
            "final offset commit done"
        );
    }
}

/// Where a message stands to a rewind of its partition.
#[derive(Debug, PartialEq, Eq)]
enum Rewound {
    /// None under way.
    No,
    /// Of the position before the rewind, still fetched: dropped.
    Earlier,
    /// The first of the new position (or the partition was assigned anew since): the rewind
    /// is over.
    Begun,
}

/// Whether a message at `offset`, of the assignment begun at `since`, is of the earlier
/// position of the partition's `rewind` (the assignment instant it set, and one past the
/// highest offset read before it; see [`KafkaSource::rewind`]).
fn rewound(rewind: Option<(std::time::Instant, i64)>, since: std::time::Instant, offset: i64) -> Rewound {
    match rewind {
        None => Rewound::No,
        Some((at, end)) if at == since && offset >= end => Rewound::Earlier,
        Some(_) => Rewound::Begun,
    }
}

/// How long a rewind waits for the committed offsets, and for the seek.
const REWIND_TIMEOUT: Duration = Duration::from_secs(10);

/// The group's committed offset of each partition of `tpl`; with none, the partition's first
/// or next offset as `auto_offset_reset` says (`earliest`/`latest`; `error`: an error).
fn committed_positions(
    consumer: &SourceConsumer,
    tpl: &TopicPartitionList,
    reset: &str,
) -> rdkafka::error::KafkaResult<TopicPartitionList> {
    let mut attempt = 0;
    let committed = loop {
        match consumer.committed_offsets(tpl.clone(), REWIND_TIMEOUT) {
            Ok(c) => break c,
            // A rebalance under way can time the request out: a few tries.
            Err(e) if attempt < 2 => {
                tracing::warn!(error = %e, "fetching the committed offsets failed; retrying");
                attempt += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    };
    let mut out = TopicPartitionList::new();
    for e in committed.elements() {
        e.error()?;
        let offset = match e.offset() {
            Offset::Offset(o) => o,
            _ => {
                let (low, high) = consumer.fetch_watermarks(e.topic(), e.partition(), REWIND_TIMEOUT)?;
                match reset {
                    "earliest" | "smallest" | "beginning" => low,
                    "latest" | "largest" | "end" => high,
                    other => {
                        return Err(rdkafka::error::KafkaError::Seek(format!(
                            "{}[{}] has no committed offset and auto_offset_reset is {other}",
                            e.topic(),
                            e.partition()
                        )))
                    }
                }
            }
        };
        out.add_partition_offset(e.topic(), e.partition(), Offset::Offset(offset))?;
    }
    Ok(out)
}

/// How long a stopping worker waits for its consumers to leave their groups.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Closes the sources' consumers after their final commit: librdkafka's close (the last
/// revocation and its callbacks, then LeaveGroup) runs on a thread of its own, waited for at
/// most `within`. That close has no deadline of its own and has been seen never to finish
/// against Tansu; everything is committed by then, so the worker exits anyway, and the broker
/// moves the partitions once the session times out.
pub async fn close_within(sources: Vec<Arc<KafkaSource>>, within: Duration) {
    let groups: Vec<String> = sources
        .iter()
        .map(|s| s.config.config.source.group_id.clone())
        .collect();
    if drop_within(sources, within).await {
        tracing::info!(groups = ?groups, "left the consumer groups");
    } else {
        tracing::warn!(
            groups = ?groups,
            timeout_s = within.as_secs(),
            "leaving the consumer group did not finish in time; exiting without waiting (every offset is committed; the broker moves the partitions after session.timeout.ms)"
        );
    }
}

/// Drops `value` on a thread of its own; whether that finished within `within` (if not, the
/// thread goes on, and ends with the process).
async fn drop_within<T: Send + 'static>(value: T, within: Duration) -> bool {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Not a tokio blocking task: the runtime's shutdown would wait for it.
    let spawned = std::thread::Builder::new().name("kafka-close".into()).spawn(move || {
        drop(value);
        let _ = tx.send(());
    });
    // Could not spawn: the closure, and the value with it, was dropped here.
    spawned.is_err() || tokio::time::timeout(within, rx).await.is_ok()
}

#[cfg(test)]
mod gate_tests {
    use super::*;

    #[test]
    fn a_revocation_aborts_the_transaction_under_way_and_one_begun_meanwhile_leaves_its_partitions_out() {
        let gate = Arc::new(TransactionGate::default());
        let (in_transaction, revoking) = gate.enter();
        assert!(revoking.is_empty());
        let g = gate.clone();
        let revoked = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            g.revoke([("t".to_string(), 3)].into_iter());
            started.elapsed()
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !revoked.is_finished(),
            "the revocation waits while the transaction is open"
        );
        assert!(gate.doomed(), "the transaction under way must abort, not commit");
        drop(in_transaction);
        let waited = revoked.join().expect("revoking thread");
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        // Until the revocation is complete, a new transaction leaves partition 3 out.
        let (t, revoking) = gate.enter();
        assert!(!gate.doomed(), "a transaction begun after the revocation may commit");
        assert_eq!(revoking.into_iter().collect::<Vec<_>>(), [("t".to_string(), 3)]);
        drop(t);
        gate.settled([("t".to_string(), 3)].into_iter());
        let (_t, revoking) = gate.enter();
        assert!(revoking.is_empty());
    }
}

#[cfg(test)]
mod rewind_tests {
    use super::{rewound, Rewound};

    /// Read up to offset 119 (end 120), rewound to 100: the earlier position's 120, 121 still
    /// fetched are dropped, the new position starts at 100 and from then on everything goes,
    /// 120 included; a later assignment ends the rewind too.
    #[test]
    fn the_earlier_position_is_told_by_offset_until_the_new_one_begins() {
        let since = std::time::Instant::now();
        let rewind = Some((since, 120));
        assert_eq!(rewound(rewind, since, 120), Rewound::Earlier);
        assert_eq!(rewound(rewind, since, 121), Rewound::Earlier);
        assert_eq!(rewound(rewind, since, 100), Rewound::Begun);
        assert_eq!(rewound(None, since, 120), Rewound::No, "over once begun");
        let later = since + std::time::Duration::from_secs(1);
        assert_eq!(rewound(rewind, later, 130), Rewound::Begun, "assigned anew since");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A drop that does not finish in time is left behind; one that does is waited for.
    #[tokio::test]
    async fn a_close_that_hangs_is_not_waited_for() {
        struct SlowDrop(Duration, Arc<AtomicBool>);
        impl Drop for SlowDrop {
            fn drop(&mut self) {
                std::thread::sleep(self.0);
                self.1.store(true, Ordering::SeqCst);
            }
        }
        let done = Arc::new(AtomicBool::new(false));
        let waited = drop_within(
            SlowDrop(Duration::from_secs(5), done.clone()),
            Duration::from_millis(200),
        )
        .await;
        assert!(!waited);
        assert!(!done.load(Ordering::SeqCst), "returned before the drop ended");
        let done = Arc::new(AtomicBool::new(false));
        assert!(
            drop_within(
                SlowDrop(Duration::from_millis(50), done.clone()),
                Duration::from_secs(30)
            )
            .await
        );
        assert!(done.load(Ordering::SeqCst));
    }

    #[test]
    fn commits_the_lowest_unacknowledged_offset() {
        let t = Arc::new(PartitionAcks::default());
        for o in 10..15 {
            t.register(o);
        }
        assert_eq!(t.committable(), Some(10));
        t.done(11);
        t.done(12);
        assert_eq!(t.committable(), Some(10), "10 is still held by a sink");
        t.done(10);
        assert_eq!(t.committable(), Some(13));
        t.done(13);
        t.done(14);
        assert_eq!(t.committable(), Some(15));
        t.mark_committed(15);
        assert_eq!(t.committable(), None, "nothing new to commit");
    }

    #[test]
    fn a_group_unsettled_past_twice_the_session_timeout_is_reported_once_then_its_settling() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut g = Settling::new(Duration::from_secs(10));
        assert_eq!(g.observe("wait-join", at(0)), (Duration::ZERO, None));
        assert_eq!(g.observe("wait-sync", at(15)), (Duration::from_secs(15), None));
        // A quick rebalance settles before the threshold: nothing to say.
        assert_eq!(g.observe("steady", at(16)), (Duration::ZERO, None));
        assert_eq!(g.observe("wait-join", at(30)), (Duration::ZERO, None));
        assert_eq!(g.observe("wait-sync", at(45)), (Duration::from_secs(15), None));
        assert_eq!(
            g.observe("wait-join", at(50)),
            (
                Duration::from_secs(20),
                Some(SettlingNews::Unsettled(Duration::from_secs(20)))
            )
        );
        assert_eq!(
            g.observe("wait-sync", at(80)),
            (Duration::from_secs(50), None),
            "reported once"
        );
        assert_eq!(
            g.observe("steady", at(85)),
            (Duration::ZERO, Some(SettlingNews::Settled(Duration::from_secs(55))))
        );
        assert_eq!(g.observe("steady", at(90)), (Duration::ZERO, None));
        assert_eq!(g.observe("wait-join", at(95)), (Duration::ZERO, None));
        assert_eq!(
            g.observe("wait-join", at(115)),
            (
                Duration::from_secs(20),
                Some(SettlingNews::Unsettled(Duration::from_secs(20)))
            ),
            "a new episode is reported again"
        );
    }
}
