//! Operator state that moves with its partitions: a compacted changelog topic per operator
//! (`<repartition.changelog_prefix><operator>`, one partition), keyed `<group_id>/<internal
//! partition>`, as Kafka Streams keeps its stores.
//!
//! A worker checkpoints each partition's state every `operators.checkpoint_interval_ms` and,
//! only once the checkpoint is acknowledged, lets that partition's offsets be committed up to
//! what the checkpoint covers. A worker taking a partition over (a rebalance, a crash) reads the
//! partition's latest checkpoint before processing its first record, and resumes from the
//! committed offset, which the checkpoint covers: records after it are processed again, those
//! the state already saw are skipped by the operator (it drops points older than a series'
//! newest), so the state ends as if no one had stopped.
//!
//! A checkpoint is written only once every output of what it covers is accepted by every sink:
//! the records below its offset are acknowledged, and so is every output no single record
//! stands for (closed windows, rule results, alert and anomaly records, SLA reports: what goes
//! to remote-write and the derived topics) that was produced before the snapshot ([`Epochs`]). Otherwise a worker killed with such outputs still
//! queued would leave a checkpoint that says they were produced, and its successor would not
//! produce them again.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dwcp_sinks::ack::{Ack, AckReceiver};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::ValidatedConfig;
use crate::source::producer_config;

/// One operator's changelog topic.
pub struct Changelog {
    topic: String,
    /// Records are keyed `<group_id>/<partition>`, so deployments sharing a topic by mistake
    /// never read each other's state.
    group: String,
    producer: FutureProducer,
    reader: rdkafka::config::ClientConfig,
}

impl Changelog {
    /// The changelog of `operator`, created (compacted, one partition) when missing.
    ///
    /// # Errors
    /// When the topic cannot be created or a client cannot be made.
    /// With `producer` (transactional, with exactly-once derived records) checkpoints are
    /// written with it, so in its transactions.
    pub async fn open(
        config: &ValidatedConfig,
        producer: Option<FutureProducer>,
        operator: &str,
    ) -> anyhow::Result<Self> {
        let rp = &config.config.repartition;
        let topic = format!("{}{operator}", rp.changelog_prefix);
        let admin: AdminClient<DefaultClientContext> = producer_config(config).create()?;
        let new =
            NewTopic::new(&topic, 1, TopicReplication::Fixed(rp.replication_factor)).set("cleanup.policy", "compact");
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for r in admin.create_topics(&[new], &opts).await? {
            match r {
                Ok(name) => tracing::info!(topic = %name, "changelog topic created"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, e)) => anyhow::bail!("changelog: creating topic {name}: {e}"),
            }
        }
        let mut pc = producer_config(config);
        pc.set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            .set("message.max.bytes", "104857600")
            .set("compression.type", "lz4");
        let mut reader = producer_config(config);
        reader
            .set(
                "group.id",
                format!("{}.changelog-reader", config.config.source.group_id),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("fetch.message.max.bytes", "104857600");
        Ok(Changelog {
            topic,
            group: config.config.source.group_id.clone(),
            producer: match producer {
                Some(p) => p,
                None => pc.create()?,
            },
            reader,
        })
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes `partition`'s checkpoint number `generation`; returns once the broker
    /// acknowledged all of it.
    ///
    /// The state goes in chunks of at most [`CHUNK_BYTES`] (brokers refuse large messages: 1 MB
    /// by default), keyed `<group>/<partition>/<set>/<i>` with `set` = generation mod 2, then a
    /// manifest keyed `<group>/<partition>` naming the set, the generation and the chunk count.
    /// A checkpoint cut off half-way leaves the previous one whole in the other set.
    ///
    /// # Errors
    /// When the broker does not take it (the partition's commits then stay where they were).
    pub async fn write(&self, partition: i32, generation: u64, bytes: &[u8]) -> anyhow::Result<()> {
        let set = generation % 2;
        let mut deliveries = Vec::new();
        let chunks: Vec<&[u8]> = if bytes.is_empty() {
            vec![bytes]
        } else {
            bytes.chunks(CHUNK_BYTES).collect()
        };
        for (i, chunk) in chunks.iter().enumerate() {
            let key = format!("{}/{partition}/{set}/{i}", self.group);
            let mut payload = Vec::with_capacity(chunk.len() + 8);
            payload.extend_from_slice(&generation.to_le_bytes());
            payload.extend_from_slice(chunk);
            deliveries.push(self.enqueue(&key, &payload).await?);
        }
        for d in deliveries {
            self.delivered(d).await?;
        }
        let manifest = Manifest {
            generation,
            set,
            chunks: chunks.len(),
            bytes: bytes.len(),
        };
        let d = self
            .enqueue(&format!("{}/{partition}", self.group), &serde_json::to_vec(&manifest)?)
            .await?;
        self.delivered(d).await
    }

    /// Enqueues one record (waiting while librdkafka's queue is full) and returns its delivery.
    async fn enqueue(&self, key: &str, payload: &[u8]) -> anyhow::Result<DeliveryFuture> {
        loop {
            let record = FutureRecord::to(&self.topic).key(key).payload(payload).partition(0);
            match self.producer.send_result(record) {
                Ok(d) => return Ok(d),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => anyhow::bail!("changelog {}: {e}", self.topic),
            }
        }
    }

    async fn delivered(&self, d: DeliveryFuture) -> anyhow::Result<()> {
        match d.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(anyhow::anyhow!("changelog {}: {e}", self.topic)),
            Err(_) => Err(anyhow::anyhow!("changelog {}: delivery cancelled", self.topic)),
        }
    }

    /// The latest whole checkpoint of `partition` (its generation and bytes), reading the
    /// topic from its start to its end.
    ///
    /// # Errors
    /// When the topic cannot be read or the checkpoint the manifest names is incomplete.
    pub async fn read(&self, partition: i32) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
        let reader = self.reader.clone();
        let topic = self.topic.clone();
        let manifest_key = format!("{}/{partition}", self.group);
        let chunk_prefix = format!("{manifest_key}/");
        let latest =
            tokio::task::spawn_blocking(move || -> anyhow::Result<std::collections::HashMap<String, Vec<u8>>> {
                // The end of the log, its open transactions' records included: read (committed
                // records only) until everything below it is decided, so a checkpoint committed
                // after a transaction another worker still has open is not missed.
                let mut probe = reader.clone();
                probe.set("isolation.level", "read_uncommitted");
                let (low, high) =
                    probe
                        .create::<BaseConsumer>()?
                        .fetch_watermarks(&topic, 0, Duration::from_secs(10))?;
                let consumer: BaseConsumer = reader.create()?;
                let mut latest = std::collections::HashMap::new();
                if high <= low {
                    return Ok(latest);
                }
                let deadline = std::time::Instant::now() + Duration::from_secs(120);
                // The last stable offset (what read_committed reads up to) reaches it once the
                // transactions open below it end.
                loop {
                    let (_, stable) = consumer.fetch_watermarks(&topic, 0, Duration::from_secs(10))?;
                    if stable >= high {
                        break;
                    }
                    anyhow::ensure!(
                        std::time::Instant::now() < deadline,
                        "changelog {topic}: a transaction open below offset {high} did not end within 120 s"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
                consumer.assign(&tpl)?;
                loop {
                    match consumer.poll(Duration::from_millis(500)) {
                        Some(Ok(m)) => {
                            if let Some(k) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                                if k == manifest_key || k.starts_with(&chunk_prefix) {
                                    match m.payload() {
                                        Some(p) => latest.insert(k.to_string(), p.to_vec()),
                                        None => latest.remove(k),
                                    };
                                }
                            }
                            if m.offset() + 1 >= high {
                                return Ok(latest);
                            }
                        }
                        Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(latest),
                        Some(Err(e)) => return Err(e.into()),
                        None => {}
                    }
                    anyhow::ensure!(
                        std::time::Instant::now() < deadline,
                        "changelog {topic}: not read to its end within 120 s"
                    );
                }
            })
            .await??;
        let Some(m) = latest.get(&format!("{}/{partition}", self.group)) else {
            return Ok(None);
        };
        let m: Manifest = serde_json::from_slice(m)?;
        let mut bytes = Vec::with_capacity(m.bytes);
        for i in 0..m.chunks {
            let key = format!("{}/{partition}/{}/{i}", self.group, m.set);
            let chunk = latest.get(&key).ok_or_else(|| {
                anyhow::anyhow!(
                    "changelog {}: chunk {key} of generation {} missing",
                    self.topic,
                    m.generation
                )
            })?;
            let (gen, data) = chunk.split_at(8.min(chunk.len()));
            let gen = u64::from_le_bytes(gen.try_into().unwrap_or([0; 8]));
            anyhow::ensure!(
                gen == m.generation,
                "changelog {}: chunk {key} is of generation {gen}, the manifest names {}",
                self.topic,
                m.generation
            );
            bytes.extend_from_slice(data);
        }
        anyhow::ensure!(
            bytes.len() == m.bytes,
            "changelog {}: checkpoint of {} bytes, {} read",
            self.topic,
            m.bytes,
            bytes.len()
        );
        Ok(Some((m.generation, bytes)))
    }
}

/// Outputs that no single source record stands for hold the token of the current epoch until
/// every sink is done with them (accepted, or refused for good and counted). A snapshot taken
/// when an epoch ends may be written once that epoch and every earlier one is done.
pub struct Epochs {
    open: Arc<OpenEpochs>,
    current: Ack,
}

#[derive(Default)]
struct OpenEpochs(Mutex<BTreeSet<u64>>);

impl AckReceiver for OpenEpochs {
    fn done(&self, id: u64) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }
}

impl Default for Epochs {
    fn default() -> Self {
        let open = Arc::new(OpenEpochs::default());
        open.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(0);
        Epochs {
            current: Ack::new(0, open.clone()),
            open,
        }
    }
}

impl Epochs {
    /// The current epoch's token, for an output to hold.
    pub fn token(&self) -> &Ack {
        &self.current
    }

    /// Ends the current epoch (outputs from now on hold the next one's token) and returns it.
    pub fn end(&mut self) -> u64 {
        let ended = self.current.id();
        let next = ended + 1;
        self.open
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(next);
        self.current = Ack::new(next, self.open.clone());
        ended
    }

    /// Whether every output of epoch `id` and of every earlier one is done.
    pub fn done_through(&self, id: u64) -> bool {
        self.open
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .first()
            .is_none_or(|first| *first > id)
    }
}

/// Largest changelog message payload: under Kafka's default 1 MB message limit.
pub const CHUNK_BYTES: usize = 512 * 1024;

/// What a partition's latest checkpoint is made of.
#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    generation: u64,
    set: u64,
    chunks: usize,
    bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::Epochs;

    #[test]
    fn an_epoch_is_done_when_its_outputs_and_every_earlier_epochs_outputs_are() {
        let mut epochs = Epochs::default();
        let queued_in_0 = epochs.token().clone();
        assert_eq!(epochs.end(), 0);
        assert!(!epochs.done_through(0), "an output of epoch 0 is still queued");
        let queued_in_1 = epochs.token().clone();
        assert_eq!(epochs.end(), 1);
        drop(queued_in_1);
        assert!(!epochs.done_through(1), "epoch 1 is done, epoch 0 is not");
        drop(queued_in_0);
        assert!(epochs.done_through(0));
        assert!(epochs.done_through(1));
        assert!(
            !epochs.done_through(2),
            "the current epoch is open while it has not ended"
        );
    }
}
