//! The data model of dwcp-monitor and the codecs at its edges. No I/O, no async.
//!
//! - [`model`]: metric points, spans and log records as every operator sees them, each with its
//!   region, resource and scope.
//! - [`otlp`]: decoding what the OpenTelemetry Collector's kafka exporter writes (`otlp_proto`
//!   and `otlp_json`) into the model, never panicking on input.
//! - [`avro`]: the Avro schemas of the derived topics (`dwcp.alerts`, `dwcp.anomalies`,
//!   `dwcp.sla`, `dwcp.health`) and Avro single-object encoding of their records.
#![warn(missing_docs)]

pub mod avro;
pub mod model;
pub mod otlp;

pub use model::{Records, Signal};
pub use otlp::{decode, DecodeError, Decoded, Encoding, RegionContext};
