//! Per-region activity over event-time tumbling windows.
//!
//! For every window and region it counts metric points, spans and log records, the spans with
//! status error and the log records at ERROR severity or above, and the span duration
//! percentiles (an HDR histogram with 3 significant digits, so a percentile is within 0.1 % of
//! the exact order statistic). A region that has been seen before and shows nothing for
//! `dark_after` is reported [`RegionStatus::Dark`]: the "region going dark" incident.
//!
//! A record's event time is its timestamp: a point's `time_unix_nano`, a span's end time, a
//! log record's time (else its observed time). Records older than the last closed window are
//! late: counted, not added.

use std::collections::BTreeMap;
use std::sync::Arc;

use dwcp_schemas::model::{Records, StatusCode};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::{EventTime, Operator};

/// Configuration, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityConfig {
    /// Window length.
    pub window: u64,
    /// A known region silent for this long is dark.
    pub dark_after: u64,
    /// Regions tracked at most; records of further regions count under [`OVERFLOW_REGION`].
    /// Region names come from the input, so this bounds the state against a flood of them.
    pub max_regions: usize,
}

impl Default for ActivityConfig {
    fn default() -> Self {
        ActivityConfig {
            window: 5_000_000_000,
            dark_after: 15_000_000_000,
            max_regions: 256,
        }
    }
}

/// The region that records of regions beyond `max_regions` are counted under.
pub const OVERFLOW_REGION: &str = "other";

/// Whether a region is sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionStatus {
    /// Sent something within `dark_after`.
    Active,
    /// Silent for `dark_after` or more.
    Dark,
}

/// One region in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionActivity {
    /// Region.
    pub region: Arc<str>,
    /// Metric data points.
    pub metric_points: u64,
    /// Spans.
    pub spans: u64,
    /// Log records.
    pub logs: u64,
    /// Spans with status error.
    pub span_errors: u64,
    /// Log records with severity number 17 (ERROR) or more.
    pub error_logs: u64,
    /// Span duration percentiles in milliseconds (p50, p95, p99); `None` without spans.
    pub span_duration_ms: Option<[f64; 3]>,
    /// Active or dark.
    pub status: RegionStatus,
}

/// The report of one closed window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityReport {
    /// Window start (inclusive), ns.
    pub window_start: EventTime,
    /// Window end (exclusive), ns.
    pub window_end: EventTime,
    /// Every known region, sorted by name.
    pub regions: Vec<RegionActivity>,
}

#[derive(Debug, Clone)]
struct Counts {
    metric_points: u64,
    spans: u64,
    logs: u64,
    span_errors: u64,
    error_logs: u64,
    /// Span durations in microseconds.
    durations: Histogram<u64>,
}

/// 1 µs to 1 hour at 3 significant digits: about 40 KiB per region and window at worst.
const MAX_DURATION_US: u64 = 3_600_000_000;

impl Counts {
    fn new() -> Self {
        Counts {
            metric_points: 0,
            spans: 0,
            logs: 0,
            span_errors: 0,
            error_logs: 0,
            #[allow(clippy::unwrap_used)] // constant, valid arguments
            durations: Histogram::new_with_bounds(1, MAX_DURATION_US, 3).unwrap(),
        }
    }

    fn record_duration(&mut self, nanos: u64) {
        let us = (nanos / 1_000).clamp(1, MAX_DURATION_US);
        // `saturating_record` cannot fail: the value is clamped into range.
        self.durations.saturating_record(us);
    }
}

/// The activity operator.
#[derive(Debug)]
pub struct ActivityOperator {
    config: ActivityConfig,
    windows: BTreeMap<EventTime, BTreeMap<Arc<str>, Counts>>,
    last_seen: BTreeMap<Arc<str>, EventTime>,
    closed_until: EventTime,
    late: u64,
}

/// The serializable state of [`ActivityOperator`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityState {
    windows: Vec<(EventTime, Vec<CountsState>)>,
    last_seen: Vec<(Arc<str>, EventTime)>,
    closed_until: EventTime,
    late: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CountsState {
    region: Arc<str>,
    counts: [u64; 5],
    /// `(value, count)` pairs of the duration histogram.
    durations: Vec<(u64, u64)>,
}

impl ActivityOperator {
    /// A new operator.
    pub fn new(config: ActivityConfig) -> Self {
        ActivityOperator {
            config,
            windows: BTreeMap::new(),
            last_seen: BTreeMap::new(),
            closed_until: 0,
            late: 0,
        }
    }

    /// Records that arrived after their window closed.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Open windows (a state-size figure for /metrics).
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    fn counts(&mut self, region: &Arc<str>, t: EventTime) -> Option<&mut Counts> {
        if t < self.closed_until || t == 0 {
            self.late += 1;
            return None;
        }
        let overflow: Arc<str>;
        let region = if self.last_seen.contains_key(region) || self.last_seen.len() < self.config.max_regions {
            region
        } else {
            overflow = Arc::from(OVERFLOW_REGION);
            &overflow
        };
        let seen = self.last_seen.entry(region.clone()).or_insert(t);
        *seen = (*seen).max(t);
        let start = t - t % self.config.window;
        Some(
            self.windows
                .entry(start)
                .or_default()
                .entry(region.clone())
                .or_insert_with(Counts::new),
        )
    }
}

impl Operator for ActivityOperator {
    type In = Records;
    type Out = ActivityReport;
    type State = ActivityState;

    fn process(&mut self, input: &Records, _out: &mut Vec<ActivityReport>) {
        match input {
            Records::Metrics(ps) => {
                for p in ps {
                    if let Some(c) = self.counts(&p.origin.region, p.time_unix_nano) {
                        c.metric_points += 1;
                    }
                }
            }
            Records::Traces(ss) => {
                for s in ss {
                    if let Some(c) = self.counts(&s.origin.region, s.end_time_unix_nano) {
                        c.spans += 1;
                        if s.status_code == StatusCode::Error {
                            c.span_errors += 1;
                        }
                        c.record_duration(s.duration_nanos());
                    }
                }
            }
            Records::Logs(ls) => {
                for l in ls {
                    if let Some(c) = self.counts(&l.origin.region, l.timestamp()) {
                        c.logs += 1;
                        if l.severity_number >= 17 {
                            c.error_logs += 1;
                        }
                    }
                }
            }
        }
    }

    fn on_watermark(&mut self, watermark: EventTime, out: &mut Vec<ActivityReport>) {
        while let Some((&start, _)) = self.windows.first_key_value() {
            let end = start.saturating_add(self.config.window);
            if end > watermark {
                break;
            }
            let Some((_, regions)) = self.windows.pop_first() else {
                break;
            };
            self.closed_until = self.closed_until.max(end);
            let mut report = ActivityReport {
                window_start: start,
                window_end: end,
                regions: Vec::new(),
            };
            for (region, last) in &self.last_seen {
                let status = if last.saturating_add(self.config.dark_after) <= end {
                    RegionStatus::Dark
                } else {
                    RegionStatus::Active
                };
                let c = regions.get(region);
                #[allow(clippy::cast_precision_loss)]
                let pct = |c: &Counts, q: f64| c.durations.value_at_quantile(q) as f64 / 1_000.0;
                report.regions.push(RegionActivity {
                    region: region.clone(),
                    metric_points: c.map_or(0, |c| c.metric_points),
                    spans: c.map_or(0, |c| c.spans),
                    logs: c.map_or(0, |c| c.logs),
                    span_errors: c.map_or(0, |c| c.span_errors),
                    error_logs: c.map_or(0, |c| c.error_logs),
                    span_duration_ms: c
                        .filter(|c| c.spans > 0)
                        .map(|c| [pct(c, 0.5), pct(c, 0.95), pct(c, 0.99)]),
                    status,
                });
            }
            out.push(report);
        }
        if watermark != EventTime::MAX {
            self.closed_until = self.closed_until.max(watermark - watermark % self.config.window);
        }
    }

    fn snapshot(&self) -> ActivityState {
        ActivityState {
            windows: self
                .windows
                .iter()
                .map(|(start, regions)| {
                    let regions = regions
                        .iter()
                        .map(|(region, c)| CountsState {
                            region: region.clone(),
                            counts: [c.metric_points, c.spans, c.logs, c.span_errors, c.error_logs],
                            durations: c
                                .durations
                                .iter_recorded()
                                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                                .collect(),
                        })
                        .collect();
                    (*start, regions)
                })
                .collect(),
            last_seen: self.last_seen.iter().map(|(r, t)| (r.clone(), *t)).collect(),
            closed_until: self.closed_until,
            late: self.late,
        }
    }

    fn restore(&mut self, state: ActivityState) {
        self.windows = state
            .windows
            .into_iter()
            .map(|(start, regions)| {
                let regions = regions
                    .into_iter()
                    .map(|s| {
                        let mut c = Counts::new();
                        [c.metric_points, c.spans, c.logs, c.span_errors, c.error_logs] = s.counts;
                        for (v, n) in s.durations {
                            // Values came out of a histogram with the same bounds.
                            let _ = c.durations.record_n(v.clamp(1, MAX_DURATION_US), n);
                        }
                        (s.region, c)
                    })
                    .collect();
                (start, regions)
            })
            .collect();
        self.last_seen = state.last_seen.into_iter().collect();
        self.closed_until = state.closed_until;
        self.late = state.late;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwcp_schemas::model::{Attributes, Origin, Resource, Scope, Span, SpanId, SpanKind, TraceId};

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn span(region: &str, end: u64, dur: u64, error: bool) -> Span {
        Span {
            origin: Origin {
                region: region.into(),
                resource: Arc::new(Resource::default()),
                scope: Arc::new(Scope::default()),
            },
            trace_id: TraceId([1; 16]),
            span_id: SpanId([2; 8]),
            parent_span_id: None,
            trace_state: String::new(),
            name: "op".into(),
            kind: SpanKind::Server,
            start_time_unix_nano: end - dur,
            end_time_unix_nano: end,
            attributes: Attributes::default(),
            events: vec![],
            links: vec![],
            status_code: if error { StatusCode::Error } else { StatusCode::Unset },
            status_message: String::new(),
        }
    }

    fn op() -> ActivityOperator {
        ActivityOperator::new(ActivityConfig {
            window: 5 * S,
            dark_after: 10 * S,
            max_regions: 256,
        })
    }

    #[test]
    fn regions_beyond_the_bound_count_as_other() {
        let mut op = ActivityOperator::new(ActivityConfig {
            window: 5 * S,
            dark_after: 10 * S,
            max_regions: 2,
        });
        let mut out = vec![];
        let spans: Vec<Span> = (0..1000).map(|i| span(&format!("r{i}"), 100 * S, MS, false)).collect();
        op.process(&Records::Traces(spans), &mut out);
        op.on_watermark(105 * S, &mut out);
        let got: Vec<(String, u64)> = out[0].regions.iter().map(|r| (r.region.to_string(), r.spans)).collect();
        assert_eq!(
            got,
            vec![("other".to_string(), 998), ("r0".to_string(), 1), ("r1".to_string(), 1)]
        );
    }

    #[test]
    fn counts_errors_and_exact_percentiles_per_region() {
        let mut op = op();
        let mut out = vec![];
        // 100 spans in us-east-1 with durations 1..=100 ms; the 5th one errors.
        let spans: Vec<Span> = (1..=100)
            .map(|i| span("us-east-1", 100 * S + i, i * MS, i == 5))
            .collect();
        op.process(&Records::Traces(spans), &mut out);
        op.process(
            &Records::Traces(vec![span("eu-west-1", 101 * S, 7 * MS, false)]),
            &mut out,
        );
        op.on_watermark(104 * S, &mut out);
        assert!(out.is_empty(), "window [100,105) still open");
        op.on_watermark(105 * S, &mut out);
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert_eq!((r.window_start, r.window_end), (100 * S, 105 * S));
        let east = r.regions.iter().find(|r| &*r.region == "us-east-1").expect("east");
        assert_eq!(east.spans, 100);
        assert_eq!(east.span_errors, 1);
        // Nearest-rank percentiles of 1..=100 ms are 50, 95 and 99 ms; HDR at 3 significant
        // digits reports them within 0.1 %.
        let got = east.span_duration_ms.expect("durations");
        for (g, w) in got.iter().zip([50.0, 95.0, 99.0]) {
            assert!((g - w).abs() / w <= 0.001, "{got:?}");
        }
        let eu = r.regions.iter().find(|r| &*r.region == "eu-west-1").expect("eu");
        let got = eu.span_duration_ms.expect("durations");
        assert!(got.iter().all(|g| (g - 7.0).abs() / 7.0 <= 0.001), "{got:?}");
    }

    #[test]
    fn a_silent_region_goes_dark_and_late_records_are_counted() {
        let mut op = op();
        let mut out = vec![];
        op.process(
            &Records::Traces(vec![span("a", 100 * S, MS, false), span("b", 100 * S, MS, false)]),
            &mut out,
        );
        for t in [105, 110, 115] {
            op.process(&Records::Traces(vec![span("a", t * S, MS, false)]), &mut out);
        }
        op.on_watermark(120 * S, &mut out);
        let status: Vec<(u64, RegionStatus)> = out
            .iter()
            .map(|r| {
                (
                    r.window_start / S,
                    r.regions.iter().find(|x| &*x.region == "b").expect("b").status,
                )
            })
            .collect();
        assert_eq!(
            status,
            // b last spoke at 100 s: at the end of [105, 110) it has been silent for 10 s.
            vec![
                (100, RegionStatus::Active),
                (105, RegionStatus::Dark),
                (110, RegionStatus::Dark),
                (115, RegionStatus::Dark)
            ]
        );
        op.process(&Records::Traces(vec![span("b", 101 * S, MS, false)]), &mut out);
        assert_eq!(op.late(), 1);
    }

    #[test]
    fn snapshot_and_restore_give_the_same_reports() {
        let input: Vec<Span> = (0..50)
            .map(|i| {
                span(
                    if i % 2 == 0 { "a" } else { "b" },
                    100 * S + i * 200 * MS,
                    (i + 1) * MS,
                    i % 7 == 0,
                )
            })
            .collect();
        let (first, second) = input.split_at(20);

        let mut whole = op();
        let mut want = vec![];
        whole.process(&Records::Traces(input.clone()), &mut want);
        whole.on_watermark(200 * S, &mut want);

        let mut a = op();
        let mut got = vec![];
        a.process(&Records::Traces(first.to_vec()), &mut got);
        let state = serde_json::to_string(&a.snapshot()).expect("serialize");
        let mut b = op();
        b.restore(serde_json::from_str(&state).expect("deserialize"));
        b.process(&Records::Traces(second.to_vec()), &mut got);
        b.on_watermark(200 * S, &mut got);
        assert_eq!(got, want);
    }
}
