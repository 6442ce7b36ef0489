//! Capacity planning per resource: utilization history downsampled to hours, forecasts at 30,
//! 60 and 90 days by linear regression and by Holt's linear trend (the better one by backtest),
//! days until capacity, and a scale-out recommendation.
//!
//! - History: one mean per hour (the samples of an hour averaged), at most `max_hours`
//!   (default 180 days): about 2 KiB per resource per month, so months fit in memory.
//! - Models: ordinary least squares on (hour, value); Holt's double exponential smoothing with
//!   α and β picked from a small grid by one-step-ahead error. Seasonality averages out in the
//!   regression's slope; Holt follows level changes faster.
//! - Backtest: both are fitted on the history minus its last 20 % and scored by mean absolute
//!   error on that held-out 20 %; the better one is refitted on everything and forecasts.
//! - Days to capacity: when the chosen model's line reaches `capacity` (from the last point), or
//!   `None` if it never does (flat or falling).
//! - Scale-out: nodes needed so that the forecast at the horizon stays under
//!   `target_utilization` of capacity, given the current node count:
//!   `ceil(nodes × forecast / (target × capacity))`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::EventTime;

const HOUR: u64 = 3_600_000_000_000;

/// Which model produced a forecast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// Ordinary least squares.
    Linear,
    /// Holt's linear trend.
    Holt,
}

/// A forecast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// The model chosen by backtest.
    pub model: Model,
    /// Backtest mean absolute error of the chosen model.
    pub backtest_mae: f64,
    /// Forecast values at 30, 60 and 90 days.
    pub at_days: [(u32, f64); 3],
    /// Days from the last point until capacity is reached, if ever.
    pub days_to_capacity: Option<f64>,
    /// Nodes needed to stay under the target utilization at 90 days.
    pub nodes_needed: u32,
}

/// The history of one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityTracker {
    /// (hour index, sum, count) per hour.
    hours: VecDeque<(u64, f64, u32)>,
    max_hours: usize,
}

/// A fitted line: value = a + b × hours from the first point.
#[derive(Debug, Clone, Copy)]
struct Line {
    a: f64,
    b: f64,
}

#[allow(clippy::cast_precision_loss)]
fn least_squares(ys: &[(f64, f64)]) -> Line {
    let n = ys.len() as f64;
    let mx = ys.iter().map(|p| p.0).sum::<f64>() / n;
    let my = ys.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = ys.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = ys.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    Line { a: my - b * mx, b }
}

/// Holt's linear trend over equally spaced values; returns (level, trend per step) at the end
/// and the mean absolute one-step-ahead error.
fn holt(ys: &[f64], alpha: f64, beta: f64) -> (f64, f64, f64) {
    if ys.len() < 2 {
        return (ys.first().copied().unwrap_or(0.0), 0.0, f64::INFINITY);
    }
    let mut level = ys[0];
    let mut trend = ys[1] - ys[0];
    let mut err = 0.0;
    for y in &ys[1..] {
        let predicted = level + trend;
        err += (y - predicted).abs();
        let new_level = alpha * y + (1.0 - alpha) * (level + trend);
        trend = beta * (new_level - level) + (1.0 - beta) * trend;
        level = new_level;
    }
    #[allow(clippy::cast_precision_loss)]
    let mae = err / (ys.len() - 1) as f64;
    (level, trend, mae)
}

fn best_holt(ys: &[f64]) -> (f64, f64) {
    let mut best = (f64::INFINITY, 0.5, 0.1);
    for alpha in [0.05, 0.1, 0.2, 0.3, 0.5, 0.8] {
        for beta in [0.01, 0.05, 0.1, 0.2] {
            let (_, _, mae) = holt(ys, alpha, beta);
            if mae < best.0 {
                best = (mae, alpha, beta);
            }
        }
    }
    (best.1, best.2)
}

impl Default for CapacityTracker {
    fn default() -> Self {
        CapacityTracker::new(180 * 24)
    }
}

impl CapacityTracker {
    /// A tracker keeping at most `max_hours` hourly means.
    pub fn new(max_hours: usize) -> Self {
        CapacityTracker {
            hours: VecDeque::new(),
            max_hours,
        }
    }

    /// Adds a utilization sample at event time `t`.
    pub fn observe(&mut self, t: EventTime, value: f64) {
        if !value.is_finite() {
            return;
        }
        let h = t / HOUR;
        match self.hours.iter_mut().rev().find(|x| x.0 == h) {
            Some(x) => {
                x.1 += value;
                x.2 += 1;
            }
            None => {
                let pos = self.hours.iter().position(|x| x.0 > h).unwrap_or(self.hours.len());
                self.hours.insert(pos, (h, value, 1));
            }
        }
        while self.hours.len() > self.max_hours {
            self.hours.pop_front();
        }
    }

    /// Bytes of history.
    pub fn state_bytes(&self) -> usize {
        self.hours.len() * std::mem::size_of::<(u64, f64, u32)>()
    }

    #[allow(clippy::cast_precision_loss)]
    fn points(&self) -> Vec<(f64, f64)> {
        let first = self.hours.front().map_or(0, |x| x.0);
        self.hours
            .iter()
            .map(|x| ((x.0 - first) as f64, x.1 / f64::from(x.2)))
            .collect()
    }

    /// Hours of history kept.
    pub fn hours(&self) -> usize {
        self.hours.len()
    }

    /// Forecasts; `None` with fewer than 48 hours of history.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    pub fn forecast(&self, capacity: f64, nodes: u32, target_utilization: f64) -> Option<Forecast> {
        let pts = self.points();
        if pts.len() < 48 {
            return None;
        }
        let split = pts.len() * 4 / 5;
        let (train, test) = pts.split_at(split);
        let last_x = train.last().map_or(0.0, |p| p.0);
        // Linear backtest.
        let line = least_squares(train);
        let lin_mae = test.iter().map(|(x, y)| (line.a + line.b * x - y).abs()).sum::<f64>() / test.len() as f64;
        // Holt backtest (hourly steps; gaps are rare and treated as consecutive).
        let train_y: Vec<f64> = train.iter().map(|p| p.1).collect();
        let (alpha, beta) = best_holt(&train_y);
        let (level, trend, _) = holt(&train_y, alpha, beta);
        let holt_mae = test
            .iter()
            .map(|(x, y)| (level + trend * (x - last_x) - y).abs())
            .sum::<f64>()
            / test.len() as f64;
        let end_x = pts.last().map_or(0.0, |p| p.0);
        let (model, mae, predict): (Model, f64, Box<dyn Fn(f64) -> f64>) = if lin_mae <= holt_mae {
            let l = least_squares(&pts);
            (Model::Linear, lin_mae, Box::new(move |h: f64| l.a + l.b * (end_x + h)))
        } else {
            let ys: Vec<f64> = pts.iter().map(|p| p.1).collect();
            let (lv, tr, _) = holt(&ys, alpha, beta);
            (Model::Holt, holt_mae, Box::new(move |h: f64| lv + tr * h))
        };
        let at_days = [30u32, 60, 90].map(|d| (d, predict(f64::from(d) * 24.0)));
        // Slope per hour of the chosen model, from two of its points.
        let now_v = predict(0.0);
        let slope = predict(1.0) - now_v;
        let days_to_capacity = if now_v >= capacity {
            Some(0.0)
        } else if slope > 0.0 {
            Some((capacity - now_v) / slope / 24.0)
        } else {
            None
        };
        let f90 = at_days[2].1;
        let nodes_needed = if target_utilization > 0.0 && capacity > 0.0 {
            ((f64::from(nodes) * f90 / (target_utilization * capacity))
                .ceil()
                .max(f64::from(nodes))) as u32
        } else {
            nodes
        };
        Some(Forecast {
            model,
            backtest_mae: mae,
            at_days,
            days_to_capacity,
            nodes_needed,
        })
    }
}

/// A bottleneck: a resource and how soon it runs out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bottleneck {
    /// Resource name.
    pub resource: String,
    /// Days to capacity (`None`: never).
    pub days_to_capacity: Option<f64>,
    /// Forecast at 90 days as a share of capacity.
    pub utilization_at_90d: f64,
}

/// Ranks bottlenecks by severity: the soonest to run out first, then the fullest at 90 days.
pub fn rank_bottlenecks(mut b: Vec<Bottleneck>) -> Vec<Bottleneck> {
    b.sort_by(|x, y| {
        let dx = x.days_to_capacity.unwrap_or(f64::INFINITY);
        let dy = y.days_to_capacity.unwrap_or(f64::INFINITY);
        dx.total_cmp(&dy)
            .then(y.utilization_at_90d.total_cmp(&x.utilization_at_90d))
    });
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_plus_daily_seasonality_forecast_within_five_percent_at_30_days() {
        let mut c = CapacityTracker::default();
        // 60 days: 30 % rising 0.5 points a day, ±5 points of daily cycle, samples every 10 min.
        let truth = |hours: f64| 30.0 + 0.5 * hours / 24.0 + 5.0 * (2.0 * std::f64::consts::PI * hours / 24.0).sin();
        let t0 = 1_793_491_200u64 * 1_000_000_000;
        for i in 0..(60 * 24 * 6) {
            let h = i as f64 / 6.0;
            c.observe(t0 + (i as u64) * 600_000_000_000, truth(h));
        }
        let f = c.forecast(100.0, 4, 0.7).expect("forecast");
        let end = 60.0 * 24.0 - 1.0 + 0.5; // the last hourly mean sits mid-hour
        let want30 = 30.0 + 0.5 * (end + 30.0 * 24.0) / 24.0; // the trend, seasonality averages out
        let got30 = f.at_days[0].1;
        assert!(
            (got30 - want30).abs() / want30 <= 0.05,
            "{got30} vs {want30} ({:?})",
            f.model
        );
    }

    #[test]
    fn days_to_capacity_is_exact_on_a_linear_series() {
        let mut c = CapacityTracker::default();
        let t0 = 1_793_491_200u64 * 1_000_000_000;
        // 40 % rising exactly 1 point a day, one sample per hour.
        for h in 0..(30 * 24) {
            c.observe(t0 + h * HOUR, 40.0 + h as f64 / 24.0);
        }
        let f = c.forecast(100.0, 10, 0.7).expect("forecast");
        // Last point: 40 + 719/24; it reaches 100 after (60 - 719/24) days.
        let want = 60.0 - 719.0 / 24.0;
        let got = f.days_to_capacity.expect("reaches capacity");
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // At 90 days: 40 + (719 + 2160)/24 = 159.96 %: nodes = ceil(10 × 159.96 / 70) = 23.
        assert_eq!(f.nodes_needed, 23);
        // A flat series never reaches capacity.
        let mut flat = CapacityTracker::default();
        for h in 0..100 {
            flat.observe(t0 + h * HOUR, 50.0);
        }
        assert_eq!(flat.forecast(100.0, 3, 0.7).expect("forecast").days_to_capacity, None);
    }

    #[test]
    fn bottlenecks_rank_soonest_first() {
        let b = rank_bottlenecks(vec![
            Bottleneck {
                resource: "disk".into(),
                days_to_capacity: None,
                utilization_at_90d: 0.6,
            },
            Bottleneck {
                resource: "cpu".into(),
                days_to_capacity: Some(40.0),
                utilization_at_90d: 1.3,
            },
            Bottleneck {
                resource: "bandwidth".into(),
                days_to_capacity: Some(12.0),
                utilization_at_90d: 2.0,
            },
        ]);
        let names: Vec<&str> = b.iter().map(|x| x.resource.as_str()).collect();
        assert_eq!(names, ["bandwidth", "cpu", "disk"]);
    }
}
