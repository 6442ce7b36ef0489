//! The batching loop every sink shares: take items from a bounded queue and flush when a batch
//! holds `max_items` items or `max_bytes` bytes, or `wait` after its first item, and once more
//! when the queue closes. Each item carries its payload and the acks of the messages it came
//! from; a sink's `flush` releases the acks when it is done with the batch.

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::ack::Ack;

/// When a batch goes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Items (samples, documents) per batch at most.
    pub max_items: usize,
    /// Bytes per batch at most.
    pub max_bytes: usize,
    /// Longest the first item waits.
    pub wait: Duration,
}

/// One queued unit: payload items and the ack of their message.
#[derive(Debug)]
pub struct Queued<T> {
    /// The items.
    pub items: Vec<T>,
    /// Released when the batch that holds the items is done.
    pub ack: Option<Ack>,
}

/// A sink's side of the loop.
pub trait Flush<T> {
    /// Bytes an item adds to a batch.
    fn size(item: &T) -> usize;
    /// Sends a batch; the acks are dropped (released) when this returns.
    fn flush(&mut self, items: Vec<T>, acks: Vec<Ack>) -> impl std::future::Future<Output = ()> + Send;
}

/// Runs the loop until the queue closes and the last batch is flushed. `queue_depth` counts
/// queued units (the sender increments it).
pub async fn run<T, F: Flush<T>>(sink: &mut F, mut rx: mpsc::Receiver<Queued<T>>, limits: Limits, queue_depth: &Gauge) {
    let mut items: Vec<T> = Vec::new();
    let mut acks: Vec<Ack> = Vec::new();
    let mut bytes = 0usize;
    let mut deadline: Option<Instant> = None;
    let mut open = true;
    while open || !items.is_empty() {
        let full = items.len() >= limits.max_items.max(1) || bytes >= limits.max_bytes;
        let due = deadline.is_some_and(|d| Instant::now() >= d);
        if full || due || (!open && !items.is_empty()) {
            sink.flush(std::mem::take(&mut items), std::mem::take(&mut acks)).await;
            bytes = 0;
            deadline = None;
            continue;
        }
        tokio::select! {
            q = rx.recv(), if open => match q {
                Some(q) => {
                    queue_depth.dec();
                    if items.is_empty() {
                        deadline = Some(Instant::now() + limits.wait);
                    }
                    bytes += q.items.iter().map(F::size).sum::<usize>();
                    items.extend(q.items);
                    acks.extend(q.ack);
                }
                None => open = false,
            },
            () = tokio::time::sleep_until(deadline.unwrap_or_else(|| Instant::now() + limits.wait)), if deadline.is_some() => {}
        }
    }
}
