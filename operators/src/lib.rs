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
//!   [`network`]: region-pair jitter, loss, bandwidth, tunnels; [`capacity`]: forecasts;
//!   [`derived`]: all four fed from the Prometheus series, named by [`selector`]s.
#![warn(missing_docs)]

pub mod activity;
pub mod aggregate;
pub mod alerts;
pub mod anomaly;
pub mod capacity;
pub mod cardinality;
pub mod derived;
pub mod health;
pub mod nab;
pub mod network;
pub mod prom;
pub mod promql;
pub mod rules;
pub mod selector;
pub mod sla;
pub mod spanmetrics;
pub mod traces;
pub mod watermark;

/// Event time in nanoseconds since the Unix epoch, as OTLP carries it.
pub type EventTime = u64;

/// `(year, month 1–12, day 1–31)` of a day count since 1970-01-01, proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`): daily index names and calendar months, without a
/// date-time dependency.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

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
