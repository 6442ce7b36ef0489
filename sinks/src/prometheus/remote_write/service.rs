//! One HTTP request to a remote-write endpoint, and how its outcome is classified.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use reqwest::StatusCode;

use super::config::{Auth, RemoteWriteConfig};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: 5xx, 429, or no response.
    #[error("retryable: {reason}")]
    Retryable {
        /// Status or transport error.
        reason: String,
        /// The receiver's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
    },
    /// Not worth retrying: another 4xx. The samples are dropped and counted.
    #[error("rejected with {status}: {body}")]
    Permanent {
        /// HTTP status.
        status: u16,
        /// The receiver's message.
        body: String,
    },
}

/// The HTTP client of one endpoint.
#[derive(Debug, Clone)]
pub struct RemoteWriteService {
    client: reqwest::Client,
    url: String,
    auth: Option<Auth>,
}

/// Errors building the client (a bad CA file, say).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The CA file could not be read.
    #[error("tls.ca_file {path}: {source}")]
    CaFile {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The HTTP client refused the settings or the certificate.
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
    /// A relabeling step is invalid.
    #[error("write_relabel_configs[{index}].{field}: {message}")]
    Relabel {
        /// The step's position.
        index: usize,
        /// Its field at fault.
        field: &'static str,
        /// Why.
        message: String,
    },
}

/// Adds the CA certificates of `tls.ca_file`, if any, to a client being built.
///
/// # Errors
/// When the file cannot be read or holds no valid PEM certificates.
pub fn with_ca_file(
    mut builder: reqwest::ClientBuilder,
    tls: Option<&super::TlsConfig>,
) -> Result<reqwest::ClientBuilder, BuildError> {
    if let Some(ca) = tls.and_then(|t| t.ca_file.as_ref()) {
        let pem = std::fs::read(ca).map_err(|source| BuildError::CaFile {
            path: ca.display().to_string(),
            source,
        })?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

impl RemoteWriteService {
    /// A client for `config`.
    ///
    /// # Errors
    /// When the CA file cannot be read or parsed.
    pub fn new(config: &RemoteWriteConfig) -> Result<Self, BuildError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("snappy"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        headers.insert("X-Prometheus-Remote-Write-Version", HeaderValue::from_static("0.1.0"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("dwcp-monitor/", env!("CARGO_PKG_VERSION"))),
        );
        let builder = with_ca_file(
            reqwest::Client::builder()
                .default_headers(headers)
                .timeout(Duration::from_millis(config.timeout_ms))
                .pool_max_idle_per_host(config.shards.max(1)),
            config.tls.as_ref(),
        )?;
        Ok(RemoteWriteService {
            client: builder.build()?,
            url: config.url.clone(),
            auth: config.auth.clone(),
        })
    }

    /// Sends one compressed body.
    ///
    /// # Errors
    /// [`SendError`], classified for the retry loop.
    pub async fn send(&self, body: Vec<u8>) -> Result<(), SendError> {
        let mut req = self.client.post(&self.url).body(body);
        req = match &self.auth {
            Some(Auth::Basic { username, password }) => req.basic_auth(username, Some(password)),
            Some(Auth::Bearer { token }) => req.bearer_auth(token),
            None => req,
        };
        let resp = req.send().await.map_err(|e| SendError::Retryable {
            reason: e.to_string(),
            retry_after: None,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body: String = resp.text().await.unwrap_or_default().chars().take(512).collect();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Err(SendError::Retryable {
                reason: format!("{status}: {}", body.trim()),
                retry_after,
            })
        } else {
            Err(SendError::Permanent {
                status: status.as_u16(),
                body: body.trim().to_string(),
            })
        }
    }
}
