//! Configuration of the Elasticsearch sink.

use serde::{Deserialize, Serialize};

use crate::prometheus::remote_write::TlsConfig;

/// The sink's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EsConfig {
    /// Base URL, e.g. `http://elasticsearch:9200`.
    pub url: String,
    /// Prefix of log indices (`<prefix>-YYYY.MM.DD`).
    #[serde(default = "default_logs_prefix")]
    pub logs_index_prefix: String,
    /// Prefix of span indices (`<prefix>-YYYY-MM-DD`, Jaeger's naming).
    #[serde(default = "default_spans_prefix")]
    pub spans_index_prefix: String,
    /// Documents per bulk request at most.
    #[serde(default = "default_max_docs")]
    pub max_docs: usize,
    /// Bytes per bulk request at most (uncompressed).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Longest a document waits for its batch, ms.
    #[serde(default = "default_wait")]
    pub batch_wait_ms: u64,
    /// Batches queued before the pipeline waits.
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// Gzip request bodies.
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// Request timeout, ms.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Retry backoff bounds, ms.
    #[serde(default = "default_min_backoff")]
    pub min_backoff_ms: u64,
    /// Retry backoff bounds, ms.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
    /// Put the index templates at startup.
    #[serde(default = "default_true")]
    pub put_templates: bool,
    /// Credentials.
    #[serde(default)]
    pub auth: Option<EsAuth>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// Credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum EsAuth {
    /// HTTP basic auth.
    Basic {
        /// User.
        username: String,
        /// Password.
        password: String,
    },
    /// `Authorization: ApiKey <key>` (the base64 `id:api_key`).
    ApiKey {
        /// The encoded key.
        key: String,
    },
}

fn default_logs_prefix() -> String {
    "dwcp-logs".into()
}
fn default_spans_prefix() -> String {
    "jaeger-span".into()
}
fn default_max_docs() -> usize {
    1000
}
fn default_max_bytes() -> usize {
    5 * 1024 * 1024
}
fn default_wait() -> u64 {
    1000
}
fn default_queue() -> usize {
    256
}
fn default_true() -> bool {
    true
}
fn default_timeout() -> u64 {
    30_000
}
fn default_min_backoff() -> u64 {
    100
}
fn default_max_backoff() -> u64 {
    10_000
}

impl EsConfig {
    /// Every default for `url`.
    pub fn new(url: &str) -> Self {
        EsConfig {
            url: url.trim_end_matches('/').into(),
            logs_index_prefix: default_logs_prefix(),
            spans_index_prefix: default_spans_prefix(),
            max_docs: default_max_docs(),
            max_bytes: default_max_bytes(),
            batch_wait_ms: default_wait(),
            queue_capacity: default_queue(),
            gzip: true,
            timeout_ms: default_timeout(),
            min_backoff_ms: default_min_backoff(),
            max_backoff_ms: default_max_backoff(),
            put_templates: true,
            auth: None,
            tls: None,
        }
    }
}
