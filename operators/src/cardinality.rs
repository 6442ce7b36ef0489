//! The cardinality guard: a bound on active series per metric and in total.
//!
//! A sample of a series the guard has not seen is admitted only while its metric has fewer
//! than `max_series_per_metric` active series and the total is under `max_series_total`; past
//! either bound new series are dropped, counted per metric, and reported once per metric so the
//! caller can log it once. Known series always pass. A series with no sample for
//! `idle_timeout_ms` (in event time: the newest sample timestamp seen) expires: it frees its
//! slot, and [`CardinalityGuard::expire`] returns a Prometheus stale marker for it, so
//! dashboards stop drawing it at once instead of after the 5-minute lookback.
//!
//! Memory per active series: its label set (kept for the stale marker) plus about 64 bytes of
//! map entry.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::prom::{stale_nan, FastMap, Sample};

/// Configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CardinalityConfig {
    /// Active series per metric name at most.
    pub max_series_per_metric: usize,
    /// Active series in total at most.
    pub max_series_total: usize,
    /// A series with no sample for this long (event time, ms) expires.
    pub idle_timeout_ms: u64,
}

impl Default for CardinalityConfig {
    fn default() -> Self {
        CardinalityConfig {
            max_series_per_metric: 10_000,
            max_series_total: 1_000_000,
            idle_timeout_ms: 600_000,
        }
    }
}

/// Samples of new series one metric lost in one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The metric name.
    pub metric: String,
    /// Samples dropped in this call.
    pub samples: u64,
    /// Whether this metric hit its bound for the first time.
    pub first_time: bool,
}

#[derive(Debug)]
struct Active {
    /// Shared with the samples and the converter: one refcount, not a copy.
    labels: std::sync::Arc<[crate::prom::Label]>,
    metric: String,
    last_ms: i64,
}

/// The guard.
#[derive(Debug, Default)]
pub struct CardinalityGuard {
    config: CardinalityConfig,
    series: FastMap<u64, Active>,
    per_metric: HashMap<String, usize>,
    dropped: HashMap<String, u64>,
    now_ms: i64,
}

impl CardinalityGuard {
    /// A guard.
    pub fn new(config: CardinalityConfig) -> Self {
        CardinalityGuard {
            config,
            ..Default::default()
        }
    }

    /// Keeps the admitted samples in `samples`; returns, per metric that lost samples in this
    /// call, how many, and whether it is the first time that metric hit its bound (to log once).
    pub fn admit(&mut self, samples: &mut Vec<Sample>) -> Vec<Dropped> {
        let mut dropped: Vec<Dropped> = Vec::new();
        samples.retain(|s| {
            self.now_ms = self.now_ms.max(s.timestamp_ms);
            let h = s.series_hash();
            if let Some(a) = self.series.get_mut(&h) {
                a.last_ms = a.last_ms.max(s.timestamp_ms);
                return true;
            }
            let metric = s.name();
            let n = self.per_metric.get(metric).copied().unwrap_or(0);
            if n >= self.config.max_series_per_metric || self.series.len() >= self.config.max_series_total {
                let total = self.dropped.entry(metric.to_string()).or_insert(0);
                *total += 1;
                match dropped.iter_mut().find(|d| d.metric == metric) {
                    Some(d) => d.samples += 1,
                    None => dropped.push(Dropped {
                        metric: metric.to_string(),
                        samples: 1,
                        first_time: *total == 1,
                    }),
                }
                return false;
            }
            *self.per_metric.entry(metric.to_string()).or_insert(0) += 1;
            self.series.insert(
                h,
                Active {
                    labels: s.labels.clone(),
                    metric: metric.to_string(),
                    last_ms: s.timestamp_ms,
                },
            );
            true
        });
        dropped
    }

    /// Expires idle series; returns a stale marker for each, stamped just after its last sample.
    pub fn expire(&mut self) -> Vec<Sample> {
        #[allow(clippy::cast_possible_wrap)]
        let horizon = self.now_ms.saturating_sub(self.config.idle_timeout_ms as i64);
        let mut stale = Vec::new();
        let per_metric = &mut self.per_metric;
        self.series.retain(|_, a| {
            if a.last_ms >= horizon {
                return true;
            }
            if let Some(n) = per_metric.get_mut(&a.metric) {
                *n -= 1;
                if *n == 0 {
                    per_metric.remove(&a.metric);
                }
            }
            stale.push(Sample::new(a.labels.clone(), stale_nan(), a.last_ms + 1));
            false
        });
        stale
    }

    /// Active series.
    pub fn active(&self) -> usize {
        self.series.len()
    }

    /// Samples of new series dropped so far, by metric.
    pub fn dropped(&self) -> &HashMap<String, u64> {
        &self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prom::STALE_NAN_BITS;

    fn s(metric: &str, id: usize, ts: i64) -> Sample {
        Sample::new(
            vec![("__name__".into(), metric.into()), ("id".into(), id.to_string().into())],
            1.0,
            ts,
        )
    }

    #[test]
    fn new_series_past_the_metric_bound_are_dropped_and_reported_once() {
        let mut g = CardinalityGuard::new(CardinalityConfig {
            max_series_per_metric: 3,
            max_series_total: 100,
            idle_timeout_ms: 1000,
        });
        let mut batch: Vec<Sample> = (0..5)
            .map(|i| s("a", i, 10))
            .chain((0..2).map(|i| s("b", i, 10)))
            .collect();
        assert_eq!(
            g.admit(&mut batch),
            vec![Dropped {
                metric: "a".into(),
                samples: 2,
                first_time: true
            }]
        );
        assert_eq!(batch.len(), 5);
        // Known series still pass; a's new ones are still dropped, but reported only the first time.
        let mut again: Vec<Sample> = (0..5).map(|i| s("a", i, 20)).collect();
        assert_eq!(
            g.admit(&mut again),
            vec![Dropped {
                metric: "a".into(),
                samples: 2,
                first_time: false
            }]
        );
        assert_eq!(again.len(), 3);
        assert_eq!(g.dropped()["a"], 4);
        assert_eq!(g.active(), 5);
    }

    #[test]
    fn total_bound_holds_across_metrics() {
        let mut g = CardinalityGuard::new(CardinalityConfig {
            max_series_per_metric: 100,
            max_series_total: 4,
            idle_timeout_ms: 1000,
        });
        let mut batch: Vec<Sample> = (0..3)
            .map(|i| s("a", i, 1))
            .chain((0..3).map(|i| s("b", i, 1)))
            .collect();
        g.admit(&mut batch);
        assert_eq!(batch.len(), 4);
        assert_eq!(g.dropped()["b"], 2);
    }

    #[test]
    fn idle_series_expire_with_a_stale_marker_and_free_their_slot() {
        let mut g = CardinalityGuard::new(CardinalityConfig {
            max_series_per_metric: 2,
            max_series_total: 100,
            idle_timeout_ms: 1000,
        });
        let mut b = vec![s("a", 0, 0), s("a", 1, 0)];
        g.admit(&mut b);
        let mut b = vec![s("a", 1, 1500)];
        g.admit(&mut b);
        let stale = g.expire();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].label("id"), Some("0"));
        assert_eq!(stale[0].value.to_bits(), STALE_NAN_BITS);
        assert_eq!(stale[0].timestamp_ms, 1);
        let mut b = vec![s("a", 2, 1600)];
        g.admit(&mut b);
        assert_eq!(b.len(), 1, "the expired series' slot is free again");
    }
}
