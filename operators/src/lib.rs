//! The stateful operators of dwcp-monitor.
//!
//! Every operator is a pure, synchronous state machine over event time: it takes records and
//! watermarks and pushes outputs; it reads no clock, does no I/O and draws no random numbers, so
//! replaying the same input gives the same output. The pipeline's async shell drives it (see
//! [`Operator`]) and owns the clocks.
//!
//! - [`watermark`]: per-partition event-time watermarks with allowed lateness and idleness.
//! - [`activity`]: per-region, per-signal activity over tumbling windows: throughput, span
//!   errors and latency percentiles, and regions that went dark.
//! - [`prom`]: OTLP metric points to Prometheus samples (names, labels, delta to cumulative).
//! - [`aggregate`]: cross-region rollups over event-time windows.
//! - [`cardinality`]: bounds on active series, with stale markers on expiry.
//! - [`traces`]: cross-region trace stitching and tail sampling; [`spanmetrics`]: RED metrics.
//! - [`sla`]: SLA compliance, error budgets, burn rates; [`health`]: region health scores;
//!   [`network`]: region-pair jitter, loss, bandwidth, tunnels; [`capacity`]: forecasts.
#![warn(missing_docs)]

pub mod activity;
pub mod aggregate;
pub mod capacity;
pub mod cardinality;
pub mod health;
pub mod network;
pub mod prom;
pub mod sla;
pub mod spanmetrics;
pub mod traces;
pub mod watermark;

/// Event time in nanoseconds since the Unix epoch, as OTLP carries it.
pub type EventTime = u64;

/// A stateful operator driven by the pipeline.
///
/// Invariants the driver keeps:
/// - `process` is called with records in the order they were read from each partition; records
///   of different partitions interleave arbitrarily.
/// - `on_watermark` is called with non-decreasing watermarks: once `w` has been passed, no record
///   with event time `< w` is expected, and any that arrives is late (the operator counts it).
/// - `snapshot` is called between calls, never concurrently with one; `restore` only on a fresh
///   operator, before any other call.
pub trait Operator {
    /// What it consumes.
    type In;
    /// What it emits.
    type Out;
    /// Its state, serializable so it can be checkpointed and moved to another worker.
    type State: serde::Serialize + serde::de::DeserializeOwned;

    /// Consumes one record; may emit outputs at once.
    fn process(&mut self, input: &Self::In, out: &mut Vec<Self::Out>);

    /// Event time has advanced to `watermark`: close what is complete.
    fn on_watermark(&mut self, watermark: EventTime, out: &mut Vec<Self::Out>);

    /// A processing-time tick for idle inputs; `now` is wall-clock time in event-time units,
    /// supplied by the driver. Default: nothing.
    fn on_tick(&mut self, now: EventTime, out: &mut Vec<Self::Out>) {
        let _ = (now, out);
    }

    /// The state to checkpoint.
    fn snapshot(&self) -> Self::State;

    /// Replaces the state with a checkpoint.
    fn restore(&mut self, state: Self::State);

    /// The input has ended: flush whatever is still open. Default: a watermark at the end of time.
    fn on_close(&mut self, out: &mut Vec<Self::Out>) {
        self.on_watermark(EventTime::MAX, out);
    }
}
