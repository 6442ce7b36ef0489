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
use super::relabel::{relabel, Relabel, Relabeled};
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
    /// Samples not sent because `write_relabel_configs` dropped their series.
    pub samples_relabel_dropped: Counter,
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
    /// Steps that change labels: applied here, before sharding by the new labels. Steps that
    /// only keep or drop (the usual case) leave a series' shard as it is, so the shards apply
    /// them, off the caller's thread.
    relabel: Vec<Relabel>,
}

impl RemoteWriteSink {
    /// Starts the shards of `config`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (a bad CA file, say) or a relabeling step is
    /// invalid.
    pub fn start(config: RemoteWriteConfig, stats: RemoteWriteStats) -> Result<Self, BuildError> {
        let relabel = config
            .write_relabel_configs
            .iter()
            .enumerate()
            .map(|(index, c)| {
                c.compile().map_err(|e| BuildError::Relabel {
                    index,
                    field: e.field,
                    message: e.message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let service = RemoteWriteService::new(&config)?;
        let (relabel, filter): (Vec<Relabel>, Vec<Relabel>) = if relabel.iter().all(Relabel::filters_only) {
            (Vec::new(), relabel)
        } else {
            (relabel, Vec::new())
        };
        let filter = std::sync::Arc::new(filter);
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
                filter: filter.clone(),
            };
            tasks.push(tokio::spawn(worker.run(rx)));
        }
        Ok(RemoteWriteSink {
            name,
            shards,
            tasks,
            stats,
            relabel,
        })
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues `samples`, relabeled, split by series over the shards, each part holding a
    /// clone of `ack`. Waits while a shard's queue is full (backpressure).
    pub async fn send(&self, samples: Vec<Sample>, ack: Option<&Ack>) {
        let n = self.shards.len();
        let mut parts: Vec<Vec<Sample>> = (0..n).map(|_| Vec::new()).collect();
        let mut relabel_dropped = 0u64;
        for s in samples {
            let s = if self.relabel.is_empty() {
                s
            } else {
                match relabel(&self.relabel, &s.labels) {
                    Relabeled::Unchanged => s,
                    Relabeled::Dropped => {
                        relabel_dropped += 1;
                        continue;
                    }
                    // Sharded by the new labels: two series relabeled into one stay in order.
                    Relabeled::Changed(labels) => Sample::new(labels, s.value, s.timestamp_ms),
                }
            };
            parts[shard_of(s.series_hash(), n)].push(s);
        }
        if relabel_dropped > 0 {
            self.stats.samples_relabel_dropped.inc_by(relabel_dropped);
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
    /// Keep and drop steps (see [`RemoteWriteSink`]'s `relabel`).
    filter: std::sync::Arc<Vec<Relabel>>,
}

impl Flush<Sample> for ShardWorker {
    /// Rough encoded size of a sample: its labels plus value and timestamp.
    fn size(s: &Sample) -> usize {
        s.labels.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>() + 20
    }

    /// Sends the batch, in arrival order, in requests of at most `max_samples_per_send`; the
    /// acks are released when this returns.
    async fn flush(&mut self, mut samples: Vec<Sample>, acks: Vec<Ack>) {
        if !self.filter.is_empty() {
            let before = samples.len();
            samples.retain(|s| !matches!(relabel(&self.filter, &s.labels), Relabeled::Dropped));
            let dropped = before - samples.len();
            if dropped > 0 {
                self.stats.samples_relabel_dropped.inc_by(dropped as u64);
            }
        }
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

    /// Sends `chunk`, retrying what is retryable. A 400 for a single sample that the receiver
    /// already has newer or equal data for (Prometheus: `out of order sample`, `duplicate sample
    /// for timestamp`, `out of bounds`) rejects the whole request, so such a request is split in
    /// halves until the refused samples stand alone: they are dropped (counted), the rest are
    /// written. This is what a replay after a crash or a partition move sends: samples the
    /// previous owner already wrote, mixed with ones it did not.
    async fn send_with_retries(&self, chunk: &[Sample]) {
        let mut pending: Vec<&[Sample]> = vec![chunk];
        let mut isolated = 0u64;
        while let Some(part) = pending.pop() {
            match self.send_part(part).await {
                Ok(()) => {
                    self.stats.samples_sent.inc_by(part.len() as u64);
                }
                Err((status, body)) if status == 400 && refuses_old_samples(&body) && part.len() > 1 => {
                    let (first, second) = part.split_at(part.len() / 2);
                    // The first half goes first: a series' samples keep their order.
                    pending.push(second);
                    pending.push(first);
                }
                Err((status, body)) => {
                    self.stats.samples_dropped.inc_by(part.len() as u64);
                    if status == 400 && refuses_old_samples(&body) {
                        isolated += part.len() as u64;
                    } else {
                        tracing::warn!(
                            endpoint = %self.name, shard = self.shard, status, samples = part.len(), receiver_message = %body,
                            "remote-write rejected samples; not retried"
                        );
                    }
                }
            }
        }
        if isolated > 0 {
            tracing::info!(
                endpoint = %self.name, shard = self.shard, samples = isolated,
                "remote-write: samples older than what the receiver holds dropped (a replay after a restart or a partition move); the rest of their requests written"
            );
        }
    }

    /// One request with retries on 5xx and 429: `Ok`, or the permanent status and message.
    async fn send_part(&self, part: &[Sample]) -> Result<(), (u16, String)> {
        let body = match encode(part) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(endpoint = %self.name, error = %e, "snappy compression failed; samples dropped");
                return Err((0, format!("snappy compression failed: {e}")));
            }
        };
        let mut attempt: u32 = 0;
        loop {
            self.stats.requests.inc();
            match self.service.send(body.clone()).await {
                Ok(()) => return Ok(()),
                Err(SendError::Permanent { status, body }) => return Err((status, body)),
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

/// The shard of a series among `n`, from its hash's high bits (multiply-shift): the low bit of
/// some stable hashes here is forced to 1, so `hash % n` would leave every even shard idle.
fn shard_of(hash: u64, n: usize) -> usize {
    #[allow(clippy::cast_possible_truncation)]
    let i = ((u128::from(hash) * n as u128) >> 64) as usize;
    i
}

/// Whether a receiver's 400 message is a per-sample refusal of data older than (or at the time
/// of) what it holds, as Prometheus' TSDB answers; the request's other samples were fine.
fn refuses_old_samples(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "out of order sample",
        "duplicate sample for timestamp",
        "out of bounds",
        "too old",
    ]
    .iter()
    .any(|p| m.contains(p))
}

#[cfg(test)]
mod shard_tests {
    use super::shard_of;
    use dwcp_operators::prom::{labels_of, Sample};

    /// Series spread over every shard, about evenly (before, `hash % n` on hashes whose low bit
    /// was always 1 sent nothing to even shards: with 4, half the shards idled).
    #[test]
    fn series_spread_over_every_shard() {
        for n in [1usize, 2, 3, 4, 8] {
            let mut per = vec![0usize; n];
            for i in 0..10_000 {
                let s = Sample::new(labels_of([("__name__", "m"), ("id", &i.to_string())]), 1.0, 0);
                per[shard_of(s.series_hash(), n)] += 1;
            }
            let even = 10_000 / n;
            assert!(per.iter().all(|c| c.abs_diff(even) * 10 < even), "{n} shards: {per:?}");
        }
        assert_eq!(shard_of(u64::MAX, 4), 3);
        assert_eq!(shard_of(0, 4), 0);
    }
}
