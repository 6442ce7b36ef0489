//! HTTP to the store: templates and `_bulk`, with per-item results.

use std::io::Write as _;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};

use super::config::{EsAuth, EsConfig};
use super::encoder::Document;
use crate::prometheus::remote_write::SendError;

/// The fate of one document of a bulk request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    /// Stored (created or updated).
    Ok,
    /// Failed with 429 or 5xx: retry it.
    Retry(String),
    /// Failed for good (a mapping conflict, say): the store's error.
    Rejected(String),
}

/// The outcome of a bulk request: one result per document, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkOutcome {
    /// Per-document results.
    pub items: Vec<ItemResult>,
}

/// An HTTP client with the store's auth header, timeout and CA certificates (the sink's and the
/// monitoring API's queries share it).
///
/// # Errors
/// When the CA file cannot be read, a credential is not a valid header, or the client cannot be
/// built.
pub fn http_client(config: &EsConfig) -> Result<reqwest::Client, String> {
    let mut headers = HeaderMap::new();
    match &config.auth {
        Some(EsAuth::ApiKey { key }) => {
            let v = HeaderValue::from_str(&format!("ApiKey {key}")).map_err(|e| format!("auth.api_key: {e}"))?;
            headers.insert(AUTHORIZATION, v);
        }
        Some(EsAuth::Basic { username, password }) => {
            use base64::Engine as _;
            let enc = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            let v = HeaderValue::from_str(&format!("Basic {enc}")).map_err(|e| format!("auth.basic: {e}"))?;
            headers.insert(AUTHORIZATION, v);
        }
        None => {}
    }
    let mut b = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_millis(config.timeout_ms));
    if let Some(ca) = config.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
        let pem = std::fs::read(ca).map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?;
        for cert in
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| e.to_string())
}

/// The HTTP client.
#[derive(Debug, Clone)]
pub struct EsService {
    client: reqwest::Client,
    url: String,
    gzip: bool,
}

impl EsService {
    /// A client for `config`.
    ///
    /// # Errors
    /// When the CA file cannot be read or the client cannot be built.
    pub fn new(config: &EsConfig) -> Result<Self, String> {
        Ok(EsService {
            client: http_client(config)?,
            url: config.url.trim_end_matches('/').into(),
            gzip: config.gzip,
        })
    }

    /// Puts an index template: the composable `_index_template` (Elasticsearch 7.8+, 8 and
    /// OpenSearch), falling back to the legacy `_template` (Elasticsearch 7.0–7.7) when the
    /// store does not know the first.
    ///
    /// # Errors
    /// The store's answer when neither is a success.
    pub async fn put_template(&self, name: &str, body: &serde_json::Value) -> Result<(), String> {
        let r = self
            .client
            .put(format!("{}/_index_template/{name}", self.url))
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        if status.is_success() {
            return Ok(());
        }
        let first = format!("{status}: {}", r.text().await.unwrap_or_default());
        if !matches!(status.as_u16(), 400 | 404 | 405) {
            return Err(first);
        }
        // Legacy form: the mappings at the top level instead of under `template`.
        let legacy = serde_json::json!({
            "index_patterns": body["index_patterns"],
            "mappings": body["template"]["mappings"],
        });
        let r = self
            .client
            .put(format!("{}/_template/{name}", self.url))
            .json(&legacy)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "{first}; legacy _template: {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ))
        }
    }

    /// The NDJSON body for `docs`.
    pub fn body(docs: &[&Document]) -> Vec<u8> {
        let mut out = Vec::with_capacity(docs.iter().map(|d| d.source.len() + 96).sum());
        for d in docs {
            let action = serde_json::json!({"index": {"_index": d.index, "_id": d.id}});
            let _ = serde_json::to_writer(&mut out, &action);
            out.push(b'\n');
            out.extend_from_slice(&d.source);
            out.push(b'\n');
        }
        out
    }

    /// Sends one bulk request.
    ///
    /// # Errors
    /// [`SendError::Retryable`] for a failed request (connection, 429, 5xx) and
    /// [`SendError::Permanent`] for another 4xx of the whole request.
    pub async fn bulk(&self, docs: &[&Document]) -> Result<BulkOutcome, SendError> {
        let raw = Self::body(docs);
        let mut req = self
            .client
            .post(format!("{}/_bulk", self.url))
            .header(CONTENT_TYPE, "application/x-ndjson");
        if self.gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let body = enc
                .write_all(&raw)
                .and_then(|()| enc.finish())
                .map_err(|e| SendError::Retryable {
                    reason: e.to_string(),
                    retry_after: None,
                })?;
            req = req.header(CONTENT_ENCODING, "gzip").body(body);
        } else {
            req = req.body(raw);
        }
        let resp = req.send().await.map_err(|e| SendError::Retryable {
            reason: e.to_string(),
            retry_after: None,
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(SendError::Retryable {
                reason: format!("{status}: {}", text.chars().take(300).collect::<String>()),
                retry_after,
            });
        }
        if !status.is_success() {
            return Err(SendError::Permanent {
                status: status.as_u16(),
                body: text.chars().take(500).collect(),
            });
        }
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| SendError::Retryable {
            reason: format!("unreadable _bulk response: {e}"),
            retry_after: None,
        })?;
        let items = v["items"].as_array().cloned().unwrap_or_default();
        if items.len() != docs.len() {
            return Err(SendError::Retryable {
                reason: format!("_bulk answered {} items for {} documents", items.len(), docs.len()),
                retry_after: None,
            });
        }
        Ok(BulkOutcome {
            items: items
                .iter()
                .map(|it| {
                    let r = it
                        .as_object()
                        .and_then(|o| o.values().next())
                        .cloned()
                        .unwrap_or_default();
                    let st = r["status"].as_u64().unwrap_or(500);
                    if (200..300).contains(&st) {
                        ItemResult::Ok
                    } else {
                        let e = &r["error"];
                        let reason = format!(
                            "{} {}: {}",
                            st,
                            e["type"].as_str().unwrap_or("error"),
                            e["reason"].as_str().unwrap_or_else(|| e.as_str().unwrap_or(""))
                        );
                        if st == 429 || st >= 500 {
                            ItemResult::Retry(reason)
                        } else {
                            ItemResult::Rejected(reason)
                        }
                    }
                })
                .collect(),
        })
    }
}
