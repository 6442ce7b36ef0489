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

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
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
    pub async fn open(config: &ValidatedConfig, operator: &str) -> anyhow::Result<Self> {
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
            .set("fetch.message.max.bytes", "104857600");
        Ok(Changelog {
            topic,
            group: config.config.source.group_id.clone(),
            producer: pc.create()?,
            reader,
        })
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes `partition`'s checkpoint; returns once the broker acknowledged it.
    ///
    /// # Errors
    /// When the broker does not take it (the partition's commits then stay where they were).
    pub async fn write(&self, partition: i32, bytes: &[u8]) -> anyhow::Result<()> {
        let key = format!("{}/{partition}", self.group);
        self.producer
            .send(
                FutureRecord::to(&self.topic).key(&key).payload(bytes).partition(0),
                Duration::from_secs(30),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| anyhow::anyhow!("changelog {}: {e}", self.topic))
    }

    /// The latest checkpoint of `partition`, reading the topic from its start to its end.
    ///
    /// # Errors
    /// When the topic cannot be read.
    pub async fn read(&self, partition: i32) -> anyhow::Result<Option<Vec<u8>>> {
        let reader = self.reader.clone();
        let topic = self.topic.clone();
        let group = self.group.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Option<Vec<u8>>> {
            let consumer: BaseConsumer = reader.create()?;
            let (low, high) = consumer.fetch_watermarks(&topic, 0, Duration::from_secs(10))?;
            if high <= low {
                return Ok(None);
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
            consumer.assign(&tpl)?;
            let key = format!("{group}/{partition}");
            let mut latest = None;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                match consumer.poll(Duration::from_millis(500)) {
                    Some(Ok(m)) => {
                        if m.key() == Some(key.as_bytes()) {
                            latest = m.payload().map(<[u8]>::to_vec);
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
                    "changelog {topic}: not read to its end within 60 s"
                );
            }
        })
        .await?
    }
}
