//! The destinations of dwcp-monitor.
//!
//! Every sink receives [`Batch`]es: records shared behind an `Arc` with an [`ack::Ack`] for the
//! Kafka message they came from. A sink holds the ack until the destination has accepted the
//! records (or, for a permanent rejection, until the rejection has been counted); dropping the
//! last ack of a message is what lets the source commit its offset. So an offset is committed
//! only after every sink is done with what came from it: at-least-once, never silent loss.
//!
//! - [`ack`]: acknowledgement tokens.
//! - [`file`]: JSON lines of the decoded records in a local file, flushed before acking.
#![warn(missing_docs)]

pub mod ack;
pub mod alertmanager;
pub mod batch;
pub mod elasticsearch;
pub mod file;
pub mod prometheus;

use std::sync::Arc;

use dwcp_schemas::Records;

/// Records on their way to a sink, with the acknowledgement of the message they came from.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The records.
    pub records: Arc<Records>,
    /// Dropped when the sink is done with the records.
    pub ack: ack::Ack,
}
