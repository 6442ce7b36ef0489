//! Shards, queues, batching and the retry loop of one endpoint.

use std::time::Duration;

use dwcp_operators::prom::Sample;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::RemoteWriteConfig;
use super::encoder::encode;
use super::service::{BuildError, RemoteWriteService, SendError};
use crate::ack::Ack;
use crate::batch::{self, Flush, Limits, Queued};

/// Samples for one shard, with the ack of the message they came from.
pub type SampleBatch = Queued<Sample>;

/// Counters of one endpoint; the pipeline passes counters registered in its `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct RemoteWriteStats {
    /// Samples the endpoint accepted.
    pub samples_sent: Counter,
    /// Samples dropped after a non-retryable rejection (4xx other than 429).
    pub samples_dropped: Counter,
    /// Requests that failed and were retried.
    pub retries: Counter,
    /// Requests sent (each attempt).
    pub requests: Counter,
    /// Batches queued over all shards.
    pub queue_depth: Gauge,
}

/// A running endpoint: one task per shard.
#[derive(Debug)]
pub struct RemoteWriteSink {
    name: String,
    shards: Vec<mpsc::Sender<SampleBatch>>,
    tasks: Vec<JoinHandle<()>>,
    stats: RemoteWriteStats,
}

impl RemoteWriteSink {
    /// Starts the shards of `config`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (a bad CA file, say).
    pub fn start(config: RemoteWriteConfig, stats: RemoteWriteStats) -> Result<Self, BuildError> {
        let service = RemoteWriteService::new(&config)?;
        let name = config.display_name();
        let n = config.shards.max(1);
        let mut shards = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for shard in 0..n {
            let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
            shards.push(tx);
            let worker = ShardWorker {
                config: config.clone(),
                service: service.clone(),
                stats: stats.clone(),
                name: name.clone(),
                shard,
            };
            tasks.push(tokio::spawn(worker.run(rx)));
        }
        Ok(RemoteWriteSink {
            name,
            shards,
            tasks,
            stats,
        })
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues `samples`, split by series over the shards, each part holding a clone of `ack`.
    /// Waits while a shard's queue is full (backpressure).
    pub async fn send(&self, samples: Vec<Sample>, ack: Option<&Ack>) {
        let n = self.shards.len();
        let mut parts: Vec<Vec<Sample>> = (0..n).map(|_| Vec::new()).collect();
        for s in samples {
            #[allow(clippy::cast_possible_truncation)]
            let i = (s.series_hash() % n as u64) as usize;
            parts[i].push(s);
        }
        for (i, part) in parts.into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            self.stats.queue_depth.inc();
            if self.shards[i]
                .send(Queued {
                    items: part,
                    ack: ack.cloned(),
                })
                .await
                .is_err()
            {
                self.stats.queue_depth.dec();
                tracing::error!(endpoint = %self.name, shard = i, "remote-write shard stopped; samples not sent");
            }
        }
    }

    /// Stops taking samples and waits until every queued one is sent or rejected.
    pub async fn close(self) {
        drop(self.shards);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

struct ShardWorker {
    config: RemoteWriteConfig,
    service: RemoteWriteService,
    stats: RemoteWriteStats,
    name: String,
    shard: usize,
}

impl Flush<Sample> for ShardWorker {
    /// Rough encoded size of a sample: its labels plus value and timestamp.
    fn size(s: &Sample) -> usize {
        s.labels.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>() + 20
    }

    /// Sends the batch, in arrival order, in requests of at most `max_samples_per_send`; the
    /// acks are released when this returns.
    async fn flush(&mut self, samples: Vec<Sample>, acks: Vec<Ack>) {
        let max = self.config.max_samples_per_send.max(1);
        for chunk in samples.chunks(max) {
            self.send_with_retries(chunk).await;
        }
        drop(acks); // dropping the acks lets the source commit
    }
}

impl ShardWorker {
    async fn run(mut self, rx: mpsc::Receiver<SampleBatch>) {
        let limits = Limits {
            max_items: self.config.max_samples_per_send,
            max_bytes: self.config.max_request_bytes,
            wait: Duration::from_millis(self.config.batch_wait_ms),
        };
        let depth = self.stats.queue_depth.clone();
        batch::run(&mut self, rx, limits, &depth).await;
    }

    async fn send_with_retries(&self, chunk: &[Sample]) {
        let body = match encode(chunk) {
            Ok(b) => b,
            Err(e) => {
                self.stats.samples_dropped.inc_by(chunk.len() as u64);
                tracing::error!(endpoint = %self.name, error = %e, "snappy compression failed; samples dropped");
                return;
            }
        };
        let mut attempt: u32 = 0;
        loop {
            self.stats.requests.inc();
            match self.service.send(body.clone()).await {
                Ok(()) => {
                    self.stats.samples_sent.inc_by(chunk.len() as u64);
                    return;
                }
                Err(SendError::Permanent { status, body }) => {
                    self.stats.samples_dropped.inc_by(chunk.len() as u64);
                    tracing::warn!(
                        endpoint = %self.name, shard = self.shard, status, samples = chunk.len(), receiver_message = %body,
                        "remote-write rejected samples; not retried"
                    );
                    return;
                }
                Err(SendError::Retryable { reason, retry_after }) => {
                    self.stats.retries.inc();
                    let delay = retry_after.unwrap_or_else(|| self.backoff(attempt));
                    tracing::warn!(
                        endpoint = %self.name, shard = self.shard, attempt, %reason, delay_ms = delay.as_millis() as u64,
                        "remote-write failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// Exponential backoff with jitter: half the step fixed, half random.
    fn backoff(&self, attempt: u32) -> Duration {
        let step = self
            .config
            .min_backoff_ms
            .saturating_mul(1u64 << attempt.min(20))
            .min(self.config.max_backoff_ms)
            .max(1);
        let jitter = rand::rng().random_range(0..=step / 2);
        Duration::from_millis(step / 2 + jitter)
    }
}
