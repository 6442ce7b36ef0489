//! The Prometheus remote-write sink, protocol 1.0 as its specification says.
//!
//! - Body: a protobuf `WriteRequest`, snappy block-compressed; headers `Content-Encoding:
//!   snappy`, `Content-Type: application/x-protobuf`, `X-Prometheus-Remote-Write-Version:
//!   0.1.0` and `User-Agent: dwcp-monitor/<version>`. Labels sorted by name, no empty names or
//!   values; the samples of a series in timestamp order.
//! - Sharding: a sample goes to the shard its labels' hash picks, and each shard sends one
//!   request at a time, so parallel requests never reorder one series (the Collector's
//!   exporter earns "out of order sample" 400s here).
//! - Batching: a shard sends when it holds `max_samples_per_send` samples or
//!   `max_request_bytes` of encoded labels and values, or `batch_wait_ms` after its first
//!   sample, whichever comes first.
//! - Retries: 5xx, 429 and connection errors are retried with exponential backoff and full
//!   jitter between `min_backoff_ms` and `max_backoff_ms`, honouring `Retry-After` (seconds)
//!   on 429 and 503; forever, since dropping is never the answer to an outage. Other 4xx are
//!   not retried: the samples are counted as dropped and the receiver's message is logged.
//! - Backpressure: each shard's queue is bounded (`queue_capacity` batches); when it is full,
//!   the pipeline waits, which pauses Kafka consumption. Nothing is dropped for lack of room.
//! - Acknowledgements: a batch's acks are released when the request that carried its samples
//!   was accepted (2xx) or permanently rejected (counted), so offsets are committed only after
//!   the endpoint has the samples.
//! - Auth: basic auth or a bearer token; TLS with the system roots plus an optional CA file.
//! - `write_relabel_configs`: Prometheus' relabeling per endpoint (keep only the rollups for a
//!   global store, drop a label, ...); series it drops are counted.
//!
//! Several endpoints run side by side, each with its own shards and queues.

mod config;
mod encoder;
mod relabel;
mod service;
mod sink;

pub use config::{Auth, RemoteWriteConfig, TlsConfig};
pub use encoder::{encode, encode_uncompressed, proto, write_request};
pub use relabel::{relabel, Relabel, RelabelAction, RelabelConfig, RelabelError, Relabeled};
pub use service::{with_ca_file, BuildError, RemoteWriteService, SendError};
pub use sink::{RemoteWriteSink, RemoteWriteStats, SampleBatch};

#[cfg(test)]
mod tests;
