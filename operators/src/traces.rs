//! Cross-region trace stitching and tail sampling.
//!
//! # Stitching
//!
//! Spans are buffered by trace id as they arrive, from any region and in any order. A trace is
//! complete when event time (the watermark) has passed its newest span's end by
//! `decision_wait` with no new span; the watermark follows the wall clock once the input is
//! idle, which is the processing-time fallback. A completed trace carries its regions, root
//! service and operation, duration (earliest start to latest end), error flag, span count,
//! cross-region hops, and the spans whose parent never arrived.
//!
//! A cross-region hop is a server (or consumer) span whose parent is a client (or producer) span
//! recorded in another region. Its latency is the client's duration minus the server's: the time
//! spent on the wire and in queues both ways, free of clock skew between the regions.
//!
//! # Bounds
//!
//! `max_traces` in flight, `max_spans_per_trace` and `max_bytes` (an estimate of the spans'
//! size). At a bound the oldest trace (by first arrival) is decided early and counted in
//! [`TraceStats::evicted_early`]; a trace that reaches `max_spans_per_trace` is decided at once.
//! Memory never grows past the bounds, whatever the input.
//!
//! # Sampling
//!
//! The policies of the Collector's `tailsamplingprocessor`, combined as it does: a matching
//! `drop` policy wins; else any policy that samples samples; else the trace is not sampled.
//! Plus `adaptive`: a target of traces per second that steers a probabilistic rate with the
//! observed load. Decisions are remembered in a cache sized apart from the trace buffer, so
//! spans arriving after their trace was decided follow the decision.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use dwcp_schemas::model::{AnyValue, Span, SpanId, SpanKind, StatusCode, TraceId};
use serde::{Deserialize, Serialize};

use crate::EventTime;

/// A sampling policy, in the shape of the Collector's `tailsamplingprocessor` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Policy {
    /// Samples every trace.
    AlwaysSample,
    /// Samples traces with a span whose status is one of `status_codes` (`ERROR`, `OK`, `UNSET`).
    StatusCode {
        /// The codes.
        status_codes: Vec<String>,
    },
    /// Samples traces lasting at least `threshold_ms` (and at most `upper_threshold_ms` if set).
    Latency {
        /// Lower bound, ms.
        threshold_ms: u64,
        /// Upper bound, ms.
        #[serde(default)]
        upper_threshold_ms: Option<u64>,
    },
    /// Samples a fixed share of traces, by a hash of the trace id (the same decision in every
    /// worker and replay).
    Probabilistic {
        /// Percentage, 0–100.
        sampling_percentage: f64,
        /// Salt of the hash.
        #[serde(default)]
        hash_salt: String,
    },
    /// Samples while fewer than `spans_per_second` spans were sampled in the current second of
    /// event time.
    RateLimiting {
        /// Budget per second.
        spans_per_second: u64,
    },
    /// Samples traces with a span (or resource) attribute `key` equal to one of `values`
    /// (regexes if `enabled_regex_matching`); `invert_match` inverts.
    StringAttribute {
        /// Attribute key.
        key: String,
        /// Values or regexes.
        values: Vec<String>,
        /// Treat values as regexes.
        #[serde(default)]
        enabled_regex_matching: bool,
        /// Sample when no span matches instead.
        #[serde(default)]
        invert_match: bool,
    },
    /// Samples traces with a numeric span attribute `key` in `[min_value, max_value]`.
    NumericAttribute {
        /// Attribute key.
        key: String,
        /// Lower bound.
        min_value: f64,
        /// Upper bound.
        max_value: f64,
    },
    /// Samples traces with between `min_spans` and `max_spans` spans.
    SpanCount {
        /// Lower bound.
        min_spans: usize,
        /// Upper bound (unbounded if absent).
        #[serde(default)]
        max_spans: Option<usize>,
    },
    /// Samples when every sub-policy samples.
    And {
        /// Sub-policies.
        and_sub_policy: Vec<Policy>,
    },
    /// Drops when every sub-policy matches: a drop wins over every sample.
    Drop {
        /// Sub-policies.
        drop_sub_policy: Vec<Policy>,
    },
    /// Steers a probabilistic rate so about `target_traces_per_second` traces are sampled, from
    /// the observed rate of completed traces (an exponentially weighted average over ~10 s of
    /// event time).
    Adaptive {
        /// Target.
        target_traces_per_second: f64,
    },
}

/// A decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Keep the trace.
    Sampled,
    /// Do not keep it.
    NotSampled,
}

/// A hop between regions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hop {
    /// The client's region.
    pub from: Arc<str>,
    /// The server's region.
    pub to: Arc<str>,
    /// Client duration minus server duration, ns.
    pub latency_ns: u64,
    /// The client span.
    pub client_span: SpanId,
    /// The server span.
    pub server_span: SpanId,
}

/// A complete trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StitchedTrace {
    /// Trace id.
    pub trace_id: TraceId,
    /// Spans, by start time.
    pub spans: Vec<Span>,
    /// Regions touched, sorted.
    pub regions: Vec<Arc<str>>,
    /// The root span's service (the earliest span without a parent, else the earliest span).
    pub root_service: String,
    /// The root span's name.
    pub root_operation: String,
    /// Earliest start to latest end, ns.
    pub duration_ns: u64,
    /// Whether any span has status error.
    pub error: bool,
    /// Hops between regions.
    pub hops: Vec<Hop>,
    /// Spans whose parent is not in the trace.
    pub orphans: usize,
    /// Whether it was decided before `decision_wait` because a bound was hit.
    pub evicted_early: bool,
    /// The sampling decision.
    pub decision: Decision,
}

/// What the operator emits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum TraceOutput {
    /// A trace was completed and decided.
    Trace(StitchedTrace),
    /// A span arrived after its trace was decided, and follows that decision.
    LateSpan {
        /// The span.
        span: Box<Span>,
        /// Its trace's decision.
        decision: Decision,
    },
}

/// Configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConfig {
    /// Event time after a trace's newest span before it is decided, ms.
    pub decision_wait_ms: u64,
    /// Traces buffered at most.
    pub max_traces: usize,
    /// Spans per trace at most; reaching it decides the trace at once.
    pub max_spans_per_trace: usize,
    /// Estimated bytes of buffered spans at most.
    pub max_bytes: usize,
    /// Decisions remembered for late spans.
    pub decision_cache_size: usize,
    /// Sampling policies; none samples everything.
    pub policies: Vec<Policy>,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            decision_wait_ms: 10_000,
            max_traces: 50_000,
            max_spans_per_trace: 10_000,
            max_bytes: 256 * 1024 * 1024,
            decision_cache_size: 100_000,
            policies: Vec::new(),
        }
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStats {
    /// Traces decided.
    pub traces_decided: u64,
    /// Traces sampled.
    pub traces_sampled: u64,
    /// Traces decided before `decision_wait` because a bound was hit.
    pub evicted_early: u64,
    /// Spans that arrived after their trace was decided.
    pub late_spans: u64,
    /// Spans of traces no longer in the decision cache, decided as a new trace.
    pub spans_after_cache: u64,
}

struct Buffer {
    spans: Vec<Span>,
    newest_end: EventTime,
    bytes: usize,
    seq: u64,
}

/// In-memory size of a buffered span, for the byte bound: the struct, its strings and vectors,
/// and about 16 bytes of allocator overhead per allocation (measured: within ~10 % of the
/// resident memory a million buffered spans take, see benches/README.md).
fn span_bytes(s: &Span) -> usize {
    const ALLOC: usize = 16;
    let any = |v: &AnyValue| match v {
        AnyValue::String(x) => x.len() + ALLOC,
        AnyValue::Bytes(b) => b.len() + ALLOC,
        AnyValue::Array(a) => a.len() * 48 + ALLOC,
        AnyValue::KvList(l) => l.len() * 80 + ALLOC,
        _ => 0,
    };
    std::mem::size_of::<Span>()
        + s.name.len()
        + s.trace_state.len()
        + s.status_message.len()
        + 3 * ALLOC
        + s.attributes
            .0
            .iter()
            .map(|kv| std::mem::size_of::<dwcp_schemas::model::KeyValue>() + kv.key.len() + ALLOC + any(&kv.value))
            .sum::<usize>()
        + s.events.len() * 96
        + s.links.len() * 96
        + if s.attributes.is_empty() { 0 } else { ALLOC }
}

/// The operator.
pub struct TraceOperator {
    config: TraceConfig,
    buffers: HashMap<TraceId, Buffer>,
    /// Arrival order: (seq, trace id); stale entries skipped.
    order: VecDeque<(u64, TraceId)>,
    seq: u64,
    bytes: usize,
    decided: HashMap<TraceId, Decision>,
    decided_order: VecDeque<TraceId>,
    stats: TraceStats,
    /// rate_limiting: (second, spans sampled in it).
    rate_window: (u64, u64),
    /// adaptive: EWMA of completed traces per second and the second being counted.
    adaptive: (f64, u64, u64),
    regexes: HashMap<String, regex::Regex>,
}

impl TraceOperator {
    /// A new operator.
    pub fn new(config: TraceConfig) -> Self {
        let mut regexes = HashMap::new();
        fn collect(p: &Policy, out: &mut HashMap<String, regex::Regex>) {
            match p {
                Policy::StringAttribute {
                    values,
                    enabled_regex_matching: true,
                    ..
                } => {
                    for v in values {
                        if let Ok(re) = regex::Regex::new(v) {
                            out.insert(v.clone(), re);
                        }
                    }
                }
                Policy::And { and_sub_policy: s } | Policy::Drop { drop_sub_policy: s } => {
                    s.iter().for_each(|p| collect(p, out));
                }
                _ => {}
            }
        }
        config.policies.iter().for_each(|p| collect(p, &mut regexes));
        TraceOperator {
            config,
            buffers: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            bytes: 0,
            decided: HashMap::new(),
            decided_order: VecDeque::new(),
            stats: TraceStats::default(),
            rate_window: (0, 0),
            adaptive: (0.0, 0, 0),
            regexes,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> TraceStats {
        self.stats
    }

    /// Traces buffered.
    pub fn traces_in_flight(&self) -> usize {
        self.buffers.len()
    }

    /// Estimated bytes buffered.
    pub fn bytes_in_flight(&self) -> usize {
        self.bytes
    }

    /// Consumes spans; may emit decisions at once (late spans, bounds hit).
    pub fn process(&mut self, spans: &[Span], now: EventTime, out: &mut Vec<TraceOutput>) {
        for s in spans {
            if let Some(d) = self.decided.get(&s.trace_id) {
                self.stats.late_spans += 1;
                out.push(TraceOutput::LateSpan {
                    span: Box::new(s.clone()),
                    decision: *d,
                });
                continue;
            }
            let size = span_bytes(s);
            let seq = self.seq;
            let buf = self.buffers.entry(s.trace_id).or_insert_with(|| Buffer {
                spans: Vec::new(),
                newest_end: 0,
                bytes: 0,
                seq,
            });
            if buf.seq == seq {
                self.seq += 1;
                self.order.push_back((seq, s.trace_id));
            }
            // Small traces grow one slot at a time: doubling would leave up to half of each
            // buffer empty, and most traces have a handful of spans.
            if buf.spans.len() < 16 {
                buf.spans.reserve_exact(1);
            }
            buf.spans.push(s.clone());
            buf.newest_end = buf.newest_end.max(s.end_time_unix_nano);
            buf.bytes += size;
            self.bytes += size;
            if buf.spans.len() >= self.config.max_spans_per_trace {
                let id = s.trace_id;
                self.decide(id, true, now, out);
            }
            while self.buffers.len() > self.config.max_traces || self.bytes > self.config.max_bytes {
                let Some((seq, id)) = self.order.pop_front() else { break };
                if self.buffers.get(&id).is_some_and(|b| b.seq == seq) {
                    self.decide(id, true, now, out);
                }
            }
        }
    }

    /// Decides every trace whose newest span ended `decision_wait` or more before `watermark`.
    pub fn on_watermark(&mut self, watermark: EventTime, out: &mut Vec<TraceOutput>) {
        let wait = self.config.decision_wait_ms * 1_000_000;
        let due: Vec<(u64, TraceId)> = self
            .buffers
            .iter()
            .filter(|(_, b)| b.newest_end.saturating_add(wait) <= watermark)
            .map(|(id, b)| (b.seq, *id))
            .collect();
        let mut due = due;
        due.sort_unstable();
        for (_, id) in due {
            self.decide(id, false, watermark, out);
        }
        // Drop arrival-order entries of traces no longer buffered.
        while self
            .order
            .front()
            .is_some_and(|(seq, id)| self.buffers.get(id).is_none_or(|b| b.seq != *seq))
        {
            self.order.pop_front();
        }
    }

    fn decide(&mut self, id: TraceId, early: bool, now: EventTime, out: &mut Vec<TraceOutput>) {
        let Some(buf) = self.buffers.remove(&id) else { return };
        self.bytes -= buf.bytes;
        let mut trace = stitch(id, buf.spans);
        trace.evicted_early = early;
        if early {
            self.stats.evicted_early += 1;
        }
        trace.decision = self.sample(&trace, now);
        self.stats.traces_decided += 1;
        if trace.decision == Decision::Sampled {
            self.stats.traces_sampled += 1;
        }
        if self.config.decision_cache_size > 0 {
            if self.decided.len() >= self.config.decision_cache_size {
                if let Some(old) = self.decided_order.pop_front() {
                    self.decided.remove(&old);
                }
            }
            self.decided.insert(id, trace.decision);
            self.decided_order.push_back(id);
        }
        out.push(TraceOutput::Trace(trace));
    }

    fn sample(&mut self, t: &StitchedTrace, now: EventTime) -> Decision {
        if self.config.policies.is_empty() {
            return Decision::Sampled;
        }
        let second = now / 1_000_000_000;
        // Observed load for the adaptive policy.
        if self.adaptive.1 != second {
            #[allow(clippy::cast_precision_loss)]
            let last = self.adaptive.2 as f64;
            self.adaptive.0 = if self.adaptive.1 == 0 {
                last
            } else {
                0.9 * self.adaptive.0 + 0.1 * last
            };
            self.adaptive.1 = second;
            self.adaptive.2 = 0;
        }
        self.adaptive.2 += 1;
        if self.rate_window.0 != second {
            self.rate_window = (second, 0);
        }
        let policies = self.config.policies.clone();
        let mut sampled = false;
        for p in &policies {
            match p {
                Policy::Drop { drop_sub_policy } => {
                    if !drop_sub_policy.is_empty() && drop_sub_policy.iter().all(|sp| self.matches(sp, t)) {
                        return Decision::NotSampled;
                    }
                }
                other => {
                    if self.matches(other, t) {
                        sampled = true;
                    }
                }
            }
        }
        if sampled {
            if policies.iter().any(|p| matches!(p, Policy::RateLimiting { .. })) {
                self.rate_window.1 += t.spans.len() as u64;
            }
            Decision::Sampled
        } else {
            Decision::NotSampled
        }
    }

    fn matches(&self, p: &Policy, t: &StitchedTrace) -> bool {
        match p {
            Policy::AlwaysSample => true,
            Policy::StatusCode { status_codes } => t.spans.iter().any(|s| {
                let code = match s.status_code {
                    StatusCode::Error => "ERROR",
                    StatusCode::Ok => "OK",
                    StatusCode::Unset => "UNSET",
                };
                status_codes.iter().any(|c| c.eq_ignore_ascii_case(code))
            }),
            Policy::Latency {
                threshold_ms,
                upper_threshold_ms,
            } => {
                let ms = t.duration_ns / 1_000_000;
                ms >= *threshold_ms && upper_threshold_ms.is_none_or(|u| ms <= u)
            }
            Policy::Probabilistic {
                sampling_percentage,
                hash_salt,
            } => trace_fraction(&t.trace_id, hash_salt) < sampling_percentage / 100.0,
            Policy::RateLimiting { spans_per_second } => self.rate_window.1 + t.spans.len() as u64 <= *spans_per_second,
            Policy::StringAttribute {
                key,
                values,
                enabled_regex_matching,
                invert_match,
            } => {
                let hit = t.spans.iter().any(|s| {
                    let v = s.attributes.get(key).or_else(|| s.origin.resource.attributes.get(key));
                    let Some(AnyValue::String(v)) = v else { return false };
                    values.iter().any(|pat| {
                        if *enabled_regex_matching {
                            self.regexes.get(pat).is_some_and(|re| re.is_match(v))
                        } else {
                            pat == v
                        }
                    })
                });
                hit != *invert_match
            }
            Policy::NumericAttribute {
                key,
                min_value,
                max_value,
            } => t.spans.iter().any(|s| {
                #[allow(clippy::cast_precision_loss)]
                let v = match s.attributes.get(key) {
                    Some(AnyValue::Int(i)) => *i as f64,
                    Some(AnyValue::Double(d)) => *d,
                    _ => return false,
                };
                v >= *min_value && v <= *max_value
            }),
            Policy::SpanCount { min_spans, max_spans } => {
                t.spans.len() >= *min_spans && max_spans.is_none_or(|m| t.spans.len() <= m)
            }
            Policy::And { and_sub_policy } => {
                !and_sub_policy.is_empty() && and_sub_policy.iter().all(|sp| self.matches(sp, t))
            }
            Policy::Drop { drop_sub_policy } => drop_sub_policy.iter().all(|sp| self.matches(sp, t)),
            Policy::Adaptive {
                target_traces_per_second,
            } => {
                let observed = self.adaptive.0.max(1.0);
                let rate = (target_traces_per_second / observed).clamp(0.0, 1.0);
                trace_fraction(&t.trace_id, "adaptive") < rate
            }
        }
    }
}

/// A stable fraction in [0, 1) from a trace id and salt.
fn trace_fraction(id: &TraceId, salt: &str) -> f64 {
    let mut h = crate::prom::StableHasher::default();
    h.write_str(salt);
    std::hash::Hasher::write(&mut h, &id.0);
    #[allow(clippy::cast_precision_loss)]
    let f = (h.finish_mixed() >> 11) as f64 / (1u64 << 53) as f64;
    f
}

/// Assembles spans of one trace.
pub fn stitch(trace_id: TraceId, mut spans: Vec<Span>) -> StitchedTrace {
    spans.sort_by_key(|s| (s.start_time_unix_nano, s.span_id));
    let by_id: HashMap<SpanId, usize> = spans.iter().enumerate().map(|(i, s)| (s.span_id, i)).collect();
    let start = spans.iter().map(|s| s.start_time_unix_nano).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_time_unix_nano).max().unwrap_or(0);
    let mut regions: Vec<Arc<str>> = spans.iter().map(|s| s.origin.region.clone()).collect();
    regions.sort();
    regions.dedup();
    let root = spans.iter().find(|s| s.parent_span_id.is_none()).or(spans.first());
    let mut hops = Vec::new();
    let mut orphans = 0;
    for s in &spans {
        let Some(pid) = s.parent_span_id else { continue };
        let Some(&pi) = by_id.get(&pid) else {
            orphans += 1;
            continue;
        };
        let parent = &spans[pi];
        let remote_child = matches!(s.kind, SpanKind::Server | SpanKind::Consumer);
        let remote_parent = matches!(parent.kind, SpanKind::Client | SpanKind::Producer);
        if remote_child && remote_parent && parent.origin.region != s.origin.region {
            hops.push(Hop {
                from: parent.origin.region.clone(),
                to: s.origin.region.clone(),
                latency_ns: parent.duration_nanos().saturating_sub(s.duration_nanos()),
                client_span: parent.span_id,
                server_span: s.span_id,
            });
        }
    }
    StitchedTrace {
        trace_id,
        regions,
        root_service: root
            .and_then(|r| r.origin.resource.service_name())
            .unwrap_or_default()
            .to_string(),
        root_operation: root.map(|r| r.name.clone()).unwrap_or_default(),
        duration_ns: end.saturating_sub(start),
        error: spans.iter().any(|s| s.status_code == StatusCode::Error),
        hops,
        orphans,
        evicted_early: false,
        decision: Decision::Sampled,
        spans,
    }
}

/// Hop latency per region pair, from stitched traces (for network telemetry).
pub fn hops_by_pair(traces: &[StitchedTrace]) -> BTreeMap<(Arc<str>, Arc<str>), Vec<u64>> {
    let mut m: BTreeMap<(Arc<str>, Arc<str>), Vec<u64>> = BTreeMap::new();
    for t in traces {
        for h in &t.hops {
            m.entry((h.from.clone(), h.to.clone())).or_default().push(h.latency_ns);
        }
    }
    m
}

#[cfg(test)]
mod tests;
