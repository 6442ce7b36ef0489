//! Decoding what the OpenTelemetry Collector's kafka exporter writes into the internal model.
//!
//! One Kafka message holds one `MetricsData`, `TracesData` or `LogsData` (wire-identical to the
//! `Export*ServiceRequest` messages), encoded as `otlp_proto` or `otlp_json`. [`decode`] turns
//! it into [`Records`] of one signal, resolving each record's region on the way.

mod convert;
mod encode;
mod json;

pub use encode::{encode_metrics, encode_spans};

use std::fmt;
use std::sync::Arc;

use opentelemetry_proto::tonic::logs::v1::LogsData;
use opentelemetry_proto::tonic::metrics::v1::MetricsData;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::model::{Records, Signal, UNKNOWN_REGION};

/// How a message's bytes are encoded; the names are the Collector's `encoding` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Protobuf: `otlp_proto` (the Collector's default).
    OtlpProto,
    /// OTLP/JSON: `otlp_json`.
    OtlpJson,
}

impl Encoding {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::OtlpProto => "otlp_proto",
            Encoding::OtlpJson => "otlp_json",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "otlp_proto" | "proto" => Ok(Encoding::OtlpProto),
            "otlp_json" | "json" => Ok(Encoding::OtlpJson),
            other => Err(format!("unknown encoding `{other}`, expected otlp_proto or otlp_json")),
        }
    }
}

/// Where the region comes from when a resource has no `cloud.region` attribute.
#[derive(Debug, Clone)]
pub struct RegionContext {
    /// The region configured for the topic, else the one in the message's region header.
    pub fallback: Option<Arc<str>>,
    /// The shared `unknown` region string.
    pub unknown: Arc<str>,
}

impl RegionContext {
    /// A context with the given fallback region.
    pub fn new(fallback: Option<Arc<str>>) -> Self {
        RegionContext {
            fallback,
            unknown: Arc::from(UNKNOWN_REGION),
        }
    }
}

impl Default for RegionContext {
    fn default() -> Self {
        RegionContext::new(None)
    }
}

/// Why a message could not be decoded. The text is what goes into the dead-letter header.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The message has no bytes.
    #[error("empty message")]
    Empty,
    /// Not valid protobuf for the signal's message.
    #[error("invalid otlp_proto: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// Not valid OTLP/JSON.
    #[error("invalid otlp_json: {0}")]
    Json(#[from] serde_json::Error),
    /// Well-formed but violating OTLP (an id of the wrong length, say).
    #[error("invalid OTLP: {0}")]
    Invalid(String),
}

impl DecodeError {
    /// A short, stable label for metrics (`empty`, `protobuf`, `json`, `invalid`).
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::Protobuf(_) => "protobuf",
            DecodeError::Json(_) => "json",
            DecodeError::Invalid(_) => "invalid",
        }
    }
}

/// The records of one message.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The records, all of the requested signal.
    pub records: Records,
    /// How many of them had no region from any source and were tagged `unknown`.
    pub unknown_region: usize,
}

/// Decodes one message of `signal` in `encoding`.
///
/// # Errors
/// [`DecodeError`] when the bytes are empty, not valid for the encoding, or violate OTLP.
/// It never panics, whatever the input.
pub fn decode(signal: Signal, encoding: Encoding, bytes: &[u8], ctx: &RegionContext) -> Result<Decoded, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut unknown_region = 0;
    let records = match (signal, encoding) {
        (Signal::Metrics, Encoding::OtlpProto) => {
            Records::Metrics(convert::metrics(MetricsData::decode(bytes)?, ctx, &mut unknown_region)?)
        }
        (Signal::Metrics, Encoding::OtlpJson) => {
            let data: json::MetricsData = serde_json::from_slice(bytes)?;
            Records::Metrics(convert::metrics(data.into(), ctx, &mut unknown_region)?)
        }
        (Signal::Traces, Encoding::OtlpProto) => {
            Records::Traces(convert::traces(TracesData::decode(bytes)?, ctx, &mut unknown_region)?)
        }
        (Signal::Traces, Encoding::OtlpJson) => {
            let data: json::TracesData = serde_json::from_slice(bytes)?;
            Records::Traces(convert::traces(data.into(), ctx, &mut unknown_region)?)
        }
        (Signal::Logs, Encoding::OtlpProto) => {
            Records::Logs(convert::logs(LogsData::decode(bytes)?, ctx, &mut unknown_region)?)
        }
        (Signal::Logs, Encoding::OtlpJson) => {
            let data: json::LogsData = serde_json::from_slice(bytes)?;
            Records::Logs(convert::logs(data.into(), ctx, &mut unknown_region)?)
        }
    };
    Ok(Decoded {
        records,
        unknown_region,
    })
}

#[cfg(test)]
mod tests;
