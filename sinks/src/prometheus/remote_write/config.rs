//! Configuration of one remote-write endpoint.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::relabel::RelabelConfig;

/// One endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// A name for logs and metrics; defaults to the URL's host and port.
    #[serde(default)]
    pub name: Option<String>,
    /// The receiver, e.g. `http://prometheus:9090/api/v1/write` or VictoriaMetrics'
    /// `http://vm:8428/api/v1/write`.
    pub url: String,
    /// Parallel shards (one request in flight each).
    #[serde(default = "default_shards")]
    pub shards: usize,
    /// Samples per request at most.
    #[serde(default = "default_max_samples")]
    pub max_samples_per_send: usize,
    /// Uncompressed request size at most, bytes.
    #[serde(default = "default_max_bytes")]
    pub max_request_bytes: usize,
    /// Longest a sample waits for its batch to fill, ms.
    #[serde(default = "default_batch_wait")]
    pub batch_wait_ms: u64,
    /// Batches queued per shard before the pipeline waits.
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// Request timeout, ms.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// First retry delay, ms.
    #[serde(default = "default_min_backoff")]
    pub min_backoff_ms: u64,
    /// Largest retry delay, ms.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
    /// Credentials.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// TLS settings for https URLs.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Relabeling of the series sent here, in order, as Prometheus' `write_relabel_configs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write_relabel_configs: Vec<RelabelConfig>,
}

/// Credentials for an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Auth {
    /// HTTP basic auth.
    Basic {
        /// User.
        username: String,
        /// Password.
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: String,
    },
}

/// TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file of CA certificates to trust besides the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_shards() -> usize {
    4
}
fn default_max_samples() -> usize {
    5000
}
fn default_max_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_batch_wait() -> u64 {
    1000
}
fn default_queue() -> usize {
    256
}
fn default_timeout() -> u64 {
    30_000
}
fn default_min_backoff() -> u64 {
    30
}
fn default_max_backoff() -> u64 {
    5_000
}

impl RemoteWriteConfig {
    /// A config with every default for `url`.
    pub fn new(url: &str) -> Self {
        RemoteWriteConfig {
            name: None,
            url: url.into(),
            shards: default_shards(),
            max_samples_per_send: default_max_samples(),
            max_request_bytes: default_max_bytes(),
            batch_wait_ms: default_batch_wait(),
            queue_capacity: default_queue(),
            timeout_ms: default_timeout(),
            min_backoff_ms: default_min_backoff(),
            max_backoff_ms: default_max_backoff(),
            auth: None,
            tls: None,
            write_relabel_configs: Vec::new(),
        }
    }

    /// The name used in logs and labels.
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let rest = self.url.split("://").nth(1).unwrap_or(&self.url);
        rest.split('/').next().unwrap_or(rest).to_string()
    }
}
