//! The Elasticsearch / OpenSearch sink: `_bulk` NDJSON for Elasticsearch 7 and 8 and OpenSearch.
//!
//! - Documents: log records into daily indices `dwcp-logs-YYYY.MM.DD` (timestamp, severity
//!   number and text, body, service, region, resource and attributes, trace and span ids);
//!   spans in Jaeger's Elasticsearch span document format into `jaeger-span-YYYY-MM-DD`, so
//!   Jaeger's UI (its Elasticsearch storage) reads the stitched traces. Index templates for
//!   both are put at startup.
//! - Each document has a deterministic `_id` (a 128-bit hash of its content; for spans, of trace
//!   id, span id and start), so a retried batch overwrites instead of duplicating.
//! - Batches by documents and bytes with a maximum delay; gzip request bodies (configurable).
//! - Per-item results are read: items failing with 429 or 5xx are retried (with backoff, until
//!   accepted), the others are rejected for good and handed back with the store's error, for
//!   the dead-letter topic. A failed request (connection error, 429, 5xx) is retried whole.
//! - A bounded queue: when the store is down, batches wait, the queue fills, and the pipeline
//!   stops reading Kafka; acks are released only when every document of a message is accepted
//!   or dead-lettered. Basic auth, API key, TLS with a custom CA.
//! - Queries for the monitoring API ([`EsQuery`]): a trace by id, traces by region, service,
//!   minimum duration, error and time range, logs by level, region, time, search term and limit,
//!   the logs of one trace.

mod config;
mod encoder;
mod query;
mod service;
mod sink;

pub use config::{EsAuth, EsConfig};
pub use encoder::{index_for, jaeger_span, log_document, Document};
pub use query::{logs_body, traces_body, EsQuery, LogQuery, TraceQuery};
pub use service::{BulkOutcome, EsService, ItemResult};
pub use sink::{EsSink, EsStats, Rejected};

#[cfg(test)]
mod tests;
