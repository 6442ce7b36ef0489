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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

/// Counters of the file sink.
#[derive(Debug, Default)]
pub struct FileSinkStats {
    /// Records written.
    pub records: AtomicU64,
    /// Write errors (each retried).
    pub errors: AtomicU64,
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

/// Runs the sink until its input closes; every batch received is written before this returns.
///
/// # Errors
/// When the file cannot be opened at start. Write errors later are retried every second until
/// they succeed: the acks are held meanwhile, so Kafka consumption pauses instead of losing data.
pub async fn run(
    config: FileSinkConfig,
    mut input: mpsc::Receiver<Batch>,
    stats: Arc<FileSinkStats>,
) -> Result<(), FileSinkError> {
    let open = || async {
        tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.path)
            .await
    };
    let mut file = open().await.map_err(|source| FileSinkError::Open {
        path: config.path.clone(),
        source,
    })?;
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
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(path = %config.path.display(), error = %e, "file sink write failed, retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    // Reopen: the file may have been rotated or the disk remounted. A partial
                    // write is retried whole, so a line may repeat (at-least-once), never vanish.
                    if let Ok(f) = open().await {
                        file = f;
                    }
                }
            }
        }
        stats.records.fetch_add(n, Ordering::Relaxed);
        drop(batches); // releases the acks
    }
    Ok(())
}

#[cfg(test)]
mod tests;
