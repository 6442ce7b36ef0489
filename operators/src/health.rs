//! Region health: a 0–100 score from the design's weighted factors, with a trend.
//!
//! Factors and weights: availability 30 %, resource utilization 20 %, network latency 20 %,
//! error rate 20 %, consensus health 10 %. Each factor's raw value is mapped to 0–100 by a
//! piecewise-linear curve of `(value, score)` points (configurable; the defaults below), and the
//! score is the weighted sum. A region is healthy at or above `healthy_threshold`. The trend is
//! the least-squares slope of the score over the last `trend_window_ms` of event time:
//! improving above `+trend_epsilon` points per minute, degrading below `-trend_epsilon`, else
//! stable. Each factor is also a component with a status: healthy (≥ 80), degraded (≥ 50),
//! unhealthy (< 50).
//!
//! Default curves (value → score, linear between points, flat outside):
//!
//! | factor | unit | curve |
//! | --- | --- | --- |
//! | availability | % | 95 → 0, 99 → 50, 99.9 → 90, 100 → 100 |
//! | utilization | % | 0 → 100, 70 → 100, 90 → 50, 100 → 0 |
//! | latency | ms | 0 → 100, 50 → 100, 200 → 50, 1000 → 0 |
//! | error rate | % | 0 → 100, 0.1 → 100, 1 → 80, 5 → 0 |
//! | consensus | % | 0 → 0, 90 → 50, 100 → 100 |

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::EventTime;

/// A piecewise-linear curve: `(value, score)` points sorted by value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Curve(pub Vec<(f64, f64)>);

impl Curve {
    /// The score of `x`: linear between points, the end scores outside them.
    pub fn score(&self, x: f64) -> f64 {
        let pts = &self.0;
        let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
            return 0.0;
        };
        if x.is_nan() {
            return 0.0;
        }
        if x <= first.0 {
            return first.1;
        }
        if x >= last.0 {
            return last.1;
        }
        for w in pts.windows(2) {
            let ((x0, y0), (x1, y1)) = (w[0], w[1]);
            if x >= x0 && x <= x1 {
                return if x1 == x0 {
                    y1
                } else {
                    y0 + (y1 - y0) * (x - x0) / (x1 - x0)
                };
            }
        }
        last.1
    }
}

/// Configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Availability curve (percent).
    pub availability: Curve,
    /// Resource utilization curve (percent).
    pub utilization: Curve,
    /// Network latency curve (ms).
    pub latency: Curve,
    /// Error rate curve (percent).
    pub error_rate: Curve,
    /// Consensus health curve (percent).
    pub consensus: Curve,
    /// Weights in the order above; they are normalized to sum 1.
    pub weights: [f64; 5],
    /// Healthy at or above this score.
    pub healthy_threshold: f64,
    /// Trend window, ms of event time.
    pub trend_window_ms: u64,
    /// Slope, in points per minute, beyond which the trend is not stable.
    pub trend_epsilon: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            availability: Curve(vec![(95.0, 0.0), (99.0, 50.0), (99.9, 90.0), (100.0, 100.0)]),
            utilization: Curve(vec![(0.0, 100.0), (70.0, 100.0), (90.0, 50.0), (100.0, 0.0)]),
            latency: Curve(vec![(0.0, 100.0), (50.0, 100.0), (200.0, 50.0), (1000.0, 0.0)]),
            error_rate: Curve(vec![(0.0, 100.0), (0.1, 100.0), (1.0, 80.0), (5.0, 0.0)]),
            consensus: Curve(vec![(0.0, 0.0), (90.0, 50.0), (100.0, 100.0)]),
            weights: [0.3, 0.2, 0.2, 0.2, 0.1],
            healthy_threshold: 80.0,
            trend_window_ms: 600_000,
            trend_epsilon: 0.5,
        }
    }
}

/// The raw factor values of a region at one time; NaN for a factor without data, which is
/// then left out of the score (the other weights renormalized) and of the components.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HealthInputs {
    /// Availability, percent.
    pub availability_pct: f64,
    /// Resource utilization, percent.
    pub utilization_pct: f64,
    /// Network latency, ms.
    pub latency_ms: f64,
    /// Error rate, percent.
    pub error_rate_pct: f64,
    /// Consensus health, percent.
    pub consensus_pct: f64,
}

/// Trend of the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trend {
    /// Slope above `+epsilon`.
    Improving,
    /// Within `±epsilon`.
    Stable,
    /// Slope below `-epsilon`.
    Degrading,
}

/// Status of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentStatus {
    /// Score ≥ 80.
    Healthy,
    /// Score ≥ 50.
    Degraded,
    /// Score < 50.
    Unhealthy,
}

/// One factor as a component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    /// Factor name.
    pub name: String,
    /// Status.
    pub status: ComponentStatus,
    /// 0–100.
    pub score: f64,
    /// The raw value with its unit.
    pub message: String,
}

/// A region's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// 0–100.
    pub score: f64,
    /// `score >= healthy_threshold`.
    pub healthy: bool,
    /// Trend over the window.
    pub trend: Trend,
    /// The five factors.
    pub components: Vec<Component>,
}

/// The scorer of one region, with its score history for the trend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthTracker {
    config: HealthConfig,
    history: VecDeque<(EventTime, f64)>,
}

fn status(score: f64) -> ComponentStatus {
    if score >= 80.0 {
        ComponentStatus::Healthy
    } else if score >= 50.0 {
        ComponentStatus::Degraded
    } else {
        ComponentStatus::Unhealthy
    }
}

impl HealthTracker {
    /// A tracker.
    pub fn new(config: HealthConfig) -> Self {
        HealthTracker {
            config,
            history: VecDeque::new(),
        }
    }

    /// Scores `inputs` at event time `t` and returns the region's health.
    pub fn update(&mut self, t: EventTime, inputs: HealthInputs) -> Health {
        let c = &self.config;
        let factors = [
            (
                "availability",
                c.availability.score(inputs.availability_pct),
                format!("{:.2} %", inputs.availability_pct),
            ),
            (
                "utilization",
                c.utilization.score(inputs.utilization_pct),
                format!("{:.1} %", inputs.utilization_pct),
            ),
            (
                "latency",
                c.latency.score(inputs.latency_ms),
                format!("{:.1} ms", inputs.latency_ms),
            ),
            (
                "error_rate",
                c.error_rate.score(inputs.error_rate_pct),
                format!("{:.2} %", inputs.error_rate_pct),
            ),
            (
                "consensus",
                c.consensus.score(inputs.consensus_pct),
                format!("{:.1} %", inputs.consensus_pct),
            ),
        ];
        // A factor without data (NaN input) is left out and the other weights renormalized.
        let present = [
            inputs.availability_pct,
            inputs.utilization_pct,
            inputs.latency_ms,
            inputs.error_rate_pct,
            inputs.consensus_pct,
        ]
        .map(f64::is_finite);
        let wsum: f64 = c.weights.iter().zip(present).filter(|(_, p)| *p).map(|(w, _)| w).sum();
        let score = if wsum > 0.0 {
            factors
                .iter()
                .zip(c.weights)
                .zip(present)
                .filter(|(_, p)| *p)
                .map(|(((_, s, _), w), _)| s * w)
                .sum::<f64>()
                / wsum
        } else {
            0.0
        };
        self.history.push_back((t, score));
        let horizon = t.saturating_sub(c.trend_window_ms * 1_000_000);
        while self.history.front().is_some_and(|(ht, _)| *ht < horizon) {
            self.history.pop_front();
        }
        let slope = self.slope_per_minute();
        let trend = if slope > c.trend_epsilon {
            Trend::Improving
        } else if slope < -c.trend_epsilon {
            Trend::Degrading
        } else {
            Trend::Stable
        };
        Health {
            score,
            healthy: score >= c.healthy_threshold,
            trend,
            components: factors
                .into_iter()
                .zip(present)
                .filter(|(_, p)| *p)
                .map(|((name, s, message), _)| Component {
                    name: name.to_string(),
                    status: status(s),
                    score: s,
                    message,
                })
                .collect(),
        }
    }

    /// Least-squares slope of the score history, points per minute.
    fn slope_per_minute(&self) -> f64 {
        let n = self.history.len();
        if n < 2 {
            return 0.0;
        }
        let t0 = self.history[0].0;
        #[allow(clippy::cast_precision_loss)]
        let xs: Vec<f64> = self.history.iter().map(|(t, _)| (t - t0) as f64 / 60e9).collect();
        #[allow(clippy::cast_precision_loss)]
        let nf = n as f64;
        let mx = xs.iter().sum::<f64>() / nf;
        let my = self.history.iter().map(|(_, s)| s).sum::<f64>() / nf;
        let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
        if sxx == 0.0 {
            return 0.0;
        }
        let sxy: f64 = xs
            .iter()
            .zip(&self.history)
            .map(|(x, (_, y))| (x - mx) * (y - my))
            .sum();
        sxy / sxx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000_000_000;

    fn design_example() -> HealthInputs {
        HealthInputs {
            availability_pct: 99.5,
            utilization_pct: 65.0,
            latency_ms: 25.0,
            error_rate_pct: 1.0,
            consensus_pct: 95.0,
        }
    }

    #[test]
    fn the_design_example_scores_what_the_curves_imply() {
        let mut h = HealthTracker::new(HealthConfig::default());
        let r = h.update(MIN, design_example());
        // availability 99.5 between (99, 50) and (99.9, 90): 50 + 40 × 0.5 / 0.9 = 72.222;
        // utilization 65 → 100; latency 25 → 100; error rate 1 % → 80; consensus 95 → 75.
        let want = 0.3 * (50.0 + 40.0 * 0.5 / 0.9) + 0.2 * 100.0 + 0.2 * 100.0 + 0.2 * 80.0 + 0.1 * 75.0;
        assert!((r.score - want).abs() < 1e-9, "{} vs {want}", r.score);
        assert!((r.score - 85.1667).abs() < 1e-3);
        assert!(r.healthy);
        assert_eq!(r.trend, Trend::Stable);
        let c = |n: &str| r.components.iter().find(|c| c.name == n).expect("component").clone();
        assert_eq!(c("availability").status, ComponentStatus::Degraded);
        assert_eq!(c("error_rate").status, ComponentStatus::Healthy);
        assert_eq!(c("consensus").status, ComponentStatus::Degraded);
        assert_eq!(c("latency").message, "25.0 ms");
    }

    #[test]
    fn the_trend_flips_when_the_inputs_degrade_and_recover() {
        let mut h = HealthTracker::new(HealthConfig::default());
        let mut last = None;
        for m in 0..10 {
            last = Some(h.update(m * MIN, design_example()));
        }
        assert_eq!(last.as_ref().map(|r| r.trend), Some(Trend::Stable));
        // Latency climbs 40 ms a minute: the score falls.
        for m in 10..20u64 {
            let mut i = design_example();
            i.latency_ms = 25.0 + 40.0 * (m - 9) as f64;
            last = Some(h.update(m * MIN, i));
        }
        let r = last.clone().expect("report");
        assert_eq!(r.trend, Trend::Degrading);
        assert!(!r.healthy, "score {}", r.score);
        // And recovers: five minutes later the window still holds the bad minutes, so it rises.
        for m in 20..25u64 {
            last = Some(h.update(m * MIN, design_example()));
        }
        let r = last.expect("report");
        assert!(r.healthy);
        assert_eq!(r.trend, Trend::Improving);
    }

    #[test]
    fn a_factor_without_data_is_left_out_and_the_weights_renormalized() {
        let mut h = HealthTracker::new(HealthConfig::default());
        let mut i = design_example();
        i.consensus_pct = f64::NAN;
        let r = h.update(MIN, i);
        let want = (0.3 * (50.0 + 40.0 * 0.5 / 0.9) + 0.2 * 100.0 + 0.2 * 100.0 + 0.2 * 80.0) / 0.9;
        assert!((r.score - want).abs() < 1e-9, "{} vs {want}", r.score);
        assert_eq!(r.components.len(), 4);
        assert!(r.components.iter().all(|c| c.name != "consensus"));
    }

    #[test]
    fn curves_are_flat_outside_and_nan_scores_zero() {
        let c = Curve(vec![(0.0, 100.0), (10.0, 0.0)]);
        assert_eq!(c.score(-5.0), 100.0);
        assert_eq!(c.score(5.0), 50.0);
        assert_eq!(c.score(50.0), 0.0);
        assert_eq!(c.score(f64::NAN), 0.0);
    }
}
