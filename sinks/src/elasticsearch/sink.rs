//! Queue, batching and the retry loop of the Elasticsearch sink.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::EsConfig;
use super::encoder::{templates, Document};
use super::service::{EsService, ItemResult};
use crate::ack::Ack;
use crate::batch::{self, Flush, Limits, Queued};
use crate::prometheus::remote_write::SendError;

/// A document the store refused for good, with its error: for the dead-letter topic.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The document.
    pub doc: Document,
    /// The store's error (`400 mapper_parsing_exception: failed to parse field ...`).
    pub reason: String,
}

/// Counters; the pipeline passes counters registered in its `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct EsStats {
    /// Documents stored.
    pub docs_sent: Counter,
    /// Documents refused for good (dead-lettered).
    pub docs_rejected: Counter,
    /// Requests or items retried.
    pub retries: Counter,
    /// Bulk requests sent.
    pub requests: Counter,
    /// Batches queued.
    pub queue_depth: Gauge,
}

/// The running sink.
pub struct EsSink {
    tx: mpsc::Sender<Queued<Document>>,
    task: JoinHandle<()>,
    stats: EsStats,
}

impl EsSink {
    /// Starts the sink; templates are put before the first bulk request.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn start(config: EsConfig, stats: EsStats, rejected: mpsc::Sender<Rejected>) -> Result<Self, String> {
        let service = EsService::new(&config)?;
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let worker = Worker {
            config,
            service,
            stats: stats.clone(),
            rejected,
            templates_done: false,
        };
        Ok(EsSink {
            tx,
            task: tokio::spawn(worker.run(rx)),
            stats,
        })
    }

    /// Queues documents with the ack of the message they came from; waits while the queue is
    /// full (backpressure).
    pub async fn send(&self, docs: Vec<Document>, ack: Option<&Ack>) {
        if docs.is_empty() {
            return;
        }
        self.stats.queue_depth.inc();
        if self
            .tx
            .send(Queued {
                items: docs,
                ack: ack.cloned(),
            })
            .await
            .is_err()
        {
            self.stats.queue_depth.dec();
            tracing::error!("elasticsearch sink stopped; documents not sent");
        }
    }

    /// Stops taking documents and waits until every queued one is stored or rejected.
    pub async fn close(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

impl Flush<Document> for Worker {
    fn size(d: &Document) -> usize {
        d.source.len() + 96
    }

    async fn flush(&mut self, docs: Vec<Document>, acks: Vec<Ack>) {
        self.send_all(docs, acks).await;
    }
}

struct Worker {
    config: EsConfig,
    service: EsService,
    stats: EsStats,
    rejected: mpsc::Sender<Rejected>,
    templates_done: bool,
}

impl Worker {
    async fn run(mut self, rx: mpsc::Receiver<Queued<Document>>) {
        let limits = Limits {
            max_items: self.config.max_docs,
            max_bytes: self.config.max_bytes,
            wait: Duration::from_millis(self.config.batch_wait_ms),
        };
        let depth = self.stats.queue_depth.clone();
        // Templates first, so the first documents get their mappings.
        self.ensure_templates().await;
        batch::run(&mut self, rx, limits, &depth).await;
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let step = self
            .config
            .min_backoff_ms
            .saturating_mul(1 << attempt.min(16))
            .min(self.config.max_backoff_ms)
            .max(1);
        Duration::from_millis(step / 2 + rand::rng().random_range(0..=step / 2))
    }

    async fn ensure_templates(&mut self) {
        if self.templates_done || !self.config.put_templates {
            return;
        }
        let mut attempt = 0;
        for (name, body) in templates(&self.config.logs_index_prefix, &self.config.spans_index_prefix) {
            loop {
                match self.service.put_template(&name, &body).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(template = %name, error = %e, "index template not put yet; retrying");
                        tokio::time::sleep(self.backoff(attempt)).await;
                        attempt += 1;
                    }
                }
            }
        }
        self.templates_done = true;
    }

    /// Sends everything pending in bulk requests of at most `max_docs`, retrying items and
    /// requests until each document is stored or rejected; then releases the acks.
    async fn send_all(&mut self, all: Vec<Document>, acks: Vec<Ack>) {
        self.ensure_templates().await;
        let max = self.config.max_docs.max(1);
        for chunk in all.chunks(max) {
            let mut pending: Vec<&Document> = chunk.iter().collect();
            let mut attempt = 0u32;
            while !pending.is_empty() {
                self.stats.requests.inc();
                match self.service.bulk(&pending).await {
                    Ok(outcome) => {
                        let mut retry = Vec::new();
                        for (doc, r) in pending.iter().zip(outcome.items) {
                            match r {
                                ItemResult::Ok => {
                                    self.stats.docs_sent.inc();
                                }
                                ItemResult::Retry(reason) => {
                                    tracing::debug!(id = %doc.id, %reason, "document will be retried");
                                    retry.push(*doc);
                                }
                                ItemResult::Rejected(reason) => self.reject(doc, reason).await,
                            }
                        }
                        if !retry.is_empty() {
                            self.stats.retries.inc();
                            tokio::time::sleep(self.backoff(attempt)).await;
                            attempt += 1;
                        }
                        pending = retry;
                    }
                    Err(SendError::Retryable { reason, retry_after }) => {
                        self.stats.retries.inc();
                        let delay = retry_after.unwrap_or_else(|| self.backoff(attempt));
                        tracing::warn!(%reason, attempt, delay_ms = delay.as_millis() as u64, "_bulk failed; retrying");
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                    }
                    Err(SendError::Permanent { status, body }) => {
                        for doc in std::mem::take(&mut pending) {
                            self.reject(doc, format!("{status}: {body}")).await;
                        }
                    }
                }
            }
        }
        drop(acks); // released: every document is stored or dead-lettered
    }

    async fn reject(&self, doc: &Document, reason: String) {
        self.stats.docs_rejected.inc();
        tracing::warn!(index = %doc.index, id = %doc.id, %reason, "document rejected by the store; sent to the dead-letter topic");
        if self
            .rejected
            .send(Rejected {
                doc: doc.clone(),
                reason,
            })
            .await
            .is_err()
        {
            tracing::error!(id = %doc.id, "dead-letter channel closed; rejected document lost");
        }
    }
}
