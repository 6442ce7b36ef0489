//! The file sink: decoded records as JSON lines, one record per line, in the model's JSON shape
//! (the same as `dwcp-monitor decode` prints).
//!
//! Batches are written in arrival order and the file is flushed (and, with `fsync: true`,
//! synced) before their acks are released, so a committed offset means the records are in the
//! file. Useful to archive the stream, to debug, and for the end-to-end tests that check that
//! nothing is lost across a crash.
//!
//! Internal metrics: records written and write errors, reported through [`FileSinkStats`].

use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::Batch;
use dwcp_schemas::Records;

/// Configuration of the file sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file to append to; created if missing.
    pub path: PathBuf,
    /// Also fsync before acknowledging (durable across a machine crash, slower).
    #[serde(default)]
    pub fsync: bool,
}

/// Counters of the file sink; the pipeline passes in counters registered in its `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct FileSinkStats {
    /// Records written.
    pub records: Counter,
    /// Write errors (each retried).
    pub errors: Counter,
}

/// Errors of the file sink.
#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Encodes a batch as JSON lines.
pub fn encode(records: &Records, out: &mut Vec<u8>) {
    fn lines<T: Serialize>(items: &[T], out: &mut Vec<u8>) {
        for item in items {
            // The model's types serialize infallibly: no maps with non-string keys.
            if serde_json::to_writer(&mut *out, item).is_ok() {
                out.push(b'\n');
            }
        }
    }
    match records {
        Records::Metrics(v) => lines(v, out),
        Records::Traces(v) => lines(v, out),
        Records::Logs(v) => lines(v, out),
    }
}

/// An opened file sink.
#[derive(Debug)]
pub struct FileSink {
    config: FileSinkConfig,
    file: tokio::fs::File,
}

async fn open(path: &std::path::Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new().create(true).append(true).open(path).await
}

impl FileSink {
    /// Opens (or creates) the file, so a bad path fails at startup, not later.
    ///
    /// # Errors
    /// When the file cannot be opened for appending.
    pub async fn open(config: FileSinkConfig) -> Result<Self, FileSinkError> {
        let file = open(&config.path).await.map_err(|source| FileSinkError::Open {
            path: config.path.clone(),
            source,
        })?;
        Ok(FileSink { config, file })
    }

    /// Runs until the input closes; every batch received is written before this returns.
    ///
    /// Write errors are retried every second until they succeed: the acks are held meanwhile,
    /// so Kafka consumption pauses instead of losing data.
    pub async fn run(self, input: mpsc::Receiver<Batch>, stats: Arc<FileSinkStats>) {
        run_opened(self.config, self.file, input, stats).await;
    }
}

async fn run_opened(
    config: FileSinkConfig,
    mut file: tokio::fs::File,
    mut input: mpsc::Receiver<Batch>,
    stats: Arc<FileSinkStats>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = input.recv().await {
        // Take whatever else is queued, to write and flush once for many batches.
        let mut batches = vec![first];
        while batches.len() < 1024 {
            match input.try_recv() {
                Ok(b) => batches.push(b),
                Err(_) => break,
            }
        }
        buf.clear();
        let mut n = 0;
        for b in &batches {
            encode(&b.records, &mut buf);
            n += b.records.len() as u64;
        }
        loop {
            let res = async {
                file.write_all(&buf).await?;
                file.flush().await?;
                if config.fsync {
                    file.sync_data().await?;
                }
                Ok::<_, std::io::Error>(())
            }
            .await;
            match res {
                Ok(()) => break,
                Err(e) => {
                    stats.errors.inc();
                    tracing::error!(path = %config.path.display(), error = %e, "file sink write failed, retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    // Reopen: the file may have been rotated or the disk remounted. A partial
                    // write is retried whole, so a line may repeat (at-least-once), never vanish.
                    if let Ok(f) = open(&config.path).await {
                        file = f;
                    }
                }
            }
        }
        stats.records.inc_by(n);
        drop(batches); // releases the acks
    }
}

#[cfg(test)]
mod tests;
